"""The optimiser builder: which parameters decay under each rule, and that its AdamW
steps like one assembled by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crossalign.train.optim import build_optimizer, parameter_groups


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(7, 4)
        self.linear = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def _decayed(model: nn.Module, rule: str) -> set[str]:
    ids = {id(p): name for name, p in model.named_parameters()}
    groups = parameter_groups(model.named_parameters(), 0.1, rule)
    return {ids[id(p)] for g in groups if g["weight_decay"] for p in g["params"]}


def test_each_rule_decays_what_it_says():
    model = Toy()
    assert _decayed(model, "matrices") == {"linear.weight"}
    assert _decayed(model, "matrices_and_embeddings") == {
        "linear.weight",
        "token_embedding.weight",
    }
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert _decayed(model, "all") == trainable  # frozen parameters are left out
    assert not {"frozen.weight", "frozen.bias"} & trainable


def test_the_optimizer_steps_like_adamw_over_hand_made_groups():
    torch.manual_seed(0)
    model = Toy()
    twin = copy.deepcopy(model)
    built = build_optimizer(
        model, lr=0.1, weight_decay=0.3, betas=(0.8, 0.9), decay="matrices"
    )
    decay = [twin.linear.weight]
    rest = [
        twin.token_embedding.weight,
        twin.linear.bias,
        twin.norm.weight,
        twin.norm.bias,
        twin.logit_scale,
    ]
    by_hand = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.3}, {"params": rest, "weight_decay": 0.0}],
        lr=0.1,
        betas=(0.8, 0.9),
    )
    ids = torch.tensor([1, 2, 3])
    for _ in range(3):
        for module, optimizer in ((model, built), (twin, by_hand)):
            optimizer.zero_grad()
            out = module.norm(module.linear(module.token_embedding(ids)))
            (out.pow(2).sum() * module.logit_scale).backward()
            optimizer.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fused_is_asked_for_and_falls_back_where_missing(monkeypatch):
    real = torch.optim.AdamW

    def no_fused(*args, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("no fused kernel here")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    optimizer = build_optimizer(nn.Linear(2, 2), lr=0.1, fused=True)
    assert not optimizer.defaults.get("fused")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="decay='sometimes'"):
        build_optimizer(nn.Linear(2, 2), lr=0.1, decay="sometimes")
    with pytest.raises(ValueError, match="pass the module"):
        build_optimizer(list(nn.Linear(2, 2).parameters()), lr=0.1, decay="matrices")
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, lr=0.1)

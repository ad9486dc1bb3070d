"""The optimiser builder: which parameters decay under its one rule (by shape), and
that its AdamW steps like one assembled by hand."""

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


def _decayed(model: nn.Module, parameters=None) -> set[str]:
    ids = {id(p): name for name, p in model.named_parameters()}
    groups = parameter_groups(
        model.parameters() if parameters is None else parameters, 0.1
    )
    return {ids[id(p)] for g in groups if g["weight_decay"] for p in g["params"]}


def test_matrices_and_embedding_tables_decay_vectors_and_scalars_do_not():
    model = Toy()
    model.position_table = nn.Parameter(torch.zeros(1, 5, 4))  # a bare table
    assert _decayed(model) == {
        "linear.weight",
        "token_embedding.weight",
        "position_table",
    }
    groups = parameter_groups(model.parameters(), 0.1)
    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable  # frozen parameters are left out


def test_a_list_of_parameters_is_grouped_like_its_module():
    model = Toy()
    assert _decayed(model, list(model.parameters())) == _decayed(model)
    built = build_optimizer(list(model.parameters()), lr=0.1, weight_decay=0.2)
    from_module = build_optimizer(model, lr=0.1, weight_decay=0.2)
    for a, b in zip(built.param_groups, from_module.param_groups):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert a["weight_decay"] == b["weight_decay"]


def test_the_optimizer_steps_like_adamw_over_hand_made_groups():
    torch.manual_seed(0)
    model = Toy()
    twin = copy.deepcopy(model)
    built = build_optimizer(model, lr=0.1, weight_decay=0.3, betas=(0.8, 0.9))
    decay = [twin.token_embedding.weight, twin.linear.weight]
    rest = [
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


def test_a_model_with_nothing_to_train_is_refused():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, lr=0.1)

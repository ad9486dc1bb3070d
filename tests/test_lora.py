"""Low-rank adapters: exact identity at init, the forward formula, merging, what
trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossalign.models.gpt import GPT, GPTConfig
from crossalign.models.lora import LoRALinear, apply_lora, lora_parameters, merge_lora


def _gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16))


def _perturb_adapters(model: nn.Module) -> None:
    """Give every B a non-zero value so the adapters change the output."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_b.copy_(
                    torch.randn(module.lora_b.shape, generator=generator) * 0.1
                )


def test_adapter_at_init_equals_base_model_exactly():
    base = _gpt()
    adapted = _gpt()
    apply_lora(adapted, rank=2)
    ids = torch.randint(0, 23, (3, 10))
    assert torch.equal(adapted(ids), base(ids))


def test_forward_is_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    linear = nn.Linear(7, 5)
    layer = LoRALinear(linear, rank=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(4, 7)
    expected = (
        x @ linear.weight.T + linear.bias + 2.0 * (x @ (layer.lora_b @ layer.lora_a).T)
    )
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_merge_gives_the_unmerged_outputs_and_removes_adapters():
    model = _gpt()
    apply_lora(model, rank=4, alpha=8.0)
    _perturb_adapters(model)
    ids = torch.randint(0, 23, (3, 12))
    unmerged = model(ids)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(ids), unmerged, rtol=0, atol=1e-6)
    # the merged update really changed the model
    assert not torch.equal(model(ids), _gpt()(ids))


def test_only_adapter_parameters_train():
    model = _gpt()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    names = apply_lora(model, rank=2)
    assert sorted(names) == sorted(
        f"blocks.{i}.{layer}"
        for i in range(2)
        for layer in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(model)}
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    ids = torch.randint(0, 23, (4, 10))
    for _ in range(2):
        optimizer.zero_grad()
        model(ids).logsumexp(-1).mean().backward()
        optimizer.step()
    state = dict(model.named_parameters())
    for name, value in before.items():
        adapted_name = name.replace("attn.qkv.", "attn.qkv.base.").replace(
            "attn.proj.", "attn.proj.base."
        )
        adapted_name = adapted_name.replace("mlp.fc.", "mlp.fc.base.").replace(
            "mlp.proj.", "mlp.proj.base."
        )
        assert torch.equal(state[adapted_name], value), name
        assert state[adapted_name].grad is None
    adapters = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert any(not torch.equal(m.lora_b, torch.zeros_like(m.lora_b)) for m in adapters)


def test_hf_conv1d_merge_and_identity():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(6, 9)  # nf=6 outputs, nx=9 inputs, weight (9, 6)
    nn.init.normal_(conv.weight)
    x = torch.randn(2, 3, 9)
    layer = LoRALinear(conv, rank=2, alpha=4.0)
    assert layer.transposed
    assert torch.equal(layer(x), conv(x))
    with torch.no_grad():
        layer.lora_b.normal_()
    torch.testing.assert_close(layer.merged()(x), layer(x), rtol=0, atol=1e-5)


def test_targets_and_bad_arguments():
    model = _gpt()
    assert apply_lora(model, targets=("qkv",)) == [
        "blocks.0.attn.qkv",
        "blocks.1.attn.qkv",
    ]
    with pytest.raises(ValueError, match="matched no linear layer"):
        apply_lora(_gpt(), targets=("nonexistent",))
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 3), rank=4)
    with pytest.raises(TypeError, match="adapts nn.Linear"):
        LoRALinear(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="no LoRALinear"):
        merge_lora(_gpt())

"""Projectors: image features -> k prefix embeddings, checked against explicit
formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossalign.models.projector import (
    LinearProjector,
    MLPProjector,
    TransformerMapper,
    build_projector,
    projector_names,
)


def test_linear_projector_is_x_w_plus_b_per_patch_and_expanded():
    torch.manual_seed(0)
    patches = torch.randn(2, 5, 6)
    tokenwise = LinearProjector(6, 4)
    weight, bias = tokenwise.net.weight, tokenwise.net.bias
    torch.testing.assert_close(tokenwise(patches), patches @ weight.T + bias)
    pooled = torch.randn(3, 6)
    expanding = LinearProjector(6, 4, prefix_len=3)
    out = expanding(pooled)
    assert out.shape == (3, 3, 4)
    flat = pooled @ expanding.net.weight.T + expanding.net.bias
    # token j = output slice j * lm_dim .. (j + 1) * lm_dim
    torch.testing.assert_close(out[:, 1], flat[:, 4:8])


def test_mlp_projector_is_linear_gelu_linear():
    torch.manual_seed(0)
    projector = MLPProjector(6, 4, hidden_dim=10)
    first, second = projector.net[0], projector.net[2]
    x = torch.randn(2, 7, 6)
    expected = F.gelu(x @ first.weight.T + first.bias) @ second.weight.T + second.bias
    torch.testing.assert_close(projector(x), expected)
    # hidden width defaults to lm_dim (LLaVA-1.5)
    assert MLPProjector(6, 4).net[0].out_features == 4


def test_transformer_mapper_shapes_batch_independence_and_permutation_invariance():
    torch.manual_seed(0)
    mapper = TransformerMapper(
        6, 8, prefix_len=3, image_tokens=2, depth=1, heads=2
    ).eval()
    pooled = torch.randn(4, 6)
    out = mapper(pooled)
    assert out.shape == (4, 3, 8)
    torch.testing.assert_close(mapper(pooled[2:3]), out[2:3], rtol=1e-5, atol=1e-6)
    patches = torch.randn(2, 5, 6)
    # no position embeddings: the mapper reads patches as a set (order carries no
    # information)
    torch.testing.assert_close(
        mapper(patches[:, [4, 2, 0, 1, 3]]), mapper(patches), rtol=1e-5, atol=1e-5
    )
    assert mapper(patches).shape == (2, 3, 8)


def test_gradients_reach_every_projector_parameter():
    for name in projector_names():
        kwargs = {"prefix_len": 2}
        projector = build_projector(name, 6, 8, **kwargs)
        projector(torch.randn(3, 6)).square().sum().backward()
        used = [
            p
            for p in projector.parameters()
            if p.grad is not None and p.grad.abs().sum() > 0
        ]
        # the patch-wise input layer is unused by pooled features
        if name == "transformer":
            assert len(used) == len(list(projector.parameters())) - 2
        else:
            assert len(used) == len(list(projector.parameters()))


def test_bad_shapes_and_names_are_reported():
    with pytest.raises(ValueError, match="prefix_len=None maps every patch"):
        LinearProjector(6, 4)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="expands pooled"):
        LinearProjector(6, 4, prefix_len=2)(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"\[B, 6\]"):
        MLPProjector(6, 4, prefix_len=2)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="heads=3 must divide"):
        TransformerMapper(6, 8, heads=3)
    with pytest.raises(ValueError, match="lm_dim must be a positive integer"):
        LinearProjector(6, 0)
    with pytest.raises(ValueError, match="not known"):
        build_projector("conv", 6, 4)

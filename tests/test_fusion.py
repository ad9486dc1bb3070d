"""Tests for crossalign.models.fusion: shapes, masking, hand-computed references,
registry, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossalign.models.fusion import (
    FUSION_NAMES,
    ConcatFusion,
    CrossAttentionFusion,
    FiLMFusion,
    FusionModule,
    GatedFusion,
    MeanFusion,
    ModalityAttentionFusion,
    WeightedSumFusion,
    build_fusion,
)

IMAGE_DIM, TEXT_DIM, OUT_DIM = 8, 6, 12
# Small options so every module is fast; cross-attention needs heads dividing OUT_DIM.
OPTIONS = {
    "concat": {"hidden_dim": 16},
    "cross_attention": {"num_heads": 3, "hidden_dim": 16},
}


def _fusion(
    name: str, dtype: torch.dtype = torch.float32, seed: int = 0
) -> FusionModule:
    torch.manual_seed(seed)
    return (
        build_fusion(name, IMAGE_DIM, TEXT_DIM, OUT_DIM, **OPTIONS.get(name, {}))
        .to(dtype)
        .eval()
    )


def _randomize(module: nn.Module, seed: int = 0) -> None:
    """Give every parameter random values (torch starts some biases at 0, which would
    hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _batch(
    batch: int = 4,
    n_image: int = 5,
    n_text: int = 6,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random tokens, an arbitrary image mask and a right-padded text mask, each row
    with a real token."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, n_image, IMAGE_DIM, generator=g, dtype=dtype)
    text = torch.randn(batch, n_text, TEXT_DIM, generator=g, dtype=dtype)
    image_mask = torch.rand(batch, n_image, generator=g) < 0.5
    image_mask[:, 0] = False
    image_mask[
        torch.arange(batch), torch.randint(1, n_image, (batch,), generator=g)
    ] = True
    image_mask[0] = True  # one row without padding
    lengths = torch.randint(1, n_text, (batch,), generator=g)
    text_mask = torch.arange(n_text) < lengths.unsqueeze(1)
    return image, text, image_mask, text_mask


def _reference_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean by selecting the real tokens of each row (independent of the
    package's masked_mean)."""
    return torch.stack([row[keep].mean(dim=0) for row, keep in zip(tokens, mask)])


def _with_padding(
    tokens: torch.Tensor, mask: torch.Tensor, value: torch.Tensor | float
) -> torch.Tensor:
    """Return ``tokens`` with every padded position replaced by ``value``."""
    return torch.where(
        mask.unsqueeze(-1),
        tokens,
        torch.as_tensor(value, dtype=tokens.dtype).expand_as(tokens),
    )


# --- one interface: shapes, pooled inputs, masks
# ------------------------------------------------


@pytest.mark.parametrize("name", FUSION_NAMES)
@pytest.mark.parametrize(
    "inputs", ["tokens", "tokens_with_masks", "pooled", "pooled_image_token_text"]
)
def test_output_shape(name: str, inputs: str) -> None:
    image, text, image_mask, text_mask = _batch()
    if inputs == "tokens":
        args = (image, text)
    elif inputs == "tokens_with_masks":
        args = (image, text, image_mask, text_mask)
    elif inputs == "pooled":
        args = (image[:, 0], text[:, 0])
    else:
        args = (image[:, 0], text, None, text_mask)
    out = _fusion(name)(*args)
    assert out.shape == (4, OUT_DIM) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_pooled_input_is_one_token_and_none_mask_is_all_true(name: str) -> None:
    image, text, _, _ = _batch(seed=1)
    fusion = _fusion(name)
    pooled = fusion(image[:, 0], text[:, 0])
    torch.testing.assert_close(
        pooled, fusion(image[:, :1], text[:, :1]), rtol=0, atol=0
    )
    torch.testing.assert_close(
        pooled,
        fusion(image[:, 0], text[:, 0], torch.ones(4, 1, dtype=torch.bool), None),
    )
    all_real = fusion(
        image,
        text,
        torch.ones(4, 5, dtype=torch.bool),
        torch.ones(4, 6, dtype=torch.bool),
    )
    torch.testing.assert_close(fusion(image, text), all_real, rtol=0, atol=0)


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_padded_tokens_never_change_the_output(name: str) -> None:
    image, text, image_mask, text_mask = _batch(seed=2)
    fusion = _fusion(name)
    reference = fusion(image, text, image_mask, text_mask)
    g = torch.Generator().manual_seed(3)
    fills = [
        (
            10 * torch.randn(image.shape, generator=g),
            10 * torch.randn(text.shape, generator=g),
        )
    ]
    fills += [(1e6, 1e6), (float("nan"), float("nan"))]
    for image_fill, text_fill in fills:
        changed = fusion(
            _with_padding(image, image_mask, image_fill),
            _with_padding(text, text_mask, text_fill),
            image_mask,
            text_mask,
        )
        torch.testing.assert_close(changed, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_padded_batch_equals_each_example_alone_without_padding(name: str) -> None:
    """The batched, masked output of a row equals the output for that row's real tokens
    alone."""
    image, text, image_mask, text_mask = _batch(seed=3)
    fusion = _fusion(name)
    batched = fusion(image, text, image_mask, text_mask)
    for b in range(image.shape[0]):
        alone = fusion(
            image[b, image_mask[b]].unsqueeze(0), text[b, text_mask[b]].unsqueeze(0)
        )
        torch.testing.assert_close(batched[b], alone[0], rtol=1e-5, atol=1e-5)


# --- gradients
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_gradients_reach_both_modalities_and_never_padding(name: str) -> None:
    """Every module uses both modalities (no design here zeroes one), and padding gets
    exactly zero gradient."""
    image, text, image_mask, text_mask = _batch(seed=4)
    image.requires_grad_(True)
    text.requires_grad_(True)
    fusion = _fusion(name)
    weights = torch.randn(4, OUT_DIM, generator=torch.Generator().manual_seed(5))
    (fusion(image, text, image_mask, text_mask) * weights).sum().backward()
    for tokens, mask in ((image, image_mask), (text, text_mask)):
        assert tokens.grad[mask].abs().sum() > 0
        assert (tokens.grad[~mask] == 0).all()


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_gradients_match_finite_differences(name: str) -> None:
    image, text, image_mask, text_mask = _batch(
        batch=2, n_image=3, n_text=3, seed=6, dtype=torch.float64
    )
    fusion = _fusion(name, dtype=torch.float64)
    _randomize(fusion, seed=7)
    image.requires_grad_(True)
    text.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda i, t: fusion(i, t, image_mask, text_mask), (image, text)
    )


# --- each module against its formula, computed by hand
# ------------------------------------------


def test_concat_fusion_formula() -> None:
    image, text, image_mask, text_mask = _batch(seed=8)
    fusion = ConcatFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM)
    pooled = torch.cat(
        [_reference_mean(image, image_mask), _reference_mean(text, text_mask)], dim=1
    )
    expected = pooled @ fusion.head.weight.T + fusion.head.bias
    torch.testing.assert_close(fusion(image, text, image_mask, text_mask), expected)

    mlp = ConcatFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM, hidden_dim=16)
    first, second = mlp.head[0], mlp.head[2]
    expected = (
        torch.relu(pooled @ first.weight.T + first.bias) @ second.weight.T + second.bias
    )
    torch.testing.assert_close(mlp(image, text, image_mask, text_mask), expected)


def test_mean_fusion_formula() -> None:
    image, text, image_mask, text_mask = _batch(seed=9)
    fusion = MeanFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM)
    image_part = (
        _reference_mean(image, image_mask) @ fusion.image_proj.weight.T
        + fusion.image_proj.bias
    )
    text_part = (
        _reference_mean(text, text_mask) @ fusion.text_proj.weight.T
        + fusion.text_proj.bias
    )
    torch.testing.assert_close(
        fusion(image, text, image_mask, text_mask), (image_part + text_part) / 2
    )


def test_weighted_sum_weights_sum_to_one_and_mix_the_projections() -> None:
    image, text, image_mask, text_mask = _batch(seed=10)
    fusion = WeightedSumFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM)
    torch.testing.assert_close(fusion.modality_weights(), torch.tensor([0.5, 0.5]))
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([math.log(3.0), 0.0]))
    weights = fusion.modality_weights()
    torch.testing.assert_close(weights, torch.tensor([0.75, 0.25]))
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-7)
    image_part = fusion.image_proj(_reference_mean(image, image_mask))
    text_part = fusion.text_proj(_reference_mean(text, text_mask))
    torch.testing.assert_close(
        fusion(image, text, image_mask, text_mask), 0.75 * image_part + 0.25 * text_part
    )


def test_gated_fusion_equals_the_gmu_formula() -> None:
    """h = z * tanh(W_i x_i + b_i) + (1 - z) * tanh(W_t x_t + b_t), z = sigmoid(W_z
    [x_i; x_t] + b_z)."""
    image, text, image_mask, text_mask = _batch(seed=11)
    fusion = GatedFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM)
    _randomize(fusion, seed=12)
    x_i, x_t = _reference_mean(image, image_mask), _reference_mean(text, text_mask)
    w_i, b_i = fusion.image_proj.weight, fusion.image_proj.bias
    w_t, b_t = fusion.text_proj.weight, fusion.text_proj.bias
    w_z, b_z = fusion.gate.weight, fusion.gate.bias
    z = 1 / (
        1 + torch.exp(-(x_i @ w_z[:, :IMAGE_DIM].T + x_t @ w_z[:, IMAGE_DIM:].T + b_z))
    )
    expected = z * torch.tanh(x_i @ w_i.T + b_i) + (1 - z) * torch.tanh(
        x_t @ w_t.T + b_t
    )
    torch.testing.assert_close(fusion(image, text, image_mask, text_mask), expected)


def test_modality_attention_formula_and_weights() -> None:
    image, text, image_mask, text_mask = _batch(seed=13)
    fusion = ModalityAttentionFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM)
    _randomize(fusion, seed=14)
    v_i = fusion.image_proj(_reference_mean(image, image_mask))
    v_t = fusion.text_proj(_reference_mean(text, text_mask))
    score_i = torch.tanh(fusion.key(v_i)) @ fusion.query
    score_t = torch.tanh(fusion.key(v_t)) @ fusion.query
    a_i = torch.exp(score_i) / (torch.exp(score_i) + torch.exp(score_t))
    output, weights = fusion(image, text, image_mask, text_mask, return_attention=True)
    torch.testing.assert_close(weights, torch.stack([a_i, 1 - a_i], dim=1))
    torch.testing.assert_close(
        output, a_i.unsqueeze(1) * v_i + (1 - a_i).unsqueeze(1) * v_t
    )
    torch.testing.assert_close(
        fusion(image, text, image_mask, text_mask), output, rtol=0, atol=0
    )


def _reference_cross_attention(
    fusion: CrossAttentionFusion,
    image: torch.Tensor,
    text: torch.Tensor,
    image_mask: torch.Tensor,
    text_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention block written out head by head from the module's weights, one
    example at a time."""
    attn = fusion.attention
    heads, dim = attn.num_heads, fusion.out_dim
    head_dim = dim // heads
    b_q, b_k, b_v = attn.in_proj_bias.split(dim)
    outputs, maps = [], []
    for b in range(image.shape[0]):
        keys_in = image[b, image_mask[b]]
        queries = fusion.text_proj(text[b, text_mask[b]])
        q = (
            (queries @ attn.q_proj_weight.T + b_q)
            .view(-1, heads, head_dim)
            .transpose(0, 1)
        )
        k = (
            (keys_in @ attn.k_proj_weight.T + b_k)
            .view(-1, heads, head_dim)
            .transpose(0, 1)
        )
        v = (
            (keys_in @ attn.v_proj_weight.T + b_v)
            .view(-1, heads, head_dim)
            .transpose(0, 1)
        )
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(head_dim), dim=-1)
        mixed = (probs @ v).transpose(0, 1).reshape(
            -1, dim
        ) @ attn.out_proj.weight.T + attn.out_proj.bias
        x = F.layer_norm(
            queries + mixed,
            (dim,),
            fusion.attention_norm.weight,
            fusion.attention_norm.bias,
        )
        x = F.layer_norm(
            x + fusion.mlp(x), (dim,), fusion.mlp_norm.weight, fusion.mlp_norm.bias
        )
        outputs.append(x.mean(dim=0))
        full_map = torch.zeros(text.shape[1], image.shape[1])
        full_map[
            torch.nonzero(text_mask[b]).squeeze(1).unsqueeze(1),
            torch.nonzero(image_mask[b]).squeeze(1),
        ] = probs.mean(dim=0)
        maps.append(full_map)
    return torch.stack(outputs), torch.stack(maps)


def test_cross_attention_matches_a_head_by_head_reference() -> None:
    image, text, image_mask, text_mask = _batch(seed=15)
    fusion = _fusion("cross_attention")
    _randomize(fusion, seed=16)
    output, attention = fusion(
        image, text, image_mask, text_mask, return_attention=True
    )
    expected_output, expected_attention = _reference_cross_attention(
        fusion, image, text, image_mask, text_mask
    )
    torch.testing.assert_close(output, expected_output, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attention, expected_attention, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        fusion(image, text, image_mask, text_mask), output, rtol=1e-6, atol=1e-6
    )


def test_cross_attention_weights_ignore_masked_image_tokens_and_rows_sum_to_one() -> (
    None
):
    image, text, image_mask, text_mask = _batch(seed=17)
    _, attention = _fusion("cross_attention")(
        image, text, image_mask, text_mask, return_attention=True
    )
    assert attention.shape == (4, 6, 5)
    assert (attention.masked_select(~image_mask.unsqueeze(1)) == 0).all()
    assert (attention.masked_select(~text_mask.unsqueeze(2)) == 0).all()
    row_sums = attention.sum(dim=-1)
    torch.testing.assert_close(row_sums[text_mask], torch.ones(int(text_mask.sum())))
    assert (attention >= 0).all()


def test_cross_attention_with_equal_widths_under_no_grad_ignores_padding() -> None:
    """image_dim == out_dim takes torch's packed-projection path (and its inference fast
    path in eval)."""
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(OUT_DIM, TEXT_DIM, OUT_DIM, num_heads=3).eval()
    g = torch.Generator().manual_seed(23)
    image = torch.randn(4, 5, OUT_DIM, generator=g)
    _, text, image_mask, text_mask = _batch(seed=23)
    with torch.no_grad():
        batched = fusion(image, text, image_mask, text_mask)
        padded_with_garbage = fusion(
            _with_padding(image, image_mask, 1e6), text, image_mask, text_mask
        )
        alone = [
            fusion(image[b, image_mask[b]][None], text[b, text_mask[b]][None])[0]
            for b in range(4)
        ]
    torch.testing.assert_close(padded_with_garbage, batched, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.stack(alone), batched, rtol=1e-5, atol=1e-5)


def test_film_with_unit_gamma_and_zero_beta_is_the_identity() -> None:
    image, text, image_mask, text_mask = _batch(seed=18)
    fusion = FiLMFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM)
    with torch.no_grad():
        fusion.film.weight.zero_()
        fusion.film.bias.zero_()
    gamma, beta = fusion.conditioning(text, text_mask)
    assert torch.equal(gamma, torch.ones(4, IMAGE_DIM)) and torch.equal(
        beta, torch.zeros(4, IMAGE_DIM)
    )
    modulated = fusion.modulate(image, text, image_mask, text_mask)
    assert torch.equal(modulated, image * image_mask.unsqueeze(-1))
    expected = fusion.out_proj(_reference_mean(torch.relu(image), image_mask))
    torch.testing.assert_close(fusion(image, text, image_mask, text_mask), expected)


def test_film_scales_and_shifts_every_real_image_token_from_the_pooled_text() -> None:
    image, text, image_mask, text_mask = _batch(seed=19)
    fusion = FiLMFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM, activation="identity")
    _randomize(fusion, seed=20)
    x_t = _reference_mean(text, text_mask)
    film = x_t @ fusion.film.weight.T + fusion.film.bias
    gamma, beta = 1 + film[:, :IMAGE_DIM], film[:, IMAGE_DIM:]
    modulated = gamma.unsqueeze(1) * image + beta.unsqueeze(1)
    torch.testing.assert_close(
        fusion.modulate(image, text, image_mask, text_mask)[image_mask],
        modulated[image_mask],
    )
    expected = fusion.out_proj(_reference_mean(modulated, image_mask))
    torch.testing.assert_close(fusion(image, text, image_mask, text_mask), expected)


# --- registry and bad input
# ---------------------------------------------------------------------


def test_registry_names_classes_and_rebuild_from_config() -> None:
    assert FUSION_NAMES == (
        "concat",
        "mean",
        "weighted",
        "gated",
        "attention",
        "cross_attention",
        "film",
    )
    classes = (
        ConcatFusion,
        MeanFusion,
        WeightedSumFusion,
        GatedFusion,
        ModalityAttentionFusion,
        CrossAttentionFusion,
        FiLMFusion,
    )
    for name, cls in zip(FUSION_NAMES, classes):
        fusion = _fusion(name)
        assert type(fusion) is cls and fusion.config["name"] == name
        rebuilt = build_fusion(**fusion.config)
        assert type(rebuilt) is cls and rebuilt.config == fusion.config
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in fusion.state_dict().items()
        }


def test_registry_errors_name_the_valid_choices() -> None:
    valid = "concat, mean, weighted, gated, attention, cross_attention, film"
    with pytest.raises(ValueError, match=f"unknown fusion 'sum'; valid names: {valid}"):
        build_fusion("sum", IMAGE_DIM, TEXT_DIM, OUT_DIM)
    with pytest.raises(
        TypeError, match="'mean' got unknown option.*hidden_dim.*accepts: none"
    ):
        build_fusion("mean", IMAGE_DIM, TEXT_DIM, OUT_DIM, hidden_dim=4)
    with pytest.raises(
        TypeError, match="heads.*accepts: num_heads, hidden_dim, dropout"
    ):
        build_fusion("cross_attention", IMAGE_DIM, TEXT_DIM, OUT_DIM, heads=4)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="out_dim must be a positive integer"):
        MeanFusion(IMAGE_DIM, TEXT_DIM, 0)
    with pytest.raises(ValueError, match="hidden_dim"):
        ConcatFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM, hidden_dim=0)
    with pytest.raises(ValueError, match=r"num_heads \(5\) must divide out_dim \(12\)"):
        CrossAttentionFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM, num_heads=5)
    with pytest.raises(ValueError, match="dropout"):
        CrossAttentionFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM, dropout=1.0)
    with pytest.raises(ValueError, match="activation must be one of relu, identity"):
        FiLMFusion(IMAGE_DIM, TEXT_DIM, OUT_DIM, activation="tanh")


def test_bad_inputs_get_clear_errors() -> None:
    image, text, image_mask, text_mask = _batch(seed=21)
    fusion = _fusion("gated")
    with pytest.raises(ValueError, match="image_tokens have 7 features.*image_dim=8"):
        fusion(image[..., :7], text)
    with pytest.raises(ValueError, match=r"text_tokens must have shape \[B, N, 6\]"):
        fusion(image, text.unsqueeze(0))
    with pytest.raises(ValueError, match="same batch size"):
        fusion(image, text[:2])
    with pytest.raises(ValueError, match="image_mask has shape"):
        fusion(image, text, image_mask[:, :3])
    with pytest.raises(ValueError, match="at least one real text token"):
        fusion(image, text, image_mask, torch.zeros_like(text_mask))
    with pytest.raises(TypeError, match="text_mask must be boolean"):
        fusion(image, text, image_mask, text_mask.float())
    with pytest.raises(TypeError, match="image_tokens must be a floating-point tensor"):
        fusion(image.long(), text)
    integer_mask = fusion(image, text, image_mask.long(), text_mask.long())
    torch.testing.assert_close(
        integer_mask, fusion(image, text, image_mask, text_mask), rtol=0, atol=0
    )


# --- what fusion can learn: an image-text interaction (XOR)
# --------------------------------------

CORNERS = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])


def _xor_data(groups: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Label = (image bit != text bit); the bits are feature 0 of every real token
    (+-1), the rest is noise.

    Examples come in groups of four that share all noise and masks and differ only in
    the two bits, one per corner of {+-1}^2. Padded tokens carry the *opposite* bit, to
    punish leaks.
    """
    g = torch.Generator().manual_seed(seed)
    n_image, n_text = 4, 5
    image = torch.randn(groups, n_image, IMAGE_DIM, generator=g)
    text = torch.randn(groups, n_text, TEXT_DIM, generator=g)
    image_mask = torch.rand(groups, n_image, generator=g) < 0.6
    image_mask[torch.arange(groups), torch.randint(n_image, (groups,), generator=g)] = (
        True
    )
    text_mask = torch.arange(n_text) < torch.randint(
        1, n_text + 1, (groups, 1), generator=g
    )
    image, text, image_mask, text_mask = (
        x.repeat_interleave(4, dim=0) for x in (image, text, image_mask, text_mask)
    )
    bits = CORNERS.repeat(groups, 1)
    image[..., 0] = torch.where(image_mask, bits[:, :1], -bits[:, :1])
    text[..., 0] = torch.where(text_mask, bits[:, 1:], -bits[:, 1:])
    labels = (bits[:, 0] != bits[:, 1]).float()
    return image, text, image_mask, text_mask, labels


def _train_on_xor(name: str, steps: int = 150, **options: object) -> float:
    """Train ``fusion -> Linear(out_dim, 1)`` on XOR with Adam; return accuracy on fresh
    grouped data."""
    torch.manual_seed(0)
    fusion = build_fusion(name, IMAGE_DIM, TEXT_DIM, 16, **options)
    head = nn.Linear(16, 1)
    optimizer = torch.optim.Adam([*fusion.parameters(), *head.parameters()], lr=1e-2)
    image, text, image_mask, text_mask, labels = _xor_data(512, seed=1)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        idx = torch.randint(len(labels), (128,), generator=g)
        logits = head(
            fusion(image[idx], text[idx], image_mask[idx], text_mask[idx])
        ).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    image, text, image_mask, text_mask, labels = _xor_data(256, seed=3)
    with torch.no_grad():
        predictions = head(fusion(image, text, image_mask, text_mask)).squeeze(-1) > 0
    return (predictions.float() == labels).float().mean().item()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("concat", {"hidden_dim": 32}),
        ("cross_attention", {"num_heads": 2, "hidden_dim": 32}),
    ],
)
def test_interaction_fusions_learn_xor(name: str, options: dict) -> None:
    assert _train_on_xor(name, **options) > 0.9


@pytest.mark.parametrize(
    ("name", "options"), [("mean", {}), ("weighted", {}), ("concat", {})]
)
def test_affine_fusions_with_a_linear_head_cannot_learn_xor(
    name: str, options: dict
) -> None:
    """Proof that accuracy <= 3/4 on grouped data, whatever the weights.

    These fusions are affine in the pooled inputs, and so is the head, so within a group
    (same noise and masks) the logit is ``g(s_i, s_t) = c + a s_i + b s_t`` with no
    ``s_i s_t`` term. Getting all four corners right needs ``g(+,-) > 0``,
    ``g(-,+) > 0``, ``g(+,+) <= 0`` and ``g(-,-) <= 0``; but
    ``g(+,-) + g(-,+) = 2c = g(+,+) + g(-,-)``, so the first pair sums to more than zero
    and the second to at most zero: impossible. At most 3 of each 4 are right.
    """
    assert _train_on_xor(name, **options) <= 0.75


# --- CUDA
# --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", FUSION_NAMES)
def test_cuda_matches_cpu(name: str) -> None:
    image, text, image_mask, text_mask = _batch(seed=22)
    fusion = _fusion(name)
    expected = fusion(image, text, image_mask, text_mask)
    on_gpu = fusion.cuda()(
        image.cuda(), text.cuda(), image_mask.cuda(), text_mask.cuda()
    )
    torch.testing.assert_close(on_gpu.cpu(), expected, rtol=1e-3, atol=1e-3)

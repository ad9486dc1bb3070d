"""The CLIP loss against an independent loop formulation, closed forms and finite
differences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from numerics import central_differences

from crossalign.losses import ClipLoss, clip_logits, clip_loss


def _logsumexp(values: list[float]) -> float:
    """log(sum(exp(v))) in plain Python, shifted by the maximum for stability."""
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def reference_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE written out with Python loops: -log softmax of the matching
    pair, both ways."""
    n = image.shape[0]
    rows = image.tolist()
    cols = text.tolist()
    logits = [
        [scale * math.fsum(a * b for a, b in zip(rows[i], cols[j])) for j in range(n)]
        for i in range(n)
    ]
    image_to_text = [_logsumexp(logits[i]) - logits[i][i] for i in range(n)]
    text_to_image = [
        _logsumexp([logits[i][j] for i in range(n)]) - logits[j][j] for j in range(n)
    ]
    return (math.fsum(image_to_text) / n + math.fsum(text_to_image) / n) / 2


def _random_features(
    n: int, d: int, seed: int, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, L2-normalised image and text features of shape [n, d]."""
    gen = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=gen, dtype=dtype), dim=1)
    text = F.normalize(torch.randn(n, d, generator=gen, dtype=dtype), dim=1)
    return image, text


@pytest.mark.parametrize(
    ("n", "d", "scale", "seed"),
    [(1, 3, 10.0, 0), (2, 4, 1.0, 1), (7, 5, 14.3, 2), (16, 8, 100.0, 3)],
)
def test_clip_loss_matches_loop_reference(
    n: int, d: int, scale: float, seed: int
) -> None:
    image, text = _random_features(n, d, seed)
    got = clip_loss(image, text, torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx(
        reference_clip_loss(image, text, scale), rel=1e-12, abs=1e-12
    )


def test_clip_loss_float32_matches_loop_reference() -> None:
    image, text = _random_features(32, 16, seed=4, dtype=torch.float32)
    got = clip_loss(image, text, 1 / 0.07)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(
        reference_clip_loss(image, text, 1 / 0.07), rel=1e-5
    )


def test_swapping_modalities_keeps_the_loss_and_shuffling_pairs_changes_it() -> None:
    """Swapping the modalities transposes the logits, which leaves the symmetric loss
    unchanged."""
    image, text = _random_features(9, 6, seed=5)
    scale = torch.tensor(3.0, dtype=torch.float64)
    assert clip_loss(image, text, scale).item() == pytest.approx(
        clip_loss(text, image, scale).item(), rel=1e-14
    )
    shuffled = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    assert clip_loss(image[shuffled], text, scale).item() != pytest.approx(
        clip_loss(image, text, scale).item()
    )


@pytest.mark.parametrize(("n", "scale"), [(2, 5.0), (5, 5.0), (5, 30.0)])
def test_orthonormal_pairs_closed_form(n: int, scale: float) -> None:
    """Matching pairs on orthonormal axes: every CE equals log(1 + (N - 1)
    exp(-scale))."""
    eye = torch.eye(n, dtype=torch.float64)
    expected = math.log1p((n - 1) * math.exp(-scale))
    assert clip_loss(eye, eye.clone(), scale).item() == pytest.approx(
        expected, rel=1e-12
    )


def test_perfectly_aligned_with_large_scale_is_nearly_zero() -> None:
    eye = torch.eye(8, dtype=torch.float32)
    assert 0.0 <= clip_loss(eye, eye, 100.0).item() < 1e-30


@pytest.mark.parametrize("n", [1, 2, 10, 64])
def test_identical_features_give_log_n(n: int) -> None:
    """With every feature the same, each caption is as likely as any other: loss = log
    N."""
    same = F.normalize(torch.ones(n, 4, dtype=torch.float64), dim=1)
    assert clip_loss(same, same, 42.0).item() == pytest.approx(math.log(n), abs=1e-12)


def test_features_are_used_as_given_not_renormalised() -> None:
    """Doubling the image features must act like doubling the scale, i.e. no hidden L2
    normalisation."""
    image, text = _random_features(6, 5, seed=6)
    assert clip_loss(2 * image, text, 3.0).item() == pytest.approx(
        clip_loss(image, text, 6.0).item(), rel=1e-13
    )
    assert clip_loss(2 * image, text, 3.0).item() != pytest.approx(
        clip_loss(image, text, 3.0).item(), rel=1e-3
    )


def test_clip_logits_are_scaled_similarities_and_transpose() -> None:
    image, text = _random_features(4, 3, seed=7)
    per_image, per_text = clip_logits(image, text, 2.5)
    for i in range(4):
        for j in range(4):
            assert per_image[i, j].item() == pytest.approx(
                2.5 * float(image[i] @ text[j]), rel=1e-13
            )
    assert torch.equal(per_text, per_image.T)


def test_gradients_match_finite_differences() -> None:
    image, text = _random_features(5, 4, seed=8)
    image = image.clone().requires_grad_(True)
    text = text.clone().requires_grad_(True)
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    clip_loss(image, text, scale).backward()

    def loss() -> torch.Tensor:
        with torch.no_grad():
            return clip_loss(image, text, scale)

    with torch.no_grad():
        numeric_image = central_differences(loss, image.detach())
        numeric_text = central_differences(loss, text.detach())
        numeric_scale = central_differences(loss, scale.detach())
    torch.testing.assert_close(image.grad, numeric_image, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(text.grad, numeric_text, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(scale.grad, numeric_scale, rtol=1e-6, atol=1e-8)
    assert scale.grad.abs().item() > 1e-3


def test_gradient_through_learnable_log_scale() -> None:
    """d loss / d log_scale = scale * d loss / d scale when the module passes
    log_scale.exp()."""
    image, text = _random_features(6, 3, seed=9)
    log_scale = torch.tensor(
        math.log(1 / 0.07), dtype=torch.float64, requires_grad=True
    )
    clip_loss(image, text, log_scale.exp()).backward()

    def loss_at(value: float) -> float:
        return clip_loss(image, text, math.exp(value)).item()

    eps = 1e-6
    numeric = (loss_at(log_scale.item() + eps) - loss_at(log_scale.item() - eps)) / (
        2 * eps
    )
    assert log_scale.grad.item() == pytest.approx(numeric, rel=1e-6)


def test_module_without_process_group_equals_function() -> None:
    image, text = _random_features(11, 7, seed=10)
    scale = torch.tensor(20.0, dtype=torch.float64)
    assert torch.equal(ClipLoss()(image, text, scale), clip_loss(image, text, scale))


@pytest.mark.parametrize(
    ("image_shape", "text_shape", "message"),
    [
        ((4,), (4, 3), "image_features must be 2-D"),
        ((4, 3), (4, 3, 1), "text_features must be 2-D"),
        ((4, 3), (5, 3), "same number of pairs"),
        ((4, 3), (4, 2), "same embedding space"),
        ((0, 3), (0, 3), "empty batch"),
    ],
)
def test_shape_errors(image_shape, text_shape, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clip_loss(torch.zeros(image_shape), torch.zeros(text_shape), 1.0)
    with pytest.raises(ValueError, match=message):
        ClipLoss()(torch.zeros(image_shape), torch.zeros(text_shape), 1.0)


def test_scale_errors() -> None:
    image, text = _random_features(3, 2, seed=11)
    with pytest.raises(ValueError, match="logit_scale must be a scalar"):
        clip_loss(image, text, torch.ones(3, dtype=torch.float64))
    with pytest.raises(
        TypeError, match="logit_scale must be a float or a scalar tensor"
    ):
        clip_loss(image, text, "10")
    with pytest.raises(TypeError, match="image_features must be a torch.Tensor"):
        clip_loss(image.tolist(), text, 1.0)


def test_one_element_scale_tensor_is_accepted() -> None:
    image, text = _random_features(3, 2, seed=12)
    got = clip_loss(image, text, torch.tensor([5.0], dtype=torch.float64))
    assert got.shape == ()
    assert got.item() == pytest.approx(reference_clip_loss(image, text, 5.0), rel=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_bf16_autocast_is_close() -> None:
    image, text = _random_features(64, 32, seed=13, dtype=torch.float32)
    scale = torch.tensor(1 / 0.07)
    cpu = clip_loss(image, text, scale).item()
    cuda = clip_loss(image.cuda(), text.cuda(), scale.cuda()).item()
    assert cuda == pytest.approx(cpu, rel=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = clip_loss(image.cuda(), text.cuda(), scale.cuda())
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(cpu, rel=5e-2)

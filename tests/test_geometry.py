"""Tests for crossalign.metrics.geometry against brute-force loops, closed forms and
NumPy's SVD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossalign.metrics.geometry import (
    alignment,
    geometry_report,
    modality_gap,
    modality_gap_vector,
    pca,
    uniformity,
)


def unit_vectors(
    n: int, d: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(
        torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1
    ).to(dtype)


def brute_force_alignment(x: torch.Tensor, y: torch.Tensor, alpha: float) -> float:
    total = 0.0
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        distance = math.sqrt(sum((a - b) ** 2 for a, b in zip(row_x, row_y)))
        total += distance**alpha
    return total / len(x)


def brute_force_uniformity(x: torch.Tensor, t: float) -> float:
    rows = x.tolist()
    total, count = 0.0, 0
    for i, row_i in enumerate(rows):
        for j, row_j in enumerate(rows):
            if i != j:
                total += math.exp(-t * sum((a - b) ** 2 for a, b in zip(row_i, row_j)))
                count += 1
    return math.log(total / count)


def sign_fixed_numpy_pca(
    x: np.ndarray, k: int, center: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA with NumPy's SVD and the documented sign rule (largest-|loading| entry
    positive)."""
    data = x - x.mean(axis=0) if center else x
    _, singular_values, vh = np.linalg.svd(data, full_matrices=False)
    components = vh[:k].copy()
    for row in components:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return (
        data @ components.T,
        components,
        singular_values[:k] ** 2 / np.sum(singular_values**2),
    )


# --------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.5])
def test_alignment_equals_a_brute_force_loop(alpha):
    x, y = unit_vectors(7, 5, seed=0), unit_vectors(7, 5, seed=1)
    assert alignment(x, y, alpha=alpha) == pytest.approx(
        brute_force_alignment(x, y, alpha), rel=1e-12
    )


def test_alignment_in_float32_is_close_to_the_float64_loop():
    x, y = unit_vectors(9, 16, seed=2), unit_vectors(9, 16, seed=3)
    assert alignment(x.float(), y.float()) == pytest.approx(
        brute_force_alignment(x, y, 2.0), rel=1e-5
    )


def test_alignment_closed_forms():
    x = unit_vectors(6, 4, seed=4)
    assert alignment(x, x) == 0.0
    assert alignment(x, -x) == pytest.approx(4.0, rel=1e-12)
    assert alignment(x, -x, alpha=3.0) == pytest.approx(8.0, rel=1e-12)
    # Orthogonal pairs are sqrt(2) apart: mean squared distance 2.
    e1, e2 = torch.eye(3, dtype=torch.float64)[:2]
    assert alignment(torch.stack([e1, e2]), torch.stack([e2, e1])) == pytest.approx(
        2.0, rel=1e-12
    )


# --------------------------------------------------------------------------- uniformity


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniformity_equals_a_brute_force_loop(t):
    x = unit_vectors(9, 4, seed=5)
    assert uniformity(x, t=t) == pytest.approx(
        brute_force_uniformity(x, t), rel=1e-12, abs=1e-12
    )


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 9, 100])
def test_uniformity_does_not_depend_on_the_chunk_size(chunk_size):
    x = unit_vectors(9, 6, seed=6)
    assert uniformity(x, chunk_size=chunk_size) == pytest.approx(
        brute_force_uniformity(x, 2.0), rel=1e-12
    )


def test_uniformity_in_float32_is_close_to_the_float64_loop():
    x = unit_vectors(12, 8, seed=7)
    assert uniformity(x.float()) == pytest.approx(
        brute_force_uniformity(x, 2.0), rel=1e-5
    )


@pytest.mark.parametrize("t", [0.5, 2.0, 1000.0])
def test_uniformity_closed_forms(t):
    e1, e2, e3 = torch.eye(3, dtype=torch.float64)
    # Two antipodal points: one squared distance, 4, in both orders.
    assert uniformity(torch.stack([e1, -e1]), t=t) == pytest.approx(-4.0 * t, rel=1e-12)
    # An orthonormal basis: every squared distance is 2.
    assert uniformity(torch.stack([e1, e2, e3]), t=t) == pytest.approx(
        -2.0 * t, rel=1e-12
    )
    # {e1, -e1, e2}: ordered pairs (e1, -e1) twice at 4, the four others at 2.
    expected = (
        math.log((2 * math.exp(-4 * t) + 4 * math.exp(-2 * t)) / 6)
        if t < 100
        else -2.0 * t + math.log(4 / 6)
    )
    assert uniformity(torch.stack([e1, -e1, e2]), t=t) == pytest.approx(
        expected, rel=1e-12
    )


def test_uniformity_of_identical_points_is_zero():
    x = unit_vectors(1, 5, seed=8).repeat(4, 1)
    assert uniformity(x) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- modality
# gap


def test_modality_gap_of_a_known_shift_after_renormalising():
    # Texts (0, +-1, 0); images are the texts shifted by (s, 0, 0) and renormalised: (s,
    # +-1, 0) / sqrt(1 + s^2), so the image centroid is (s / sqrt(1 + s^2), 0, 0) and
    # the text centroid is the origin. With s = sqrt(3) the gap is sqrt(3) / 2.
    text = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    shift = torch.tensor([math.sqrt(3.0), 0.0, 0.0], dtype=torch.float64)
    image = F.normalize(text + shift, dim=-1)
    assert modality_gap(image, text) == pytest.approx(math.sqrt(3.0) / 2, rel=1e-12)
    torch.testing.assert_close(
        modality_gap_vector(image, text),
        torch.tensor([math.sqrt(3.0) / 2, 0.0, 0.0], dtype=torch.float64),
    )
    torch.testing.assert_close(
        modality_gap_vector(text, image), -modality_gap_vector(image, text)
    )


def test_modality_gap_weights_each_set_by_its_own_size():
    text = torch.tensor(
        [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64
    )
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(
        modality_gap_vector(image, text), torch.tensor([0.5, 0.5], dtype=torch.float64)
    )
    assert modality_gap(image, text) == pytest.approx(math.sqrt(0.5), rel=1e-12)


def test_modality_gap_is_zero_for_identical_sets_and_invariant_to_rotation():
    image, text = unit_vectors(10, 6, seed=9), unit_vectors(14, 6, seed=10)
    assert modality_gap(image, image) == 0.0
    rotation, _ = torch.linalg.qr(
        torch.randn(
            6, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64
        )
    )
    assert modality_gap(image @ rotation, text @ rotation) == pytest.approx(
        modality_gap(image, text), rel=1e-12
    )
    expected = np.linalg.norm(image.numpy().mean(axis=0) - text.numpy().mean(axis=0))
    assert modality_gap(image, text) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- pca


def anisotropic_data(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.2, d, dtype=torch.float64)
    return torch.randn(n, d, generator=generator, dtype=torch.float64) * scales + 5.0


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_pca_matches_numpy_svd_with_the_documented_signs(k, center):
    x = anisotropic_data(20, 6, seed=12)
    projected, components, ratio = pca(x, k=k, center=center)
    expected_projected, expected_components, expected_ratio = sign_fixed_numpy_pca(
        x.numpy(), k, center
    )
    np.testing.assert_allclose(
        components.numpy(), expected_components, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        projected.numpy(), expected_projected, rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(ratio.numpy(), expected_ratio, rtol=1e-10)
    assert (
        projected.shape == (20, k)
        and components.shape == (k, 6)
        and ratio.shape == (k,)
    )


def test_pca_components_are_orthonormal_with_the_largest_loading_positive():
    _, components, ratio = pca(anisotropic_data(30, 5, seed=13), k=5)
    torch.testing.assert_close(
        components @ components.T, torch.eye(5, dtype=torch.float64)
    )
    largest = components.gather(1, components.abs().argmax(dim=1, keepdim=True))
    assert bool((largest > 0).all())
    assert bool((ratio[:-1] >= ratio[1:]).all())
    assert float(ratio.sum()) == pytest.approx(1.0, rel=1e-12)


def test_pca_of_negated_data_keeps_the_components_and_negates_the_projection():
    x = anisotropic_data(15, 4, seed=14)
    projected, components, ratio = pca(x, k=3)
    flipped_projected, flipped_components, flipped_ratio = pca(-x, k=3)
    torch.testing.assert_close(flipped_components, components)
    torch.testing.assert_close(flipped_projected, -projected)
    torch.testing.assert_close(flipped_ratio, ratio)


def test_pca_explained_variance_ratio_sums_below_one_for_full_rank_data():
    ratio = pca(anisotropic_data(25, 6, seed=15), k=2)[2]
    assert 0.0 < float(ratio.sum()) < 1.0


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_pca_of_rank_k_data_explains_everything_and_reconstructs_it(rank):
    generator = torch.Generator().manual_seed(16)
    coefficients = torch.randn(12, rank, generator=generator, dtype=torch.float64)
    directions = torch.randn(rank, 7, generator=generator, dtype=torch.float64)
    offset = torch.randn(1, 7, generator=generator, dtype=torch.float64)
    x = coefficients @ directions + offset
    projected, components, ratio = pca(x, k=rank)
    assert float(ratio.sum()) == pytest.approx(1.0, rel=1e-12)
    torch.testing.assert_close(projected @ components + x.mean(dim=0), x)


def test_pca_keeps_a_float32_input_in_float32():
    projected, components, ratio = pca(anisotropic_data(10, 3, seed=17).float())
    assert projected.dtype == components.dtype == ratio.dtype == torch.float32


# ---------------------------------------------------------------------------
# geometry_report


def test_geometry_report_for_row_pairs_equals_the_separate_measures():
    image, text = unit_vectors(8, 5, seed=18), unit_vectors(8, 5, seed=19)
    report = geometry_report(image, text)
    assert report == pytest.approx(
        {
            "alignment": brute_force_alignment(image, text, 2.0),
            "uniformity_image": brute_force_uniformity(image, 2.0),
            "uniformity_text": brute_force_uniformity(text, 2.0),
            "uniformity_joint": brute_force_uniformity(torch.cat([image, text]), 2.0),
            "modality_gap": modality_gap(image, text),
        },
        rel=1e-12,
    )


def test_geometry_report_with_several_captions_per_image():
    image, text = unit_vectors(3, 4, seed=20), unit_vectors(7, 4, seed=21)
    owners = [0, 0, 1, 1, 1, 2, 2]
    report = geometry_report(image, text, owners, alpha=1.0, t=3.0)
    assert report["alignment"] == pytest.approx(
        brute_force_alignment(image[owners], text, 1.0), rel=1e-12
    )
    # Each image counts once in its uniformity, not once per caption.
    assert report["uniformity_image"] == pytest.approx(
        brute_force_uniformity(image, 3.0), rel=1e-12
    )
    assert report["uniformity_joint"] == pytest.approx(
        brute_force_uniformity(torch.cat([image, text]), 3.0), rel=1e-12
    )
    assert report["modality_gap"] == pytest.approx(modality_gap(image, text), rel=1e-12)


# --------------------------------------------------------------------------- errors


def test_non_unit_rows_are_rejected_with_the_row_and_the_fix():
    x = unit_vectors(4, 3, seed=22)
    scaled = x.clone()
    scaled[2] *= 1.01
    with pytest.raises(
        ValueError, match=r"y row 2 has L2 norm 1\.0100.*normalize\(y, dim=-1\)"
    ):
        alignment(x, scaled)
    with pytest.raises(ValueError, match="x row 2 has L2 norm"):
        uniformity(scaled)
    with pytest.raises(ValueError, match="text_emb row 2"):
        modality_gap(x, scaled)
    with pytest.raises(ValueError, match="image_emb row 2"):
        geometry_report(scaled, x)
    # Within the tolerance is accepted.
    nearly = x.clone()
    nearly[0] *= 1.0005
    assert alignment(nearly, nearly) == 0.0


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda x: alignment(x, x[:3]), ValueError, "same number of rows"),
        (
            lambda x: alignment(x, unit_vectors(4, 5, seed=0)),
            ValueError,
            "same embedding size",
        ),
        (
            lambda x: alignment(x, x, alpha=0),
            ValueError,
            "alpha must be a positive number",
        ),
        (lambda x: alignment(x.numpy(), x), TypeError, "x must be a torch.Tensor"),
        (lambda x: uniformity(x[:1]), ValueError, "x needs at least 2 row"),
        (lambda x: uniformity(x, t=-1.0), ValueError, "t must be a positive number"),
        (
            lambda x: uniformity(x, t=math.nan),
            ValueError,
            "t must be a positive number",
        ),
        (
            lambda x: uniformity(x, chunk_size=0),
            ValueError,
            "chunk_size must be a positive integer",
        ),
        (lambda x: uniformity(x[0]), ValueError, r"x must be 2-D"),
        (lambda x: uniformity(x.long()), TypeError, "floating-point"),
        (
            lambda x: modality_gap(x, unit_vectors(5, 3, seed=0)),
            ValueError,
            "same embedding size",
        ),
        (
            lambda x: pca(x, k=0),
            ValueError,
            r"k must be an integer between 1 and min\(N, D\) = 4",
        ),
        (lambda x: pca(x, k=5), ValueError, "k must be an integer"),
        (lambda x: pca(x[:1].repeat(4, 1)), ValueError, "x has no variance"),
        (
            lambda x: pca(torch.zeros(3, 2), center=False),
            ValueError,
            "x has no variance",
        ),
        (lambda x: geometry_report(x, x[:3]), ValueError, "give text_to_image"),
        (
            lambda x: geometry_report(x, x, [0, 1, 2, 3]),
            ValueError,
            r"one image index per caption \(5\)",
        ),
        (
            lambda x: geometry_report(x, x, [0, 1, 2, 5, 4]),
            ValueError,
            r"text_to_image\[3\] = 5",
        ),
        (
            lambda x: geometry_report(x, x, [0.0, 1.0, 2.0, 3.0, 4.0]),
            TypeError,
            "integer image indices",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call(unit_vectors(5, 4, seed=23))


def test_nan_rows_are_named():
    x = unit_vectors(4, 3, seed=24)
    x[1, 0] = math.nan
    with pytest.raises(ValueError, match="x row 1 contains NaN"):
        pca(x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_equal_cpu_results():
    image, text = unit_vectors(300, 32, seed=25), unit_vectors(300, 32, seed=26)
    cpu = geometry_report(image, text)
    cuda = geometry_report(image.cuda(), text.cuda())
    assert cuda == pytest.approx(cpu, rel=1e-10, abs=1e-12)
    half = geometry_report(image.cuda().half(), text.cuda().half())
    assert half == pytest.approx(cpu, rel=2e-3, abs=2e-3)
    cpu_pca, cuda_pca = pca(image, k=3), pca(image.cuda(), k=3)
    for cpu_part, cuda_part in zip(cpu_pca, cuda_pca):
        torch.testing.assert_close(cuda_part.cpu(), cpu_part)

"""Orthogonal Procrustes and CCA (crossalign.linear) against planted truth and
independent NumPy code.

* Procrustes: a planted orthogonal map is recovered; the result equals SciPy's
  ``orthogonal_procrustes`` (or a NumPy SVD when SciPy is absent); no nearby rotation
  does better (a check that does not use the SVD formula at all).
* CCA: data whose *sample* covariance is exactly a covariance built here, with known
  canonical correlations, so the fitted correlations must equal the planted ones to
  rounding (1e-10 with ``reg=0``; the default ``reg=1e-4`` shrinks them by a few 1e-4,
  inside 1e-3). Fitting on random samples instead carries sampling error of about
  ``(1 - rho^2) / sqrt(N)`` (0.002 for rho = 0.3 at N = 200,000), so a 1e-3 tolerance
  would be wrong there; that test uses a tolerance derived from the sampling error. A
  NumPy implementation with a different whitening (symmetric inverse square roots from
  ``eigh``) is the second reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossalign.linear import CCA, ProcrustesAligner, orthogonal_procrustes

PLANTED_RHO = (0.9, 0.6, 0.3)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_orthogonal(dim: int, seed: int) -> torch.Tensor:
    """A random orthogonal matrix: Q of the QR of a Gaussian matrix, column signs fixed
    by R."""
    q, r = torch.linalg.qr(
        torch.randn(dim, dim, generator=_generator(seed), dtype=torch.float64)
    )
    return q * torch.sign(torch.diagonal(r))


def _reference_procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """SciPy's orthogonal Procrustes when SciPy is importable, else the polar factor by
    NumPy SVD."""
    try:
        from scipy.linalg import orthogonal_procrustes as scipy_procrustes
    except ImportError:
        u, _, vh = np.linalg.svd(source.T @ target)
        return u @ vh
    return scipy_procrustes(source, target)[0]


# --------------------------------------------------------------------------- Procrustes


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_procrustes_recovers_planted_orthogonal_map(dtype: torch.dtype) -> None:
    gen = _generator(0)
    planted = _random_orthogonal(16, seed=1)
    source = torch.randn(200, 16, generator=gen, dtype=torch.float64)
    target = source @ planted + 1e-7 * torch.randn(
        200, 16, generator=gen, dtype=torch.float64
    )
    weight = orthogonal_procrustes(source.to(dtype), target.to(dtype))
    assert weight.dtype == dtype
    assert (weight.double() - planted).abs().max().item() < 1e-5


def test_procrustes_recovers_a_reflection() -> None:
    planted = _random_orthogonal(5, seed=2)
    if torch.linalg.det(planted) > 0:
        planted[:, 0] = -planted[:, 0]
    assert torch.linalg.det(planted).item() == pytest.approx(-1.0)
    source = torch.randn(50, 5, generator=_generator(3), dtype=torch.float64)
    torch.testing.assert_close(
        orthogonal_procrustes(source, source @ planted), planted, rtol=0, atol=1e-10
    )


def test_procrustes_matches_scipy_or_numpy_svd() -> None:
    gen = _generator(4)
    source = torch.randn(40, 7, generator=gen, dtype=torch.float64)
    target = torch.randn(40, 7, generator=gen, dtype=torch.float64)
    expected = _reference_procrustes(source.numpy(), target.numpy())
    np.testing.assert_allclose(
        orthogonal_procrustes(source, target).numpy(), expected, rtol=0, atol=1e-12
    )


def test_procrustes_beats_every_nearby_orthogonal_matrix() -> None:
    """Local optimality, checked without the SVD formula: turning W by a small rotation
    never helps."""
    gen = _generator(5)
    source = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    target = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    weight = orthogonal_procrustes(source, target)
    torch.testing.assert_close(
        weight.T @ weight, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-12
    )
    best = torch.linalg.norm(source @ weight - target).item()
    for _ in range(50):
        skew = torch.randn(6, 6, generator=gen, dtype=torch.float64)
        turn = torch.linalg.matrix_exp(1e-2 * (skew - skew.T))
        assert torch.linalg.norm(source @ weight @ turn - target).item() > best


def test_procrustes_rejects_bad_inputs() -> None:
    a = torch.randn(10, 4)
    with pytest.raises(ValueError, match="one width"):
        orthogonal_procrustes(a, torch.randn(10, 5))
    with pytest.raises(ValueError, match="same number of paired rows"):
        orthogonal_procrustes(a, torch.randn(9, 4))
    with pytest.raises(TypeError, match="floating-point"):
        orthogonal_procrustes(a, torch.ones(10, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        orthogonal_procrustes(a.numpy(), a)
    with pytest.raises(ValueError, match="NaN"):
        orthogonal_procrustes(a, torch.full((10, 4), float("nan")))
    with pytest.raises(ValueError, match="2-D"):
        orthogonal_procrustes(a[0], a[0])


def test_aligner_recovers_planted_similarity_transform() -> None:
    gen = _generator(6)
    planted = _random_orthogonal(8, seed=7)
    shift = torch.randn(8, generator=gen, dtype=torch.float64)
    source = torch.randn(100, 8, generator=gen, dtype=torch.float64) + 3.0
    target = 2.5 * source @ planted + shift
    aligner = ProcrustesAligner(center=True, scale=True).fit(source, target)
    torch.testing.assert_close(aligner.weight, planted, rtol=0, atol=1e-10)
    assert aligner.scale_factor.item() == pytest.approx(2.5, abs=1e-12)
    torch.testing.assert_close(aligner.transform(source), target, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        aligner.inverse_transform(target), source, rtol=0, atol=1e-10
    )


def test_aligner_scale_is_the_least_squares_scale() -> None:
    """For noisy data the fitted scale is <A, B> / <A, A> with A the rotated centred
    source."""
    gen = _generator(8)
    source = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    target = 0.3 * source @ _random_orthogonal(5, seed=9) + 0.2 * torch.randn(
        60, 5, generator=gen, dtype=torch.float64
    )
    aligner = ProcrustesAligner(center=True, scale=True).fit(source, target)
    rotated = (source - source.mean(0)) @ aligner.weight
    centred_target = target - target.mean(0)
    expected = (rotated * centred_target).sum() / (rotated * rotated).sum()
    assert aligner.scale_factor.item() == pytest.approx(expected.item(), rel=1e-12)


def test_aligner_without_centring_is_plain_procrustes() -> None:
    gen = _generator(10)
    source = torch.randn(30, 4, generator=gen, dtype=torch.float64) + 1.0
    target = torch.randn(30, 4, generator=gen, dtype=torch.float64) - 2.0
    aligner = ProcrustesAligner(center=False).fit(source, target)
    weight = orthogonal_procrustes(source, target)
    torch.testing.assert_close(aligner.weight, weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        aligner.transform(source), source @ weight, rtol=0, atol=1e-12
    )


def test_aligner_keeps_input_dtype_and_checks_use() -> None:
    aligner = ProcrustesAligner()
    with pytest.raises(RuntimeError, match="fit"):
        aligner.transform(torch.randn(3, 4))
    aligner.fit(torch.randn(20, 4), torch.randn(20, 4))
    out = aligner.transform(torch.randn(3, 4))
    assert out.dtype == torch.float32 and out.shape == (3, 4)
    with pytest.raises(ValueError, match="fitted on 4"):
        aligner.transform(torch.randn(3, 5))
    with pytest.raises(ValueError, match="no spread"):
        ProcrustesAligner(scale=True).fit(torch.ones(5, 2), torch.randn(5, 2))


# --------------------------------------------------------------------------- CCA


def _planted_covariance(p: int, q: int, rho: tuple[float, ...]) -> torch.Tensor:
    """Covariance of latent (a, noise_x, b, noise_y): identity, except corr(a_i, b_i) =
    rho_i."""
    cov = torch.eye(p + q, dtype=torch.float64)
    for i, r in enumerate(rho):
        cov[i, p + i] = cov[p + i, i] = r
    return cov


def _data_with_exact_covariance(n: int, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """Rows whose sample covariance (1/(n-1)) equals ``cov`` to rounding: whiten noise
    exactly, then colour it."""
    noise = torch.randn(
        n, cov.shape[0], generator=_generator(seed), dtype=torch.float64
    )
    noise = noise - noise.mean(0)
    whitening = torch.linalg.cholesky(noise.T @ noise / (n - 1))
    white = torch.linalg.solve_triangular(whitening, noise.T, upper=False).T
    return white @ torch.linalg.cholesky(cov).T


def _planted_views(
    latent: torch.Tensor, p: int, q: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """X and Y through random invertible mixings plus offsets; CCA is invariant to
    both."""
    gen = _generator(seed)
    mix_x = torch.randn(p, p, generator=gen, dtype=torch.float64) + 2 * torch.eye(
        p, dtype=torch.float64
    )
    mix_y = torch.randn(q, q, generator=gen, dtype=torch.float64) + 2 * torch.eye(
        q, dtype=torch.float64
    )
    x = latent[:, :p] @ mix_x + torch.randn(p, generator=gen, dtype=torch.float64)
    y = latent[:, p:] @ mix_y + 5.0
    return x, y


def _numpy_cca(
    x: np.ndarray, y: np.ndarray, k: int, reg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference CCA: symmetric inverse square roots (eigh) and an SVD; returns (rho, A,
    B)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    n = x.shape[0]

    def inverse_sqrt(cov: np.ndarray) -> np.ndarray:
        cov = cov + reg * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        values, vectors = np.linalg.eigh(cov)
        return vectors @ np.diag(values**-0.5) @ vectors.T

    wx, wy = inverse_sqrt(xc.T @ xc / (n - 1)), inverse_sqrt(yc.T @ yc / (n - 1))
    u, s, vt = np.linalg.svd(wx @ (xc.T @ yc / (n - 1)) @ wy)
    return s[:k], wx @ u[:, :k], wy @ vt[:k].T


def test_cca_recovers_planted_correlations_exactly() -> None:
    p, q = 5, 4
    latent = _data_with_exact_covariance(
        400, _planted_covariance(p, q, PLANTED_RHO), seed=11
    )
    x, y = _planted_views(latent, p, q, seed=12)
    exact = CCA(n_components=4, reg=0.0).fit(x, y)
    truth = torch.tensor([*PLANTED_RHO, 0.0], dtype=torch.float64)
    torch.testing.assert_close(exact.correlations, truth, rtol=0, atol=1e-10)
    default = CCA(n_components=3).fit(x, y)
    assert (
        default.correlations - torch.tensor(PLANTED_RHO, dtype=torch.float64)
    ).abs().max().item() < 1e-3


def test_cca_on_random_samples_is_within_sampling_error() -> None:
    """N = 200,000 draws: the error of each rho is about (1 - rho^2)/sqrt(N) (1e-3 would
    be too tight)."""
    p, q, n = 5, 4, 200_000
    chol = torch.linalg.cholesky(_planted_covariance(p, q, PLANTED_RHO))
    latent = (
        torch.randn(n, p + q, generator=_generator(13), dtype=torch.float64) @ chol.T
    )
    x, y = _planted_views(latent, p, q, seed=14)
    fitted = CCA(n_components=3, reg=0.0).fit(x, y).correlations
    truth = torch.tensor(PLANTED_RHO, dtype=torch.float64)
    tolerance = 5 * (1 - truth**2) / n**0.5 + (p + q) / n
    assert bool(((fitted - truth).abs() < tolerance).all()), (fitted, truth, tolerance)


@pytest.mark.parametrize("reg", [0.0, 1e-2])
def test_cca_matches_numpy_reference(reg: float) -> None:
    gen = _generator(15)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    shared = randn(300, 3)
    x = torch.cat([shared, randn(300, 3)], 1) @ randn(6, 6)
    y = shared @ randn(3, 4) + randn(300, 4)
    cca = CCA(n_components=4, reg=reg).fit(x, y)
    rho, a, b = _numpy_cca(x.numpy(), y.numpy(), 4, reg)
    np.testing.assert_allclose(cca.correlations.numpy(), rho, rtol=0, atol=1e-10)
    signs = np.sign((cca.x_weights.numpy() * a).sum(0))
    np.testing.assert_allclose(cca.x_weights.numpy(), a * signs, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cca.y_weights.numpy(), b * signs, rtol=1e-8, atol=1e-10)


def test_cca_projections_are_white_and_pairwise_correlated() -> None:
    """With reg=0, each side's projections are centred, have identity covariance and
    cross-covariance diag(rho)."""
    gen = _generator(16)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    z = randn(500, 2)
    x = torch.cat([z, randn(500, 2)], 1)
    y = z @ randn(2, 3) + randn(500, 3)
    cca = CCA(n_components=3, reg=0.0).fit(x, y)
    u, v = cca.transform(x, y)
    means = torch.stack([u.mean(0), v.mean(0)])
    torch.testing.assert_close(
        means, torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=1e-12
    )
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(u.T @ u / 499, eye, rtol=0, atol=1e-10)
    torch.testing.assert_close(v.T @ v / 499, eye, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        u.T @ v / 499, torch.diag(cca.correlations), rtol=0, atol=1e-10
    )
    assert bool((cca.correlations[:-1] >= cca.correlations[1:]).all())


def test_cca_regularisation_is_scale_free() -> None:
    gen = _generator(17)
    x = torch.randn(100, 4, generator=gen, dtype=torch.float64)
    y = x[:, :2] + torch.randn(100, 2, generator=gen, dtype=torch.float64)
    reference = CCA(2, reg=0.1).fit(x, y).correlations
    rescaled = CCA(2, reg=0.1).fit(1000.0 * x, 1e-3 * y).correlations
    torch.testing.assert_close(rescaled, reference, rtol=1e-12, atol=0)


def test_cca_keeps_input_dtype() -> None:
    gen = _generator(18)
    x, y = torch.randn(50, 3, generator=gen), torch.randn(50, 2, generator=gen)
    cca = CCA(2).fit(x, y)
    assert cca.correlations.dtype == torch.float64
    u, v = cca.transform(x[:7], y[:5])
    assert (u.dtype, v.dtype, u.shape, v.shape) == (
        torch.float32,
        torch.float32,
        (7, 2),
        (5, 2),
    )


def test_cca_rejects_bad_arguments() -> None:
    x, y = torch.randn(10, 3), torch.randn(10, 2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_components"):
            CCA(bad)
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reg"):
            CCA(1, reg=bad)
    with pytest.raises(ValueError, match="exceeds min"):
        CCA(3).fit(x, y)
    with pytest.raises(ValueError, match="at least 2"):
        CCA(1).fit(x[:1], y[:1])
    with pytest.raises(ValueError, match="same number of paired rows"):
        CCA(1).fit(x, y[:9])
    with pytest.raises(RuntimeError, match="fit"):
        CCA(1).transform_x(x)
    with pytest.raises(ValueError, match="fitted on 3"):
        CCA(1).fit(x, y).transform_x(y)
    with pytest.raises(ValueError, match="constant"):
        CCA(1).fit(torch.ones(10, 3), y)


def test_cca_singular_covariance_needs_regularisation() -> None:
    gen = _generator(19)
    x = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    x = torch.cat([x, x[:, :1]], 1)  # a repeated column
    y = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    with pytest.raises(ValueError, match="singular.*reg > 0"):
        CCA(2, reg=0.0).fit(x, y)
    assert bool(torch.isfinite(CCA(2, reg=1e-3).fit(x, y).correlations).all())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    gen = _generator(20)
    x = torch.randn(500, 6, generator=gen)
    y = x[:, :3] @ torch.randn(3, 4, generator=gen) + torch.randn(500, 4, generator=gen)
    cpu = CCA(3).fit(x, y)
    gpu = CCA(3).fit(x.cuda(), y.cuda())
    torch.testing.assert_close(
        gpu.correlations.cpu(), cpu.correlations, rtol=0, atol=1e-10
    )
    u_gpu, v_gpu = gpu.transform(x.cuda(), y.cuda())
    assert u_gpu.device.type == "cuda" and v_gpu.device.type == "cuda"
    torch.testing.assert_close(u_gpu.cpu(), cpu.transform_x(x), rtol=1e-4, atol=1e-4)
    source, target = x[:, :4], y
    aligner_gpu = ProcrustesAligner(scale=True).fit(source.cuda(), target.cuda())
    aligner_cpu = ProcrustesAligner(scale=True).fit(source, target)
    torch.testing.assert_close(
        aligner_gpu.weight.cpu(), aligner_cpu.weight, rtol=0, atol=1e-10
    )
    assert orthogonal_procrustes(source.cuda(), target.cuda()).device.type == "cuda"
    assert aligner_gpu.transform(source.cuda()).device.type == "cuda"

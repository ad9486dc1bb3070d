"""Closed-form linear alignment: orthogonal Procrustes and regularised CCA.

Two classical answers to "find a linear map between two embedding spaces" that need no
gradient descent, only a singular value decomposition (SVD) of a small matrix:

* **Orthogonal Procrustes** (Schönemann, 1966). Given paired rows
  ``source[i] <-> target[i]`` in spaces of the same width, the orthogonal matrix ``W``
  minimising ``||source @ W - target||_F`` is ``U @ Vh``, where
  ``U S Vh = source.T @ target``. A rotation (or reflection) keeps lengths and angles,
  so the source space keeps its geometry and only turns to face the target.
* **Canonical correlation analysis** (Hotelling, 1936). Directions ``a_i`` for ``X`` and
  ``b_i`` for ``Y`` such that the projections ``X a_i`` and ``Y b_i`` are as correlated
  as possible, each pair uncorrelated with the earlier ones. Whiten each side (make its
  covariance the identity), and the canonical correlations are the singular values of
  the whitened cross-covariance. The two spaces may have different widths.

Both compute in float64 whatever the input precision (covariances of float32 features
lose digits quickly), on the inputs' device, and return results in the inputs' dtype and
device. Fitted parameters are kept in float64 on the device they were fitted on.
"""

from __future__ import annotations

import math

import torch

from crossalign.utils import is_integral, is_real

__all__ = ["CCA", "ProcrustesAligner", "orthogonal_procrustes"]


def _check_matrix(name: str, value: torch.Tensor) -> None:
    """Raise unless ``value`` is a non-empty, finite, floating-point [N, D] tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D [samples, features], got shape {tuple(value.shape)}"
        )
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(value.shape)}); it needs samples and "
            "features"
        )
    if not value.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {value.dtype}; convert "
            "it with .float()"
        )
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_pair(
    first_name: str, first: torch.Tensor, second_name: str, second: torch.Tensor
) -> None:
    """Raise unless two data matrices are valid and hold the same samples on the same
    device."""
    _check_matrix(first_name, first)
    _check_matrix(second_name, second)
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{first_name} and {second_name} must hold the same number of paired rows, "
            f"got {first.shape[0]} and {second.shape[0]}"
        )
    if first.device != second.device:
        raise ValueError(
            f"{first_name} is on {first.device} but {second_name} is on "
            f"{second.device}; move both to one device"
        )


def _check_width(name: str, value: torch.Tensor, expected: int) -> None:
    """Raise unless ``value`` is a valid data matrix with ``expected`` columns (as seen
    in fit)."""
    _check_matrix(name, value)
    if value.shape[1] != expected:
        raise ValueError(
            f"{name} has {value.shape[1]} features but the model was fitted on "
            f"{expected}"
        )


def orthogonal_procrustes(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return the orthogonal ``W`` [D, D] minimising ``||source @ W - target||_F``.

    ``source`` and ``target`` are paired rows ``[N, D]`` of the same width. With
    ``U S Vh = svd(source.T @ target)`` the minimiser is ``W = U @ Vh``: expanding the
    norm, only ``-2 trace(W.T @ source.T @ target)`` depends on ``W`` (orthogonality
    fixes ``||source @ W||``), and the trace is largest when ``W`` is the orthogonal
    polar factor of ``source.T @ target``. ``W`` may be a reflection (determinant -1);
    that is part of the orthogonal group and the usual choice for embedding alignment.

    No centring or scaling happens here: rows are rotated about the origin as given. Use
    :class:`ProcrustesAligner` to subtract means first and to fit a global scale. When
    ``source.T @ target`` is rank deficient (fewer than ``D`` independent pairs) the
    minimiser is not unique and one of them is returned.

    Computed in float64; returned in the promoted dtype of the inputs, on their device.
    """
    _check_pair("source", source, "target", target)
    if source.shape[1] != target.shape[1]:
        raise ValueError(
            f"source has {source.shape[1]} features and target {target.shape[1]}; "
            "orthogonal Procrustes "
            "needs one width (reduce both to a common width first, e.g. with CCA)"
        )
    cross = source.double().T @ target.double()
    u, _, vh = torch.linalg.svd(cross)
    return (u @ vh).to(torch.promote_types(source.dtype, target.dtype))


class ProcrustesAligner:
    """Map one embedding space onto another with a rotation, plus optional shift and
    scale.

    After :meth:`fit`, :meth:`transform` computes::

        target_hat = scale_factor * (source - source_mean) @ weight + target_mean

    where ``weight`` is orthogonal (:func:`orthogonal_procrustes` of the centred data).

    Args:
        center: subtract each side's mean before finding the rotation and add the target
            mean back afterwards (default). Without centring the map is a pure rotation
            about the origin, which suits spaces already centred or compared by cosine
            similarity.
        scale: also fit one global factor ``s = trace(S) / ||source_centred||_F^2`` (the
            least-squares scale given the rotation; ``S`` are the singular values of
            ``source_centred.T @ target_centred``). A rotation keeps norms, so this is
            what lets a space with larger norms map onto one with smaller norms. Default
            off.
    """

    def __init__(self, center: bool = True, scale: bool = False) -> None:
        self.center = bool(center)
        self.scale = bool(scale)
        self.weight: torch.Tensor | None = None
        self.source_mean: torch.Tensor | None = None
        self.target_mean: torch.Tensor | None = None
        self.scale_factor: torch.Tensor | None = None

    def __repr__(self) -> str:
        fitted = "unfitted" if self.weight is None else f"dim={self.weight.shape[0]}"
        return f"ProcrustesAligner(center={self.center}, scale={self.scale}, {fitted})"

    def fit(self, source: torch.Tensor, target: torch.Tensor) -> ProcrustesAligner:
        """Find the rotation (and shift, scale if enabled) taking ``source`` rows onto
        ``target`` rows."""
        _check_pair("source", source, "target", target)
        if source.shape[1] != target.shape[1]:
            raise ValueError(
                f"source has {source.shape[1]} features and target {target.shape[1]}; "
                "ProcrustesAligner needs one width"
            )
        src, tgt = source.double(), target.double()
        width = src.shape[1]
        if self.center:
            source_mean, target_mean = src.mean(dim=0), tgt.mean(dim=0)
        else:
            source_mean = target_mean = torch.zeros(
                width, dtype=torch.float64, device=src.device
            )
        src_centred, tgt_centred = src - source_mean, tgt - target_mean
        u, singular_values, vh = torch.linalg.svd(src_centred.T @ tgt_centred)
        scale_factor = torch.ones((), dtype=torch.float64, device=src.device)
        if self.scale:
            energy = src_centred.square().sum()
            if float(energy) == 0.0:
                raise ValueError(
                    "source has no spread around its mean; a scale cannot be fitted "
                    "(use scale=False)"
                )
            scale_factor = singular_values.sum() / energy
        self.weight = u @ vh
        self.source_mean, self.target_mean, self.scale_factor = (
            source_mean,
            target_mean,
            scale_factor,
        )
        return self

    def _fitted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fitted parameters, or a RuntimeError when :meth:`fit` has not run."""
        if (
            self.weight is None
            or self.source_mean is None
            or self.target_mean is None
            or self.scale_factor is None
        ):
            raise RuntimeError(
                "this ProcrustesAligner is not fitted yet; call fit(source, target) "
                "first"
            )
        return self.weight, self.source_mean, self.target_mean, self.scale_factor

    def transform(self, source: torch.Tensor) -> torch.Tensor:
        """Map ``source`` rows [N, D] into the target space (input dtype and device)."""
        weight, source_mean, target_mean, scale_factor = self._fitted()
        _check_width("source", source, weight.shape[0])
        device = source.device
        mapped = (
            scale_factor.to(device)
            * (source.double() - source_mean.to(device))
            @ weight.to(device)
        )
        return (mapped + target_mean.to(device)).to(source.dtype)

    def inverse_transform(self, target: torch.Tensor) -> torch.Tensor:
        """Map ``target`` rows [N, D] back into the source space (the exact inverse of
        :meth:`transform`)."""
        weight, source_mean, target_mean, scale_factor = self._fitted()
        _check_width("target", target, weight.shape[1])
        device = target.device
        mapped = (
            (target.double() - target_mean.to(device))
            @ weight.to(device).T
            / scale_factor.to(device)
        )
        return (mapped + source_mean.to(device)).to(target.dtype)


def _regularised_covariance(
    centred: torch.Tensor, reg: float, name: str
) -> torch.Tensor:
    """Sample covariance of centred rows plus ``reg`` times the mean variance on the
    diagonal."""
    covariance = centred.T @ centred / (centred.shape[0] - 1)
    mean_variance = float(covariance.diagonal().mean())
    if mean_variance == 0.0:
        raise ValueError(
            f"{name} is constant (every feature has zero variance); CCA needs variation"
        )
    ridge = (
        reg
        * mean_variance
        * torch.eye(
            covariance.shape[0], dtype=covariance.dtype, device=covariance.device
        )
    )
    return covariance + ridge


def _cholesky(covariance: torch.Tensor, name: str, n_samples: int) -> torch.Tensor:
    """Lower Cholesky factor of a covariance, with an explanation when it is not
    positive definite."""
    factor, info = torch.linalg.cholesky_ex(covariance)
    # Rounding can let an exactly singular matrix through with a tiny last pivot; treat
    # a pivot below the float64 resolution of the largest variance as zero.
    resolution = (
        covariance.shape[0]
        * torch.finfo(covariance.dtype).eps
        * covariance.diagonal().max()
    )
    if int(info) != 0 or bool(factor.diagonal().square().min() <= resolution):
        raise ValueError(
            f"the covariance of {name} is singular ({n_samples} samples, "
            f"{covariance.shape[0]} features: "
            "linearly dependent features, or fewer samples than features); use reg > 0"
        )
    return factor


class CCA:
    """Regularised canonical correlation analysis, solved by whitening and one SVD.

    For centred data ``X`` [N, p] and ``Y`` [N, q] with covariances ``Cxx``, ``Cyy`` and
    cross-covariance ``Cxy``, CCA finds weights ``A`` [p, k] and ``B`` [q, k] maximising
    the correlation of each column pair ``X A[:, i]``, ``Y B[:, i]`` subject to the
    projections being uncorrelated with unit variance. With Cholesky factors
    ``Cxx = Lx Lx^T`` and ``Cyy = Ly Ly^T``, the whitened cross-covariance
    ``K = Lx^-1 Cxy Ly^-T`` has SVD ``K = U S V^T``; then ``A = Lx^-T U``,
    ``B = Ly^-T V`` and the canonical correlations are the singular values ``S``, in
    descending order.

    Args:
        n_components: how many canonical pairs ``k`` to keep (at most ``min(p, q)``).
        reg: ridge regularisation, *relative* to the scale of the data: ``reg`` times
        the
            mean feature variance of each side is added to the diagonal of ``Cxx`` and
            ``Cyy``. Relative, so that rescaling ``X`` or ``Y`` changes nothing, as in
            plain CCA. It keeps the whitening defined when features are collinear or
            ``N`` is small, and shrinks every correlation slightly toward zero.
            ``reg=0`` is plain CCA and needs full-rank covariances.

    After :meth:`fit`: ``correlations`` [k], ``x_weights`` [p, k], ``y_weights`` [q, k],
    ``x_mean`` [p] and ``y_mean`` [q], in float64 on the device of the fitted data. The
    sign of each pair is fixed so that the largest-magnitude entry of each ``x_weights``
    column is positive (an SVD leaves it arbitrary), which makes results reproducible
    across devices.
    """

    def __init__(self, n_components: int, reg: float = 1e-4) -> None:
        if (
            isinstance(n_components, bool)
            or not is_integral(n_components)
            or n_components < 1
        ):
            raise ValueError(
                f"n_components must be a positive integer, got {n_components!r}"
            )
        if (
            isinstance(reg, bool)
            or not is_real(reg)
            or not math.isfinite(reg)
            or reg < 0
        ):
            raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
        self.n_components = int(n_components)
        self.reg = float(reg)
        self.correlations: torch.Tensor | None = None
        self.x_weights: torch.Tensor | None = None
        self.y_weights: torch.Tensor | None = None
        self.x_mean: torch.Tensor | None = None
        self.y_mean: torch.Tensor | None = None

    def __repr__(self) -> str:
        state = "unfitted" if self.x_weights is None else "fitted"
        return f"CCA(n_components={self.n_components}, reg={self.reg}, {state})"

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> CCA:
        """Find the canonical directions of paired rows ``X`` [N, p] and ``Y`` [N,
        q]."""
        _check_pair("X", X, "Y", Y)
        n_samples, p = X.shape
        q = Y.shape[1]
        if n_samples < 2:
            raise ValueError(
                "CCA needs at least 2 paired samples to estimate covariances, got "
                f"{n_samples}"
            )
        if self.n_components > min(p, q):
            raise ValueError(
                f"n_components={self.n_components} exceeds min(p, q) = min({p}, {q}); "
                "there are at most that many canonical pairs"
            )
        x, y = X.double(), Y.double()
        x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
        x_centred, y_centred = x - x_mean, y - y_mean
        lx = _cholesky(
            _regularised_covariance(x_centred, self.reg, "X"), "X", n_samples
        )
        ly = _cholesky(
            _regularised_covariance(y_centred, self.reg, "Y"), "Y", n_samples
        )
        cross = x_centred.T @ y_centred / (n_samples - 1)
        whitened = torch.linalg.solve_triangular(lx, cross, upper=False)  # Lx^-1 Cxy
        # ... Ly^-T
        whitened = torch.linalg.solve_triangular(ly, whitened.T, upper=False).T
        u, singular_values, vh = torch.linalg.svd(whitened, full_matrices=False)
        k = self.n_components
        x_weights = torch.linalg.solve_triangular(lx.T, u[:, :k], upper=True)
        y_weights = torch.linalg.solve_triangular(ly.T, vh[:k].T, upper=True)
        largest = x_weights.abs().argmax(dim=0)
        signs = torch.sign(x_weights[largest, torch.arange(k, device=x.device)])
        signs[signs == 0] = 1.0
        self.x_weights, self.y_weights = x_weights * signs, y_weights * signs
        self.correlations = singular_values[:k]
        self.x_mean, self.y_mean = x_mean, y_mean
        return self

    def _fitted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_mean, x_weights, y_mean, y_weights)``, or a RuntimeError when
        :meth:`fit` has not run."""
        if (
            self.x_weights is None
            or self.y_weights is None
            or self.x_mean is None
            or self.y_mean is None
        ):
            raise RuntimeError("this CCA is not fitted yet; call fit(X, Y) first")
        return self.x_mean, self.x_weights, self.y_mean, self.y_weights

    def transform_x(self, X: torch.Tensor) -> torch.Tensor:
        """Project ``X`` [N, p] onto the canonical directions: [N, k], input dtype and
        device."""
        x_mean, x_weights, _, _ = self._fitted()
        _check_width("X", X, x_weights.shape[0])
        device = X.device
        return ((X.double() - x_mean.to(device)) @ x_weights.to(device)).to(X.dtype)

    def transform_y(self, Y: torch.Tensor) -> torch.Tensor:
        """Project ``Y`` [N, q] onto the canonical directions: [N, k], input dtype and
        device."""
        _, _, y_mean, y_weights = self._fitted()
        _check_width("Y", Y, y_weights.shape[0])
        device = Y.device
        return ((Y.double() - y_mean.to(device)) @ y_weights.to(device)).to(Y.dtype)

    def transform(
        self, X: torch.Tensor, Y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project both sides into the shared space: ``(X_c [N, k], Y_c [M, k])``.

        The two inputs need not be paired here (retrieval projects a gallery and queries
        of different sizes); on the training pairs column ``i`` of the two projections
        has correlation ``correlations[i]`` (exactly when ``reg=0``).
        """
        return self.transform_x(X), self.transform_y(Y)

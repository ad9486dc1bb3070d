"""Geometry of a shared embedding space: alignment, uniformity, modality gap and PCA.

Contrastive training puts images and texts on one unit hypersphere. Three numbers
describe how they sit there:

- **alignment** (Wang & Isola, 2020): how close the two halves of each positive pair
  are, ``E ||x_i - y_i||^alpha``. Lower is better; 0 when every pair coincides.
- **uniformity** (Wang & Isola, 2020): how evenly a set of points covers the sphere,
  ``log E_{i != j} exp(-t ||x_i - x_j||^2)``. Lower (more negative) is more uniform; 0
  when all points coincide.
- **modality gap** (Liang et al., 2022): the distance between the centroid of the image
  embeddings and the centroid of the text embeddings. Contrastively trained models such
  as CLIP keep the two modalities in separate cones, so the gap stays well above 0.

All three are defined on the unit sphere, so they check that every row has L2 norm 1
(within ``UNIT_NORM_TOLERANCE``) instead of normalising silently: normalise first with
``torch.nn.functional.normalize(emb, dim=-1)``. :func:`pca` works on any vectors and is
what the book uses to draw the space in two dimensions.

Computations run on the embeddings' device, in float64 for float64 inputs and in float32
for every other floating dtype (half precision is upcast), with autocast disabled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from crossalign.utils import is_integral, is_real

__all__ = [
    "alignment",
    "geometry_report",
    "modality_gap",
    "modality_gap_vector",
    "pca",
    "uniformity",
]

UNIT_NORM_TOLERANCE = 1e-3
UNIFORMITY_CHUNK_SIZE = 1024


@torch.no_grad()
def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """Return the mean distance to the power ``alpha`` between paired unit vectors,
    ``E ||x_i - y_i||^alpha``.

    Row ``i`` of ``x`` and row ``i`` of ``y`` are a positive pair (an image and its
    caption). The value lies in ``[0, 2^alpha]``: 0 when every pair coincides,
    ``2^alpha`` when every pair is antipodal. ``alpha = 2`` is the setting of Wang &
    Isola (2020).

    Args:
        x: ``[N, D]`` unit-norm embeddings.
        y: ``[N, D]`` unit-norm embeddings, ``y[i]`` paired with ``x[i]``.
        alpha: the positive exponent applied to each pair's Euclidean distance.
    """
    _check_unit_embeddings("x", x)
    _check_unit_embeddings("y", y)
    _check_same_space("x", x, "y", y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            "x and y must hold the same number of rows (row i of each is a pair), got "
            f"{x.shape[0]} and {y.shape[0]}"
        )
    _check_positive("alpha", alpha)
    return _alignment(x, y, float(alpha))


@torch.no_grad()
def uniformity(
    x: torch.Tensor, t: float = 2.0, chunk_size: int = UNIFORMITY_CHUNK_SIZE
) -> float:
    """Return how evenly unit vectors spread over the sphere,
    ``log E_{i != j} exp(-t ||x_i - x_j||^2)``.

    The mean runs over all ``N (N - 1)`` ordered pairs of distinct rows (the same value
    as over unordered pairs). The value lies in ``[-4t, 0]``: 0 when all points
    coincide, lower when they spread out; ``-4t`` only for two antipodal points. It is
    computed with a log-sum-exp, so large ``t`` does not underflow, and ``chunk_size``
    rows at a time, so the ``N x N`` distance matrix never exists at once. ``t = 2`` is
    the setting of Wang & Isola (2020).

    Args:
        x: ``[N, D]`` unit-norm embeddings, ``N >= 2``.
        t: the positive temperature of the Gaussian kernel.
        chunk_size: rows of the distance matrix computed at once.
    """
    _check_unit_embeddings("x", x, min_rows=2)
    _check_positive("t", t)
    _check_chunk_size(chunk_size)
    return _uniformity(x, float(t), chunk_size)


@torch.no_grad()
def modality_gap_vector(
    image_emb: torch.Tensor, text_emb: torch.Tensor
) -> torch.Tensor:
    """Return the vector from the text centroid to the image centroid,
    ``mean(image_emb) - mean(text_emb)``.

    This is the gap vector of Liang et al. (2022). The two sets need not have the same
    size (e.g. five captions per image): each centroid is the plain mean of its own
    rows. The result is a ``[D]`` tensor on the embeddings' device (float64 for float64
    inputs, else float32).
    """
    _check_unit_embeddings("image_emb", image_emb)
    _check_unit_embeddings("text_emb", text_emb)
    _check_same_space("image_emb", image_emb, "text_emb", text_emb)
    return _gap_vector(image_emb, text_emb)


@torch.no_grad()
def modality_gap(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Return the Euclidean distance between the image centroid and the text centroid
    (Liang et al., 2022).

    Both sets are unit vectors, so the gap lies in ``[0, 2]``; it is the norm of
    :func:`modality_gap_vector`.
    """
    return float(torch.linalg.vector_norm(modality_gap_vector(image_emb, text_emb)))


@torch.no_grad()
def pca(
    x: torch.Tensor, k: int = 2, center: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project ``x`` on its ``k`` principal directions, computed from a singular value
    decomposition.

    Returns ``(projected [N, k], components [k, D], explained_variance_ratio [k])`` with
    ``projected = (x - mean) @ components.T`` (no mean subtracted when ``center`` is
    False). Components are orthonormal and ordered by decreasing variance; the ratios
    are each component's share of the total variance, so they are non-increasing and sum
    to at most 1 (exactly 1 when the centred data has rank ``k`` or less). With
    ``center=False`` "variance" means the second moment about the origin.

    Sign convention: a principal direction is only defined up to its sign, and SVD
    routines pick signs arbitrarily (they may differ between devices and library
    versions). Each component is therefore flipped so that its entry of largest absolute
    value (the first one on ties) is positive, which makes the result reproducible.

    Args:
        x: ``[N, D]`` data, one point per row (unit norm not required).
        k: the number of components, ``1 <= k <= min(N, D)``.
        center: subtract the mean row before the decomposition (the usual PCA).
    """
    _check_embeddings("x", x)
    n, d = x.shape
    if isinstance(k, bool) or not is_integral(k) or not 1 <= k <= min(n, d):
        raise ValueError(
            f"k must be an integer between 1 and min(N, D) = {min(n, d)} for x of "
            f"shape {tuple(x.shape)}, got {k!r}"
        )
    k = int(k)
    with torch.autocast(device_type=x.device.type, enabled=False):
        data = x.to(_work_dtype(x))
        raw_energy = data.square().sum()
        if center:
            data = data - data.mean(dim=0, keepdim=True)
        _, singular_values, right_vectors = torch.linalg.svd(data, full_matrices=False)
        energy = singular_values.square()
        total = energy.sum()
        # Centring identical rows leaves rounding residue of order eps * |x|, not exact
        # zeros.
        if float(total) <= (64 * torch.finfo(data.dtype).eps) ** 2 * float(raw_energy):
            what = "all its rows are the same point" if center else "it is all zeros"
            raise ValueError(
                f"x has no variance ({what}); PCA needs points that differ"
            )
        components = right_vectors[:k]
        largest = components.abs().argmax(dim=1, keepdim=True)
        components = components * torch.sign(components.gather(1, largest))
        projected = data @ components.T
        return projected, components, energy[:k] / total


@torch.no_grad()
def geometry_report(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int] | None = None,
    *,
    alpha: float = 2.0,
    t: float = 2.0,
) -> dict[str, float]:
    """Measure the shared space: alignment, uniformity of each modality and of both, and
    the modality gap.

    Returns a dict with the keys ``"alignment"`` (over image-caption pairs),
    ``"uniformity_image"``, ``"uniformity_text"``, ``"uniformity_joint"`` (of all image
    and text embeddings pooled together) and ``"modality_gap"``.

    Args:
        image_emb: ``[N_img, D]`` unit-norm image embeddings, ``N_img >= 2``. text_emb:
        ``[N_txt, D]`` unit-norm text embeddings, ``N_txt >= 2``. text_to_image: the
        image index of each caption, for sets with several captions per
            image (Flickr8k has five). When omitted, row ``i`` of ``image_emb`` and row
            ``i`` of ``text_emb`` are a pair and the two must have the same number of
            rows. Each image counts once in its uniformity and centroid, however many
            captions it has.
        alpha: the exponent of :func:`alignment`.
        t: the temperature of :func:`uniformity`.
    """
    _check_unit_embeddings("image_emb", image_emb, min_rows=2)
    _check_unit_embeddings("text_emb", text_emb, min_rows=2)
    _check_same_space("image_emb", image_emb, "text_emb", text_emb)
    _check_positive("alpha", alpha)
    _check_positive("t", t)
    if text_to_image is None:
        if image_emb.shape[0] != text_emb.shape[0]:
            raise ValueError(
                f"image_emb has {image_emb.shape[0]} rows and text_emb "
                f"{text_emb.shape[0]}; without text_to_image "
                "row i of each must be a pair, so give text_to_image (the image index "
                "of each caption)"
            )
        paired_images = image_emb
    else:
        owners = _caption_owners(
            text_to_image, image_emb.shape[0], text_emb.shape[0], image_emb.device
        )
        paired_images = image_emb[owners]
    dtype = _work_dtype(image_emb, text_emb)
    both = torch.cat([image_emb.to(dtype), text_emb.to(dtype)])
    return {
        "alignment": _alignment(paired_images, text_emb, float(alpha)),
        "uniformity_image": _uniformity(image_emb, float(t), UNIFORMITY_CHUNK_SIZE),
        "uniformity_text": _uniformity(text_emb, float(t), UNIFORMITY_CHUNK_SIZE),
        "uniformity_joint": _uniformity(both, float(t), UNIFORMITY_CHUNK_SIZE),
        "modality_gap": float(
            torch.linalg.vector_norm(_gap_vector(image_emb, text_emb))
        ),
    }


def _alignment(x: torch.Tensor, y: torch.Tensor, alpha: float) -> float:
    """Mean of ``||x_i - y_i||^alpha`` over rows, for inputs already checked."""
    dtype = _work_dtype(x, y)
    distances = torch.linalg.vector_norm(x.to(dtype) - y.to(dtype), dim=1)
    return float(distances.pow(alpha).mean())


def _uniformity(x: torch.Tensor, t: float, chunk_size: int) -> float:
    """Log of the mean Gaussian kernel over distinct pairs, for inputs already checked.

    Each chunk of rows gives the log-sum-exp of its kernel values (the diagonal, a point
    with itself, set to ``-inf``); the chunks' results are combined with one more
    log-sum-exp.
    """
    n = x.shape[0]
    with torch.autocast(device_type=x.device.type, enabled=False):
        points = x.to(_work_dtype(x))
        squared_norms = points.square().sum(dim=1)
        chunk_totals = []
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            block = points[start:stop]
            squared_distances = (
                squared_norms[start:stop, None]
                + squared_norms[None, :]
                - 2.0 * block @ points.T
            )
            log_kernel = -t * squared_distances.clamp_min(0.0)
            rows = torch.arange(stop - start, device=x.device)
            log_kernel[rows, start + rows] = -math.inf
            chunk_totals.append(torch.logsumexp(log_kernel.flatten(), dim=0))
        log_total = torch.logsumexp(torch.stack(chunk_totals), dim=0)
    return float(log_total) - math.log(n * (n - 1))


def _gap_vector(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """``mean(image_emb) - mean(text_emb)`` in the working dtype, for inputs already
    checked."""
    dtype = _work_dtype(image_emb, text_emb)
    return image_emb.to(dtype).mean(dim=0) - text_emb.to(dtype).mean(dim=0)


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32 (half precision is too coarse for
    sums of N^2 terms)."""
    return (
        torch.float64
        if any(tensor.dtype == torch.float64 for tensor in tensors)
        else torch.float32
    )


def _check_embeddings(name: str, emb: torch.Tensor, min_rows: int = 1) -> None:
    """Raise unless ``emb`` is a finite, floating-point ``[N, D]`` tensor with
    ``N >= min_rows``."""
    if not isinstance(emb, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(emb).__name__}")
    if emb.dim() != 2 or emb.shape[1] == 0:
        raise ValueError(
            f"{name} must be 2-D [items, dim] with dim >= 1, got shape "
            f"{tuple(emb.shape)}"
        )
    if emb.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {emb.shape[0]}")
    if not emb.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {emb.dtype}"
        )
    finite_rows = torch.isfinite(emb).all(dim=1)
    if not bool(finite_rows.all()):
        bad = int((~finite_rows).nonzero()[0])
        raise ValueError(f"{name} row {bad} contains NaN or infinite values")


def _check_unit_embeddings(name: str, emb: torch.Tensor, min_rows: int = 1) -> None:
    """Like :func:`_check_embeddings`, and also raise unless every row has L2 norm 1
    within the tolerance."""
    _check_embeddings(name, emb, min_rows)
    norms = torch.linalg.vector_norm(emb.to(_work_dtype(emb)), dim=1)
    off_sphere = (norms - 1.0).abs() > UNIT_NORM_TOLERANCE
    if bool(off_sphere.any()):
        bad = int(off_sphere.nonzero()[0])
        raise ValueError(
            f"{name} row {bad} has L2 norm {float(norms[bad]):.4f}, not 1 (tolerance "
            f"{UNIT_NORM_TOLERANCE}); "
            "these measures live on the unit sphere: pass "
            f"torch.nn.functional.normalize({name}, dim=-1)"
        )


def _check_same_space(
    name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor
) -> None:
    """Raise unless the two embedding sets have the same width and live on the same
    device."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same embedding size, got "
            f"{a.shape[1]} and {b.shape[1]}"
        )
    if a.device != b.device:
        raise ValueError(
            f"{name_a} is on {a.device} but {name_b} is on {b.device}; move both to "
            "one device"
        )


def _check_positive(name: str, value: float) -> None:
    """Raise unless ``value`` is a finite real number greater than zero."""
    if (
        isinstance(value, bool)
        or not is_real(value)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_chunk_size(chunk_size: int) -> None:
    """Raise unless ``chunk_size`` is a positive integer."""
    if isinstance(chunk_size, bool) or not is_integral(chunk_size) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def _caption_owners(
    text_to_image: torch.Tensor | Sequence[int],
    n_img: int,
    n_txt: int,
    device: torch.device,
) -> torch.Tensor:
    """Check ``text_to_image`` (one image index per caption) and return it as int64 on
    ``device``."""
    owners = torch.as_tensor(text_to_image)
    if owners.is_floating_point() or owners.is_complex() or owners.dtype == torch.bool:
        raise TypeError(
            f"text_to_image must hold integer image indices, got dtype {owners.dtype}"
        )
    if owners.dim() != 1 or owners.shape[0] != n_txt:
        raise ValueError(
            f"text_to_image must be 1-D with one image index per caption ({n_txt}), "
            f"got shape {tuple(owners.shape)}"
        )
    owners = owners.to(device=device, dtype=torch.long)
    out_of_range = (owners < 0) | (owners >= n_img)
    if bool(out_of_range.any()):
        j = int(out_of_range.nonzero()[0])
        raise ValueError(
            f"text_to_image[{j}] = {int(owners[j])} is not a valid image index; "
            f"there are {n_img} images (0..{n_img - 1})"
        )
    return owners

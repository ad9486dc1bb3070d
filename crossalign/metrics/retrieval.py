"""Cross-modal retrieval metrics with many-to-many positives: R@K, median and mean rank.

The evaluation set holds ``N_img`` images and ``N_txt`` captions; ``text_to_image[j]``
is the image that caption ``j`` describes (Flickr8k's Karpathy 1K test split: 1000
images, 5000 captions, five per image). Scores are dot products of the given embeddings,
so pass L2-normalised embeddings to rank by cosine similarity.

- Image to text: an image's rank is the rank of its *best-ranked* caption among all
  ``N_txt`` captions, so a hit at K means that *any* of its captions is in the top K.
- Text to image: a caption's rank is the rank of its one image among all ``N_img``
  images.

Ranks are 1-based (rank 1 = the positive comes first) and ties count against the query:
``rank = 1 + (number of negatives scoring >= the best positive)``. With the optimistic
rule (only strictly higher negatives count) a model that maps every input to the same
vector gives every score the same value and would reach R@1 = 1; with the pessimistic
rule it gets the worst possible rank, which is what it deserves.

The score matrix is computed ``chunk_size`` query rows at a time, in float32 whatever
the input precision, on the embeddings' device: the full ``N_img x N_txt`` matrix never
exists at once, so large galleries fit in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "retrieval_metrics",
    "ranks_image_to_text",
    "ranks_text_to_image",
    "format_retrieval",
]


def _check_embeddings(name: str, emb: torch.Tensor) -> None:
    """Raise unless ``emb`` is a non-empty, finite, floating-point [N, D] tensor."""
    if not isinstance(emb, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(emb).__name__}")
    if emb.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D [items, dim], got shape {tuple(emb.shape)}"
        )
    if emb.shape[0] == 0:
        raise ValueError(f"{name} is empty; retrieval needs at least one item")
    if not emb.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {emb.dtype}"
        )
    finite_rows = torch.isfinite(emb).all(dim=1)
    if not bool(finite_rows.all()):
        bad = int((~finite_rows).nonzero()[0])
        raise ValueError(
            f"{name} row {bad} contains NaN or infinite values; ranks would be "
            "meaningless"
        )


def _validated_inputs(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    chunk_size: int,
) -> torch.Tensor:
    """Check every argument and return ``text_to_image`` as an int64 tensor on the
    embeddings' device."""
    _check_embeddings("image_emb", image_emb)
    _check_embeddings("text_emb", text_emb)
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            "image_emb and text_emb must have the same embedding size, "
            f"got {image_emb.shape[1]} and {text_emb.shape[1]}"
        )
    if image_emb.device != text_emb.device:
        raise ValueError(
            f"image_emb is on {image_emb.device} but text_emb is on {text_emb.device}; "
            "move both to one device"
        )
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    owner = torch.as_tensor(text_to_image)
    if owner.is_floating_point() or owner.is_complex() or owner.dtype == torch.bool:
        raise TypeError(
            f"text_to_image must hold integer image indices, got dtype {owner.dtype}"
        )
    n_img, n_txt = image_emb.shape[0], text_emb.shape[0]
    if owner.dim() != 1 or owner.shape[0] != n_txt:
        raise ValueError(
            f"text_to_image must be 1-D with one image index per caption ({n_txt}), "
            f"got shape {tuple(owner.shape)}"
        )
    owner = owner.to(device=image_emb.device, dtype=torch.long)
    out_of_range = (owner < 0) | (owner >= n_img)
    if bool(out_of_range.any()):
        j = int(out_of_range.nonzero()[0])
        raise ValueError(
            f"text_to_image[{j}] = {int(owner[j])} is not a valid image index; "
            f"there are {n_img} images (0..{n_img - 1})"
        )
    captions_per_image = torch.bincount(owner, minlength=n_img)
    uncaptioned = (captions_per_image == 0).nonzero().flatten()
    if uncaptioned.numel() > 0:
        shown = ", ".join(str(int(i)) for i in uncaptioned[:10])
        more = (
            f" and {uncaptioned.numel() - 10} more" if uncaptioned.numel() > 10 else ""
        )
        raise ValueError(
            f"image {shown}{more} has no caption in text_to_image; every image needs "
            "at least one "
            "positive caption for image-to-text ranks (drop uncaptioned images from "
            "image_emb)"
        )
    return owner


@torch.no_grad()
def ranks_image_to_text(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Return each image's 1-based rank of its best-ranked caption (int64, [N_img]).

    ``rank = 1 + #(captions of other images scoring >= the image's best caption)``: ties
    count against the query (see the module docstring). An image's worst possible rank
    is ``N_txt - (its number of captions) + 1``. Computed ``chunk_size`` images at a
    time, in float32, on the embeddings' device.
    """
    owner = _validated_inputs(image_emb, text_emb, text_to_image, chunk_size)
    device = image_emb.device
    n_img = image_emb.shape[0]
    ranks = torch.empty(n_img, dtype=torch.long, device=device)
    with torch.autocast(device_type=device.type, enabled=False):
        gallery = text_emb.float()
        for start in range(0, n_img, chunk_size):
            stop = min(start + chunk_size, n_img)
            scores = image_emb[start:stop].float() @ gallery.T
            image_ids = torch.arange(start, stop, device=device)
            is_positive = owner.unsqueeze(0) == image_ids.unsqueeze(1)
            best_positive = scores.masked_fill(~is_positive, float("-inf")).amax(
                dim=1, keepdim=True
            )
            negatives_at_or_above = (scores >= best_positive) & ~is_positive
            ranks[start:stop] = 1 + negatives_at_or_above.sum(dim=1)
    return ranks


@torch.no_grad()
def ranks_text_to_image(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Return each caption's 1-based rank of its image among all images (int64,
    [N_txt]).

    ``rank = 1 + #(other images scoring >= the caption's image)``: ties count against
    the query (see the module docstring), so the worst possible rank is ``N_img``.
    Computed ``chunk_size`` captions at a time, in float32, on the embeddings' device.
    """
    owner = _validated_inputs(image_emb, text_emb, text_to_image, chunk_size)
    device = image_emb.device
    n_txt = text_emb.shape[0]
    ranks = torch.empty(n_txt, dtype=torch.long, device=device)
    with torch.autocast(device_type=device.type, enabled=False):
        gallery = image_emb.float()
        for start in range(0, n_txt, chunk_size):
            stop = min(start + chunk_size, n_txt)
            scores = text_emb[start:stop].float() @ gallery.T
            positive_score = scores.gather(1, owner[start:stop].unsqueeze(1))
            # The positive itself satisfies ">=", which supplies the "1 +".
            ranks[start:stop] = (scores >= positive_score).sum(dim=1)
    return ranks


def _median(values: torch.Tensor) -> float:
    """The median of a 1-D tensor, averaging the two middle values when the count is
    even."""
    ordered = values.double().sort().values
    n = ordered.shape[0]
    middle = n // 2
    if n % 2 == 1:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def _summarise(prefix: str, ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """R@K for each K, median and mean rank of one direction, under keys starting with
    ``prefix``."""
    summary = {f"{prefix}_r{k}": float((ranks <= k).double().mean()) for k in ks}
    summary[f"{prefix}_median_rank"] = _median(ranks)
    summary[f"{prefix}_mean_rank"] = float(ranks.double().mean())
    return summary


def _checked_ks(ks: Iterable[int]) -> list[int]:
    """Return the distinct K values in the given order, or raise if one is not a
    positive integer."""
    checked: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"ks must hold positive integers, got {k!r}")
        if k not in checked:
            checked.append(k)
    if not checked:
        raise ValueError("ks is empty; give at least one K, e.g. ks=(1, 5, 10)")
    return checked


def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int],
    ks: Iterable[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Image-to-text and text-to-image R@K, median and mean rank, for many-to-many
    positives.

    ``image_emb`` is [N_img, D], ``text_emb`` [N_txt, D] (any float dtype; scores are
    computed in float32) and ``text_to_image[j]`` the index of caption ``j``'s image.
    Every image needs at least one caption. Returns the keys ``"i2t_r1"``, ``"i2t_r5"``,
    ``"i2t_r10"``, ``"i2t_median_rank"``, ``"i2t_mean_rank"`` and the same for
    ``"t2i_"`` (one ``_r{K}`` key per K): recalls are fractions in [0, 1], ranks are
    1-based, ties count against the query (see the module docstring). The median of an
    even number of ranks is the mean of the two middle ones; code that reports
    ``floor(median)`` (as VSE++-style scripts do) can differ by one half.
    """
    checked_ks = _checked_ks(ks)
    i2t = ranks_image_to_text(image_emb, text_emb, text_to_image, chunk_size)
    t2i = ranks_text_to_image(image_emb, text_emb, text_to_image, chunk_size)
    return {**_summarise("i2t", i2t, checked_ks), **_summarise("t2i", t2i, checked_ks)}


_RECALL_KEY = re.compile(r"^i2t_r(\d+)$")


def format_retrieval(metrics: dict[str, float]) -> str:
    """Format the output of ``retrieval_metrics`` as a small table (recalls in percent).

    Example::

                       R@1%    R@5%   R@10%  median rank  mean rank
        image->text   45.20   75.10   85.00          2.0       8.31
        text->image   33.80   64.02   76.44          3.0      12.70
    """
    ks = sorted(
        int(match.group(1)) for key in metrics if (match := _RECALL_KEY.match(key))
    )
    if not ks:
        raise ValueError(
            "metrics holds no 'i2t_r<K>' key; pass the dictionary returned by "
            "retrieval_metrics"
        )
    needed = [
        f"{d}_{name}"
        for d in ("i2t", "t2i")
        for name in [*(f"r{k}" for k in ks), "median_rank", "mean_rank"]
    ]
    missing = [key for key in needed if key not in metrics]
    if missing:
        raise ValueError(
            f"metrics lacks {missing}; pass the dictionary returned by "
            "retrieval_metrics"
        )
    headers = [f"R@{k}%" for k in ks] + ["median rank", "mean rank"]
    widths = [max(6, len(h)) for h in headers]
    lines = [" " * 11 + "".join(f"  {h:>{w}}" for h, w in zip(headers, widths))]
    for direction, label in (("i2t", "image->text"), ("t2i", "text->image")):
        cells = [f"{100 * metrics[f'{direction}_r{k}']:.2f}" for k in ks]
        cells += [
            f"{metrics[f'{direction}_median_rank']:.1f}",
            f"{metrics[f'{direction}_mean_rank']:.2f}",
        ]
        lines.append(label + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)

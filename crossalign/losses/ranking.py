"""Margin-based alignment losses: the triplet ranking loss (VSE0, VSE++) and the siamese
contrastive loss.

Triplet ranking (Faghri et al. 2018, "VSE++"). For N matching pairs with similarities
``s(i, j) = <u_i, v_j>`` (cosines when the features are L2-normalised), a matching pair
must beat every mismatched pair of the batch by a margin ``m``, in both directions:

    image i as the query, caption j != i as the negative:   [m + s(i, j) - s(i, i)]_+
    caption j as the query, image i != j as the negative:   [m + s(i, j) - s(j, j)]_+

VSE0 sums these hinges over all negatives; VSE++ keeps only the largest one per query
(the hardest negative), so that the many easy negatives with a zero hinge do not drown
the few informative ones.

Siamese contrastive loss (Hadsell, Chopra & LeCun 2006). Pairs carry a label, "same" or
"different"; with the Euclidean distance ``d`` between the two embeddings, a "same" pair
costs ``d^2`` (pull together) and a "different" pair ``[m - d]_+^2`` (push apart, but
only until the margin ``m``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from crossalign.losses.contrastive import _check_features

__all__ = [
    "triplet_loss",
    "siamese_contrastive_loss",
    "TripletLoss",
    "SiameseContrastiveLoss",
]

_REDUCTIONS = ("sum", "mean")


def _check_margin(margin: float) -> float:
    """Return ``margin`` as a float, or raise unless it is a finite, non-negative
    number."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise TypeError(f"margin must be a float, got {type(margin).__name__}")
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    return float(margin)


def _check_triplet_options(hardest: bool, reduction: str) -> None:
    """Raise unless ``hardest`` is a bool and ``reduction`` is "sum" or "mean"."""
    if not isinstance(hardest, bool):
        raise TypeError(
            f"hardest must be True (VSE++) or False (VSE0), got {hardest!r}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def triplet_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    margin: float = 0.2,
    hardest: bool = False,
    reduction: str = "sum",
) -> torch.Tensor:
    """Bidirectional triplet ranking loss of N matching pairs: VSE0 (all negatives) or
    VSE++ (hardest).

    ``image_features`` and ``text_features`` are [N, D], pair ``i`` being row ``i`` of
    both. The features are used as given; pass L2-normalised features so that the dot
    products are cosine similarities, as in the paper.

    - ``hardest=False`` (VSE0): sum of the hinges over all ``N - 1`` negatives of every
      query.
    - ``hardest=True`` (VSE++): only the largest hinge of every query ("max of hinges").

    ``reduction="sum"`` adds the per-query costs over the batch, as in the paper;
    ``reduction="mean"`` divides that sum by N, i.e. the average cost of one matching
    pair (its image as a query plus its caption as a query), which does not grow with
    the batch for VSE++. With N = 2 each query has a single negative, so VSE++ equals
    VSE0; with N = 1 there is no negative and the loss is 0.
    """
    _check_features(image_features, text_features)
    margin = _check_margin(margin)
    _check_triplet_options(hardest, reduction)
    similarities = image_features @ text_features.T
    positives = similarities.diagonal()
    is_negative = ~torch.eye(
        similarities.shape[0], dtype=torch.bool, device=similarities.device
    )
    zero = similarities.new_zeros(())
    # Row i: image i is the query and the captions j != i its negatives.
    caption_hinges = torch.where(
        is_negative, (margin + similarities - positives[:, None]).clamp(min=0), zero
    )
    # Column j: caption j is the query and the images i != j its negatives.
    image_hinges = torch.where(
        is_negative, (margin + similarities - positives[None, :]).clamp(min=0), zero
    )
    if hardest:
        per_query = caption_hinges.amax(dim=1) + image_hinges.amax(dim=0)
    else:
        per_query = caption_hinges.sum(dim=1) + image_hinges.sum(dim=0)
    total = per_query.sum()
    return total if reduction == "sum" else total / similarities.shape[0]


def _check_same(same: torch.Tensor, batch: int) -> None:
    """Raise unless ``same`` is a boolean tensor of shape [batch]."""
    if not isinstance(same, torch.Tensor):
        raise TypeError(
            f"same must be a torch.Tensor of booleans, got {type(same).__name__}"
        )
    if same.dtype != torch.bool:
        raise TypeError(
            "same must be a boolean tensor (True for a matching pair), got dtype "
            f"{same.dtype}"
        )
    if same.shape != (batch,):
        raise ValueError(
            f"same must have shape [{batch}], one label per pair, got shape "
            f"{tuple(same.shape)}"
        )


def siamese_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    same: torch.Tensor,
    margin: float = 0.5,
) -> torch.Tensor:
    """Margin contrastive loss (Hadsell et al. 2006) of N labelled pairs on their
    Euclidean distance.

    Pair ``i`` is ``(image_features[i], text_features[i])``, both [N, D], and
    ``same[i]`` (a boolean [N]) says whether the two match. With
    ``d_i = ||image_i - text_i||_2``:

        loss = mean_i ( d_i^2                if same[i]
                        max(0, margin - d_i)^2  otherwise )

    Convention: Hadsell et al. write both terms with a factor 1/2; it is dropped here,
    so this loss is twice theirs (the factor only rescales the gradients, i.e. the
    learning rate). Matching pairs are pulled together without limit; mismatched pairs
    are pushed apart only until they are ``margin`` apart, after which they cost
    nothing. Nothing is normalised here: with L2-normalised features distances lie in
    [0, 2]. At ``d = 0`` a mismatched pair gets the zero (sub)gradient, not NaN.
    """
    _check_features(image_features, text_features)
    _check_same(same, image_features.shape[0])
    margin = _check_margin(margin)
    difference = image_features - text_features
    squared_distance = difference.pow(2).sum(dim=1)
    distance = torch.linalg.vector_norm(difference, dim=1)
    push_apart = (margin - distance).clamp(min=0).pow(2)
    return torch.where(
        same.to(image_features.device), squared_distance, push_apart
    ).mean()


class TripletLoss(nn.Module):
    """Module form of ``triplet_loss``: VSE0 (``hardest=False``) or VSE++
    (``hardest=True``)."""

    def __init__(
        self, margin: float = 0.2, hardest: bool = False, reduction: str = "sum"
    ) -> None:
        """Store and check the options, so that a bad one fails when the loss is built,
        not mid-training."""
        super().__init__()
        self.margin = _check_margin(margin)
        _check_triplet_options(hardest, reduction)
        self.hardest = hardest
        self.reduction = reduction

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor
    ) -> torch.Tensor:
        """Return the triplet ranking loss of the N matching pairs (rows) of the two
        inputs."""
        return triplet_loss(
            image_features, text_features, self.margin, self.hardest, self.reduction
        )

    def extra_repr(self) -> str:
        """Show the options in ``print(module)``."""
        return (
            f"margin={self.margin}, hardest={self.hardest}, "
            f"reduction={self.reduction!r}"
        )


class SiameseContrastiveLoss(nn.Module):
    """Module form of ``siamese_contrastive_loss``."""

    def __init__(self, margin: float = 0.5) -> None:
        """Store and check the margin below which mismatched pairs are pushed apart."""
        super().__init__()
        self.margin = _check_margin(margin)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        same: torch.Tensor,
    ) -> torch.Tensor:
        """Return the margin contrastive loss of the N labelled pairs (rows) of the two
        inputs."""
        return siamese_contrastive_loss(
            image_features, text_features, same, self.margin
        )

    def extra_repr(self) -> str:
        """Show the margin in ``print(module)``."""
        return f"margin={self.margin}"

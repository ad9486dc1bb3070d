"""Symmetric InfoNCE, the CLIP loss, in one process and across ranks.

For a batch of N matching (image, text) pairs with L2-normalised features ``u_i`` and
``v_j`` and a scale ``s = 1 / temperature``, the logits are ``l_ij = s * <u_i, v_j>``.
Each image must pick out its own caption among the N captions of the batch, and each
caption its own image:

    loss = 1/2 * [ mean_i CE(l_i., i)  +  mean_j CE(l_.j, j) ]

where ``CE(row, target) = -row[target] + logsumexp(row)``. The other N - 1 pairs of the
batch act as negatives, which is why contrastive training likes large batches, and why
the distributed form below gathers features from all ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.distributed import gather_with_grad, get_rank, get_world_size

__all__ = ["clip_logits", "clip_loss", "ClipLoss"]


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Raise a ``ValueError`` unless both feature matrices are [N, D] with the same N
    and D."""
    for name, features in (
        ("image_features", image_features),
        ("text_features", text_features),
    ):
        if not isinstance(features, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor, got {type(features).__name__}"
            )
        if features.dim() != 2:
            raise ValueError(
                f"{name} must be 2-D [batch, dim], got shape {tuple(features.shape)}"
            )
        if features.shape[0] == 0:
            raise ValueError(
                f"{name} is an empty batch; the contrastive loss needs at least one "
                "pair"
            )
    if image_features.shape[0] != text_features.shape[0]:
        raise ValueError(
            f"image_features and text_features must hold the same number of pairs, got "
            f"{image_features.shape[0]} images and {text_features.shape[0]} texts"
        )
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            "image_features and text_features must live in the same embedding space, "
            "got dims "
            f"{image_features.shape[1]} and {text_features.shape[1]}; project them to "
            "a common size first"
        )


def _check_scale(logit_scale: torch.Tensor | float) -> torch.Tensor | float:
    """Raise a ``ValueError`` unless ``logit_scale`` is a number or a one-element
    tensor."""
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(
                "logit_scale must be a scalar (1 / temperature), got a tensor of "
                f"shape {tuple(logit_scale.shape)}"
            )
        return logit_scale.reshape(())
    if isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        return float(logit_scale)
    raise TypeError(
        "logit_scale must be a float or a scalar tensor, got "
        f"{type(logit_scale).__name__}"
    )


def clip_logits(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits_per_image, logits_per_text)``: the scaled similarity matrix and
    its transpose.

    ``logits_per_image[i, j] = logit_scale * <image_i, text_j>``. The features are used
    as given: pass L2-normalised features so that the dot product is a cosine similarity
    (nothing is normalised here, so that a caller who forgot sees it in the numbers
    instead of having it silently fixed in one place and not in another).
    """
    _check_features(image_features, text_features)
    scale = _check_scale(logit_scale)
    logits_per_image = scale * (image_features @ text_features.T)
    return logits_per_image, logits_per_image.T


def _symmetric_cross_entropy(
    logits_per_image: torch.Tensor, logits_per_text: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Average the image-to-text and text-to-image cross-entropies for the given
    targets."""
    return (
        F.cross_entropy(logits_per_image, labels)
        + F.cross_entropy(logits_per_text, labels)
    ) / 2


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss of N matching pairs: pair ``i`` is row ``i`` of
    both inputs.

    ``image_features`` and ``text_features`` are [N, D] and should already be
    L2-normalised; ``logit_scale`` is ``1 / temperature`` (already exponentiated, e.g.
    ``log_scale.exp()``), a float or a scalar tensor (which then receives a gradient).

    Known values: features that all coincide give ``log N`` (every caption is as likely
    as any other); orthonormal matching pairs give ``log(1 + (N - 1) * exp(-scale))``,
    which goes to 0 as the scale grows.
    """
    logits_per_image, logits_per_text = clip_logits(
        image_features, text_features, logit_scale
    )
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    return _symmetric_cross_entropy(logits_per_image, logits_per_text, labels)


class ClipLoss(nn.Module):
    """The CLIP loss for one process or for a ``torchrun`` job, with the same value and
    gradients.

    In a distributed run each rank holds a local batch of ``n`` pairs. The module
    gathers the features of all ``W`` ranks (``gather_with_grad``) and computes the
    *local-loss* form: the rank's ``n`` image rows against all ``W * n`` texts, and its
    ``n`` text rows against all ``W * n`` images, with targets ``rank * n + arange(n)``.
    This costs an ``n x Wn`` logit matrix per rank instead of ``Wn x Wn``.

    Why this equals the single-process loss on the concatenated batch of ``W * n``
    pairs:

    - Value: each global row's cross-entropy is computed on exactly one rank, with the
      same logits and the same target as in one process. The local loss is the mean over
      that rank's ``n`` rows, so the mean of the ``W`` local losses (all ranks have
      ``n`` rows) is the mean over all ``W * n`` rows, i.e. the global loss.
    - Gradient: a rank's features appear in every rank's loss (as the columns, the
      negatives). ``gather_with_grad`` sums those contributions back into the owning
      rank in its backward pass, so each rank's local gradients are those of the *sum*
      of the local losses. DistributedDataParallel then averages parameter gradients
      over the ``W`` ranks, which divides by ``W``: the gradient of the mean of local
      losses = the global gradient.

    Local batch sizes must therefore be equal on all ranks (use ``drop_last=True``);
    unequal sizes raise a ``ValueError`` on every rank. With world size 1 this is
    ``clip_loss``.
    """

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
    ) -> torch.Tensor:
        """Return this rank's loss (the global loss when averaged over ranks, see the
        class doc)."""
        world_size = get_world_size()
        if world_size == 1:
            return clip_loss(image_features, text_features, logit_scale)
        _check_features(image_features, text_features)
        scale = _check_scale(logit_scale)
        all_image_features = gather_with_grad(image_features)
        all_text_features = gather_with_grad(text_features)
        logits_per_image = scale * (image_features @ all_text_features.T)
        logits_per_text = scale * (text_features @ all_image_features.T)
        local_batch = image_features.shape[0]
        labels = (
            torch.arange(local_batch, device=image_features.device)
            + get_rank() * local_batch
        )
        return _symmetric_cross_entropy(logits_per_image, logits_per_text, labels)

"""The CLIP loss with extra hard negative captions per image, for compositional
training.

In-batch negatives are mostly easy: "a dog on a beach" against "a red triangle" teaches
little about word order or attributes. Following NegCLIP (Yuksekgonul et al. 2023), each
image can bring K captions of its own that are *almost* right, such as the relation
swapped ("the circle is left of the square" for "the square is left of the circle") or
the attributes swapped ("a blue circle and a red square"). They join the candidates of
that image's row only:

    image i -> text:  CE over [ s<u_i, v_1>, ..., s<u_i, v_N>,  s<u_i, w_i1>, ...,
    s<u_i, w_iK> ], target i text j -> image:  CE over [ s<u_1, v_j>, ..., s<u_N, v_j>
    ], target j   (standard CLIP)

A hard negative caption has no image of its own, so there is nothing to add on the
text-to-image side. With K = 0 (or every negative masked out) this is ``clip_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossalign.losses.contrastive import _check_features, _check_scale

__all__ = ["clip_loss_with_hard_negatives"]


def _check_negatives(
    negative_text_features: torch.Tensor,
    negative_mask: torch.Tensor | None,
    batch: int,
    dim: int,
) -> None:
    """Raise unless the negatives are [batch, K, dim] and the mask, if given, a boolean
    [batch, K]."""
    if not isinstance(negative_text_features, torch.Tensor):
        raise TypeError(
            "negative_text_features must be a torch.Tensor, got "
            f"{type(negative_text_features).__name__}"
        )
    shape = tuple(negative_text_features.shape)
    if len(shape) != 3 or shape[0] != batch or shape[2] != dim:
        raise ValueError(
            f"negative_text_features must have shape [{batch}, K, {dim}] (K negative "
            "captions per image, "
            f"in the feature space of the batch), got {shape}"
        )
    if negative_mask is None:
        return
    if not isinstance(negative_mask, torch.Tensor) or negative_mask.dtype != torch.bool:
        raise TypeError(
            "negative_mask must be a boolean tensor (True where the negative caption "
            "exists)"
        )
    if tuple(negative_mask.shape) != shape[:2]:
        raise ValueError(
            f"negative_mask must have shape {list(shape[:2])}, got "
            f"{tuple(negative_mask.shape)}"
        )


def clip_loss_with_hard_negatives(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    negative_text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE where image ``i`` also has to beat its own K hard negative
    captions.

    ``image_features`` and ``text_features`` are [N, D] matching rows;
    ``negative_text_features`` is [N, K, D], row ``i`` holding the K hard negatives of
    image ``i`` (K may be 0); all features are used as given (pass L2-normalised ones).
    ``logit_scale`` is ``1 / temperature``, as in ``clip_loss``.

    ``negative_mask`` (boolean [N, K], optional) is True where a negative exists and
    False where image ``i`` has fewer than K: those slots are ignored entirely, whatever
    they hold (zeros, NaN), in the value and in the gradients.

    The loss is ``1/2 * [mean_i CE(image i against N captions + its K negatives, i)
    + mean_j CE(caption j against N images, j)]``; see the module docstring.
    """
    _check_features(image_features, text_features)
    scale = _check_scale(logit_scale)
    batch, dim = image_features.shape
    _check_negatives(negative_text_features, negative_mask, batch, dim)
    if negative_mask is not None:
        # Zero the padding first: a NaN there would otherwise leak into the image
        # gradients as 0 * NaN.
        negative_text_features = torch.where(
            negative_mask[..., None], negative_text_features, 0.0
        )
    logits_per_image = scale * (image_features @ text_features.T)
    negative_logits = scale * torch.einsum(
        "nd,nkd->nk", image_features, negative_text_features
    )
    if negative_mask is not None:
        negative_logits = negative_logits.masked_fill(~negative_mask, float("-inf"))
    labels = torch.arange(batch, device=image_features.device)
    image_to_text = F.cross_entropy(
        torch.cat([logits_per_image, negative_logits], dim=1), labels
    )
    text_to_image = F.cross_entropy(logits_per_image.T, labels)
    return (image_to_text + text_to_image) / 2

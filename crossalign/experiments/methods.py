"""A registry of alignment methods: one objective each, all trained by the same loop.

A method turns a batch and a dual encoder into one scalar loss. Everything else (data,
model, optimiser, schedule, budget, evaluation) is shared by
:mod:`crossalign.experiments.compare`, so a comparison between methods compares
objectives and nothing else.

=================
========================================================================== name
objective =================
========================================================================== ``infonce``
symmetric InfoNCE, the CLIP loss (Radford et al. 2021) ``vse0``           triplet
ranking, hinges summed over all in-batch negatives (VSE0) ``vsepp``          triplet
ranking, hardest in-batch negative only (VSE++, Faghri et al. 2018) ``siamese``
margin contrastive loss on matching and shifted (mismatched) pairs ``adversarial``
InfoNCE + a modality discriminator behind a gradient reversal layer ``adversarial_only``
the discriminator game alone: matches the two distributions, uses no pairs
``distillation``   KL from a teacher's image-text similarity distribution (no labels)
``hard_negatives`` InfoNCE + relation- and attribute-swapped captions as extra negatives
=================
==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from crossalign.losses import (
    ModalityDiscriminator,
    adversarial_alignment_loss,
    clip_loss,
    clip_loss_with_hard_negatives,
    siamese_contrastive_loss,
    similarity_distillation_loss,
    triplet_loss,
)

if TYPE_CHECKING:
    from crossalign.models.dual_encoder import DualEncoder

__all__ = [
    "AlignmentBatch",
    "AlignmentMethod",
    "InfoNCEMethod",
    "TripletMethod",
    "SiameseMethod",
    "AdversarialMethod",
    "DistillationMethod",
    "HardNegativeMethod",
    "METHODS",
    "get_method",
    "method_names",
]


@dataclass
class AlignmentBatch:
    """One training batch: images, one caption each and, optionally, K hard negative
    captions each.

    ``negative_ids`` / ``negative_attention`` are [B, K, L]; ``negative_valid`` [B, K]
    is False where an image has no such negative (a lone object has no relation to
    swap).
    """

    images: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    negative_ids: torch.Tensor | None = None
    negative_attention: torch.Tensor | None = None
    negative_valid: torch.Tensor | None = None


class AlignmentMethod:
    """An alignment objective: :meth:`loss` maps (model, batch, auxiliary module) to a
    scalar.

    ``hard_negatives`` asks the runner for swapped captions in every batch: ``None``
    (none), ``"chosen"`` (the swaps of the caption in the batch) or ``"all"`` (the swaps
    of all the image's captions, all false for that image); :meth:`auxiliary` may return
    extra trainable modules (a discriminator) that the runner optimises together with
    the model.
    """

    name = "method"
    summary = ""
    hard_negatives: str | None = None

    def auxiliary(self, embed_dim: int) -> nn.Module | None:
        """Extra trainable modules for this method (none by default)."""
        return None

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """The training loss of ``model`` on ``batch``."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class InfoNCEMethod(AlignmentMethod):
    """Symmetric InfoNCE with the model's learnt temperature."""

    name = "infonce"
    summary = "symmetric InfoNCE (CLIP)"

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """The CLIP loss of the batch's matching pairs."""
        image_emb, text_emb, scale = model(
            batch.images, batch.input_ids, batch.attention_mask
        )
        return clip_loss(image_emb, text_emb, scale)


class TripletMethod(AlignmentMethod):
    """Bidirectional triplet ranking on cosines: VSE0 (``hardest=False``) or VSE++
    (``hardest=True``).

    The loss is averaged over the batch (``reduction="mean"``) so that its size, and
    with it the useful learning rate, does not grow with the batch.
    """

    def __init__(self, hardest: bool, margin: float = 0.2) -> None:
        self.hardest = hardest
        self.margin = margin
        self.name = "vsepp" if hardest else "vse0"
        self.summary = (
            "triplet, hardest negative (VSE++)"
            if hardest
            else "triplet, all negatives (VSE0)"
        )

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """The triplet ranking loss of the batch (the temperature is not used)."""
        image_emb, text_emb, _ = model(
            batch.images, batch.input_ids, batch.attention_mask
        )
        return triplet_loss(
            image_emb,
            text_emb,
            margin=self.margin,
            hardest=self.hardest,
            reduction="mean",
        )


class SiameseMethod(AlignmentMethod):
    """Margin contrastive loss on N matching pairs and N mismatched ones (captions
    shifted by one).

    Every pair is judged alone, "same" or "different", with no competition between
    candidates: the loss pulls matching pairs together and pushes mismatched ones to at
    least ``margin`` apart.
    """

    name = "siamese"
    summary = "siamese margin contrastive"

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = margin

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """Mean margin loss over the N matching and N shifted (mismatched) pairs of the
        batch."""
        image_emb, text_emb, _ = model(
            batch.images, batch.input_ids, batch.attention_mask
        )
        shifted = text_emb.roll(1, dims=0)
        same = torch.cat(
            [
                torch.ones(len(image_emb), dtype=torch.bool),
                torch.zeros(len(image_emb), dtype=torch.bool),
            ]
        )
        return siamese_contrastive_loss(
            torch.cat([image_emb, image_emb]),
            torch.cat([text_emb, shifted]),
            same,
            self.margin,
        )


class AdversarialMethod(AlignmentMethod):
    """A modality discriminator behind a gradient reversal layer, with or without
    InfoNCE.

    ``with_infonce=True`` (``"adversarial"``): CLIP loss + ``weight`` times the
    discriminator's loss; the encoders learn the pairs and, through the reversed
    gradient, to hide which modality an embedding came from. ``with_infonce=False``
    (``"adversarial_only"``): the game alone. Its loss never looks at which caption
    belongs to which image, so it can only make the two *distributions* alike; it cannot
    align pairs (Ganin & Lempitsky 2015 keep a supervised task loss for the same
    reason).
    """

    def __init__(
        self,
        with_infonce: bool = True,
        lambda_: float = 1.0,
        weight: float = 0.5,
        hidden: int = 128,
    ) -> None:
        self.with_infonce = with_infonce
        self.lambda_ = lambda_
        self.weight = weight
        self.hidden = hidden
        self.name = "adversarial" if with_infonce else "adversarial_only"
        self.summary = (
            "InfoNCE + modality discriminator (GRL)"
            if with_infonce
            else "modality discriminator only (no pairs)"
        )

    def auxiliary(self, embed_dim: int) -> nn.Module:
        """The modality discriminator, trained together with the encoders."""
        return ModalityDiscriminator(embed_dim, hidden=self.hidden)

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """(InfoNCE +) ``weight`` x the discriminator's cross-entropy on
        gradient-reversed embeddings."""
        if auxiliary is None:
            raise ValueError(
                f"method {self.name!r} needs its discriminator: pass "
                "auxiliary=method.auxiliary(embed_dim)"
            )
        image_emb, text_emb, scale = model(
            batch.images, batch.input_ids, batch.attention_mask
        )
        game = adversarial_alignment_loss(image_emb, text_emb, auxiliary, self.lambda_)
        if not self.with_infonce:
            return game
        return clip_loss(image_emb, text_emb, scale) + self.weight * game


class DistillationMethod(AlignmentMethod):
    """The student learns the teacher's image-to-text and text-to-image softmax
    distributions.

    No pair labels are used: the targets are the rows and columns of the teacher's
    similarity matrix on the same batch, which also say *how* wrong every other caption
    is (a caption naming the right shapes in the wrong colours is "less wrong" than an
    unrelated one).
    """

    name = "distillation"
    summary = "similarity distillation from a teacher"

    def __init__(self, teacher: DualEncoder) -> None:
        if not all(
            hasattr(teacher, attr)
            for attr in ("encode_image", "encode_text", "logit_scale")
        ):
            raise TypeError(
                "teacher must be a trained dual encoder (encode_image, encode_text, "
                "logit_scale)"
            )
        self.teacher = teacher.eval().requires_grad_(False)

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """KL(teacher || student) of the similarity distributions, averaged over both
        directions."""
        image_emb, text_emb, scale = model(
            batch.images, batch.input_ids, batch.attention_mask
        )
        with torch.no_grad():
            teacher_image = self.teacher.encode_image(batch.images)
            teacher_text = self.teacher.encode_text(
                batch.input_ids, batch.attention_mask
            )
            teacher_scale = self.teacher.logit_scale
        return similarity_distillation_loss(
            image_emb, text_emb, teacher_image, teacher_text, scale, teacher_scale
        )


class HardNegativeMethod(AlignmentMethod):
    """InfoNCE in which every image must also beat the swapped versions of its own
    caption.

    The negatives (relation swapped: "left of" <-> "right of"; attribute swapped: two
    objects' colours exchanged) use exactly the words of the true caption, so only a
    text encoder that reads word order and an image encoder that sees positions can tell
    them apart. ``negatives="chosen"`` (default) gives each image the two swaps of the
    caption in the batch; ``"all"`` the swaps of all its captions (up to 10 negatives;
    each caption states a different relation, so they are not redundant). Every negative
    is one more caption through the text tower (3 captions per image against 11), so at
    equal training time "chosen" takes about three times the steps, and on a CPU that
    served relations better than more negatives per step.
    """

    name = "hard_negatives"
    summary = "InfoNCE + swapped-caption negatives"

    def __init__(self, negatives: str = "chosen") -> None:
        if negatives not in ("all", "chosen"):
            raise ValueError(f"negatives must be 'all' or 'chosen', got {negatives!r}")
        self.hard_negatives = negatives

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """The CLIP loss with the batch's [B, K] hard negatives added to each image's
        candidates."""
        if (
            batch.negative_ids is None
            or batch.negative_attention is None
            or batch.negative_valid is None
        ):
            raise ValueError(
                "hard_negatives needs negative_ids, negative_attention and "
                "negative_valid in the batch"
            )
        image_emb, text_emb, scale = model(
            batch.images, batch.input_ids, batch.attention_mask
        )
        size, k, length = batch.negative_ids.shape
        negatives = model.encode_text(
            batch.negative_ids.reshape(size * k, length),
            batch.negative_attention.reshape(size * k, length),
        )
        return clip_loss_with_hard_negatives(
            image_emb,
            text_emb,
            negatives.reshape(size, k, -1),
            scale,
            negative_mask=batch.negative_valid,
        )


METHODS: dict[str, Callable[..., AlignmentMethod]] = {
    "infonce": InfoNCEMethod,
    "vse0": lambda **kw: TripletMethod(hardest=False, **kw),
    "vsepp": lambda **kw: TripletMethod(hardest=True, **kw),
    "siamese": SiameseMethod,
    "adversarial": lambda **kw: AdversarialMethod(with_infonce=True, **kw),
    "adversarial_only": lambda **kw: AdversarialMethod(with_infonce=False, **kw),
    "distillation": DistillationMethod,
    "hard_negatives": HardNegativeMethod,
}


def method_names() -> list[str]:
    """The names :func:`get_method` accepts, in the order of the comparison table."""
    return list(METHODS)


def get_method(name: str, **kwargs: Any) -> AlignmentMethod:
    """Build the method called ``name`` (``distillation`` needs ``teacher=``; options as
    keywords)."""
    if name not in METHODS:
        raise ValueError(
            f"unknown alignment method {name!r}; valid names: {', '.join(METHODS)}"
        )
    return METHODS[name](**kwargs)

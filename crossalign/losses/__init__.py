"""Alignment losses: symmetric InfoNCE (CLIP, single process and across ranks), its
version with extra hard negatives, triplet ranking (VSE0, VSE++), siamese contrastive,
adversarial alignment with gradient reversal, and similarity distillation."""

from crossalign.losses.adversarial import (
    GradientReversal,
    ModalityDiscriminator,
    adversarial_alignment_loss,
    grad_reverse,
)
from crossalign.losses.contrastive import ClipLoss, clip_logits, clip_loss
from crossalign.losses.distillation import similarity_distillation_loss
from crossalign.losses.hard_negatives import clip_loss_with_hard_negatives
from crossalign.losses.ranking import (
    SiameseContrastiveLoss,
    TripletLoss,
    siamese_contrastive_loss,
    triplet_loss,
)

__all__ = [
    "ClipLoss",
    "GradientReversal",
    "ModalityDiscriminator",
    "SiameseContrastiveLoss",
    "TripletLoss",
    "adversarial_alignment_loss",
    "clip_logits",
    "clip_loss",
    "clip_loss_with_hard_negatives",
    "grad_reverse",
    "siamese_contrastive_loss",
    "similarity_distillation_loss",
    "triplet_loss",
]

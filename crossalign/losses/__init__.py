"""Alignment losses: symmetric InfoNCE (CLIP), in one process and across ranks."""

from crossalign.losses.contrastive import ClipLoss, clip_logits, clip_loss

__all__ = ["ClipLoss", "clip_logits", "clip_loss"]

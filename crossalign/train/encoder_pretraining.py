"""Pretraining an image encoder on ShapesWorld's object labels: the book's stand-in for ImageNet.

Show, Attend and Tell (Xu et al. 2015) reads the grid of a CNN that was first trained to
classify ImageNet photos; the caption loss only has to learn to *describe* what the CNN
already *recognises*. A small CNN trained from scratch by the caption loss alone learns
colours and sizes within a few hundred steps, but which shape an object has only after a long
plateau, if at all within a CPU budget: the shape word is one token in about twelve, and the
gradient it sends into the CNN is swamped by the easier words (chapter 9 measures this).

The labels used here are what an ImageNet label is to a photo, read off the scene graph:
which shapes, colours and sizes occur in the image (a multi-label target of
``len(SCENE_LABELS)`` bits). A linear head on the max-pooled feature grid predicts them with
binary cross-entropy; max pooling asks for *some* grid cell to detect each thing, so the grid
learns local detectors, which is what a captioner's attention then reads. The head is thrown
away afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from crossalign.data.shapes import COLOURS, SHAPES, SIZES, SceneGraph, ShapesWorld
from crossalign.train.schedule import warmup_cosine_scheduler

__all__ = ["SCENE_LABELS", "EncoderPretrainResult", "pretrain_on_scene_labels", "scene_label_targets"]

#: The label bits, in order: every shape, then every colour, then every size.
SCENE_LABELS: tuple[str, ...] = (*SHAPES, *COLOURS, *SIZES)
_LABEL_INDEX = {name: i for i, name in enumerate(SCENE_LABELS)}


def scene_label_targets(scenes: Sequence[SceneGraph]) -> torch.Tensor:
    """Multi-hot targets ``[N, len(SCENE_LABELS)]``: bit ``j`` is 1 when some object has attribute ``SCENE_LABELS[j]``."""
    targets = torch.zeros(len(scenes), len(SCENE_LABELS))
    for row, scene in enumerate(scenes):
        for obj in scene.objects:
            for value in (obj.shape, obj.colour, obj.size):
                targets[row, _LABEL_INDEX[value]] = 1.0
    return targets


@dataclass
class EncoderPretrainResult:
    """What :func:`pretrain_on_scene_labels` returns: the loss of every step, wall time and the head."""

    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    head: nn.Module | None = None


def pretrain_on_scene_labels(
    encoder: nn.Module,
    dataset: ShapesWorld,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup_steps: int = 30,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> EncoderPretrainResult:
    """Train ``encoder`` (in place) to tell which shapes, colours and sizes a ShapesWorld image holds.

    Args:
        encoder: an image encoder with ``forward_grid`` and ``grid_dim`` (see
            :mod:`crossalign.models.image_encoders`); all its parameters are trained, even
            ones that had ``requires_grad=False`` (a captioner's frozen encoder is frozen
            *after* this pretraining), and their ``requires_grad`` flags are restored after.
        dataset: the ShapesWorld split to draw images and scene graphs from.
        steps, batch_size, lr, warmup_steps: AdamW with linear warm-up and cosine decay.
        seed: seeds the head's initialisation and the batches (same seed, same run).
        device: where to train.
        progress: show a progress bar.

    Returns:
        the per-step losses, the wall time and the trained linear head (for inspection).
    """
    if not isinstance(dataset, ShapesWorld):
        raise TypeError(f"scene-label pretraining needs a ShapesWorld data set (it reads scene graphs), got {type(dataset).__name__}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if not hasattr(encoder, "forward_grid"):
        raise TypeError(f"{type(encoder).__name__} has no forward_grid: pretraining reads the encoder's feature grid")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(encoder.grid_dim, len(SCENE_LABELS))
    encoder.to(device)
    head.to(device)
    flags = [p.requires_grad for p in encoder.parameters()]
    encoder.requires_grad_(True)
    was_training = encoder.training
    encoder.train()
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=lr, weight_decay=0.0)
    scheduler = warmup_cosine_scheduler(optimizer, steps, min(warmup_steps, steps - 1))
    history: list[float] = []
    started = time.perf_counter()
    try:
        for step in tqdm(range(1, steps + 1), desc="pretrain encoder", disable=not progress):
            indices = torch.randint(len(dataset), (batch_size,), generator=generator).tolist()
            images = dataset.render(indices).to(device)
            targets = scene_label_targets(dataset.scenes(indices)).to(device)
            logits = head(encoder.forward_grid(images).amax(dim=(2, 3)))
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the pretraining loss became {loss.item()} at step {step}; lower lr (now {lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            history.append(loss.item())
    finally:
        for parameter, flag in zip(encoder.parameters(), flags):
            parameter.requires_grad_(flag)
        encoder.train(was_training)
    return EncoderPretrainResult(history=history, seconds=time.perf_counter() - started, head=head.eval())

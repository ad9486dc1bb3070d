"""Pretraining an image encoder on ShapesWorld's object labels: the book's stand-in for
ImageNet.

Show, Attend and Tell (Xu et al. 2015) reads the grid of a CNN that was first trained to
classify ImageNet photos; the caption loss only has to learn to *describe* what the CNN
already *recognises*. A small CNN trained from scratch by the caption loss alone learns
colours and sizes within a few hundred steps, but which shape an object has only after a
long plateau, if at all within a CPU budget: the shape word is one token in about
twelve, and the gradient it sends into the CNN is swamped by the easier words (chapter 9
measures this).

The labels are what an ImageNet label is to a photo, read off the scene graph, in three
groups that can be combined (``label_groups``):

- ``"attributes"``: which shapes, colours and sizes occur in the image (16 bits);
- ``"pairs"``: which colour-shape and size-shape pairs occur ("red circle", "small
  square"; 55 bits). They ask one grid cell to know *both* attributes of its object,
  which is what a captioner needs to bind "red" to "circle" in a scene that also holds a
  blue square;
- ``"regions"``: which of the nine regions of the image (thirds across and down, the
  regions a lone object's caption names: "at the top left") hold an object's centre (9
  bits). They ask the grid to know *where* inside its cell an object lies: a 4 x 4
  grid's cells straddle the thirds, so which cell fires cannot say it alone.

A linear head on the max-pooled feature grid predicts the chosen bits with binary
cross-entropy; max pooling asks for *some* grid cell to detect each thing, so the grid
learns local detectors, which is what a captioner's attention then reads. The head is
thrown away afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from crossalign.data.batches import EpochBatches
from crossalign.data.shapes import (
    COLOURS,
    REGION_WORDS,
    SHAPES,
    SIZES,
    SceneGraph,
    ShapeObject,
    ShapesWorld,
)
from crossalign.train.engine import Engine
from crossalign.train.optim import build_optimizer
from crossalign.train.schedule import warmup_cosine_scheduler

if TYPE_CHECKING:
    from crossalign.models.image_encoders import ImageEncoder, MaxPooledGrid

__all__ = [
    "LABEL_GROUPS",
    "SCENE_LABELS",
    "EncoderPretrainResult",
    "pretrain_on_scene_labels",
    "scene_label_names",
    "scene_label_targets",
]

#: The label bits of each group, in order. An object sets, in every group, the bits it
# matches.
LABEL_GROUPS: dict[str, tuple[str, ...]] = {
    "attributes": (*SHAPES, *COLOURS, *SIZES),
    "pairs": (
        *(f"{c} {s}" for c in COLOURS for s in SHAPES),
        *(f"{z} {s}" for z in SIZES for s in SHAPES),
    ),
    # "top left", "top centre", ...: the regions of ShapesWorld's grammar, named as
    # ShapeObject.region() gives them
    "regions": tuple(" ".join(region) for region in REGION_WORDS),
}
#: The bits of the default group, ``"attributes"``: every shape, then every colour, then
# every size.
SCENE_LABELS: tuple[str, ...] = LABEL_GROUPS["attributes"]


def _object_labels(obj: ShapeObject) -> tuple[str, ...]:
    """Every label ``obj`` switches on, in any group."""
    return (
        obj.shape,
        obj.colour,
        obj.size,
        f"{obj.colour} {obj.shape}",
        f"{obj.size} {obj.shape}",
        " ".join(obj.region()),
    )


def scene_label_names(label_groups: Sequence[str] = ("attributes",)) -> tuple[str, ...]:
    """The label bits of ``label_groups`` (names from :data:`LABEL_GROUPS`), in that
    order."""
    if isinstance(label_groups, str) or not label_groups:
        raise ValueError(
            "label_groups must be a non-empty list of group names, got "
            f"{label_groups!r}"
        )
    unknown = [group for group in label_groups if group not in LABEL_GROUPS]
    if unknown or len(set(label_groups)) != len(label_groups):
        raise ValueError(
            f"label_groups={list(label_groups)} must name distinct groups among "
            f"{', '.join(LABEL_GROUPS)}"
        )
    return tuple(name for group in label_groups for name in LABEL_GROUPS[group])


def scene_label_targets(
    scenes: Sequence[SceneGraph], label_groups: Sequence[str] = ("attributes",)
) -> torch.Tensor:
    """Multi-hot targets ``[N, len(names)]`` with
    ``names = scene_label_names(label_groups)``.

    Bit ``j`` is 1 when some object of the scene has label ``names[j]``: the attribute,
    the colour-shape or size-shape pair, or the region its centre lies in.
    """
    index = {name: j for j, name in enumerate(scene_label_names(label_groups))}
    targets = torch.zeros(len(scenes), len(index))
    for row, scene in enumerate(scenes):
        for obj in scene.objects:
            for label in _object_labels(obj):
                if label in index:
                    targets[row, index[label]] = 1.0
    return targets


@dataclass
class EncoderPretrainResult:
    """What :func:`pretrain_on_scene_labels` returns: the loss of every step, wall time,
    the head and its labels."""

    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    head: nn.Module | None = None
    labels: tuple[str, ...] = ()


def pretrain_on_scene_labels(
    encoder: ImageEncoder | MaxPooledGrid,
    dataset: ShapesWorld,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup_steps: int = 30,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    label_groups: Sequence[str] = ("attributes",),
    log_every: int = 50,
) -> EncoderPretrainResult:
    """Train ``encoder`` (in place) to tell what a ShapesWorld image holds: the labels
    of ``label_groups``.

    Args:
        encoder: an image encoder with ``forward_grid`` and ``grid_dim`` (see
            :mod:`crossalign.models.image_encoders`); all its parameters are trained,
            even ones that had ``requires_grad=False`` (a captioner's frozen encoder is
            frozen *after* this pretraining), and their ``requires_grad`` flags are
            restored after.
        dataset: the ShapesWorld split to draw images and scene graphs from. steps,
        batch_size, lr, warmup_steps: AdamW with linear warm-up and cosine decay. seed:
        seeds the head's initialisation and the batches (epochs of
        :class:`~crossalign.data.batches.EpochBatches`; same seed, same run). device:
        where to train. progress: show a progress bar. label_groups: which label groups
        of :data:`LABEL_GROUPS` to predict (module docstring). log_every: read the
        losses back from the device every this many steps.

    Returns:
        the per-step losses, the wall time, the trained linear head and the names of its
        outputs (for inspection).
    """
    if not isinstance(dataset, ShapesWorld):
        raise TypeError(
            "scene-label pretraining needs a ShapesWorld data set (it reads scene "
            f"graphs), got {type(dataset).__name__}"
        )
    if steps < 1 or batch_size < 1:
        raise ValueError(
            f"steps and batch_size must be >= 1, got steps={steps}, "
            f"batch_size={batch_size}"
        )
    if not hasattr(encoder, "forward_grid"):
        raise TypeError(
            f"{type(encoder).__name__} has no forward_grid: pretraining reads the "
            "encoder's feature grid"
        )
    labels = scene_label_names(label_groups)
    batches = EpochBatches(len(dataset), batch_size, seed, hint="lower batch_size")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(encoder.grid_dim, len(labels))
    encoder.to(device)
    head.to(device)
    flags = [p.requires_grad for p in encoder.parameters()]
    encoder.requires_grad_(True)
    was_training = encoder.training
    encoder.train()
    optimizer = build_optimizer([*encoder.parameters(), *head.parameters()], lr=lr)
    scheduler = warmup_cosine_scheduler(optimizer, steps, min(warmup_steps, steps - 1))

    def loss_at(step: int) -> torch.Tensor:
        indices = batches(step).tolist()
        images = dataset.render(indices).to(device)
        targets = scene_label_targets(dataset.scenes(indices), label_groups).to(device)
        logits = head(encoder.forward_grid(images).amax(dim=(2, 3)))
        return F.binary_cross_entropy_with_logits(logits.float(), targets)

    engine = Engine(
        optimizer,
        scheduler,
        device=device,
        log_every=log_every,
        hint=f"lower lr (now {lr})",
        desc="pretrain encoder",
        total_steps=steps,
        progress=progress,
    )
    started = time.perf_counter()
    try:
        engine.run(loss_at, steps)
    finally:
        # The last step's gradients would otherwise stay on the encoder, and a later
        # loop that clips over all of a model's parameters would count them.
        optimizer.zero_grad(set_to_none=True)
        for parameter, flag in zip(encoder.parameters(), flags):
            parameter.requires_grad_(flag)
        encoder.train(was_training)
    history = engine.losses
    return EncoderPretrainResult(
        history=history,
        seconds=time.perf_counter() - started,
        head=head.eval(),
        labels=labels,
    )

"""Training a vision-to-LM bridge: stage 1 (projector only, LM frozen) and stage 2 (LM
tuned too).

The frozen image encoder sees every image once: its features are computed beforehand
(:func:`crossalign.data.encode.encode_dataset`) and training runs on them, which is why
a projector trains in seconds. Each step draws a batch of images, one of their reference
captions at random, and minimises
:meth:`crossalign.models.prefix_lm.PrefixCaptioner.loss` over whatever parameters
require a gradient: the projector in stage 1; the projector and the LM (or its low-rank
adapters, after ``captioner.set_lm_training("lora")``) in stage 2. An optional extra
loss (for example the Q-Former's image-text contrastive loss) is added with a weight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from crossalign.data.batches import EpochBatches
from crossalign.train.engine import Engine
from crossalign.train.optim import build_optimizer
from crossalign.train.schedule import warmup_cosine_scheduler

if TYPE_CHECKING:
    from crossalign.models.prefix_lm import PrefixCaptioner

__all__ = ["PrefixTrainResult", "train_prefix"]

ExtraLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PrefixTrainResult:
    """What :func:`train_prefix` returns: per-step history and the wall time it took."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    trained_parameters: int = 0


def train_prefix(
    captioner: PrefixCaptioner,
    features: torch.Tensor,
    captions: Sequence[Sequence[str]],
    tokenizer: Any,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    warmup_steps: int = 20,
    max_len: int = 40,
    clip_grad_norm: float | None = 1.0,
    extra_loss: ExtraLoss | None = None,
    extra_weight: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log_every: int = 50,
    progress: bool = True,
) -> PrefixTrainResult:
    """Train the parameters of ``captioner`` that require a gradient on cached image
    features.

    Args:
        captioner: a :class:`crossalign.models.prefix_lm.PrefixCaptioner`. features:
        ``[N, ...]`` frozen image features, row ``i`` for image ``i``. captions: the
        reference captions of each image (``captions[i]`` is a list of strings).
        tokenizer: turns captions into ``<bos> .. <eos>`` ids (``encode_batch``). steps,
        batch_size, lr, weight_decay, warmup_steps: AdamW with linear warm-up and
            cosine decay to zero.
        max_len: longest encoded caption (longer ones are cut, keeping ``<eos>``).
        clip_grad_norm: clip the gradient norm of the trained parameters (``None``: no
        clipping). extra_loss: ``f(features, input_ids, attention_mask) -> scalar``
        added to the caption
            loss with weight ``extra_weight`` (e.g. ``qformer.contrastive_loss``).
        seed: seeds the batch order and caption choice (the same seed, the same run).
        device: where to train.
        log_every: read the losses back from the device every this many steps.
        progress: show a progress bar.

    Returns:
        the history (one ``{"step", "loss", "caption_loss"[, "extra_loss"]}`` per step).
    """
    if len(features) != len(captions):
        raise ValueError(
            f"features has {len(features)} rows but captions has {len(captions)} "
            "entries; "
            "give one list of captions per image"
        )
    if steps < 1 or batch_size < 1:
        raise ValueError(
            f"steps and batch_size must be >= 1, got steps={steps}, "
            f"batch_size={batch_size}"
        )
    parameters = [p for p in captioner.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(
            "nothing to train: no parameter of the captioner requires a gradient"
        )
    captioner.to(device).train()
    optimizer = build_optimizer(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = warmup_cosine_scheduler(optimizer, steps, min(warmup_steps, steps - 1))
    batches = EpochBatches(len(features), batch_size, seed, hint="lower batch_size")
    counts = tuple(len(image_captions) for image_captions in captions)

    def loss_at(step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rows = batches(step)
        picks = batches.choices(step, counts)
        texts = [
            captions[row][pick] for row, pick in zip(rows.tolist(), picks.tolist())
        ]
        input_ids, mask = tokenizer.encode_batch(texts, max_len=max_len)
        batch_features = features[rows].to(device)
        input_ids, mask = input_ids.to(device), mask.to(device)
        caption_loss = captioner.loss(batch_features, input_ids, mask)
        parts = {"caption_loss": caption_loss}
        if extra_loss is None:
            return caption_loss, parts
        parts["extra_loss"] = extra_loss(batch_features, input_ids, mask)
        return caption_loss + extra_weight * parts["extra_loss"], parts

    def record(entry: dict[str, float]) -> dict[str, float]:
        extra = {"extra_loss": entry["extra_loss"]} if "extra_loss" in entry else {}
        return {
            "step": float(entry["step"]),
            "caption_loss": entry["caption_loss"],
            **extra,
            "loss": entry["loss"],
        }

    engine = Engine(
        optimizer,
        scheduler,
        device=device,
        clip_grad_norm=clip_grad_norm,
        log_every=log_every,
        hint=f"lower lr (now {lr})",
        record=record,
        desc="prefix",
        total_steps=steps,
        progress=progress,
    )
    started = time.perf_counter()
    history = engine.run(loss_at, steps)
    captioner.eval()
    return PrefixTrainResult(
        history=history,
        seconds=time.perf_counter() - started,
        trained_parameters=sum(p.numel() for p in parameters),
    )

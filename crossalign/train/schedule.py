"""Learning-rate schedules."""

from __future__ import annotations

import math

import torch


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0
) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then cosine
    decay.

    Rises linearly from ``1 / warmup_steps`` to 1 over the first ``warmup_steps`` steps,
    then follows half a cosine from 1 down to ``min_ratio`` at ``total_steps``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    if warmup_steps < 0 or not 0.0 <= min_ratio <= 1.0:
        raise ValueError(
            f"need warmup_steps >= 0 and 0 <= min_ratio <= 1 (got {warmup_steps}, "
            f"{min_ratio})"
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that applies :func:`warmup_cosine` to every parameter group."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, total_steps, warmup_steps, min_ratio),
    )

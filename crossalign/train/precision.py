"""Mixed precision: autocast contexts and the fp16 gradient scaler, on any device."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str, device: torch.device) -> None:
    """Raise a clear error for an unknown precision or one the device cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not known; use one of {PRECISIONS}"
        )
    if (
        precision == "bf16"
        and device.type == "cuda"
        and not torch.cuda.is_bf16_supported()
    ):
        raise ValueError(
            "precision='bf16' asked for, but this GPU has no bf16 support; use 'fp16' "
            "or 'fp32'"
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` (a no-op for fp32).

    Matrix products and convolutions run in bf16/fp16 inside it. Which other ops stay in
    fp32 is decided by autocast's per-device op lists (on CUDA the softmax runs in fp32,
    on CPU it stays in bf16), so the trainer casts the embeddings to fp32 before the
    contrastive loss.
    """
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 has fp32's range and needs
    none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")

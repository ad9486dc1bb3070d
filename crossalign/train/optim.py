"""The optimiser builder: AdamW over two parameter groups chosen by one rule.

The rule is by shape: a parameter with two or more dimensions decays, one with fewer
does not. Weight decay pulls weights towards zero. It is meant for the matrices that
mix features (linear layers, convolution kernels, attention projections, embedding
tables), not for biases, normalisation gains, learned queries' scales or a learned
temperature, whose size carries meaning: decaying a LayerNorm gain or the logit scale
only fights the loss.

Why embedding tables decay too. Trainers disagree here. open_clip's training script
excludes parameters with fewer than two dimensions and those named ``bn``, ``ln``,
``bias`` or ``logit_scale``, so its token and position tables decay; nanoGPT decays
every parameter with two or more dimensions, tables included; minGPT excludes
``nn.Embedding`` modules by type. The shape rule is the one that needs no naming
convention: a rule by name misses a table called ``embed``, a rule by module type
misses a position table held as a bare ``nn.Parameter``. Its cost is stated rather
than hidden: a row that receives no gradient shrinks by ``lr * weight_decay`` of its
size each step (AdamW's decoupled decay), about 6% over a thousand steps at the
captioner's ``lr=0.006, weight_decay=0.01``, which a word that appears in training
repairs at its next update.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn


def parameter_groups(
    parameters: Iterable[nn.Parameter], weight_decay: float
) -> list[dict]:
    """The trainable ``parameters`` split into a decayed group (two or more
    dimensions) and an undecayed one (module docstring); empty groups dropped."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in parameters:
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(
    parameters: nn.Module | Iterable[nn.Parameter],
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: Sequence[float] = (0.9, 0.999),
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``parameters`` (a module or an iterable
    of parameters), matrices decayed by ``weight_decay`` and the rest not (module
    docstring).

    ``fused=True`` asks for the fused kernel (one launch per step for all parameters)
    and falls back to the default implementation where this PyTorch build or device
    has none.
    """
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    groups = parameter_groups(parameters, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    pair = (float(betas[0]), float(betas[1]))
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=pair, fused=True)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=pair)


def optimizer_for(model: torch.nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """The AdamW of a ``train`` config section (``lr``, ``betas``, ``weight_decay``,
    ``fused_optimizer``) over ``model``'s trainable parameters."""
    return build_optimizer(
        model,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        fused=cfg.fused_optimizer,
    )

"""The optimiser builder: AdamW over parameter groups chosen by one rule.

Weight decay pulls weights towards zero. It is meant for the matrices that mix
features (linear layers, convolution kernels, attention projections), not for biases,
normalisation scales or a learned temperature, whose size carries meaning: decaying a
LayerNorm gain or the logit scale only fights the loss.

Embedding tables are the case where trainers differ: open_clip's recipe leaves them
undecayed (they are excluded with the gains and biases), nanoGPT decays them with the
other matrices. The dual-encoder trainer, the captioner and the comparison runner
follow open_clip (``decay="matrices"``): a rare word's row receives few gradients, and
decay would shrink it towards zero between its rare updates. The language-model trainer
of chapter 5 follows nanoGPT (``decay="matrices_and_embeddings"``); the prefix trainer,
the encoder pretraining and the fusion heads decay every parameter alike
(``decay="all"``). These three rules are kept so that the chapters' measured numbers
stay what they are; they differ only in which parameters decay.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

DECAY_RULES = ("matrices", "matrices_and_embeddings", "all")


def _decays(name: str, param: nn.Parameter, rule: str) -> bool:
    if rule == "all":
        return True
    if rule == "matrices_and_embeddings":
        return param.ndim >= 2
    return param.ndim >= 2 and "embedding" not in name


def parameter_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, rule: str
) -> list[dict]:
    """The trainable parameters split into a decayed and an undecayed group (empty
    groups dropped)."""
    if rule not in DECAY_RULES:
        raise ValueError(f"decay={rule!r} is not known; use one of {DECAY_RULES}")
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in named:
        if param.requires_grad:
            (decay if _decays(name, param, rule) else no_decay).append(param)
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
    decay: str = "matrices",
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``parameters`` (a module, or a list for
    ``decay="all"``), grouped by ``decay`` (module docstring).

    ``fused=True`` asks for the fused kernel (one launch per step for all parameters)
    and falls back to the default implementation where this PyTorch build or device
    has none.
    """
    if isinstance(parameters, nn.Module):
        named = list(parameters.named_parameters())
    elif decay == "all":
        named = [(str(i), p) for i, p in enumerate(parameters)]
    else:
        raise ValueError(
            f"decay={decay!r} tells parameters apart by name and shape: pass the module"
        )
    groups = parameter_groups(named, weight_decay, decay)
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
    ``fused_optimizer``), decaying matrices only (module docstring)."""
    return build_optimizer(
        model,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        decay="matrices",
        fused=cfg.fused_optimizer,
    )

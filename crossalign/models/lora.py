"""Low-rank adapters (LoRA): tune a frozen linear layer through a rank-r update ``B A``.

A frozen layer ``y = W x + b`` gets a trainable side branch (Hu et al., 2022)::

    y = W x + b + (alpha / r) * B (A x),        A: (r, in),  B: (out, r)

``A`` starts random and ``B`` at zero, so at initialisation the adapted layer computes
exactly what the base layer did; training moves only ``A`` and ``B`` (``r * (in + out)``
numbers instead of ``in * out``). After training the update can be *merged* into the
weight, ``W' = W + (alpha / r) B A``, and the adapter disappears: no extra cost at
inference.

Two layer types are supported: ``torch.nn.Linear`` (weight ``(out, in)``) and Hugging
Face's GPT-2 ``Conv1D`` (weight ``(in, out)``, ``y = x W + b``), so the same code adapts
:class:`crossalign.models.gpt.GPT` and ``transformers.GPT2LMHeadModel``.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["LoRALinear", "apply_lora", "lora_parameters", "merge_lora"]


def _is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is Hugging Face's ``Conv1D`` (checked only if transformers is
    loaded)."""
    if "transformers" not in sys.modules:
        return False
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def _is_adaptable(module: nn.Module) -> bool:
    """Whether :class:`LoRALinear` can wrap ``module``."""
    return isinstance(module, nn.Linear) or _is_hf_conv1d(module)


def _weight(layer: nn.Module) -> torch.Tensor:
    """The ``weight`` tensor of an ``nn.Linear`` or HF ``Conv1D``."""
    weight = layer.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(layer).__name__}.weight is not a tensor")
    return weight


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (or HF ``Conv1D``) plus a trainable low-rank update.

    Args:
        base: the layer to adapt; its parameters are frozen (``requires_grad=False``).
        rank: ``r``, the rank of the update (>= 1, at most ``min(in, out)``). alpha:
        scale numerator; the update is multiplied by ``alpha / rank`` so that changing
            the rank does not change the size of the update at a given learning rate.
        dropout: dropout on the adapter's input (training only).
    """

    def __init__(
        self, base: nn.Module, rank: int = 4, alpha: float = 8.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not _is_adaptable(base):
            raise TypeError(
                "LoRALinear adapts nn.Linear or transformers' Conv1D, got "
                f"{type(base).__name__}"
            )
        # Conv1D keeps its weight as (in, out)
        self.transposed = not isinstance(base, nn.Linear)
        weight = _weight(base)
        in_features, out_features = (
            weight.shape[::-1] if not self.transposed else weight.shape
        )
        if (
            isinstance(rank, bool)
            or not isinstance(rank, int)
            or not 1 <= rank <= min(in_features, out_features)
        ):
            raise ValueError(
                f"rank must be an integer in [1, {min(in_features, out_features)}], "
                f"got {rank!r}"
            )
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        self.base = base
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.rank, self.alpha = rank, float(alpha)
        self.scale = self.alpha / rank
        self.lora_a = nn.Parameter(
            torch.empty(rank, in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(out_features, rank, dtype=weight.dtype, device=weight.device)
        )
        # the nn.Linear default, as in the LoRA code
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus ``scale * B A x``."""
        update = (self.dropout(x) @ self.lora_a.T) @ self.lora_b.T
        return self.base(x) + self.scale * update

    def delta_weight(self) -> torch.Tensor:
        """The update ``scale * B A`` laid out like the base weight (transposed for
        Conv1D)."""
        delta = self.scale * (self.lora_b @ self.lora_a)
        return delta.T if self.transposed else delta

    def merged(self) -> nn.Module:
        """A copy of the base layer whose weight includes the update (no adapter
        left)."""
        layer = copy.deepcopy(self.base)
        weight = _weight(layer)
        with torch.no_grad():
            weight.add_(self.delta_weight().to(weight.dtype))
        return layer

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"rank={self.rank}, alpha={self.alpha}, transposed={self.transposed}"


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) with ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_lora(
    model: nn.Module,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] = ("lm_head",),
    dropout: float = 0.0,
) -> list[str]:
    """Wrap linear layers of ``model`` in :class:`LoRALinear`, in place; return their
    names.

    Every parameter of ``model`` is frozen first, so afterwards only the adapters train.

    Args:
        model: any module (our GPT, a Hugging Face causal LM, ...).
        rank, alpha, dropout: see :class:`LoRALinear`.
        targets: adapt only layers whose name ends with one of these strings (e.g.
            ``("qkv", "c_attn")`` for attention only); ``None`` adapts every linear
            layer.
        exclude: layers whose name ends with one of these are never adapted (default:
        the
            output head, which GPT-2-style models tie to the token embedding).

    Raises:
        ValueError: no layer matched ``targets`` (the names are listed to choose from).
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    candidates = [
        name
        for name, module in model.named_modules()
        if name
        and _is_adaptable(module)
        and not isinstance(module, LoRALinear)
        and not any(name.endswith(skip) for skip in exclude)
    ]
    chosen = [
        name
        for name in candidates
        if targets is None or any(name.endswith(t) for t in targets)
    ]
    if not chosen:
        raise ValueError(
            f"targets={targets!r} matched no linear layer; adaptable layers are "
            f"{candidates}"
        )
    for name in chosen:
        _set_submodule(
            model,
            name,
            LoRALinear(
                model.get_submodule(name), rank=rank, alpha=alpha, dropout=dropout
            ),
        )
    return chosen


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter matrices (every ``A`` and ``B``) of ``model``, the parameters to
    optimise."""
    return [
        p
        for module in model.modules()
        if isinstance(module, LoRALinear)
        for p in (module.lora_a, module.lora_b)
    ]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter of ``model`` into its base weight, in place; return ``model``.

    Each :class:`LoRALinear` is replaced by its base layer with ``W + (alpha / r) B A``;
    the outputs stay the same (up to float rounding) and no adapter remains.
    """
    adapted = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, LoRALinear)
    ]
    if not adapted:
        raise ValueError(
            "merge_lora found no LoRALinear layer in the model; call apply_lora first"
        )
    for name, module in adapted:
        _set_submodule(model, name, module.merged())
    return model

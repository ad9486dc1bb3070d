"""Sampling from a language model: temperature, top-k and top-p (nucleus) filtering, and
generation.

A language model gives, for the next token, a vector of *logits* ``z`` (B, V); the
distribution is ``softmax(z)``. Three standard ways to reshape it before drawing a
token:

- **temperature** ``tau > 0`` divides the logits: ``softmax(z / tau)``. ``tau < 1``
  sharpens the distribution, ``tau > 1`` flattens it, and ``tau -> 0`` concentrates all
  the mass on the argmax (``temperature=0`` means exactly that: greedy decoding).
- **top-k** keeps the ``k`` largest logits (exactly ``k``; ties are broken by position)
  and gives the others probability zero.
- **top-p** (nucleus, Holtzman et al. 2020) keeps the *smallest* set of most probable
  tokens whose total probability is ``>= p``, so the number kept adapts to how confident
  the model is.

Filtered-out tokens get the logit ``-inf``; :func:`filter_logits` applies temperature,
then top-k, then top-p (the order Hugging Face ``generate`` uses), each on the result of
the one before. :func:`generate` runs the usual loop for any causal language model that
maps token ids (B, T) to logits (B, T, V): a :class:`~crossalign.models.gpt.GPT`, a
Hugging Face causal LM (whose output has ``.logits``), or any function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from crossalign.utils import is_integral, is_real

__all__ = [
    "filter_logits",
    "generate",
    "sample_next_token",
    "top_k_filter",
    "top_p_filter",
]


def _check_logits(logits: torch.Tensor) -> None:
    """Raise when ``logits`` is not a floating tensor with a last (vocabulary)
    dimension."""
    if (
        not isinstance(logits, torch.Tensor)
        or not logits.is_floating_point()
        or logits.dim() < 1
    ):
        raise ValueError(
            "logits must be a floating-point tensor of shape (..., vocab_size)"
        )


def _check_temperature(temperature: float) -> float:
    """``temperature`` as a float, or a ValueError unless it is a finite number >= 0."""
    if (
        isinstance(temperature, bool)
        or not is_real(temperature)
        or not (math.isfinite(temperature) and temperature >= 0)
    ):
        raise ValueError(
            "temperature must be a finite number >= 0 (0 = greedy argmax), got "
            f"{temperature!r}"
        )
    return float(temperature)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (exactly ``k``; ties broken by index),
    set the rest to -inf.

    ``k`` at least the vocabulary size leaves the logits unchanged.
    """
    _check_logits(logits)
    if isinstance(k, bool) or not is_integral(k) or k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {k!r}")
    if k >= logits.shape[-1]:
        return logits
    kept = torch.topk(logits, int(k), dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, kept, True)
    return logits.masked_fill(~keep, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep each row's smallest set of most probable tokens whose probability sums to
    ``>= p``; the rest -> -inf.

    Tokens are taken in order of decreasing probability (ties by index); a token is kept
    when the mass of the tokens before it is still below ``p``, so the most probable
    token is always kept and ``p = 1`` keeps every token of positive probability.
    """
    _check_logits(logits)
    if isinstance(p, bool) or not is_real(p) or not 0 < p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {p!r}")
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices
    sorted_probs = torch.softmax(logits.gather(-1, order).float(), dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep_sorted = mass_before < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -math.inf)


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Divide by ``temperature`` (> 0), then apply :func:`top_k_filter` and
    :func:`top_p_filter` when given."""
    _check_logits(logits)
    temperature = _check_temperature(temperature)
    if temperature == 0:
        raise ValueError(
            "temperature=0 is greedy decoding, which has no distribution to filter; "
            "use argmax"
        )
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token id per row of ``logits`` (B, V) -> (B,), after
    :func:`filter_logits`.

    ``temperature = 0`` returns the argmax (the first on ties), whatever ``top_k`` and
    ``top_p``.
    """
    _check_logits(logits)
    if logits.dim() != 2:
        raise ValueError(
            f"logits must have shape (B, vocab_size), got {tuple(logits.shape)}"
        )
    if _check_temperature(temperature) == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(
        filter_logits(logits, temperature, top_k, top_p).float(), dim=-1
    )
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model output: the tensor itself, or its ``.logits``
    (Hugging Face)."""
    logits = output.logits if hasattr(output, "logits") else output
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError(
            "the model must return logits of shape (B, T, vocab_size) (or an object "
            "with .logits)"
        )
    return logits


@torch.no_grad()
def generate(
    model: Callable[[torch.Tensor], Any],
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    block_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend each prompt of ``input_ids`` (B, T) by up to ``max_new_tokens`` sampled
    tokens -> (B, T + n).

    At every step the model sees the last ``block_size`` tokens (default:
    ``model.config.block_size`` when the model has one, else everything) and the next
    token is drawn by :func:`sample_next_token`. Once a row has produced ``eos_id`` it
    is filled with ``eos_id``; generation stops early when every row has. All prompts
    share one length (no padding), so a batch is the same prompt repeated or prompts of
    equal length.
    """
    if (
        not isinstance(input_ids, torch.Tensor)
        or input_ids.dim() != 2
        or input_ids.shape[1] == 0
    ):
        raise ValueError(
            "input_ids must be a LongTensor of shape (B, T) with T >= 1 (the prompts)"
        )
    if (
        isinstance(max_new_tokens, bool)
        or not is_integral(max_new_tokens)
        or max_new_tokens < 0
    ):
        raise ValueError(
            f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}"
        )
    if block_size is None:
        block_size = getattr(getattr(model, "config", None), "block_size", None)
    if block_size is not None and (
        isinstance(block_size, bool)
        or not isinstance(block_size, int)
        or block_size < 1
    ):
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    to_restore = model if isinstance(model, nn.Module) and model.training else None
    if to_restore is not None:
        to_restore.eval()
    tokens = input_ids
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    try:
        for _ in range(max_new_tokens):
            context = tokens if block_size is None else tokens[:, -block_size:]
            logits = _logits_of(model(context))[:, -1, :]
            next_token = sample_next_token(logits, temperature, top_k, top_p, generator)
            if eos_id is not None:
                next_token = next_token.masked_fill(finished, eos_id)
                finished |= next_token == eos_id
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
    finally:
        if to_restore is not None:
            to_restore.train()
    return tokens

"""Training and evaluating neural language models on token sequences.

A sequence is a list of token ids that starts with ``<bos>`` and ends with ``<eos>``
(what :meth:`crossalign.data.vocab.Vocabulary.encode` returns). The model reads
``ids[:-1]`` and is trained to predict ``ids[1:]``: every token after ``<bos>``,
``<eos>`` included, the same tokens an :class:`~crossalign.models.ngram.NGramLM`
predicts, so their perplexities compare.

Any model works that maps ``input_ids`` (B, T) and ``attention_mask=`` (B, T) to
next-token logits (B, T, V), or to an object with ``.logits`` (Hugging Face causal LMs):
:class:`~crossalign.models.gpt.GPT` and
:class:`~crossalign.models.mlp_lm.MLPLanguageModel` do. Batches are right-padded with
``pad_id`` and padded targets are left out of every loss and count, so padding changes
no number.

Perplexity is ``exp(total negative log-likelihood / number of predicted tokens)`` over
all the sequences together (not a mean of per-sequence perplexities).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from crossalign.data.batches import EpochBatches
from crossalign.train.engine import Engine
from crossalign.train.optim import build_optimizer
from crossalign.train.schedule import warmup_cosine_scheduler
from crossalign.utils import is_integral, is_real

__all__ = [
    "LMTrainResult",
    "pad_sequences",
    "perplexity",
    "sequence_nll",
    "train_language_model",
]


@dataclass
class LMTrainResult:
    """What :func:`train_language_model` returns: the loss of every step and the time
    taken."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10% of the steps (at least one)."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail)


def _checked_sequences(
    sequences: Sequence[Sequence[int] | torch.Tensor] | torch.Tensor,
) -> list[list[int]]:
    """``sequences`` as lists of ints, each at least 2 long (one input, one target).

    A shorter or non-integer sequence is a ValueError. Rows may be 1-D tensors; one 2-D
    tensor holding all the sequences is refused (a TypeError).
    """
    if isinstance(sequences, torch.Tensor):
        raise TypeError(
            "sequences must be a list of token-id lists (of different lengths), not "
            "one tensor"
        )
    checked = []
    for row, sequence in enumerate(sequences):
        ids = (
            sequence.tolist() if isinstance(sequence, torch.Tensor) else list(sequence)
        )
        if len(ids) < 2 or not all(
            is_integral(i) and not isinstance(i, bool) for i in ids
        ):
            raise ValueError(
                f"sequence {row} must hold at least 2 integer token ids (<bos> ... "
                f"<eos>), got {ids[:8]!r}"
            )
        checked.append([int(i) for i in ids])
    if not checked:
        raise ValueError("sequences is empty; give at least one token-id sequence")
    return checked


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id lists into ``input_ids`` (B, L) and a 0/1 ``attention_mask``
    (B, L), L = longest."""
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def _logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The model's next-token logits (B, T, V) for a right-padded batch."""
    output = model(input_ids, attention_mask=attention_mask)
    return output.logits if hasattr(output, "logits") else output


def _token_nll(
    model: nn.Module,
    batch: list[list[int]],
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood of every target token of ``batch`` -> (nll (B, T-1),
    real-target mask (B, T-1)).

    The softmax is taken in ``dtype`` (float64 for evaluation, so sums of many tokens
    stay exact).
    """
    ids, mask = pad_sequences(batch, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    logits = _logits(model, inputs, mask[:, :-1])
    nll = F.cross_entropy(logits.to(dtype).transpose(1, 2), targets, reduction="none")
    return nll, mask[:, 1:].bool()


def _check_block_size(model: nn.Module, sequences: list[list[int]]) -> None:
    """Raise when a sequence needs more positions than the model has
    (``model.config.block_size``)."""
    block_size = getattr(getattr(model, "config", None), "block_size", None)
    longest = max(len(ids) for ids in sequences) - 1
    if block_size is not None and longest > block_size:
        raise ValueError(
            f"a sequence needs {longest} input positions but the model's block_size is "
            f"{block_size}; "
            "build the model with a larger block_size or truncate the sequences"
        )


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without
    parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def sequence_nll(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 128,
    pad_id: int = 0,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats, in float64) of ``sequences`` and the number
    of predicted tokens.

    Sequences are batched in order of length to waste little compute on padding; the
    model is put in eval mode for the call and restored afterwards.
    """
    checked = _checked_sequences(sequences)
    if isinstance(batch_size, bool) or not is_integral(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    _check_block_size(model, checked)
    device = _model_device(model)
    order = sorted(range(len(checked)), key=lambda i: len(checked[i]))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(order), batch_size):
            batch = [checked[i] for i in order[start : start + batch_size]]
            nll, real = _token_nll(model, batch, pad_id, device, dtype=torch.float64)
            total += float(nll[real].sum())
            count += int(real.sum())
    finally:
        model.train(was_training)
    return total, count


def perplexity(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 128,
    pad_id: int = 0,
) -> float:
    """exp(mean negative log-likelihood per predicted token) of ``sequences`` under
    ``model``.

    The same number as summing each sequence's log-likelihood on its own, unpadded:
    padded targets are excluded and right padding never reaches a real position of a
    causal model.
    """
    total, count = sequence_nll(model, sequences, batch_size=batch_size, pad_id=pad_id)
    return math.exp(total / count)


def train_language_model(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.1,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.1,
    clip_grad_norm: float | None = 1.0,
    pad_id: int = 0,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = False,
) -> LMTrainResult:
    """Train ``model`` in place to predict the next token of ``sequences``; return the
    loss curve.

    Each step takes a batch of ``batch_size`` sequences from
    :class:`~crossalign.data.batches.EpochBatches` (seeded epoch permutations, so a run
    repeats exactly; ``batch_size`` must not exceed the number of sequences), minimises
    the mean cross-entropy over their real target tokens with AdamW (betas 0.9, 0.95;
    weight decay on matrices and embedding tables, not on biases and norms) and a linear
    warm-up + cosine learning rate (``warmup_steps`` defaults to 5% of ``steps``; the
    rate ends at ``min_lr_ratio * lr``), clipping the gradient norm at
    ``clip_grad_norm`` when given. The model is trained on the device it is on and left
    in eval mode. The losses are read back from the device every ``log_every`` steps
    (:class:`~crossalign.train.engine.Engine`). ``lr = 1e-2`` suits the book's small
    models (about 0.1M parameters); use less for larger ones.
    """
    checked = _checked_sequences(sequences)
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not is_integral(value) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not (is_real(lr) and lr > 0):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
    _check_block_size(model, checked)
    warmup_steps = max(1, steps // 20) if warmup_steps is None else warmup_steps
    device = _model_device(model)

    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters")
    optimizer = build_optimizer(
        model,
        lr=lr,
        weight_decay=weight_decay,
        betas=(0.9, 0.95),
    )
    scheduler = warmup_cosine_scheduler(optimizer, steps, warmup_steps, min_lr_ratio)
    batches = EpochBatches(len(checked), batch_size, seed, hint="lower batch_size")

    def loss_at(step: int) -> torch.Tensor:
        batch = [checked[i] for i in batches(step).tolist()]
        nll, real = _token_nll(model, batch, pad_id, device)
        return nll[real].mean()

    engine = Engine(
        optimizer,
        scheduler,
        device=device,
        clip_grad_norm=clip_grad_norm,
        clip_parameters=model.parameters(),
        log_every=log_every,
        hint="lower lr",
        desc="train LM",
        total_steps=steps,
        progress=progress,
    )
    result = LMTrainResult()
    start = time.perf_counter()
    model.train()
    engine.run(loss_at, steps)
    result.losses = engine.losses
    model.eval()
    result.seconds = time.perf_counter() - start
    return result

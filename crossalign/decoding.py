"""Greedy and beam-search decoding for any autoregressive captioner.

A captioner is seen through one function, its *step*: given the tokens so far ``[B, t]``
(the first one is ``bos_id``) and a decoder state, it returns the log-probabilities of
the next token ``[B, V]``, the new state and, optionally, the attention the model paid
while predicting that token ``[B, ...]`` (for example over image regions). The state is
any nested structure of tuples, lists and dicts (a *pytree*) whose tensors all have the
batch as their first dimension; when beams are re-ranked the search reorders it with
:func:`reorder_state`.

Conventions shared by every search here:

* A hypothesis is the list of *generated* tokens, without ``bos_id``; its length counts
  the ``eos_id`` that ends it. A hypothesis still running after ``max_len`` tokens is
  kept as it is (truncated, without ``eos_id``), so a model that never emits ``eos_id``
  still gets an answer.
* Its score is the sum of its tokens' log-probabilities. Beams are ranked by that sum
  while they grow; finished hypotheses are ranked by the *normalised score*
  ``score / length ** length_penalty`` (the simple power form; GNMT's
  ``((5 + length) / 6) ** alpha`` is the same idea with a softer curve).
  ``length_penalty = 0`` ranks by the plain sum, which favours short captions; larger
  values favour longer ones.
* The step function must return log-probabilities (every value <= 0, e.g. from
  ``log_softmax``); ``-inf`` marks a token the model forbids.

Beam search, per image (Wu et al. 2016, and the form most libraries use): every live
beam is extended by every token; of the ``2 * beam_size`` best extensions, those ending
in ``eos_id`` that rank among the first ``beam_size`` enter a pool of finished
hypotheses (which keeps the ``beam_size`` best by normalised score), and the first
``beam_size`` others become the next beams. An image is done when its pool is full and
no live beam can still beat the worst hypothesis in it; when ``max_len`` is reached the
live beams join the pool. The result is the best of the pool.

:func:`beam_search` runs this for all images at once, as one batch of ``B * beam_size``
rows per step; :func:`beam_search_reference` runs it one image at a time with plain
Python bookkeeping, to check the batched version against and to measure it by.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from crossalign.utils import is_integral, is_real

__all__ = [
    "DecodeResult",
    "StepFunction",
    "beam_search",
    "beam_search_reference",
    "greedy_decode",
    "reorder_state",
]


class StepFunction(Protocol):
    """One decoding step of an autoregressive model: next-token log-probabilities from
    the prefix.

    ``tokens`` is ``[B, t]`` (``bos_id`` first), ``state`` a pytree of tensors with
    batch-first dimensions (or ``None``). Returns
    ``(log_probs [B, V], new_state, attention [B, ...] or None)``.
    """

    def __call__(
        self, tokens: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """Predict the next token of every row of ``tokens``."""
        ...


@dataclass
class DecodeResult:
    """Decoded token sequences with their lengths, scores and attention maps.

    Shapes are for one sequence per image; with ``return_all=True`` every field gains a
    dimension of size ``beam_size`` after the batch (best hypothesis first).

    Attributes:
        tokens: ``[B, T]`` generated tokens (no ``bos_id``), padded with ``pad_id``
        after each
            sequence's end; ``T`` is the longest length in the batch.
        lengths: ``[B]`` number of generated tokens, counting the final ``eos_id`` if
        any. scores: ``[B]`` sum of the tokens' log-probabilities. normalized_scores:
        ``[B]`` ``scores / lengths ** length_penalty``, what the search ranks
            finished hypotheses by (equal to ``scores`` for greedy decoding).
        attention: ``[B, T, ...]`` the attention returned with each token (zeros after
        the
            end), or ``None`` when the step function returns none.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    normalized_scores: torch.Tensor
    attention: torch.Tensor | None

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> DecodeResult:
        """The result with ``fn`` applied to every field (``None`` attention kept)."""
        return DecodeResult(
            fn(self.tokens),
            fn(self.lengths),
            fn(self.scores),
            fn(self.normalized_scores),
            None if self.attention is None else fn(self.attention),
        )


def _best(field: torch.Tensor) -> torch.Tensor:
    """The first (best) hypothesis of every image: ``[B, beam, ...] -> [B, ...]``."""
    return field[:, 0]


def reorder_state(state: Any, indices: torch.Tensor) -> Any:
    """Select rows ``indices`` of every tensor in a decoder state (tensors, tuples,
    lists, dicts, None).

    Used when beams are re-ranked: row ``i`` of the result is row ``indices[i]`` of the
    input, for each tensor along its first (batch) dimension. Containers keep their type
    (named tuples included); ``None`` stays ``None``.
    """
    if not isinstance(indices, torch.Tensor) or indices.dim() != 1:
        raise ValueError("indices must be a 1-D tensor of row numbers")
    if isinstance(state, torch.Tensor):
        if state.dim() == 0:
            raise ValueError(
                "every tensor in the decoder state needs a batch dimension; got a 0-d "
                "tensor"
            )
        return state.index_select(0, indices.to(device=state.device, dtype=torch.long))
    if state is None:
        return None
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(reorder_state(item, indices) for item in state))
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_state(item, indices) for item in state)
    if isinstance(state, Mapping):
        # The state's own (concrete) mapping class takes a dict; the abstract Mapping
        # that the type checker sees does not.
        return type(state)(  # type: ignore[call-arg]
            {key: reorder_state(value, indices) for key, value in state.items()}
        )
    raise TypeError(
        f"cannot reorder a decoder state holding {type(state).__name__}; "
        "use tensors (batch first) inside tuples, lists, dicts or None"
    )


def _state_tensors(state: Any) -> list[torch.Tensor]:
    """Every tensor inside a decoder state, in traversal order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, (tuple, list)):
        return [tensor for item in state for tensor in _state_tensors(item)]
    if isinstance(state, Mapping):
        return [tensor for item in state.values() for tensor in _state_tensors(item)]
    return []


def _check_int(name: str, value: Any, minimum: int) -> None:
    """Raise unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not is_integral(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_arguments(
    init_state: Any,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
    beam_size: int = 1,
    length_penalty: float = 0.0,
    pad_id: int | None = None,
) -> None:
    """Validate the arguments shared by the searches, naming the one at fault."""
    _check_int("batch_size", batch_size, 1)
    _check_int("bos_id", bos_id, 0)
    _check_int("eos_id", eos_id, 0)
    _check_int("max_len", max_len, 1)
    _check_int("beam_size", beam_size, 1)
    if pad_id is not None:
        _check_int("pad_id", pad_id, 0)
    if isinstance(length_penalty, bool) or not is_real(length_penalty):
        raise TypeError(
            f"length_penalty must be a number, got {type(length_penalty).__name__}"
        )
    if not math.isfinite(length_penalty) or length_penalty < 0:
        raise ValueError(
            f"length_penalty must be finite and >= 0, got {length_penalty}"
        )
    for tensor in _state_tensors(init_state):
        if tensor.dim() == 0 or tensor.shape[0] != batch_size:
            raise ValueError(
                f"init_state holds a tensor of shape {tuple(tensor.shape)}; every "
                "tensor in it must "
                f"have the batch ({batch_size}) as its first dimension"
            )


def _check_step_output(log_probs: Any, attention: Any, rows: int, eos_id: int) -> int:
    """Raise unless the step returned ``[rows, V]`` log-probabilities (V > eos_id);
    return V."""
    if (
        not isinstance(log_probs, torch.Tensor)
        or log_probs.dim() != 2
        or log_probs.shape[0] != rows
    ):
        shape = (
            tuple(log_probs.shape)
            if isinstance(log_probs, torch.Tensor)
            else type(log_probs).__name__
        )
        raise ValueError(
            f"the step function must return log_probs of shape [{rows}, vocab], got "
            f"{shape}"
        )
    if not log_probs.is_floating_point():
        raise ValueError(
            "the step function must return floating-point log_probs, got "
            f"{log_probs.dtype}"
        )
    if eos_id >= log_probs.shape[1]:
        raise ValueError(
            f"eos_id={eos_id} is outside the step function's vocabulary of "
            f"{log_probs.shape[1]}"
        )
    if attention is not None and (
        not isinstance(attention, torch.Tensor) or attention.shape[0] != rows
    ):
        raise ValueError(
            f"the step function's attention must be None or a tensor with {rows} rows"
        )
    return log_probs.shape[1]


def _input_device(state: Any) -> torch.device:
    """The device of the state's first tensor (CPU for a state without tensors)."""
    tensors = _state_tensors(state)
    return tensors[0].device if tensors else torch.device("cpu")


def _normalize(
    scores: torch.Tensor, lengths: torch.Tensor | int, length_penalty: float
) -> torch.Tensor:
    """Length-normalised scores ``scores / lengths ** length_penalty`` (the plain sum
    when it is 0)."""
    if length_penalty == 0:
        return scores
    lengths = torch.as_tensor(lengths, dtype=scores.dtype, device=scores.device)
    return scores / lengths.pow(length_penalty)


def greedy_decode(
    step: StepFunction,
    init_state: Any,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    max_len: int = 20,
    pad_id: int | None = None,
) -> DecodeResult:
    """Decode by taking the most likely token at every step, for the whole batch at
    once.

    Rows that emitted ``eos_id`` are padded with ``pad_id`` (default ``eos_id``) and
    stop adding to their score; decoding stops when every row has ended or after
    ``max_len`` tokens.
    """
    _check_arguments(init_state, batch_size, bos_id, eos_id, max_len, pad_id=pad_id)
    pad = eos_id if pad_id is None else pad_id
    device = _input_device(init_state)
    tokens = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
    scores: torch.Tensor | None = None
    attention_maps: list[torch.Tensor] = []
    state = init_state
    for _ in range(max_len):
        log_probs, state, attention = step(tokens, state)
        _check_step_output(log_probs, attention, batch_size, eos_id)
        best_log_prob, best = log_probs.max(dim=1)
        best = torch.where(finished, torch.full_like(best, pad), best.to(device))
        gained = torch.where(
            finished.to(best_log_prob.device),
            torch.zeros_like(best_log_prob),
            best_log_prob,
        )
        scores = gained if scores is None else scores + gained
        if attention is not None:
            keep = (
                (~finished)
                .to(attention.device)
                .view(-1, *([1] * (attention.dim() - 1)))
            )
            attention_maps.append(
                torch.where(keep, attention, torch.zeros_like(attention))
            )
        lengths += (~finished).long()
        finished |= best == eos_id
        tokens = torch.cat([tokens, best.unsqueeze(1)], dim=1)
        if bool(finished.all()):
            break
    assert scores is not None
    return DecodeResult(
        tokens=tokens[:, 1:],
        lengths=lengths,
        scores=scores,
        normalized_scores=scores,
        attention=torch.stack(attention_maps, dim=1) if attention_maps else None,
    )


class _BatchedPool:
    """The ``beam_size`` best finished hypotheses of every image, as padded tensors."""

    def __init__(
        self,
        batch_size: int,
        beam_size: int,
        max_len: int,
        pad: int,
        device: torch.device,
    ) -> None:
        self.normalized = torch.full((batch_size, beam_size), -math.inf, device=device)
        self.scores = torch.full((batch_size, beam_size), -math.inf, device=device)
        self.lengths = torch.zeros(
            batch_size, beam_size, dtype=torch.long, device=device
        )
        self.tokens = torch.full(
            (batch_size, beam_size, max_len + 1), pad, dtype=torch.long, device=device
        )
        self.attention: torch.Tensor | None = None
        self.max_len = max_len
        self.pad = pad

    def add(
        self,
        accepted: torch.Tensor,
        scores: torch.Tensor,
        normalized: torch.Tensor,
        tokens: torch.Tensor,
        attention: torch.Tensor | None,
    ) -> None:
        """Merge candidates ``[B, n]`` where ``accepted``, keeping each image's best,
        best first.

        ``tokens`` is ``[B, n, t]`` (with ``bos_id``), ``attention``
        ``[B, n, t - 1, ...]``.
        """
        batch_size, beam_size = self.scores.shape
        if self.normalized.dtype != scores.dtype:
            self.normalized = self.normalized.to(scores.dtype)
            self.scores = self.scores.to(scores.dtype)
        length = tokens.shape[2]
        padded = torch.full(
            (*tokens.shape[:2], self.max_len + 1),
            self.pad,
            dtype=torch.long,
            device=tokens.device,
        )
        padded[:, :, :length] = tokens
        candidate_normalized = torch.where(
            accepted, normalized, torch.full_like(normalized, -math.inf)
        )
        merged = torch.cat([self.normalized, candidate_normalized], dim=1)
        self.normalized, order = merged.topk(beam_size, dim=1)
        self.scores = torch.cat([self.scores, scores], dim=1).gather(1, order)
        new_lengths = torch.full(
            accepted.shape, length - 1, dtype=torch.long, device=accepted.device
        )
        self.lengths = torch.cat([self.lengths, new_lengths], dim=1).gather(1, order)
        all_tokens = torch.cat([self.tokens, padded], dim=1)
        self.tokens = all_tokens.gather(
            1, order.unsqueeze(2).expand(-1, -1, all_tokens.shape[2])
        )
        if attention is not None:
            extra = attention.shape[3:]
            if self.attention is None:
                self.attention = attention.new_zeros(
                    batch_size, beam_size, self.max_len, *extra
                )
            padded_attention = attention.new_zeros(
                *attention.shape[:2], self.max_len, *extra
            )
            padded_attention[:, :, : attention.shape[2]] = attention
            all_attention = torch.cat([self.attention, padded_attention], dim=1)
            index = order.view(*order.shape, *([1] * (all_attention.dim() - 2))).expand(
                -1, -1, *all_attention.shape[2:]
            )
            self.attention = all_attention.gather(1, index)

    def result(self, return_all: bool) -> DecodeResult:
        """The pooled hypotheses as a :class:`DecodeResult` (the best only unless
        ``return_all``)."""
        lengths = self.lengths if return_all else self.lengths[:, :1]
        longest = max(int(lengths.max()), 1)
        tokens = self.tokens[:, :, 1 : 1 + longest]
        attention = None if self.attention is None else self.attention[:, :, :longest]
        result = DecodeResult(
            tokens, self.lengths, self.scores, self.normalized, attention
        )
        return result if return_all else result._map(_best)


def beam_search(
    step: StepFunction,
    init_state: Any,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    beam_size: int = 3,
    max_len: int = 20,
    length_penalty: float = 0.0,
    pad_id: int | None = None,
    return_all: bool = False,
) -> DecodeResult:
    """Beam search for a whole batch at once: every image's beams go through ``step`` as
    one batch.

    The step function sees ``B * beam_size`` rows, image ``i``'s beams at rows
    ``i * beam_size ... (i + 1) * beam_size - 1``; the state is expanded and reordered
    to match with :func:`reorder_state`. See the module docstring for the search rules,
    which are those of :func:`beam_search_reference`. Returns the best hypothesis per
    image, or with ``return_all=True`` the ``beam_size`` best (rows of an image with
    fewer hypotheses, possible only with a tiny vocabulary, have score ``-inf`` and
    length 0). Sequences are padded with ``pad_id`` (default ``eos_id``).
    """
    _check_arguments(
        init_state,
        batch_size,
        bos_id,
        eos_id,
        max_len,
        beam_size,
        length_penalty,
        pad_id,
    )
    pad = eos_id if pad_id is None else pad_id
    k = beam_size
    device = _input_device(init_state)
    image_offsets = torch.arange(batch_size, device=device).unsqueeze(1) * k
    state = reorder_state(
        init_state, torch.arange(batch_size, device=device).repeat_interleave(k)
    )
    tokens = torch.full((batch_size * k, 1), bos_id, dtype=torch.long, device=device)
    beam_scores = torch.full((batch_size, k), -math.inf, device=device)
    beam_scores[:, 0] = (
        0.0  # one live beam per image at the start: the others would repeat it
    )
    history: torch.Tensor | None = (
        None  # [B * k, t - 1, ...] attention of each beam so far
    )
    pool = _BatchedPool(batch_size, k, max_len, pad, device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for length in range(1, max_len + 1):
        log_probs, state, attention = step(tokens, state)
        vocab_size = _check_step_output(log_probs, attention, batch_size * k, eos_id)
        beam_scores = beam_scores.to(device=log_probs.device, dtype=log_probs.dtype)
        extended = (beam_scores.view(-1, 1) + log_probs).view(
            batch_size, k * vocab_size
        )
        n_candidates = min(2 * k, k * vocab_size)
        top_scores, top_index = extended.topk(n_candidates, dim=1)
        top_scores, top_index = top_scores.to(device), top_index.to(device)
        # [B, n] row of the beam each candidate extends
        source = top_index // vocab_size + image_offsets
        token = top_index % vocab_size
        valid = torch.isfinite(top_scores)
        is_eos = token == eos_id
        if attention is not None:
            attention = attention.to(device)
            step_attention = attention.unsqueeze(1)
            history = (
                step_attention
                if history is None
                else torch.cat([history, step_attention], dim=1)
            )

        ranked_first = torch.arange(n_candidates, device=device) < k
        finishing = is_eos & valid & ranked_first & ~done.unsqueeze(1)
        if bool(finishing.any()):
            first = slice(0, k)
            rows = source[:, first]
            candidate_tokens = torch.cat(
                [tokens[rows], token[:, first].unsqueeze(2)], dim=2
            )
            pool.add(
                finishing[:, first],
                top_scores[:, first],
                _normalize(top_scores[:, first], length, length_penalty),
                candidate_tokens,
                None if history is None else history[rows],
            )

        continuing = ~is_eos & valid
        positions = torch.arange(n_candidates, device=device)
        order = torch.where(continuing, positions, positions + n_candidates).argsort(
            dim=1
        )[:, :k]
        kept = continuing.gather(1, order)
        beam_scores = torch.where(
            kept, top_scores.gather(1, order), torch.full_like(beam_scores, -math.inf)
        )
        rows = source.gather(1, order).view(-1)
        tokens = torch.cat([tokens[rows], token.gather(1, order).view(-1, 1)], dim=1)
        state = reorder_state(state, rows)
        if history is not None:
            history = history[rows]

        best_live = beam_scores.max(dim=1).values
        pool_full = torch.isfinite(pool.normalized).all(dim=1)
        cannot_improve = (
            _normalize(best_live, max_len, length_penalty) <= pool.normalized[:, -1]
        )
        done |= (pool_full & cannot_improve) | ~torch.isfinite(best_live)
        if bool(done.all()):
            break
    else:
        running = ~done.unsqueeze(1) & torch.isfinite(beam_scores)
        pool.add(
            running,
            beam_scores,
            _normalize(beam_scores, max_len, length_penalty),
            tokens.view(batch_size, k, -1),
            None
            if history is None
            else history.view(batch_size, k, *history.shape[1:]),
        )
    return pool.result(return_all)


@dataclass
class _Hypothesis:
    """One hypothesis of the reference search: its tokens (with bos), score and
    attention rows."""

    tokens: list[int]
    score: float
    attention: list[torch.Tensor]


def beam_search_reference(
    step: StepFunction,
    init_state: Any,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    beam_size: int = 3,
    max_len: int = 20,
    length_penalty: float = 0.0,
    pad_id: int | None = None,
    return_all: bool = False,
) -> DecodeResult:
    """Beam search one image at a time, with lists and loops: the reference for
    :func:`beam_search`.

    Same arguments, rules and result as :func:`beam_search`; the step function sees only
    one image's live beams at a time. Written for clarity, not speed.
    """
    _check_arguments(
        init_state,
        batch_size,
        bos_id,
        eos_id,
        max_len,
        beam_size,
        length_penalty,
        pad_id,
    )
    pad = eos_id if pad_id is None else pad_id
    device = _input_device(init_state)
    per_image: list[list[tuple[float, _Hypothesis]]] = []
    dtype = torch.get_default_dtype()
    for image in range(batch_size):
        state = reorder_state(init_state, torch.tensor([image], device=device))
        live = [_Hypothesis([bos_id], 0.0, [])]
        # (normalised score, hypothesis), best first
        pool: list[tuple[float, _Hypothesis]] = []

        def add_to_pool(
            hypothesis: _Hypothesis,
            score: torch.Tensor,
            pool: list[tuple[float, _Hypothesis]] = pool,
        ) -> None:
            normalized = float(
                _normalize(score, len(hypothesis.tokens) - 1, length_penalty)
            )
            pool.append((normalized, hypothesis))
            # stable: earlier entries win ties
            pool.sort(key=lambda entry: entry[0], reverse=True)
            del pool[beam_size:]

        done = False
        for _ in range(max_len):
            tokens = torch.tensor(
                [hypothesis.tokens for hypothesis in live], device=device
            )
            log_probs, state, attention = step(tokens, state)
            vocab_size = _check_step_output(log_probs, attention, len(live), eos_id)
            dtype = log_probs.dtype
            scores = torch.tensor(
                [hypothesis.score for hypothesis in live],
                dtype=log_probs.dtype,
                device=log_probs.device,
            )
            extended = (scores.unsqueeze(1) + log_probs).flatten()
            top_scores, top_index = extended.topk(min(2 * beam_size, extended.numel()))
            next_live: list[_Hypothesis] = []
            next_rows: list[int] = []
            for rank, (score, index) in enumerate(zip(top_scores, top_index.tolist())):
                if not math.isfinite(float(score)):
                    break
                row, token = divmod(index, vocab_size)
                parent = live[row]
                step_attention = (
                    [] if attention is None else [attention[row].to(device)]
                )
                child = _Hypothesis(
                    parent.tokens + [token],
                    float(score),
                    parent.attention + step_attention,
                )
                if token == eos_id:
                    if rank < beam_size:
                        add_to_pool(child, score)
                elif len(next_live) < beam_size:
                    next_live.append(child)
                    next_rows.append(row)
            live = next_live
            if not live:
                done = True
                break
            state = reorder_state(state, torch.tensor(next_rows, device=device))
            best_live = torch.tensor(
                max(hypothesis.score for hypothesis in live), dtype=log_probs.dtype
            )
            bound = float(_normalize(best_live, max_len, length_penalty))
            if len(pool) == beam_size and bound <= pool[-1][0]:
                done = True
                break
        if not done:
            for hypothesis in live:
                add_to_pool(hypothesis, torch.tensor(hypothesis.score, dtype=dtype))
        per_image.append(pool)
    return _reference_result(per_image, beam_size, pad, device, dtype, return_all)


def _reference_result(
    per_image: list[list[tuple[float, _Hypothesis]]],
    beam_size: int,
    pad: int,
    device: torch.device,
    dtype: torch.dtype,
    return_all: bool,
) -> DecodeResult:
    """Pack the reference search's pools into a :class:`DecodeResult` shaped like
    beam_search's."""
    kept = per_image if return_all else [pool[:1] for pool in per_image]
    width = beam_size if return_all else 1
    batch_size = len(per_image)
    longest = max([len(h.tokens) - 1 for pool in kept for _, h in pool] + [1])
    tokens = torch.full((batch_size, width, longest), pad, dtype=torch.long)
    lengths = torch.zeros(batch_size, width, dtype=torch.long)
    scores = torch.full((batch_size, width), -math.inf, dtype=dtype)
    normalized = torch.full((batch_size, width), -math.inf, dtype=dtype)
    sample = next(
        (h.attention[0] for pool in kept for _, h in pool if h.attention), None
    )
    attention = (
        None
        if sample is None
        else torch.zeros(batch_size, width, longest, *sample.shape, dtype=sample.dtype)
    )
    for image, pool in enumerate(kept):
        for slot, (normalized_score, hypothesis) in enumerate(pool):
            generated = hypothesis.tokens[1:]
            tokens[image, slot, : len(generated)] = torch.tensor(generated)
            lengths[image, slot] = len(generated)
            scores[image, slot] = hypothesis.score
            normalized[image, slot] = normalized_score
            if attention is not None and hypothesis.attention:
                attention[image, slot, : len(generated)] = torch.stack(
                    hypothesis.attention
                ).cpu()
    result = DecodeResult(tokens, lengths, scores, normalized, attention)
    if not return_all:
        result = result._map(_best)
    return result._map(lambda field: field.to(device))

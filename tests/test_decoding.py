"""Tests for crossalign.decoding: batched beam search against the per-image reference,
brute force and hand-computed cases."""

from __future__ import annotations

import itertools
import math
from collections import namedtuple

import pytest
import torch
from torch import nn

from crossalign.decoding import (
    beam_search,
    beam_search_reference,
    greedy_decode,
    reorder_state,
)

BOS, EOS = 0, 1


class TableModel:
    """A bigram decoder: the next token's log-probabilities depend only on the previous
    token."""

    def __init__(self, vocab_size: int, seed: int, forbid_eos: bool = False) -> None:
        generator = torch.Generator().manual_seed(seed)
        logits = (
            torch.randn(
                vocab_size, vocab_size, generator=generator, dtype=torch.float64
            )
            * 1.5
        )
        if forbid_eos:
            logits[:, EOS] = -math.inf
        self.table = logits.log_softmax(dim=1)

    def __call__(self, tokens, state):
        return self.table[tokens[:, -1]], state, None


class GRUModel:
    """A tiny attentive captioner whose every step depends on its hidden state and its
    image."""

    def __init__(
        self, vocab_size: int, hidden: int = 8, regions: int = 3, seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab_size, hidden).double()
        self.cell = nn.GRUCell(2 * hidden, hidden).double()
        self.out = nn.Linear(hidden, vocab_size).double()
        self.hidden, self.regions = hidden, regions

    def init_state(self, batch_size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        features = torch.randn(
            batch_size,
            self.regions,
            self.hidden,
            generator=generator,
            dtype=torch.float64,
        )
        Steps = namedtuple("Steps", "count")
        return {
            "hidden": features.mean(1).tanh(),
            "image": (features, None),
            "steps": [Steps(torch.zeros(batch_size))],
        }

    @torch.no_grad()
    def __call__(self, tokens, state):
        hidden, features = state["hidden"], state["image"][0]
        attention = (features @ hidden.unsqueeze(2)).squeeze(2).softmax(dim=1)
        context = (attention.unsqueeze(2) * features).sum(1)
        hidden = self.cell(
            torch.cat([self.embed(tokens[:, -1]), context], dim=1), hidden
        )
        count = state["steps"][0].count + 1
        logits = self.out(hidden) * 2.0
        # eos grows likelier with length, so captions end at varied lengths
        logits[:, EOS] += count - 3.0
        new_state = {
            "hidden": hidden,
            "image": state["image"],
            "steps": [type(state["steps"][0])(count)],
        }
        return logits.log_softmax(dim=1), new_state, attention


def sequence_score(step, state, sequence):
    """Sum of log-probabilities and attention rows of one sequence, replayed one token
    at a time."""
    tokens = torch.tensor([[BOS]])
    total, maps = 0.0, []
    for token in sequence:
        log_probs, state, attention = step(tokens, state)
        total += float(log_probs[0, token])
        if attention is not None:
            maps.append(attention[0])
        tokens = torch.cat([tokens, torch.tensor([[token]])], dim=1)
    return total, maps


def all_hypotheses(vocab_size, max_len):
    """Every hypothesis the search can return: non-eos prefixes ended by eos, or
    truncated at max_len."""
    others = [token for token in range(vocab_size) if token != EOS]
    for length in range(1, max_len + 1):
        for prefix in itertools.product(others, repeat=length - 1):
            yield (*prefix, EOS)
    yield from itertools.product(others, repeat=max_len)


def make_model(kind):
    """A decoder and its initial state for 6 images."""
    if kind == "table":
        return TableModel(9, seed=1), None
    if kind == "no_eos":
        return TableModel(7, seed=2, forbid_eos=True), None
    model = GRUModel(10, seed=3)
    return model, model.init_state(6, seed=4)


def assert_same_result(batched, reference):
    assert torch.equal(batched.lengths, reference.lengths)
    assert torch.equal(batched.tokens, reference.tokens)
    torch.testing.assert_close(batched.scores, reference.scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        batched.normalized_scores, reference.normalized_scores, rtol=0, atol=1e-6
    )
    if reference.attention is None:
        assert batched.attention is None
    else:
        torch.testing.assert_close(
            batched.attention, reference.attention, rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("kind", ["table", "gru", "no_eos"])
@pytest.mark.parametrize("beam_size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("length_penalty", [0.0, 0.8])
def test_batched_beam_search_equals_reference(kind, beam_size, length_penalty):
    step, state = make_model(kind)
    arguments = dict(
        batch_size=6,
        bos_id=BOS,
        eos_id=EOS,
        beam_size=beam_size,
        max_len=7,
        length_penalty=length_penalty,
        pad_id=3,
        return_all=True,
    )
    batched = beam_search(step, state, **arguments)
    reference = beam_search_reference(step, state, **arguments)
    assert_same_result(batched, reference)
    best = beam_search(step, state, **{**arguments, "return_all": False})
    assert_same_result(
        best, beam_search_reference(step, state, **{**arguments, "return_all": False})
    )
    assert best.tokens.shape[1] == int(best.lengths.max())
    assert torch.equal(best.tokens, batched.tokens[:, 0, : best.tokens.shape[1]])
    torch.testing.assert_close(best.scores, batched.scores[:, 0])


def test_gru_results_match_replayed_scores_and_attention():
    """Scores and attention of each returned caption equal a fresh replay: the state was
    reordered right."""
    model = GRUModel(10, seed=5)
    state = model.init_state(5, seed=6)
    result = beam_search(
        model,
        state,
        5,
        BOS,
        EOS,
        beam_size=4,
        max_len=8,
        length_penalty=0.5,
        return_all=True,
    )
    ended_early = 0
    for image in range(5):
        for slot in range(4):
            length = int(result.lengths[image, slot])
            sequence = result.tokens[image, slot, :length].tolist()
            ended_early += sequence[-1] == EOS
            score, maps = sequence_score(
                model, reorder_state(state, torch.tensor([image])), sequence
            )
            assert result.scores[image, slot].item() == pytest.approx(score, abs=1e-9)
            assert result.normalized_scores[image, slot].item() == pytest.approx(
                score / length**0.5, abs=1e-9
            )
            torch.testing.assert_close(
                result.attention[image, slot, :length], torch.stack(maps)
            )
            assert torch.all(result.attention[image, slot, length:] == 0)
            assert torch.all(result.tokens[image, slot, length:] == EOS)
    # the check covered finished hypotheses, not only truncated ones
    assert ended_early > 0


@pytest.mark.parametrize("kind", ["table", "gru", "no_eos"])
def test_beam_size_one_equals_greedy(kind):
    step, state = make_model(kind)
    greedy = greedy_decode(step, state, 6, BOS, EOS, max_len=7)
    beam = beam_search(step, state, 6, BOS, EOS, beam_size=1, max_len=7)
    assert_same_result(beam, greedy)


def test_greedy_matches_python_argmax_loop():
    model = TableModel(9, seed=7)
    result = greedy_decode(model, None, 9, BOS, EOS, max_len=6, pad_id=8)
    # With a bigram table every row starts from bos: all rows decode the same argmax
    # chain.
    chain, token, total = [], BOS, 0.0
    while len(chain) < 6 and (not chain or chain[-1] != EOS):
        token = int(model.table[token].argmax())
        total += float(model.table[chain[-1] if chain else BOS, token])
        chain.append(token)
    assert result.lengths.tolist() == [len(chain)] * 9
    assert result.tokens[0, : len(chain)].tolist() == chain
    assert torch.all(result.tokens[:, len(chain) :] == 8)
    assert result.scores[0].item() == pytest.approx(total)


@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
def test_exhaustive_beam_finds_brute_force_ranking(length_penalty):
    """A beam wide enough to hold every prefix returns exactly the brute-force best
    hypotheses."""
    # 36 = vocab * (vocab - 1) ** (max_len - 1) covers every candidate
    vocab_size, max_len, beam_size = (
        4,
        3,
        36,
    )
    model = GRUModel(vocab_size, seed=8)
    state = model.init_state(3, seed=9)
    result = beam_search(
        model,
        state,
        3,
        BOS,
        EOS,
        beam_size=beam_size,
        max_len=max_len,
        length_penalty=length_penalty,
        return_all=True,
    )
    for image in range(3):
        image_state = reorder_state(state, torch.tensor([image]))
        ranked = sorted(
            (
                (
                    sequence_score(model, image_state, sequence)[0]
                    / len(sequence) ** length_penalty,
                    sequence,
                )
                for sequence in all_hypotheses(vocab_size, max_len)
            ),
            reverse=True,
        )[:beam_size]
        expected_scores = torch.tensor(
            [score for score, _ in ranked], dtype=torch.float64
        )
        torch.testing.assert_close(
            result.normalized_scores[image], expected_scores, rtol=0, atol=1e-9
        )
        best = ranked[0][1]
        assert result.tokens[image, 0, : len(best)].tolist() == list(best)


def test_never_emitting_eos_returns_best_truncated_sequence():
    vocab_size, max_len = 5, 4
    model = TableModel(vocab_size, seed=10, forbid_eos=True)
    # 64 = 4 ** 3 prefixes
    result = beam_search(model, None, 2, BOS, EOS, beam_size=64, max_len=max_len)
    best = max(
        (sequence_score(model, None, s)[0], s)
        for s in itertools.product([0, 2, 3, 4], repeat=max_len)
    )
    assert result.lengths.tolist() == [max_len, max_len]
    assert result.tokens[0].tolist() == list(best[1])
    assert result.scores[0].item() == pytest.approx(best[0])
    small = beam_search(model, None, 2, BOS, EOS, beam_size=3, max_len=max_len)
    assert small.lengths.tolist() == [max_len, max_len] and not torch.any(
        small.tokens == EOS
    )


@pytest.mark.parametrize("length_penalty, expected", [(0.0, [EOS]), (1.0, [2, EOS])])
def test_length_penalty_hand_computed(length_penalty, expected):
    """P(eos|bos)=.6, P(a|bos)=.4, P(eos|a)=.95: [eos] scores log .6 = -.511, [a, eos]
    -.967 (-.484 per token)."""
    probabilities = torch.tensor(
        [
            [0.0, 0.6, 0.4],  # after bos
            [1 / 3, 1 / 3, 1 / 3],  # after eos (never used)
            [0.0, 0.95, 0.05],  # after a
        ],
        dtype=torch.float64,
    )
    table = probabilities.log()

    def step(tokens, state):
        return table[tokens[:, -1]], state, None

    for search in (beam_search, beam_search_reference):
        result = search(
            step,
            None,
            1,
            BOS,
            EOS,
            beam_size=2,
            max_len=3,
            length_penalty=length_penalty,
        )
        assert result.tokens[0, : len(expected)].tolist() == expected
        assert result.lengths.tolist() == [len(expected)]
        expected_score = (
            math.log(0.6) if expected == [EOS] else math.log(0.4) + math.log(0.95)
        )
        assert result.scores[0].item() == pytest.approx(expected_score)
        assert result.normalized_scores[0].item() == pytest.approx(
            expected_score / len(expected) ** length_penalty
        )


def test_reorder_state_handles_nested_containers():
    Pair = namedtuple("Pair", "left right")
    a = torch.arange(4).float()
    b = torch.arange(8).view(4, 2)
    state = {"a": a, "nested": [Pair(b, None), (a * 2,)]}
    indices = torch.tensor([3, 3, 0])
    reordered = reorder_state(state, indices)
    assert torch.equal(reordered["a"], torch.tensor([3.0, 3.0, 0.0]))
    assert (
        isinstance(reordered["nested"][0], Pair)
        and reordered["nested"][0].right is None
    )
    assert torch.equal(
        reordered["nested"][0].left, torch.tensor([[6, 7], [6, 7], [0, 1]])
    )
    assert torch.equal(reordered["nested"][1][0], torch.tensor([6.0, 6.0, 0.0]))
    assert reorder_state(None, indices) is None
    with pytest.raises(TypeError, match="str"):
        reorder_state({"name": "image"}, indices)
    with pytest.raises(ValueError, match="1-D"):
        reorder_state(a, torch.tensor([[0]]))


@pytest.mark.parametrize("search", [beam_search, beam_search_reference])
@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"beam_size": 0}, ValueError, "beam_size"),
        ({"max_len": 0}, ValueError, "max_len"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"length_penalty": -1.0}, ValueError, "length_penalty"),
        ({"beam_size": True}, TypeError, "beam_size"),
        ({"eos_id": 50}, ValueError, "eos_id"),
        ({"pad_id": -1}, ValueError, "pad_id"),
    ],
)
def test_bad_arguments_are_rejected(search, overrides, error, message):
    step = TableModel(9, seed=0)
    arguments = dict(
        step=step,
        init_state=None,
        batch_size=2,
        bos_id=BOS,
        eos_id=EOS,
        beam_size=2,
        max_len=4,
    )
    with pytest.raises(error, match=message):
        search(**{**arguments, **overrides})


def test_bad_state_and_step_output_are_rejected():
    with pytest.raises(ValueError, match="init_state"):
        beam_search(TableModel(9, seed=0), torch.zeros(3, 2), 2, BOS, EOS)
    with pytest.raises(ValueError, match="log_probs"):
        beam_search(
            lambda tokens, state: (torch.zeros(1, 9), state, None), None, 2, BOS, EOS
        )
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(TableModel(9, seed=0), None, 2, BOS, EOS, max_len=0)

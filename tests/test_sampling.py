"""Sampling filters against brute-force references, and the generation loop."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from crossalign.sampling import (
    filter_logits,
    generate,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)


def _random_logits(rows: int = 20, vocab: int = 9, seed: int = 0) -> torch.Tensor:
    return (
        torch.randn(
            rows,
            vocab,
            generator=torch.Generator().manual_seed(seed),
            dtype=torch.float64,
        )
        * 2
    )


def _brute_force_nucleus(probs: np.ndarray, p: float) -> set[int]:
    """The smallest set of indices with total probability >= p (largest mass among the
    smallest), by enumeration."""
    for size in range(1, len(probs) + 1):
        best = max(
            itertools.combinations(range(len(probs)), size),
            key=lambda s: sum(probs[list(s)]),
        )
        if sum(probs[list(best)]) >= p - 1e-12:
            return set(best)
    raise AssertionError("unreachable: the full set has mass 1")


@pytest.mark.parametrize("k", [1, 2, 5, 9, 20])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = _random_logits()
    filtered = top_k_filter(logits, k)
    for row, out in zip(logits, filtered):
        kept = set(torch.nonzero(torch.isfinite(out)).flatten().tolist())
        expected = set(
            sorted(range(len(row)), key=lambda i: -row[i].item())[: min(k, len(row))]
        )
        assert kept == expected
        assert torch.equal(out[list(kept)], row[list(kept)])


def test_top_k_keeps_exactly_k_under_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    assert int(torch.isfinite(top_k_filter(logits, 2)).sum()) == 2


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.95, 1.0])
def test_top_p_keeps_the_smallest_set_with_mass_at_least_p(p):
    logits = _random_logits(seed=1)
    filtered = top_p_filter(logits, p)
    for row, out in zip(logits, filtered):
        probs = torch.softmax(row, dim=-1).numpy()
        kept = set(torch.nonzero(torch.isfinite(out)).flatten().tolist())
        assert kept == _brute_force_nucleus(probs, p)
        assert torch.equal(out[list(kept)], row[list(kept)])


def test_top_p_always_keeps_the_most_probable_token():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 7.0]])
    kept = torch.isfinite(top_p_filter(logits, 1e-6))
    assert kept.tolist() == [[True, False, False], [False, False, True]]


def test_temperature_divides_logits_and_tends_to_argmax():
    logits = _random_logits(seed=2)
    torch.testing.assert_close(filter_logits(logits, temperature=0.5), logits * 2)
    cold = torch.softmax(filter_logits(logits, temperature=1e-3), dim=-1)
    assert torch.equal(cold.argmax(-1), logits.argmax(-1))
    assert cold.max(-1).values.min() > 0.999
    assert torch.equal(
        sample_next_token(logits.float(), temperature=0), logits.argmax(-1)
    )
    hot = torch.softmax(filter_logits(logits, temperature=1e4), dim=-1)
    torch.testing.assert_close(
        hot, torch.full_like(hot, 1 / logits.shape[1]), rtol=0, atol=1e-3
    )


def test_filters_compose_in_order_temperature_top_k_top_p():
    logits = _random_logits(seed=3)
    expected = top_p_filter(top_k_filter(logits / 0.7, 4), 0.6)
    assert torch.equal(
        filter_logits(logits, temperature=0.7, top_k=4, top_p=0.6), expected
    )


def test_sampling_frequencies_match_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    draws = sample_next_token(logits, temperature=0.8, top_k=3, generator=generator)
    counts = torch.bincount(draws, minlength=5).double() / len(draws)
    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.5]) / 0.8, dim=0).double()
    assert counts[3:].sum() == 0
    # 20,000 draws: standard error < 0.0036; allow about 4 of them.
    torch.testing.assert_close(counts[:3], expected, rtol=0, atol=0.015)


class _CountingModel(torch.nn.Module):
    """A toy causal LM that always predicts (last token + 1) mod V, and records the
    context lengths it saw."""

    def __init__(self, vocab: int = 7) -> None:
        super().__init__()
        self.vocab, self.seen = vocab, []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.seen.append(ids.shape[1])
        logits = torch.full((*ids.shape, self.vocab), -10.0)
        return logits.scatter(-1, ((ids + 1) % self.vocab)[..., None], 10.0)


def test_generate_greedy_follows_the_model_and_crops_to_block_size():
    model = _CountingModel()
    out = generate(
        model,
        torch.tensor([[0, 1], [3, 4]]),
        max_new_tokens=5,
        temperature=0,
        block_size=3,
    )
    assert out.tolist() == [[0, 1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 0, 1, 2]]
    assert model.seen == [2, 3, 3, 3, 3]


def test_generate_stops_rows_at_eos_and_the_batch_when_all_are_done():
    model = _CountingModel()
    out = generate(
        model, torch.tensor([[3], [1]]), max_new_tokens=10, temperature=0, eos_id=5
    )
    assert out.tolist() == [[3, 4, 5, 5, 5], [1, 2, 3, 4, 5]]


def test_generate_is_reproducible_with_a_generator_and_restores_training_mode():
    from crossalign.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=1, n_embd=8))
    model.train()
    prompt = torch.zeros(3, 1, dtype=torch.long)
    a = generate(
        model, prompt, 9, top_p=0.9, generator=torch.Generator().manual_seed(0)
    )
    b = generate(
        model, prompt, 9, top_p=0.9, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(a, b) and a.shape == (3, 10)
    assert model.training


def test_bad_arguments_are_refused():
    logits = _random_logits()
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(logits, 0)
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(logits, 0.0)
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(logits, 1.5)
    with pytest.raises(ValueError, match="temperature"):
        filter_logits(logits, temperature=-1.0)
    with pytest.raises(ValueError, match="greedy"):
        filter_logits(logits, temperature=0)
    with pytest.raises(ValueError, match="input_ids"):
        generate(_CountingModel(), torch.zeros(3, dtype=torch.long), 2)
    assert math.isinf(top_k_filter(logits, 1).min().item())

"""Tests for language-model training and perplexity: exact on padded batches,
closed-form optima."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from crossalign.models.gpt import GPT, GPTConfig
from crossalign.models.mlp_lm import MLPLanguageModel
from crossalign.models.ngram import NGramLM
from crossalign.train.language_model import (
    pad_sequences,
    perplexity,
    sequence_nll,
    train_language_model,
)

PAD, BOS, EOS = 0, 1, 2


def _random_sequences(count: int, vocab: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 12, (count,), generator=generator).tolist()
    return [
        [BOS, *torch.randint(3, vocab, (n,), generator=generator).tolist(), EOS]
        for n in lengths
    ]


def _unpadded_nll(
    model: torch.nn.Module, sequences: list[list[int]]
) -> tuple[float, int]:
    """Sum of -log P(next token) computed one sequence at a time, with no padding
    anywhere."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in sequences:
            ids = torch.tensor([ids])
            log_probs = F.log_softmax(model(ids[:, :-1]).double(), dim=-1)
            total -= log_probs[0].gather(-1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
    return total, count


@pytest.mark.parametrize("kind", ["gpt", "mlp"])
@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_perplexity_on_padded_batches_equals_the_unpadded_computation(kind, batch_size):
    torch.manual_seed(0)
    model = (
        GPT(GPTConfig(vocab_size=15, block_size=16, n_layer=2, n_head=2, n_embd=16))
        if kind == "gpt"
        else MLPLanguageModel(vocab_size=15, context=3)
    )
    sequences = _random_sequences(25, vocab=15, seed=1)
    total, count = sequence_nll(model, sequences, batch_size=batch_size, pad_id=PAD)
    expected_total, expected_count = _unpadded_nll(model, sequences)
    assert count == expected_count == sum(len(s) - 1 for s in sequences)
    assert total == pytest.approx(expected_total, rel=1e-6)
    expected_perplexity = math.exp(expected_total / expected_count)
    assert perplexity(model, sequences, batch_size=batch_size) == pytest.approx(
        expected_perplexity, rel=1e-6
    )


def test_padding_id_does_not_matter():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=15, block_size=16, n_layer=1, n_head=2, n_embd=16))
    sequences = _random_sequences(10, vocab=15, seed=2)
    assert perplexity(model, sequences, pad_id=0) == pytest.approx(
        perplexity(model, sequences, pad_id=9), rel=1e-6
    )


def test_a_uniform_model_has_perplexity_equal_to_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids, attention_mask=None):
            return torch.zeros(*ids.shape, 13)

    assert perplexity(
        Uniform(), _random_sequences(7, vocab=13, seed=3)
    ) == pytest.approx(13.0, rel=1e-12)


def test_pad_sequences_right_pads():
    ids, mask = pad_sequences([[1, 5, 2], [1, 2]], pad_id=0)
    assert ids.tolist() == [[1, 5, 2], [1, 2, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def _coin_language() -> list[list[int]]:
    """<bos> then a fair coin (3 or 4), then a token copying it (5 after 3, 6 after 4),
    then <eos>.

    Per sequence three tokens are predicted (the coin, its copy, <eos>): one with
    entropy ln 2 and two determined ones, so the best possible perplexity is exp(ln 2 /
    3) = 2 ** (1 / 3).
    """
    generator = torch.Generator().manual_seed(0)
    coins = torch.randint(3, 5, (400,), generator=generator).tolist()
    return [[BOS, coin, coin + 2, EOS] for coin in coins]


@pytest.mark.parametrize("kind", ["gpt", "mlp"])
def test_training_reaches_the_entropy_of_a_known_language(kind):
    torch.manual_seed(0)
    model = (
        GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=16))
        if kind == "gpt"
        else MLPLanguageModel(vocab_size=7, context=2, embed_dim=8, hidden_dim=32)
    )
    sequences = _coin_language()
    before = perplexity(model, sequences)
    result = train_language_model(
        model, sequences, steps=150, batch_size=32, lr=1e-2, seed=0
    )
    after = perplexity(model, sequences)
    assert before > 4.0
    # The empirical coin is not exactly fair: its entropy bounds the perplexity from
    # below.
    heads = sum(s[1] == 3 for s in sequences) / len(sequences)
    entropy = -(heads * math.log(heads) + (1 - heads) * math.log(1 - heads))
    assert after >= math.exp(entropy / 3) - 1e-6
    assert after == pytest.approx(2 ** (1 / 3), abs=0.02)
    assert result.final_loss == pytest.approx(math.log(2) / 3, abs=0.03)
    assert len(result.losses) == 150 and not model.training


def test_a_trigram_kneser_ney_model_agrees_on_the_same_language():
    """The count model reaches the same optimum, a cross-check of the token accounting
    (</s> counted once)."""
    words = {3: "heads", 4: "tails", 5: "H", 6: "T"}
    sentences = [[words[t] for t in s[1:-1]] for s in _coin_language()]
    lm = NGramLM(order=3, smoothing="kneser_ney", discount=0.01).fit(sentences)
    assert lm.perplexity(sentences) == pytest.approx(2 ** (1 / 3), abs=0.02)


def test_training_is_reproducible():
    sequences = _random_sequences(50, vocab=15, seed=4)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MLPLanguageModel(vocab_size=15)
        runs.append(
            train_language_model(
                model, sequences, steps=12, batch_size=8, seed=3
            ).losses
        )
    assert runs[0] == runs[1]


def test_bad_inputs_are_refused():
    model = GPT(GPTConfig(vocab_size=15, block_size=4, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="block_size"):
        perplexity(model, [[1, 3, 3, 3, 3, 2]])
    with pytest.raises(ValueError, match="at least 2"):
        train_language_model(model, [[1]])
    with pytest.raises(ValueError, match="empty"):
        perplexity(model, [])
    with pytest.raises(ValueError, match="steps"):
        train_language_model(model, [[1, 2]], steps=0)
    with pytest.raises(TypeError, match="list"):
        perplexity(model, torch.ones(2, 3, dtype=torch.long))

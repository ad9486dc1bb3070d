"""Tests for the Bengio-style MLP language model: windows, a hand-written forward pass,
locality."""

from __future__ import annotations

import pytest
import torch

from crossalign.models.mlp_lm import MLPLanguageModel


def test_windows_are_the_previous_tokens_left_filled_with_the_start_id():
    model = MLPLanguageModel(vocab_size=10, context=3)
    s = model.start_id
    assert s == 10
    windows = model.windows(torch.tensor([[5, 6, 7, 8]]))
    assert windows.tolist() == [[[s, s, 5], [s, 5, 6], [5, 6, 7], [6, 7, 8]]]


def test_forward_equals_the_formula_written_out():
    torch.manual_seed(0)
    model = MLPLanguageModel(vocab_size=12, context=2, embed_dim=4, hidden_dim=6).eval()
    ids = torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    logits = model(ids)
    table, start = model.embedding.weight, model.start_id
    for b in range(2):
        for t in range(5):
            previous = ids[b, t - 1].item() if t >= 1 else start
            x = torch.cat([table[previous], table[ids[b, t]]])
            expected = (
                model.output.weight
                @ torch.tanh(model.hidden.weight @ x + model.hidden.bias)
                + model.output.bias
            )
            torch.testing.assert_close(logits[b, t], expected)


def test_each_prediction_sees_exactly_its_window():
    torch.manual_seed(1)
    model = MLPLanguageModel(vocab_size=20, context=3).eval()
    ids = torch.randint(0, 20, (1, 10), generator=torch.Generator().manual_seed(2))
    base = model(ids)
    for position in range(10):
        changed = ids.clone()
        changed[0, position] = (changed[0, position] + 1) % 20
        moved = (model(changed) - base).abs().amax(-1)[0] > 0
        assert moved.nonzero().flatten().tolist() == list(
            range(position, min(position + 3, 10))
        )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="context"):
        MLPLanguageModel(vocab_size=10, context=0)
    with pytest.raises(ValueError, match="dropout"):
        MLPLanguageModel(vocab_size=10, dropout=1.0)
    model = MLPLanguageModel(vocab_size=10)
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[10]]))
    with pytest.raises(ValueError, match="shape"):
        model(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3))

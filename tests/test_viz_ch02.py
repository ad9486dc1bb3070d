"""Tests for crossalign.viz.next_token_distributions (chapter 2's sampling figure):
the bars are the distributions a sampler draws from, checked against softmax and
top-k / top-p selections computed here by sorting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossalign import viz

SETTINGS = {
    "model": {},
    "temperature 0.5": {"temperature": 0.5},
    "top-k, k = 3": {"top_k": 3},
    "top-p, p = 0.8": {"top_p": 0.8},
}


def _bars(ax, gid: str) -> np.ndarray:
    return np.array([p.get_height() for p in ax.patches if p.get_gid() == gid])


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(15, generator=torch.Generator().manual_seed(0)) * 2


def test_bars_are_the_reshaped_distributions(logits):
    labels = [f"w{i}" for i in range(15)]
    fig = viz.next_token_distributions(logits, labels, SETTINGS, top=15)
    assert len(fig.axes) == len(SETTINGS)
    probs = F.softmax(logits.double(), dim=-1)
    order = np.argsort(-probs.numpy(), kind="stable")
    sorted_probs = probs.numpy()[order]

    # every panel shows the tokens in the order of the model's own distribution
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == [
            labels[i] for i in order
        ]
        np.testing.assert_allclose(_bars(ax, "model"), sorted_probs, rtol=1e-6)
    model, cold, top_k, top_p = fig.axes
    np.testing.assert_allclose(_bars(model, "reshaped"), sorted_probs, rtol=1e-6)
    cold_probs = F.softmax(logits.double() / 0.5, dim=-1).numpy()[order]
    np.testing.assert_allclose(_bars(cold, "reshaped"), cold_probs, rtol=1e-6)

    # top-k: the three largest, renormalised; the rest zero
    expected_k = np.zeros(15)
    expected_k[:3] = sorted_probs[:3] / sorted_probs[:3].sum()
    np.testing.assert_allclose(_bars(top_k, "reshaped"), expected_k, atol=1e-7)

    # top-p: the shortest prefix of the sorted distribution with mass >= 0.8
    n_kept = int(np.searchsorted(np.cumsum(sorted_probs), 0.8) + 1)
    expected_p = np.zeros(15)
    expected_p[:n_kept] = sorted_probs[:n_kept] / sorted_probs[:n_kept].sum()
    np.testing.assert_allclose(_bars(top_p, "reshaped"), expected_p, atol=1e-7)
    assert top_k.get_title().splitlines()[1].startswith("3 of 15 tokens")
    assert top_p.get_title().splitlines()[1].startswith(f"{n_kept} of 15 tokens")
    for ax in fig.axes:
        assert _bars(ax, "reshaped").sum() <= 1 + 1e-6


def test_top_limits_the_tokens_shown(logits):
    fig = viz.next_token_distributions(
        logits[None], [str(i) for i in range(15)], {"model": {}}, top=4
    )
    (ax,) = fig.axes
    assert len(_bars(ax, "reshaped")) == 4
    assert ax.get_xticklabels()[0].get_text() == str(int(logits.argmax()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"token_labels": ["a"]}, "token labels"),
        ({"settings": {}}, "settings is empty"),
        ({"top": 0}, "top must be"),
        ({"logits": torch.zeros(2, 15)}, "logits must be"),
    ],
)
def test_bad_arguments_are_refused(logits, kwargs, message):
    arguments = {
        "logits": logits,
        "token_labels": [str(i) for i in range(15)],
        "settings": {"model": {}},
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        viz.next_token_distributions(**arguments)

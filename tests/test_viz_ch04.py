"""Tests for crossalign.viz.grouped_bars (chapter 4): every bar stands at its category
with the height given, series sit side by side, and labels say the values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from crossalign import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CATEGORIES = ["left / right", "above / below", "over / beneath"]
VALUES = {"full list": [1.0, 0.0, 1.0], "without relation words": [1.0, 1.0, 1.0]}


def bars_of(fig: Figure) -> list[list]:
    """The bar patches of the only axes, one list per series, in drawing order."""
    (ax,) = fig.axes
    return [list(container) for container in ax.containers]


def test_heights_and_positions_follow_the_values() -> None:
    fig = viz.grouped_bars(VALUES, CATEGORIES, ylabel="share")
    series = bars_of(fig)
    assert len(series) == 2 and all(len(bars) == 3 for bars in series)
    for bars, expected in zip(series, VALUES.values()):
        assert [bar.get_height() for bar in bars] == pytest.approx(expected)
    for category in range(3):
        left, right = series[0][category], series[1][category]
        centre_left = left.get_x() + left.get_width() / 2
        centre_right = right.get_x() + right.get_width() / 2
        # the pair of bars is centred on the category's tick, first series on the left
        assert (centre_left + centre_right) / 2 == pytest.approx(category)
        assert centre_left < category < centre_right
        assert left.get_x() + left.get_width() <= right.get_x() + 1e-12
    (ax,) = fig.axes
    assert [tick.get_text() for tick in ax.get_xticklabels()] == CATEGORIES
    assert ax.get_ylabel() == "share"
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == list(VALUES)


def test_one_series_fills_the_slot_and_has_no_legend() -> None:
    fig = viz.grouped_bars({"only": torch.tensor([0.25, 0.5])}, ["a", "b"])
    ((first, second),) = bars_of(fig)
    assert first.get_width() == pytest.approx(0.8)
    assert first.get_x() + 0.4 == pytest.approx(0.0)
    assert second.get_height() == pytest.approx(0.5)
    assert not fig.legends and fig.axes[0].get_legend() is None


def test_value_labels_use_the_format() -> None:
    fig = viz.grouped_bars(
        {"share": np.array([0.3077, 1.0])}, ["x", "y"], value_format=".0%"
    )
    texts = [text.get_text() for text in fig.axes[0].texts]
    assert texts == ["31%", "100%"]


def test_ylim_and_title() -> None:
    fig = viz.grouped_bars(VALUES, CATEGORIES, title="t", ylim=(0, 1.1))
    ax = fig.axes[0]
    assert ax.get_title() == "t"
    assert ax.get_ylim() == pytest.approx((0, 1.1))


@pytest.mark.parametrize(
    ("values", "categories", "message"),
    [
        ({}, ["a"], "values is empty"),
        ({"s": [1.0]}, [], "categories is empty"),
        ({"s": [1.0, 2.0]}, ["a"], "one number per category"),
        ({"s": [[1.0], [2.0]]}, ["a", "b"], "one number per category"),
        ({"s": [1.0, float("nan")]}, ["a", "b"], "NaN or infinite"),
    ],
)
def test_bad_input_is_refused(values, categories, message) -> None:
    with pytest.raises(ValueError, match=message):
        viz.grouped_bars(values, categories)


def test_save_path_writes_a_png(tmp_path) -> None:
    path = tmp_path / "bars.png"
    viz.grouped_bars(VALUES, CATEGORIES, save_path=path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)

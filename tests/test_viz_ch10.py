"""Tests for crossalign.viz.ratio_bars (chapter 10: the speed-ups measured side by
side): each bar is as long as its ratio, the baseline on top, a line at 1."""

from __future__ import annotations

import numpy as np
import pytest

from crossalign import viz


def test_bars_have_the_lengths_and_labels_of_the_ratios_first_variant_on_top():
    fig = viz.ratio_bars(
        {
            "switches": {"fp32": 1.0, "channels-last": 1.1, "bf16": 0.8},
            "batch": {"32": 1.0, "256": 1.3},
        }
    )
    assert [ax.get_title() for ax in fig.axes] == ["switches", "batch"]
    ax = fig.axes[0]
    bars = sorted(ax.patches, key=lambda bar: -bar.get_y())  # top to bottom
    np.testing.assert_allclose([bar.get_width() for bar in bars], [1.0, 1.1, 0.8])
    assert all(bar.get_x() == 0 for bar in bars)
    ticks = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert ticks["fp32"] > ticks["channels-last"] > ticks["bf16"]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["0.80x", "1.00x", "1.10x"]
    (one,) = [line for line in ax.get_lines() if list(line.get_xdata()) == [1, 1]]
    assert one is not None


@pytest.mark.parametrize(
    "panels",
    [{}, {"empty": {}}, {"p": {"a": 1.0, "b": 0.0}}, {"p": {"a": 1.0, "b": -2.0}}],
)
def test_empty_panels_and_non_positive_ratios_are_refused(panels):
    with pytest.raises(ValueError):
        viz.ratio_bars(panels)

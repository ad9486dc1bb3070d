"""Tests for the plots of chapter 12: curves with their spread over seeds
(``viz.spread_curves``) and shares of a learner's choices over time
(``viz.stacked_shares``)."""

from __future__ import annotations

import numpy as np
import pytest

from crossalign import viz


def test_curves_pass_through_the_means_with_a_band_of_one_std():
    fig = viz.spread_curves(
        {
            "composition": {
                "probe": ([1, 2, 4], [0.2, 0.3, 0.4], [0.01, 0.02, 0.0]),
                "adapter": ([1, 2, 4], [0.25, 0.35, 0.5], None),
            },
            "colour": {"probe": ([1, 2, 4], [0.9, 1.0, 1.0], [0.05, 0.0, 0.0])},
        },
        xlabel="k",
        ylabel="accuracy",
        references={"composition": {"zero-shot": 0.21}},
        xscale="log",
    )
    assert [ax.get_title() for ax in fig.axes] == ["composition", "colour"]
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["probe"].get_ydata(), [0.2, 0.3, 0.4])
    np.testing.assert_allclose(lines["adapter"].get_xdata(), [1, 2, 4])
    np.testing.assert_allclose(lines["zero-shot"].get_ydata(), [0.21, 0.21])
    (band,) = ax.collections  # only the probe has a spread
    vertices = band.get_paths()[0].vertices
    assert np.isclose(vertices[:, 1].max(), 0.40) and np.isclose(
        vertices[:, 1].min(), 0.19
    )
    assert ax.get_xscale() == "log"
    assert len(fig.axes[1].collections) == 1


@pytest.mark.parametrize(
    "panels, references, xscale",
    [
        ({}, None, "linear"),
        ({"p": {}}, None, "linear"),
        ({"p": {"a": ([1, 2], [0.1], None)}}, None, "linear"),
        ({"p": {"a": ([1, 2], [0.1, 0.2], [0.1, -0.1])}}, None, "linear"),
        ({"p": {"a": ([1], [0.1], None)}}, {"q": {"chance": 0.5}}, "linear"),
        ({"p": {"a": ([1], [0.1], None)}}, None, "cubic"),
    ],
)
def test_bad_curves_are_refused(panels, references, xscale):
    with pytest.raises(ValueError):
        viz.spread_curves(panels, "x", "y", references=references, xscale=xscale)


def test_shares_are_stacked_to_one():
    steps = [10, 20, 30]
    fig = viz.stacked_shares(
        steps, {"random": [0.5, 0.2, 0.1], "relation": [0.5, 0.8, 0.9]}, title="picks"
    )
    ax = fig.axes[0]
    lower, upper = ax.collections
    top_of_lower = lower.get_paths()[0].vertices[:, 1].max()
    assert np.isclose(top_of_lower, 0.5)  # random's largest share
    assert np.isclose(upper.get_paths()[0].vertices[:, 1].max(), 1.0)
    assert ax.get_ylim() == (0, 1) and ax.get_title() == "picks"


@pytest.mark.parametrize(
    "steps, shares",
    [
        ([1, 2], {}),
        ([], {"a": []}),
        ([1, 2], {"a": [1.0]}),
        ([1, 2], {"a": [0.5, 0.5], "b": [0.4, 0.5]}),
        ([1], {"a": [1.5], "b": [-0.5]}),
    ],
)
def test_bad_shares_are_refused(steps, shares):
    with pytest.raises(ValueError):
        viz.stacked_shares(steps, shares)

"""Tests for crossalign.viz.loss_curves (chapter 7: the plain and the package's loop on
one plot): each run is drawn with the values it was given, averaged as stated."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossalign import viz


def _lines(fig):
    (ax,) = fig.axes
    return {line.get_label(): line for line in ax.get_lines()}


def test_each_run_is_one_line_with_its_losses_at_steps_from_one():
    plain = [5.5, 5.4, 5.0, 4.1]
    package = torch.tensor([5.5, 4.0, 3.0, 2.5])
    lines = _lines(viz.loss_curves({"plain": plain, "package": package}))
    np.testing.assert_allclose(lines["plain"].get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(lines["plain"].get_ydata(), plain)
    np.testing.assert_allclose(lines["package"].get_ydata(), [5.5, 4.0, 3.0, 2.5])


def test_smoothing_is_the_moving_average_placed_at_the_window_end():
    lines = _lines(viz.loss_curves({"run": [0.0, 1.0, 2.0, 3.0, 4.0]}, smooth=2))
    # means of (0, 1), (1, 2), (2, 3), (3, 4), ending at steps 2..5
    np.testing.assert_allclose(lines["run"].get_xdata(), [2, 3, 4, 5])
    np.testing.assert_allclose(lines["run"].get_ydata(), [0.5, 1.5, 2.5, 3.5])
    (ax,) = viz.loss_curves({"run": [1.0, 2.0, 3.0]}, smooth=3).axes
    assert ax.get_ylabel() == "training loss (mean of 3 steps)"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [2.0])


def test_chance_line_is_horizontal_at_the_given_loss():
    lines = _lines(viz.loss_curves({"run": [6.0, 5.0]}, chance=math.log(256)))
    np.testing.assert_allclose(lines["chance"].get_ydata(), [math.log(256)] * 2)


@pytest.mark.parametrize(
    ("curves", "smooth", "message"),
    [
        ({}, 1, "empty"),
        ({"run": [1.0, 2.0]}, 0, "positive integer"),
        ({"run": [1.0, 2.0]}, 3, "fewer than smooth"),
    ],
)
def test_bad_input_is_refused(curves, smooth, message):
    with pytest.raises(ValueError, match=message):
        viz.loss_curves(curves, smooth=smooth)


def test_save_path_writes_a_png(tmp_path):
    path = tmp_path / "curves.png"
    viz.loss_curves({"run": [2.0, 1.0]}, save_path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

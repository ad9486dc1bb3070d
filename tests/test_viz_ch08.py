"""Tests for crossalign.viz.float_spacing (chapter 8's figure): the curves are the gaps
between neighbouring numbers of each format, checked against the closed form
``eps * 2**floor(log2 x)`` for normal numbers and the formats' ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossalign import viz

FORMATS = {
    "float32": (torch.float32, 24),
    "float16": (torch.float16, 11),
    "bfloat16": (torch.bfloat16, 8),
}


def _curves(fig):
    (ax,) = fig.axes
    return {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}


def test_gaps_follow_the_closed_form_for_normal_numbers():
    fig = viz.float_spacing(low=1e-3, high=1e4, points=500)
    curves = _curves(fig)
    assert set(curves) == set(FORMATS)
    for name, (_, significant_bits) in FORMATS.items():
        x, relative = (np.asarray(v) for v in curves[name].get_data())
        # a format with p significant bits: the gap is 2**(e - p + 1) for x in [2**e,
        # 2**(e + 1))
        exponent = np.floor(np.log2(x))
        expected = 2.0 ** (exponent - significant_bits + 1) / x
        np.testing.assert_allclose(relative, expected, rtol=1e-12)
        eps = 2.0 ** (1 - significant_bits)
        assert eps / 2 < relative.min() and relative.max() <= eps


def test_curves_stop_where_each_format_ends():
    fig = viz.float_spacing(low=1e-10, high=1e6, points=3000)
    curves = _curves(fig)
    half_x = np.asarray(curves["float16"].get_data()[0])
    # float16: largest finite 65504, smallest subnormal 2**-24 (values below half of it
    # round to zero)
    assert half_x.max() <= 65504 and half_x.max() > 60000
    assert 2.0**-24 <= half_x.min() < 2.0**-23
    # below the smallest normal (2**-14) the gap stays 2**-24, so gap / x grows
    x, relative = (np.asarray(v) for v in curves["float16"].get_data())
    subnormal = x < 2.0**-14
    np.testing.assert_allclose(relative[subnormal] * x[subnormal], 2.0**-24)
    # float32 and bfloat16 share an exponent range wide enough for the whole axis
    for name in ("float32", "bfloat16"):
        x = np.asarray(curves[name].get_data()[0])
        assert math.isclose(x.min(), 1e-10, rel_tol=1e-2)
        assert math.isclose(x.max(), 1e6, rel_tol=1e-2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dtypes": ()},
        {"dtypes": (torch.int32,)},
        {"low": 1.0, "high": 0.5},
        {"points": 1},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        viz.float_spacing(**kwargs)

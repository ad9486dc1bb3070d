"""Tests for crossalign.viz.correlation_spectrum (chapter 5's CCA figure): the bars are
the correlations of the canonical projections, checked against NumPy's own
correlation coefficients and against data built with known canonical correlations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from crossalign import viz
from crossalign.linear import CCA


def _bar_heights(fig: Figure) -> np.ndarray:
    (ax,) = fig.axes
    return np.array([patch.get_height() for patch in ax.patches])


def _paired_data(n: int = 4000, seed: int = 0):
    """X [n, 5] and Y [n, 4] whose canonical correlations are 0.9, 0.6, 0.3, 0:
    latent pair k has correlation rho_k, the rest is noise, then both sides are mixed
    by random invertible matrices (which CCA must undo)."""
    generator = torch.Generator().manual_seed(seed)
    rhos = torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64)
    shared = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    x_latent = torch.cat(
        [shared, torch.randn(n, 2, generator=generator, dtype=torch.float64)], dim=1
    )
    noise = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    y_shared = rhos * shared + torch.sqrt(1 - rhos**2) * noise
    y_latent = torch.cat(
        [y_shared, torch.randn(n, 1, generator=generator, dtype=torch.float64)], dim=1
    )
    mix_x = torch.randn(5, 5, generator=generator, dtype=torch.float64) + 3 * torch.eye(
        5, dtype=torch.float64
    )
    mix_y = torch.randn(4, 4, generator=generator, dtype=torch.float64) + 3 * torch.eye(
        4, dtype=torch.float64
    )
    return x_latent @ mix_x, y_latent @ mix_y


def test_bars_are_the_correlations_of_the_canonical_projections():
    X, Y = _paired_data()
    cca = CCA(n_components=4, reg=0.0).fit(X, Y)
    fig = viz.correlation_spectrum(cca.correlations)
    projected_x, projected_y = cca.transform_x(X).numpy(), cca.transform_y(Y).numpy()
    independent = [
        np.corrcoef(projected_x[:, k], projected_y[:, k])[0, 1] for k in range(4)
    ]
    np.testing.assert_allclose(_bar_heights(fig), independent, atol=1e-6)
    # the data were built with canonical correlations 0.9, 0.6, 0.3 and 0
    np.testing.assert_allclose(_bar_heights(fig), [0.9, 0.6, 0.3, 0.0], atol=0.04)


def test_held_out_line_and_axes():
    fig = viz.correlation_spectrum([0.8, 0.5, 0.2], held_out=[0.7, 0.3, -0.1])
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(line.get_ydata(), [0.7, 0.3, -0.1])
    np.testing.assert_allclose(
        [patch.get_x() + patch.get_width() / 2 for patch in ax.patches], [1, 2, 3]
    )
    low, high = ax.get_ylim()
    assert low < -0.1 and high == 1.0
    assert ax.get_xlabel() == "canonical direction"


def test_draws_on_given_axes(tmp_path):
    fig = Figure()
    ax = fig.add_subplot()
    out = viz.correlation_spectrum(
        torch.tensor([0.5, 0.4]), title="spectrum", ax=ax, save_path=tmp_path / "s.png"
    )
    assert out is fig and ax.get_title() == "spectrum"
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "correlations, held_out",
    [
        ([], None),
        ([[0.5, 0.4]], None),
        ([1.5, 0.2], None),
        ([0.5, float("nan")], None),
        ([0.5, 0.4], [0.3]),
        ([0.5, 0.4], [0.3, 2.0]),
    ],
)
def test_rejects_what_is_not_a_spectrum(correlations, held_out):
    with pytest.raises(ValueError):
        viz.correlation_spectrum(correlations, held_out=held_out)

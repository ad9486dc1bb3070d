"""Per-word attention overlays: one panel per word, each map stretched over the image
where it belongs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossalign import viz


def _overlays(fig):
    """The attention layer of every word panel (the second image drawn on it), in panel
    order."""
    return [ax.images[1].get_array() for ax in fig.axes[1:]]


def test_one_panel_per_word_with_the_word_and_its_peak_weight():
    image = torch.rand(3, 16, 16)
    attention = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    fig = viz.attention_overlay(image, ["red", "is"], attention)
    assert [ax.get_title() for ax in fig.axes] == ["image", "red (0.70)", "is (0.25)"]
    np.testing.assert_allclose(
        fig.axes[0].images[0].get_array(), image.permute(1, 2, 0).numpy(), atol=1e-6
    )


def test_each_map_lands_on_its_region_of_the_image():
    # a 2 x 3 grid: row 0 = top; four words, each attending to one region
    grid = torch.zeros(4, 2, 3)
    for word, (row, col) in enumerate([(0, 0), (0, 2), (1, 1), (1, 2)]):
        grid[word, row, col] = 1.0
    fig = viz.attention_overlay(
        torch.rand(3, 20, 30), list("abcd"), grid.flatten(1), grid=(2, 3)
    )
    for overlay, (row, col) in zip(_overlays(fig), [(0, 0), (0, 2), (1, 1), (1, 2)]):
        assert overlay.shape == (20, 30)
        y, x = np.unravel_index(np.argmax(overlay), overlay.shape)
        assert (y // 10, x // 10) == (row, col)


def test_uniform_attention_gives_a_uniform_overlay_and_grids_are_accepted_directly():
    fig = viz.attention_overlay(torch.rand(3, 8, 8), ["x"], torch.full((1, 2, 2), 0.25))
    np.testing.assert_allclose(_overlays(fig)[0], 0.25)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"words": ["a"], "attention": torch.rand(1, 5)}, "not a square grid"),
        (
            {"words": ["a"], "attention": torch.rand(1, 6), "grid": (2, 2)},
            "has 4 regions",
        ),
        ({"words": ["a", "b"], "attention": torch.rand(1, 4)}, "one word per map"),
        ({"words": ["a"], "attention": torch.rand(4)}, r"\[T, N\] or \[T, h, w\]"),
        ({"words": ["a"], "attention": torch.rand(1, 4), "alpha": 2.0}, "alpha"),
        ({"words": ["a"], "attention": torch.rand(1, 4), "ncols": 0}, "ncols"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        viz.attention_overlay(torch.rand(3, 8, 8), **kwargs)


def test_image_outside_unit_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.attention_overlay(torch.full((3, 8, 8), 2.0), ["a"], torch.rand(1, 4))
    path = viz.attention_overlay(
        torch.rand(3, 8, 8), ["a"], torch.rand(1, 4), save_path=tmp_path / "a.png"
    )
    assert (tmp_path / "a.png").stat().st_size > 0 and path is not None

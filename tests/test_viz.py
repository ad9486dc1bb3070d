"""Tests for crossalign.viz: each plot shows what it was given, in the right place."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from crossalign import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _argmax_cells(ax) -> set[tuple[int, int]]:
    """(row, col) of every argmax outline, read back from the rectangle's lower-left
    corner."""
    cells = set()
    for patch in ax.patches:
        if patch.get_gid() == viz.ARGMAX_GID:
            x, y = patch.get_xy()
            assert (patch.get_width(), patch.get_height()) == (1.0, 1.0)
            cells.add((round(y + 0.5), round(x + 0.5)))
    return cells


def _heatmap_ax(fig: Figure):
    """The axes that holds the heatmap (the colourbar axes holds no image)."""
    (ax,) = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    return ax


def _is_png(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == PNG_SIGNATURE


# ---------------------------------------------------------------------------
# similarity_heatmap


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64]
)
def test_heatmap_image_data_equals_the_input_matrix_for_every_dtype(dtype):
    sim = torch.randn(4, 6, generator=torch.Generator().manual_seed(0)).to(dtype)
    fig = viz.similarity_heatmap(sim)
    assert isinstance(fig, Figure)
    np.testing.assert_array_equal(
        np.asarray(_heatmap_ax(fig).images[0].get_array()), sim.double().numpy()
    )


def test_heatmap_accepts_numpy_arrays():
    sim = np.array([[0.2, 0.7], [0.9, 0.1], [0.3, 0.4]])
    fig = viz.similarity_heatmap(sim)
    np.testing.assert_array_equal(
        np.asarray(_heatmap_ax(fig).images[0].get_array()), sim
    )


def test_heatmap_outlines_the_argmax_of_each_row():
    sim = np.array(
        [
            [0.1, 0.9, 0.2],
            [0.8, 0.3, 0.1],
            [0.2, 0.1, 0.7],
            [0.5, 0.6, 0.55],
            [0.4, 0.4, 0.1],  # a tie goes to the first column
        ]
    )
    ax = _heatmap_ax(viz.similarity_heatmap(sim))
    assert _argmax_cells(ax) == {(0, 1), (1, 0), (2, 2), (3, 1), (4, 0)}


def test_heatmap_uses_a_zero_centred_diverging_map_for_signed_values():
    sim = np.array([[0.5, -0.8], [0.1, 0.3]])
    image = _heatmap_ax(viz.similarity_heatmap(sim)).images[0]
    assert image.get_cmap().name == viz.DIVERGING_CMAP
    assert (image.norm.vmin, image.norm.vmax) == (-0.8, 0.8)


def test_heatmap_uses_a_sequential_map_spanning_the_data_for_non_negative_values():
    sim = np.array([[0.25, 0.31], [0.12, 0.3]])
    image = _heatmap_ax(viz.similarity_heatmap(sim)).images[0]
    assert image.get_cmap().name == viz.SEQUENTIAL_CMAP
    assert (image.norm.vmin, image.norm.vmax) == (0.12, 0.31)


def test_heatmap_has_a_colourbar():
    fig = viz.similarity_heatmap(np.eye(3))
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_heatmap_annotates_small_matrices_with_their_values_by_default():
    sim = np.array([[0.123, -0.5], [0.75, 0.0]])
    ax = _heatmap_ax(viz.similarity_heatmap(sim))
    cell_texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
        for t in ax.texts
    }
    assert cell_texts == {
        (0, 0): "0.12",
        (0, 1): "-0.50",
        (1, 0): "0.75",
        (1, 1): "0.00",
    }


def test_heatmap_annotation_default_depends_on_size_and_can_be_forced():
    sim = np.random.default_rng(0).random((9, 3))
    assert len(_heatmap_ax(viz.similarity_heatmap(sim)).texts) == 0
    assert len(_heatmap_ax(viz.similarity_heatmap(sim, annotate=True)).texts) == 27
    assert (
        len(_heatmap_ax(viz.similarity_heatmap(np.eye(2), annotate=False)).texts) == 0
    )


def test_heatmap_labels_rows_and_columns_and_wraps_long_captions():
    long_caption = (
        "a small red circle sits above a large blue square on a grey background "
        "near a green triangle"
    )
    captions = ["a dog", long_caption]
    fig = viz.similarity_heatmap(
        np.eye(2), row_labels=["first", "second"], col_labels=captions, title="pairs"
    )
    ax = _heatmap_ax(fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["first", "second"]
    short, wrapped = [t.get_text() for t in ax.get_xticklabels()]
    assert short == "a dog"
    lines = wrapped.split("\n")
    assert 1 < len(lines) <= 3 and all(len(line) <= 28 for line in lines)
    assert wrapped.endswith("…")
    assert long_caption.startswith(" ".join(lines)[:-1].rstrip())
    assert ax.get_title() == "pairs"


def test_heatmap_thumbnails_show_each_image_beside_its_row():
    images = torch.rand(3, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    fig = viz.similarity_heatmap(
        torch.rand(3, 4), images=images, row_labels=["a", "b", "c"]
    )
    ax = _heatmap_ax(fig)
    assert len(ax.child_axes) == 3
    fig.draw_without_rendering()
    heatmap_box = ax.get_window_extent()
    for row, thumb_ax in enumerate(ax.child_axes):
        np.testing.assert_array_equal(
            np.asarray(thumb_ax.images[0].get_array()),
            images[row].permute(1, 2, 0).double().numpy(),
        )
        box = thumb_ax.get_window_extent()
        _, row_centre_y = ax.transData.transform((0.0, row))
        assert box.y0 < row_centre_y < box.y1
        assert abs((box.y0 + box.y1) / 2 - row_centre_y) < 1.0
        assert box.x1 <= heatmap_box.x0
        assert [t.get_text() for t in thumb_ax.texts] == ["abc"[row]]


def test_heatmap_draws_on_a_given_axes_and_returns_its_figure():
    fig, (left, right) = plt.subplots(1, 2)
    returned = viz.similarity_heatmap(np.eye(2), ax=right)
    assert returned is fig
    assert not left.images and len(right.images) == 1


def test_heatmap_on_a_subfigure_axes_returns_the_savable_top_level_figure(tmp_path):
    fig = plt.figure()
    ax = fig.subfigures(1, 2)[1].add_subplot()
    returned = viz.similarity_heatmap(np.eye(2), ax=ax, save_path=tmp_path / "sub.png")
    assert returned is fig
    assert _is_png(tmp_path / "sub.png")


def test_figures_made_here_are_not_registered_with_pyplot():
    before = plt.get_fignums()
    viz.similarity_heatmap(np.eye(2))
    viz.image_grid(torch.rand(2, 3, 4, 4))
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"similarity": np.ones(3)}, "2-D"),
        ({"similarity": np.ones((0, 3))}, "2-D"),
        ({"similarity": np.array([[0.1, np.nan]])}, "NaN"),
        ({"similarity": np.ones((2, 3)), "row_labels": ["a"]}, "row_labels"),
        ({"similarity": np.ones((2, 3)), "col_labels": ["a", "b"]}, "col_labels"),
        (
            {"similarity": np.ones((2, 3)), "images": torch.rand(3, 3, 4, 4)},
            "one image per row",
        ),
        (
            {"similarity": np.ones((2, 3)), "images": torch.rand(2, 4, 4, 3)},
            r"\[K, 3, H, W\]",
        ),
        (
            {"similarity": np.ones((2, 3)), "images": torch.rand(2, 3, 4, 4) * 2 - 1},
            r"\[0, 1\]",
        ),
    ],
)
def test_heatmap_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        viz.similarity_heatmap(**kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_heatmap_accepts_cuda_tensors():
    sim = torch.randn(3, 3, device="cuda", dtype=torch.bfloat16)
    fig = viz.similarity_heatmap(sim, images=torch.rand(3, 3, 4, 4, device="cuda"))
    np.testing.assert_array_equal(
        np.asarray(_heatmap_ax(fig).images[0].get_array()), sim.double().cpu().numpy()
    )


# ---------------------------------------------------------------------------
# retrieval_grid


def test_retrieval_grid_shows_the_query_and_each_image_with_rank_and_score():
    images = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    fig = viz.retrieval_grid(
        "a red circle", images, [0.9, 0.75, 0.5, 0.125], titles=["w", "x", "y", "z"]
    )
    assert len(fig.axes) == 4
    assert fig.get_suptitle() == "a red circle"
    assert [ax.get_title() for ax in fig.axes] == [
        "#1  0.900\nw",
        "#2  0.750\nx",
        "#3  0.500\ny",
        "#4  0.125\nz",
    ]
    for ax, image in zip(fig.axes, images):
        np.testing.assert_array_equal(
            np.asarray(ax.images[0].get_array()),
            image.permute(1, 2, 0).double().numpy(),
        )
        assert not any(spine.get_visible() for spine in ax.spines.values())


def test_retrieval_grid_frames_hits_green_and_misses_red():
    fig = viz.retrieval_grid(
        "q",
        torch.rand(3, 3, 4, 4),
        torch.tensor([0.3, 0.2, 0.1]),
        correct=[True, False, True],
    )
    expected = [viz.CORRECT_COLOUR, viz.WRONG_COLOUR, viz.CORRECT_COLOUR]
    for ax, colour in zip(fig.axes, expected):
        for spine in ax.spines.values():
            assert spine.get_visible()
            assert spine.get_edgecolor() == to_rgba(colour)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": torch.rand(3, 3, 4, 4), "scores": [0.1, 0.2]}, "scores"),
        ({"images": torch.rand(3, 4, 4), "scores": [0.1, 0.2, 0.3]}, r"\[K, 3, H, W\]"),
        (
            {"images": torch.rand(2, 3, 4, 4), "scores": [0.1, 0.2], "correct": [True]},
            "correct",
        ),
        (
            {
                "images": torch.rand(2, 3, 4, 4),
                "scores": [0.1, 0.2],
                "titles": ["a", "b", "c"],
            },
            "titles",
        ),
    ],
)
def test_retrieval_grid_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        viz.retrieval_grid("q", **kwargs)


# --------------------------------------------------------------------------- image_grid


def test_image_grid_lays_out_exactly_k_images_in_ncols_columns():
    images = np.random.default_rng(3).random((11, 3, 4, 5))
    titles = [
        f"image number {i} with a rather long title that must wrap" for i in range(11)
    ]
    fig = viz.image_grid(images, titles=titles, ncols=4)
    assert len(fig.axes) == 11
    for index, ax in enumerate(fig.axes):
        nrows, ncols, start, _ = ax.get_subplotspec().get_geometry()
        assert (nrows, ncols, start) == (3, 4, index)
        np.testing.assert_array_equal(
            np.asarray(ax.images[0].get_array()), images[index].transpose(1, 2, 0)
        )
        title_lines = ax.get_title().split("\n")
        assert len(title_lines) == 2 and all(len(line) <= 22 for line in title_lines)
        assert title_lines[0].startswith(f"image number {index}")


def test_image_grid_uses_one_row_when_there_are_fewer_images_than_columns():
    fig = viz.image_grid(torch.rand(3, 3, 4, 4), ncols=8)
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes] == [(1, 3)] * 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": torch.rand(2, 3, 4, 4), "ncols": 0}, "ncols"),
        ({"images": torch.rand(2, 3, 4, 4), "titles": ["a"]}, "titles"),
        ({"images": torch.rand(0, 3, 4, 4)}, "K >= 1"),
        ({"images": torch.rand(2, 1, 4, 4)}, r"\[K, 3, H, W\]"),
    ],
)
def test_image_grid_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        viz.image_grid(**kwargs)


# ---------------------------------------------------------------------------
# training_curves


def _history() -> list[dict]:
    history = []
    for step in range(0, 100, 10):
        entry = {
            "step": step,
            "loss": 5.0 - step / 25,
            "lr": 1e-4 * (1 + step),
            "phase": "train",
            "temperature": torch.tensor(0.07),
        }
        if step % 30 == 0:
            entry["val/i2t_r1"] = step / 100
        history.append(entry)
    return history


def _curves_by_title(fig: Figure) -> dict:
    return {ax.get_title(): ax for ax in fig.axes}


def test_training_curves_plots_each_numeric_key_only_where_it_was_logged():
    history = _history()
    fig = viz.training_curves(history)
    axes = _curves_by_title(fig)
    assert list(axes) == ["loss", "lr", "temperature", "val/i2t_r1"]
    for key, ax in axes.items():
        (line,) = ax.get_lines()
        expected = [(e["step"], float(e[key])) for e in history if key in e]
        np.testing.assert_allclose(line.get_xdata(), [s for s, _ in expected])
        np.testing.assert_allclose(line.get_ydata(), [v for _, v in expected])
    np.testing.assert_array_equal(
        axes["val/i2t_r1"].get_lines()[0].get_xdata(), [0, 30, 60, 90]
    )


def test_training_curves_log_scales_only_a_positive_lr():
    axes = _curves_by_title(viz.training_curves(_history()))
    assert axes["lr"].get_yscale() == "log"
    assert axes["loss"].get_yscale() == "linear"
    warmup_from_zero = [{"step": 0, "lr": 0.0}, {"step": 1, "lr": 1e-3}]
    assert viz.training_curves(warmup_from_zero).axes[0].get_yscale() == "linear"


def test_training_curves_plots_only_the_requested_keys():
    fig = viz.training_curves(_history(), keys=["val/i2t_r1", "loss"])
    assert [ax.get_title() for ax in fig.axes] == ["val/i2t_r1", "loss"]


@pytest.mark.parametrize(
    ("history", "keys", "message"),
    [
        ([], None, "empty"),
        ([{"step": 0, "loss": 1.0}, {"loss": 0.5}], None, r"history\[1\]"),
        ([{"step": 0, "phase": "train"}], None, "no numeric values"),
        ([{"step": 0, "loss": 1.0}], ["accuracy"], "accuracy"),
        ([{"step": 0, "phase": "train"}], ["phase"], "non-numeric"),
    ],
)
def test_training_curves_rejects_bad_input(history, keys, message):
    with pytest.raises(ValueError, match=message):
        viz.training_curves(history, keys=keys)


# --------------------------------------------------------------------------- saving


def test_save_figure_writes_a_png_at_the_asked_dpi_creating_folders(tmp_path):
    target = tmp_path / "nested" / "deeper" / "heatmap.png"
    written = viz.save_figure(viz.similarity_heatmap(np.eye(3)), target, dpi=90)
    assert written == target and _is_png(target)
    with Image.open(target) as image:
        assert image.info["dpi"] == pytest.approx((90, 90), abs=0.1)
    assert sorted(p.name for p in target.parent.iterdir()) == ["heatmap.png"]


@pytest.mark.parametrize(("suffix", "magic"), [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_save_figure_picks_the_format_from_the_suffix(tmp_path, suffix, magic):
    target = tmp_path / f"curves{suffix}"
    viz.save_figure(viz.training_curves([{"step": 0, "loss": 1.0}]), target)
    assert target.read_bytes().startswith(magic)


def test_save_figure_rejects_an_unknown_suffix_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        viz.save_figure(viz.similarity_heatmap(np.eye(2)), tmp_path / "heatmap.txt")
    assert list(tmp_path.iterdir()) == []


def test_every_plot_writes_its_save_path(tmp_path):
    images = torch.rand(2, 3, 4, 4)
    paths = [
        tmp_path / name
        for name in ("heatmap.png", "retrieval.png", "grid.png", "curves.png")
    ]
    viz.similarity_heatmap(np.eye(2), images=images, save_path=paths[0])
    viz.retrieval_grid(
        "q", images, [0.5, 0.4], correct=[True, False], save_path=paths[1]
    )
    viz.image_grid(images, save_path=paths[2])
    viz.training_curves(_history(), save_path=paths[3])
    assert all(_is_png(path) for path in paths)

"""Tests for crossalign.viz.embedding_projection: points, pair lines and centroids sit
where a NumPy PCA puts them."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

from crossalign import viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def unit_rows(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Random unit vectors, pushed towards +shift along the first axis before
    renormalising."""
    rows = np.random.default_rng(seed).standard_normal((n, d))
    rows[:, 0] += shift
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def numpy_shared_pca(
    image: np.ndarray, text: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D PCA of the union with NumPy's SVD and the documented sign rule
    (largest-|loading| entry positive)."""
    union = np.concatenate([image, text])
    centred = union - union.mean(axis=0)
    _, singular_values, vh = np.linalg.svd(centred, full_matrices=False)
    components = (
        vh[:2] * np.sign(vh[:2][np.arange(2), np.abs(vh[:2]).argmax(axis=1)])[:, None]
    )
    projected = centred @ components.T
    ratio = singular_values[:2] ** 2 / np.sum(singular_values**2)
    return projected[: len(image)], projected[len(image) :], ratio


def scatters(ax) -> list[PathCollection]:
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def pair_lines(ax) -> list[LineCollection]:
    return [c for c in ax.collections if isinstance(c, LineCollection)]


def line_by_label(ax, prefix: str):
    (line,) = [line for line in ax.lines if line.get_label().startswith(prefix)]
    return line


def test_points_lie_where_a_shared_numpy_pca_puts_them():
    image, text = (
        unit_rows(30, 8, seed=0, shift=2.0),
        unit_rows(30, 8, seed=1, shift=-2.0),
    )
    fig = viz.embedding_projection(
        torch.from_numpy(image).float(), torch.from_numpy(text).float(), pairs=10
    )
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    image_points, text_points = scatters(ax)
    expected_image, expected_text, ratio = numpy_shared_pca(image, text)
    np.testing.assert_allclose(image_points.get_offsets(), expected_image, atol=1e-5)
    np.testing.assert_allclose(text_points.get_offsets(), expected_text, atol=1e-5)
    assert image_points.get_paths()[0] != text_points.get_paths()[0]
    assert not np.allclose(image_points.get_facecolor(), text_points.get_facecolor())
    assert (
        f"{100 * ratio[0]:.1f}%" in ax.get_xlabel()
        and f"{100 * ratio[1]:.1f}%" in ax.get_ylabel()
    )


@pytest.mark.parametrize(
    ("pairs", "expected"), [(0, 0), (1, 1), (7, 7), (12, 12), (50, 12)]
)
def test_the_first_pairs_are_joined_image_to_text(pairs, expected):
    image, text = unit_rows(12, 5, seed=2), unit_rows(12, 5, seed=3)
    (ax,) = viz.embedding_projection(image, text, pairs=pairs).axes
    expected_image, expected_text, _ = numpy_shared_pca(image, text)
    lines = pair_lines(ax)
    if expected == 0:
        assert lines == []
        return
    (collection,) = lines
    segments = collection.get_segments()
    assert len(segments) == expected
    np.testing.assert_allclose(
        np.stack([s[0] for s in segments]), expected_image[:expected], atol=1e-10
    )
    np.testing.assert_allclose(
        np.stack([s[1] for s in segments]), expected_text[:expected], atol=1e-10
    )


def test_centroids_are_marked_and_the_full_space_gap_is_in_the_legend():
    image, text = (
        unit_rows(40, 6, seed=4, shift=1.5),
        unit_rows(60, 6, seed=5, shift=-1.5),
    )
    (ax,) = viz.embedding_projection(image, text, pairs=0).axes
    expected_image, expected_text, _ = numpy_shared_pca(image, text)
    image_centroid = line_by_label(ax, "image centroid")
    text_centroid = line_by_label(ax, "text centroid")
    np.testing.assert_allclose(
        np.ravel(image_centroid.get_xydata()), expected_image.mean(axis=0), atol=1e-10
    )
    np.testing.assert_allclose(
        np.ravel(text_centroid.get_xydata()), expected_text.mean(axis=0), atol=1e-10
    )
    gap = np.linalg.norm(image.mean(axis=0) - text.mean(axis=0))
    legend_texts = [entry.get_text() for entry in ax.get_legend().get_texts()]
    assert f"modality gap = {gap:.3f}" in legend_texts
    assert "images (40)" in legend_texts and "texts (60)" in legend_texts
    # The dashed line joins the two centroids; on the plane it can only be shorter than
    # the gap.
    gap_line = line_by_label(ax, "modality gap")
    np.testing.assert_allclose(
        gap_line.get_xydata(), [expected_image.mean(axis=0), expected_text.mean(axis=0)]
    )
    assert np.linalg.norm(np.diff(gap_line.get_xydata(), axis=0)) <= gap + 1e-12


def test_labels_of_the_joined_pairs_are_written_beside_their_images():
    image, text = unit_rows(6, 4, seed=6), unit_rows(6, 4, seed=7)
    labels = [f"shape {i}" for i in range(6)]
    (ax,) = viz.embedding_projection(
        image, text, pairs=3, labels=labels, title="ShapesWorld"
    ).axes
    expected_image, _, _ = numpy_shared_pca(image, text)
    written = {text.get_text(): text.xy for text in ax.texts}
    assert set(written) == {"shape 0", "shape 1", "shape 2"}
    for i in range(3):
        np.testing.assert_allclose(written[f"shape {i}"], expected_image[i], atol=1e-10)
    assert ax.get_title() == "ShapesWorld"


def test_draws_on_given_axes_saves_and_stays_out_of_pyplot(tmp_path):
    image, text = unit_rows(5, 3, seed=8), unit_rows(5, 3, seed=9)
    host = viz._new_figure()
    left, right = host.subplots(1, 2)
    fig = viz.embedding_projection(
        image, text, ax=right, save_path=tmp_path / "plots" / "space.png"
    )
    assert fig is host
    assert len(left.collections) == 0 and len(scatters(right)) == 2
    with open(tmp_path / "plots" / "space.png", "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    viz.embedding_projection(image, text)
    assert plt.get_fignums() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "tsne"}, "method must be 'pca'"),
        ({"pairs": -1}, "pairs must be a non-negative integer"),
        ({"pairs": 2.0}, "pairs must be a non-negative integer"),
        (
            {"text_emb": unit_rows(5, 3, seed=1)},
            r"image_emb has 4 rows and text_emb 5.*pairs=0",
        ),
        ({"labels": ["a", "b"]}, "labels has 2 items but there are 4 images"),
        ({"labels": ["a", "b", "c", "d"], "pairs": 0}, "pass pairs > 0"),
        (
            {"image_emb": unit_rows(4, 3, seed=0) * 2},
            r"image_emb row 0 has L2 norm 2\.0000",
        ),
        ({"text_emb": unit_rows(4, 2, seed=1)}, "same embedding size"),
        (
            {"image_emb": np.ones((4, 1)), "text_emb": -np.ones((4, 1))},
            "at least 2 dimensions",
        ),
        (
            {
                "image_emb": np.tile([[0.6, 0.8]], (4, 1)),
                "text_emb": np.tile([[0.6, 0.8]], (4, 1)),
            },
            "no variance",
        ),
    ],
)
def test_bad_input_is_rejected(kwargs, message):
    arguments = {
        "image_emb": unit_rows(4, 3, seed=0),
        "text_emb": unit_rows(4, 3, seed=1),
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        viz.embedding_projection(**arguments)


def test_sets_of_different_sizes_are_drawn_without_pairs():
    (ax,) = viz.embedding_projection(
        unit_rows(4, 3, seed=0), unit_rows(9, 3, seed=1), pairs=0
    ).axes
    assert [len(points.get_offsets()) for points in scatters(ax)] == [4, 9]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_accepts_cuda_tensors():
    image, text = unit_rows(10, 4, seed=10), unit_rows(10, 4, seed=11)
    (ax,) = viz.embedding_projection(
        torch.from_numpy(image).cuda(), torch.from_numpy(text).cuda()
    ).axes
    expected_image, _, _ = numpy_shared_pca(image, text)
    np.testing.assert_allclose(
        scatters(ax)[0].get_offsets(), expected_image, atol=1e-10
    )

"""Plots for the book: similarity heatmaps, retrieval results, image grids, training
curves, loss curves of several runs, bars of measured ratios and of grouped values, the
spacing of floating-point numbers, embedding maps, CCA correlation spectra, attention
overlays, next-token distributions under sampling settings, curves with their spread
over seeds, shares of choices over time.

Every function returns a matplotlib ``Figure`` and never calls ``plt.show()``, so it
works under any backend, including the headless ``Agg`` used by tests and notebook
validation. Figures made here are built with ``matplotlib.figure.Figure`` rather than
``pyplot``: they are not registered with pyplot, so a notebook shows them only when they
are displayed (as a cell's last value or with ``display(fig)``) and they are freed like
any other object.

Tensors may live on any device and have any dtype; they are copied to float64 NumPy
arrays once, by ``_to_numpy``. Images are ``[K, 3, H, W]`` with values in ``[0, 1]``.
"""

from __future__ import annotations

import functools
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure, SubFigure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from crossalign.metrics.geometry import modality_gap, pca
from crossalign.utils import atomic_path, is_integral, is_real

ArrayLike = torch.Tensor | np.ndarray
PathLike = str | os.PathLike

SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "coolwarm"
ARGMAX_OUTLINE_COLOURS = {SEQUENTIAL_CMAP: "red", DIVERGING_CMAP: "black"}
ARGMAX_GID = "argmax"
CORRECT_COLOUR = "tab:green"
WRONG_COLOUR = "tab:red"
IMAGE_COLOUR = "tab:blue"
TEXT_COLOUR = "tab:orange"
ANNOTATE_MAX_SIDE = 8
# Thumbnails sit in a column one heatmap cell wide, 0.1 cell clear of column 0 (which
# starts at x = -0.5).
_THUMBNAIL_LEFT = -1.6
_IMAGE_RANGE_TOLERANCE = 1e-3


@functools.cache
def _activate_display_backend() -> None:
    """Let pyplot pick its backend once, so that Jupyter registers its PNG display for
    figures.

    The figures made here are not tracked by pyplot (no double display in notebooks, no
    leak when plotting in a loop); in a notebook they show when they are a cell's value.
    """
    import matplotlib.pyplot as plt

    plt.close(plt.figure())


def _new_figure(**kwargs: Any) -> Figure:
    """A matplotlib figure that pyplot does not track (see
    :func:`_activate_display_backend`)."""
    _activate_display_backend()
    return Figure(**kwargs)


def similarity_heatmap(
    similarity: ArrayLike,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    images: ArrayLike | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    annotate: bool | None = None,
    save_path: PathLike | None = None,
) -> Figure:
    """Draw an image-text similarity matrix ``[N_img, N_txt]`` as a heatmap.

    Rows are images, columns are texts. Each row's best-matching text (its argmax; the
    first one on ties) gets a box outline, so a correct retrieval shows as an outlined
    diagonal when row ``i`` and column ``i`` are a pair. A matrix with negative values
    uses a diverging colormap centred on zero; a non-negative one uses a sequential
    colormap.

    Args:
        similarity: the matrix, e.g. ``image_emb @ text_emb.T``. row_labels: one label
        per image (drawn left of the thumbnails when ``images`` is given). col_labels:
        one caption per text, wrapped and truncated to stay readable. images:
        ``[N_img, 3, H, W]`` in ``[0, 1]``; shown as thumbnails along the rows. title:
        the axes title. ax: axes to draw on; a new figure is made when omitted.
        annotate: write the values in the cells; by default only when both sides are <=
        8. save_path: also write the figure there (format from the suffix, e.g.
        ``.png``).
    """
    sim = _to_numpy(similarity, "similarity")
    if sim.ndim != 2 or 0 in sim.shape:
        raise ValueError(
            "similarity must be a non-empty 2-D matrix [N_img, N_txt], got shape "
            f"{tuple(sim.shape)}"
        )
    if not np.isfinite(sim).all():
        raise ValueError(
            "similarity contains NaN or infinite values; check the embeddings it was "
            "computed from"
        )
    n_img, n_txt = sim.shape
    _check_label_count(row_labels, n_img, "row_labels", "rows (images)")
    _check_label_count(col_labels, n_txt, "col_labels", "columns (texts)")
    thumbnails = None
    if images is not None:
        thumbnails = _to_display_images(images, "images")
        if len(thumbnails) != n_img:
            raise ValueError(
                f"images has {len(thumbnails)} images but similarity has {n_img} rows; "
                "give one image per row"
            )

    if ax is None:
        width = min(16.0, 2.5 + 0.55 * n_txt + (1.0 if thumbnails is not None else 0.0))
        height = min(
            16.0, 1.5 + 0.55 * n_img + (1.2 if col_labels is not None else 0.0)
        )
        fig = _new_figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = _root_figure(ax)

    cmap, norm = _colour_scale(sim)
    heatmap = ax.imshow(
        sim, cmap=cmap, norm=norm, interpolation="nearest", aspect="equal"
    )
    ax.figure.colorbar(heatmap, ax=ax, label="similarity")

    ax.set_xticks(range(n_txt))
    if col_labels is not None:
        ax.set_xticklabels(
            [_wrap(label, width=28, max_lines=3) for label in col_labels],
            rotation=45,
            ha="right",
            rotation_mode="anchor",
            fontsize="small",
        )
    ax.set_xlabel("texts")
    ax.set_yticks(range(n_img))
    if thumbnails is None:
        if row_labels is not None:
            ax.set_yticklabels(
                [_wrap(label, width=28, max_lines=2) for label in row_labels],
                fontsize="small",
            )
        ax.set_ylabel("images")
    else:
        ax.set_yticklabels([])
        ax.tick_params(axis="y", left=False)
        _draw_row_thumbnails(ax, thumbnails, row_labels)

    _outline_row_argmax(ax, sim, ARGMAX_OUTLINE_COLOURS[cmap])
    if annotate is None:
        annotate = max(n_img, n_txt) <= ANNOTATE_MAX_SIDE
    if annotate:
        _write_cell_values(ax, heatmap)

    if title is not None:
        ax.set_title(title)
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def retrieval_grid(
    query: str,
    images: ArrayLike,
    scores: Sequence[float] | ArrayLike,
    correct: Sequence[bool] | None = None,
    titles: Sequence[str] | None = None,
    save_path: PathLike | None = None,
) -> Figure:
    """Show a text query and its top-k retrieved images in a row, best first, with their
    scores.

    Args:
        query: the query sentence, used as the figure title. images: the retrieved
        images ``[K, 3, H, W]`` in ``[0, 1]``, in rank order. scores: the K similarity
        scores, in the same order. correct: optional K flags; a correct hit gets a green
        frame, a wrong one a red frame. titles: optional K short texts (e.g. file names)
        written under each rank and score. save_path: also write the figure there.
    """
    pictures = _to_display_images(images, "images")
    k = len(pictures)
    score_values = _to_numpy(scores, "scores")
    if score_values.ndim != 1 or len(score_values) != k:
        raise ValueError(
            "scores must hold one number per image: got shape "
            f"{tuple(score_values.shape)} for {k} images"
        )
    _check_label_count(correct, k, "correct", "images")
    _check_label_count(titles, k, "titles", "images")

    fig = _new_figure(figsize=(max(4.0, 2.2 * k), 3.2), layout="constrained")
    fig.suptitle(_wrap(query, width=90, max_lines=3))
    for rank, (picture, score) in enumerate(zip(pictures, score_values)):
        ax = fig.add_subplot(1, k, rank + 1)
        ax.imshow(picture, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        caption = f"#{rank + 1}  {score:.3f}"
        if titles is not None:
            caption += "\n" + _wrap(titles[rank], width=24, max_lines=2)
        ax.set_title(caption, fontsize="small")
        for spine in ax.spines.values():
            if correct is None:
                spine.set_visible(False)
            else:
                spine.set_edgecolor(CORRECT_COLOUR if correct[rank] else WRONG_COLOUR)
                spine.set_linewidth(4.0)
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def image_grid(
    images: ArrayLike,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    save_path: PathLike | None = None,
) -> Figure:
    """Show images ``[K, 3, H, W]`` in ``[0, 1]`` in a grid of ``ncols`` columns, with
    optional titles.

    The grid has ``ceil(K / ncols)`` rows and exactly K axes (no empty frames at the
    end).
    """
    pictures = _to_display_images(images, "images")
    if isinstance(ncols, bool) or not is_integral(ncols) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    _check_label_count(titles, len(pictures), "titles", "images")
    ncols = min(int(ncols), len(pictures))
    nrows = math.ceil(len(pictures) / ncols)
    title_height = 0.35 if titles is not None else 0.0
    fig = _new_figure(
        figsize=(1.8 * ncols, (1.8 + title_height) * nrows), layout="constrained"
    )
    for index, picture in enumerate(pictures):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        ax.imshow(picture, interpolation="nearest")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(
                _wrap(titles[index], width=22, max_lines=2), fontsize="x-small"
            )
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def training_curves(
    history: Sequence[Mapping[str, Any]],
    keys: Sequence[str] | None = None,
    save_path: PathLike | None = None,
) -> Figure:
    """Plot logged values against the training step, one subplot per key.

    ``history`` is a list of dicts, one per logged step, each with a ``"step"`` and
    numeric values such as ``"loss"``, ``"lr"`` or ``"val/i2t_r1"``. Keys may be sparse
    (validation metrics are logged every few hundred steps): each curve uses only the
    entries that have the key, and all subplots share the step axis so sparse and dense
    curves line up. By default every numeric key except ``"step"`` is plotted, in order
    of first appearance. The ``"lr"`` axis is logarithmic when all its values are
    positive.
    """
    if len(history) == 0:
        raise ValueError("history is empty; log at least one step before plotting")
    for index, entry in enumerate(history):
        if not isinstance(entry, Mapping) or _as_float(entry.get("step")) is None:
            raise ValueError(
                f"history[{index}] must be a dict with a numeric 'step', got {entry!r}"
            )
    if keys is None:
        keys = _numeric_keys(history)
        if not keys:
            raise ValueError(
                "history has no numeric values besides 'step'; nothing to plot"
            )
    series = {}
    for key in keys:
        points = [
            (_as_float(entry["step"]), _as_float(entry[key]))
            for entry in history
            if key in entry
        ]
        if not points:
            raise ValueError(
                f"key {key!r} is in no entry of history; available keys: "
                f"{_numeric_keys(history)}"
            )
        if any(value is None for _, value in points):
            raise ValueError(
                f"key {key!r} has non-numeric values in history; pick numeric keys only"
            )
        series[key] = points

    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig = _new_figure(figsize=(4.0 * ncols, 3.0 * nrows), layout="constrained")
    first_ax = None
    for index, (key, points) in enumerate(series.items()):
        ax = fig.add_subplot(nrows, ncols, index + 1, sharex=first_ax)
        if first_ax is None:
            first_ax = ax
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) <= 50 else None, markersize=3)
        if key == "lr" and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def loss_curves(
    curves: Mapping[str, Sequence[float] | ArrayLike],
    chance: float | None = None,
    smooth: int = 1,
    ylabel: str = "training loss",
    save_path: PathLike | None = None,
) -> Figure:
    """Plot several runs' per-step losses on one axes, to compare training loops.

    ``curves`` maps a run's name to its losses, one per optimiser step (step 1 first).
    Runs compared side by side belong on one axes with one step scale, which
    :func:`training_curves` (one subplot per logged key of one run) does not give.
    ``smooth`` > 1 draws the moving average over that many steps (a point per full
    window, placed at the window's last step), since per-step losses of small batches
    are noisy; ``chance`` draws a dotted horizontal line at the loss of a model that has
    learnt nothing (``log N`` for a contrastive loss over a batch of ``N`` pairs).
    """
    if not curves:
        raise ValueError("curves is empty; give at least one run's losses")
    if not is_integral(smooth) or smooth < 1:
        raise ValueError(f"smooth must be a positive integer, got {smooth!r}")
    fig = _new_figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for name, values in curves.items():
        losses = _to_numpy(values, f"curves[{name!r}]").reshape(-1)
        if losses.size < smooth:
            raise ValueError(
                f"curves[{name!r}] has {losses.size} values, fewer than smooth={smooth}"
            )
        averaged = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        steps = np.arange(smooth, losses.size + 1)
        ax.plot(steps, averaged, label=name)
    if chance is not None:
        ax.axhline(float(chance), color="grey", ls=":", label="chance")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel if smooth == 1 else f"{ylabel} (mean of {smooth} steps)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def ratio_bars(
    panels: Mapping[str, Mapping[str, float]],
    xlabel: str = "speed-up over the first variant",
    save_path: PathLike | None = None,
) -> Figure:
    """Draw ratios measured side by side as horizontal bars, one subplot per panel.

    ``panels`` maps a panel's title to ``{variant: ratio}``, the first variant being the
    baseline (ratio 1). The book reports speed as ratios of times measured in one run,
    because absolute times depend on the machine and on what else it is doing; a bar
    chart makes the size of each ratio, and which side of 1 it falls, visible at a
    glance. A solid line marks 1 (no change) and each bar is labelled with its ratio
    (``1.30x``).
    """
    if not panels:
        raise ValueError("panels is empty; give at least one panel of ratios")
    for title, ratios in panels.items():
        if not ratios:
            raise ValueError(f"panel {title!r} has no variants")
        bad = {k: v for k, v in ratios.items() if not (_as_float(v) or 0) > 0}
        if bad:
            raise ValueError(f"panel {title!r}: ratios must be positive, got {bad}")
    fig = _new_figure(
        figsize=(4.2 * len(panels), 0.5 + 0.5 * max(map(len, panels.values()))),
        layout="constrained",
    )
    for index, (title, ratios) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), index + 1)
        names = list(ratios)
        values = [float(ratios[name]) for name in names]
        positions = np.arange(len(names))[::-1]  # the first variant on top
        bars = ax.barh(positions, values, color=IMAGE_COLOUR, height=0.6)
        ax.bar_label(bars, labels=[f"{v:.2f}x" for v in values], padding=3)
        ax.axvline(1.0, color="black", lw=1)
        ax.set_yticks(positions, names)
        ax.set_xlim(0, max(values) * 1.3)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def float_spacing(
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float16, torch.bfloat16),
    low: float = 1e-10,
    high: float = 1e6,
    points: int = 4000,
    save_path: PathLike | None = None,
) -> Figure:
    """Plot how coarse each floating-point format is across magnitudes: the gap to the
    next representable number, relative to the number, ``ulp(x) / x``.

    ``points`` magnitudes between ``low`` and ``high`` (log-spaced) are rounded to each
    format, and the gap is measured on the stored bits (the next larger number of a
    positive float is the one whose bit pattern is one higher), so the curve is what the
    format does, not a formula. For normal numbers the gap is between ``eps / 2`` and
    ``eps`` of the number (the saw teeth, one per power of two); below the smallest
    normal number the format runs out of exponent and the relative gap grows until
    values round to zero; above its largest number they become ``inf``. A curve is
    drawn only where the format holds the number (finite and non-zero), so where it
    stops is the format's range. The dotted lines mark each format's smallest normal
    and largest finite number.
    """
    if len(dtypes) == 0:
        raise ValueError("dtypes is empty; give at least one floating-point dtype")
    if not (is_real(low) and is_real(high) and 0 < low < high):
        raise ValueError(f"need 0 < low < high, got low={low!r}, high={high!r}")
    if isinstance(points, bool) or not is_integral(points) or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    bit_views = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    magnitudes = torch.logspace(
        math.log10(low), math.log10(high), int(points), dtype=torch.float64
    )
    fig = _new_figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for dtype in dtypes:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"{dtype!r} is not a floating-point torch dtype")
        info = torch.finfo(dtype)
        stored = magnitudes.to(dtype)
        held = torch.isfinite(stored) & (stored > 0)
        following = (stored.view(bit_views[info.bits // 8]) + 1).view(dtype)
        held &= torch.isfinite(following)  # the largest finite number has no next
        gap = following.double() - stored.double()
        relative = (gap / stored.double())[held].numpy()
        name = str(dtype).removeprefix("torch.")
        (line,) = ax.plot(
            stored.double()[held].numpy(),
            relative,
            linewidth=1.0,
            label=f"{name} (eps = {info.eps:.2g})",
            gid=name,
        )
        for edge in (info.smallest_normal, info.max):
            if low <= edge <= high:
                ax.axvline(edge, color=line.get_color(), linestyle=":", linewidth=1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_xlabel("magnitude of the number x")
    ax.set_ylabel("gap to the next number / x")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def grouped_bars(
    values: Mapping[str, Sequence[float] | ArrayLike],
    categories: Sequence[str],
    ylabel: str = "",
    title: str | None = None,
    value_format: str | None = None,
    ylim: tuple[float, float] | None = None,
    save_path: PathLike | None = None,
) -> Figure:
    """Draw one or more series of numbers over the same categories as bars side by side.

    For a few numbers per category that a reader should compare at a glance rather than
    read from a table: chapter 4 shows, per relation wording of a caption, the share of
    caption / relation-swap pairs that each stop-word list leaves distinguishable, so
    the wordings a list destroys stand out as missing bars.

    Args:
        values: series name (shown in the legend when there are several) -> one number
        per category, in the order of ``categories``. categories: the labels under the
        groups of bars. ylabel, title: axis label and figure title. value_format: a
        format spec (``".0%"``, ``".2f"``) to write each value above its bar.
        ylim: the value axis range. save_path: also write the figure there.
    """
    if not values:
        raise ValueError("values is empty; give at least one series to plot")
    if len(categories) == 0:
        raise ValueError("categories is empty; give at least one category")
    series = {}
    for name, numbers in values.items():
        array = _to_numpy(numbers, f"values[{name!r}]")
        if array.ndim != 1 or len(array) != len(categories):
            raise ValueError(
                f"values[{name!r}] must hold one number per category "
                f"({len(categories)}), got shape {tuple(array.shape)}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"values[{name!r}] contains NaN or infinite values")
        series[str(name)] = array

    count = len(series)
    width = 0.8 / count
    positions = np.arange(len(categories), dtype=np.float64)
    fig = _new_figure(
        figsize=(max(4.5, 0.35 * count * len(categories) + 2.0), 3.6),
        layout="constrained",
    )
    ax = fig.add_subplot(1, 1, 1)
    for index, (name, array) in enumerate(series.items()):
        offset = (index - (count - 1) / 2) * width
        bars = ax.bar(positions + offset, array, width, label=name)
        if value_format is not None:
            ax.bar_label(
                bars,
                labels=[format(value, value_format) for value in array],
                fontsize="x-small",
                padding=2,
            )
    ax.set_xticks(positions)
    long_labels = max(len(str(label)) for label in categories) > 8
    ax.set_xticklabels(
        [str(label) for label in categories],
        rotation=30 if long_labels else 0,
        ha="right" if long_labels else "center",
    )
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title is not None:
        ax.set_title(title)
    if count > 1:  # above the plot, where it cannot hide a bar
        fig.legend(loc="outside upper center", ncols=count, fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def embedding_projection(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    pairs: int = 50,
    method: str = "pca",
    labels: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    save_path: PathLike | None = None,
) -> Figure:
    """Draw image and text embeddings on one plane, with matching pairs joined and each
    centroid marked.

    A single PCA is fitted on the union of both sets, so the two modalities share the
    axes and their separation, the modality gap (Liang et al., 2022), shows as it is.
    Images are circles and texts triangles, in two colours; thin grey lines join image
    ``i`` to text ``i`` for the first ``pairs`` rows; each modality's centroid is a
    large cross, and a dashed line joins the two crosses. The legend gives the modality
    gap measured in the full space (the distance between the centroids of the unit
    embeddings): the dashed line is its shadow on the plane and can only be shorter. The
    axes are drawn at equal scale and labelled with the share of the variance each
    component explains.

    Args:
        image_emb: ``[N_img, D]`` unit-norm image embeddings, ``D >= 2``. text_emb:
        ``[N_txt, D]`` unit-norm text embeddings. pairs: how many pairs to join, from
        the first row; all of them when larger than N.
            With ``pairs > 0`` row ``i`` of ``image_emb`` and of ``text_emb`` must be a
            pair, so both need the same number of rows; ``pairs=0`` draws sets of any
            sizes.
        method: the projection; ``"pca"`` is the one available. labels: one short text
        per image; the images of the joined pairs get theirs written
            beside their point.
        title: the axes title.
        ax: axes to draw on; a new figure is made when omitted.
        save_path: also write the figure there (format from the suffix, e.g. ``.png``).
    """
    if method != "pca":
        raise ValueError(f"method must be 'pca', got {method!r}")
    if isinstance(pairs, bool) or not is_integral(pairs) or pairs < 0:
        raise ValueError(f"pairs must be a non-negative integer, got {pairs!r}")
    images = torch.from_numpy(_to_numpy(image_emb, "image_emb"))
    texts = torch.from_numpy(_to_numpy(text_emb, "text_emb"))
    gap = modality_gap(images, texts)
    n_img, n_txt = images.shape[0], texts.shape[0]
    if images.shape[1] < 2:
        raise ValueError(
            "image_emb and text_emb need at least 2 dimensions to project on a plane, "
            f"got {images.shape[1]}"
        )
    if pairs > 0 and n_img != n_txt:
        raise ValueError(
            f"image_emb has {n_img} rows and text_emb {n_txt}; joining pairs needs row "
            "i of each to be a pair, "
            "so pass pairs=0 or give one text per image (e.g. each image's first "
            "caption)"
        )
    n_pairs = min(int(pairs), n_img)
    _check_label_count(labels, n_img, "labels", "images")
    if labels is not None and n_pairs == 0:
        raise ValueError(
            "labels are written beside the joined pairs; pass pairs > 0 to show them"
        )
    try:
        projected, _, variance_ratio = pca(torch.cat([images, texts]), k=2)
    except ValueError as error:
        raise ValueError(f"cannot project image_emb and text_emb: {error}") from error
    image_xy, text_xy = projected[:n_img].numpy(), projected[n_img:].numpy()

    if ax is None:
        fig = _new_figure(figsize=(6.5, 6.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = _root_figure(ax)
    if n_pairs > 0:
        segments = np.stack([image_xy[:n_pairs], text_xy[:n_pairs]], axis=1)
        pair_lines = LineCollection(
            list(segments),
            colors="0.6",
            linewidths=0.6,
            zorder=1,
            label=f"first {n_pairs} pairs",
        )
        ax.add_collection(pair_lines)
    ax.scatter(
        image_xy[:, 0],
        image_xy[:, 1],
        s=16,
        color=IMAGE_COLOUR,
        marker="o",
        alpha=0.7,
        zorder=2,
        label=f"images ({n_img})",
    )
    ax.scatter(
        text_xy[:, 0],
        text_xy[:, 1],
        s=18,
        color=TEXT_COLOUR,
        marker="^",
        alpha=0.7,
        zorder=2,
        label=f"texts ({n_txt})",
    )
    if labels is not None:
        for (x, y), label in zip(image_xy[:n_pairs], labels):
            short_label = _wrap(label, width=24, max_lines=1)
            ax.annotate(
                short_label,
                (x, y),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize="x-small",
            )
    image_centroid, text_centroid = image_xy.mean(axis=0), text_xy.mean(axis=0)
    gap_x, gap_y = np.stack([image_centroid, text_centroid]).T
    ax.plot(
        gap_x,
        gap_y,
        color="black",
        linestyle="--",
        linewidth=1.5,
        zorder=3,
        label=f"modality gap = {gap:.3f}",
    )
    for centroid, colour, name in (
        (image_centroid, IMAGE_COLOUR, "image"),
        (text_centroid, TEXT_COLOUR, "text"),
    ):
        ax.plot(
            *centroid,
            marker="X",
            markersize=14,
            color=colour,
            markeredgecolor="black",
            linestyle="none",
            zorder=4,
            label=f"{name} centroid",
        )

    ax.set_xlabel(f"PC1 ({100 * float(variance_ratio[0]):.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * float(variance_ratio[1]):.1f}% of variance)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title is not None:
        ax.set_title(title)
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def correlation_spectrum(
    correlations: ArrayLike | Sequence[float],
    held_out: ArrayLike | Sequence[float] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    save_path: PathLike | None = None,
) -> Figure:
    """Draw the canonical correlations of a fitted CCA, one bar per direction.

    CCA (``crossalign.linear.CCA``) orders its directions by how strongly the two
    projections correlate on the pairs it was fitted on; the bars show that spectrum,
    which says how many shared directions the two spaces have. Late directions often
    owe their correlation to the noise of the fitting pairs: ``held_out`` (optional, one
    value per direction) draws the correlation of the same projections on pairs the fit
    never saw, as a line with markers, so the gap between bar and line shows where the
    fit stops generalising.

    Args:
        correlations: the K canonical correlations, each in ``[-1, 1]`` (a fitted CCA's
            ``correlations``), in direction order.
        held_out: optional K correlations of the projections on held-out pairs.
        title: the axes title.
        ax: axes to draw on; a new figure is made when omitted.
        save_path: also write the figure there (format from the suffix).
    """
    values = _to_numpy(correlations, "correlations")
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(
            "correlations must be a non-empty 1-D sequence, got shape "
            f"{tuple(values.shape)}"
        )
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) > 1 + 1e-6):
        raise ValueError("correlations must be finite and lie in [-1, 1]")
    held = None
    if held_out is not None:
        held = _to_numpy(held_out, "held_out")
        if held.shape != values.shape:
            raise ValueError(
                f"held_out must hold one value per direction ({len(values)}), got "
                f"shape {tuple(held.shape)}"
            )
        if not np.all(np.isfinite(held)) or np.any(np.abs(held) > 1 + 1e-6):
            raise ValueError("held_out must be finite and lie in [-1, 1]")

    if ax is None:
        fig = _new_figure(figsize=(6.5, 3.6), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = _root_figure(ax)
    directions = np.arange(1, len(values) + 1)
    ax.bar(
        directions,
        values,
        width=0.8,
        color=IMAGE_COLOUR,
        alpha=0.8,
        label="fitting pairs",
    )
    if held is not None:
        ax.plot(
            directions,
            held,
            color=TEXT_COLOUR,
            marker="o",
            markersize=3,
            linewidth=1.2,
            label="held-out pairs",
        )
    lowest = min(0.0, float(values.min()), float(held.min()) if held is not None else 0)
    ax.set_ylim(lowest - 0.02 if lowest < 0 else 0.0, 1.0)
    ax.set_xlim(0.4, len(values) + 0.6)
    ax.set_xlabel("canonical direction")
    ax.set_ylabel("correlation")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    if title is not None:
        ax.set_title(title)
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def attention_overlay(
    image: ArrayLike,
    words: Sequence[str],
    attention: ArrayLike,
    grid: tuple[int, int] | None = None,
    ncols: int = 6,
    alpha: float = 0.6,
    save_path: PathLike | None = None,
) -> Figure:
    """Show where a captioner looked for each word: the image, then one attention
    overlay per word.

    ``image`` is ``[3, H, W]`` in [0, 1]; ``attention`` holds one map per word,
    ``[T, N]`` over the ``N = h * w`` regions of the encoder's grid (row by row, as
    ``forward_tokens`` orders them) or already ``[T, h, w]``; ``grid`` gives ``(h, w)``
    for the flat form (default: a square grid). Each map is stretched over the image
    with bilinear interpolation and drawn with the sequential colormap at opacity
    ``alpha``; the panel title is the word and the largest weight of its map. Returns a
    figure with ``1 + T`` panels.
    """
    picture = _to_display_images(_to_numpy(image, "image")[None], "image")[0]
    maps = _to_numpy(attention, "attention")
    words = [str(word) for word in words]
    if maps.ndim == 2:
        n = maps.shape[1]
        if grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(
                    f"attention has {n} regions, which is not a square grid; pass "
                    "grid=(h, w)"
                )
            grid = (side, side)
        if grid[0] * grid[1] != n:
            raise ValueError(
                f"grid={tuple(grid)} has {grid[0] * grid[1]} regions but attention has "
                f"{n}"
            )
        maps = maps.reshape(maps.shape[0], grid[0], grid[1])
    if maps.ndim != 3:
        raise ValueError(
            f"attention must be [T, N] or [T, h, w], got shape {tuple(maps.shape)}"
        )
    if len(words) != maps.shape[0]:
        raise ValueError(
            f"got {len(words)} words for {maps.shape[0]} attention maps; give one word "
            "per map"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if isinstance(ncols, bool) or not is_integral(ncols) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    height, width = picture.shape[:2]
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(maps)[:, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[:, 0].numpy()
    panels = 1 + len(words)
    ncols = min(int(ncols), panels)
    nrows = math.ceil(panels / ncols)
    fig = _new_figure(figsize=(1.9 * ncols, 2.1 * nrows), layout="constrained")
    ax = fig.add_subplot(nrows, ncols, 1)
    ax.imshow(picture, interpolation="nearest")
    ax.set_title("image", fontsize="small")
    ax.set_axis_off()
    for index, (word, weights) in enumerate(zip(words, upsampled)):
        ax = fig.add_subplot(nrows, ncols, index + 2)
        ax.imshow(picture, interpolation="nearest")
        ax.imshow(weights, cmap=SEQUENTIAL_CMAP, alpha=alpha, interpolation="nearest")
        ax.set_title(f"{word} ({maps[index].max():.2f})", fontsize="small")
        ax.set_axis_off()
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def next_token_distributions(
    logits: ArrayLike,
    token_labels: Sequence[str],
    settings: Mapping[str, Mapping[str, Any]],
    top: int = 12,
    save_path: PathLike | None = None,
) -> Figure:
    """Draw one next-token distribution as each sampling setting reshapes it, one bar
    chart per setting.

    ``logits`` are a language model's logits for the next token, ``[V]`` or ``[1, V]``;
    ``token_labels`` names the ``V`` tokens. ``settings`` maps a panel title to keyword
    arguments of :func:`crossalign.sampling.filter_logits` (``temperature``, ``top_k``,
    ``top_p``; ``{}`` is the model's own distribution), so the bars are the
    probabilities a sampler would actually draw from. Every panel shows the same ``top``
    tokens, the most probable under the unfiltered distribution, in that order: filled
    bars are the reshaped probabilities, outlines the model's own, so a reader sees mass
    move (temperature) or tokens drop out (top-k, top-p). A panel's title adds how many
    of the ``V`` tokens keep a probability above zero and how much of the model's own
    mass they hold.
    """
    from crossalign.sampling import filter_logits

    row = torch.as_tensor(_to_numpy(logits, "logits"))
    if row.dim() == 2 and row.shape[0] == 1:
        row = row[0]
    if row.dim() != 1 or row.numel() == 0:
        raise ValueError(
            f"logits must be [V] or [1, V] for one next token, got {tuple(row.shape)}"
        )
    vocab_size = row.numel()
    labels = [str(label) for label in token_labels]
    if len(labels) != vocab_size:
        raise ValueError(
            f"got {len(labels)} token labels for {vocab_size} logits; give one per "
            "token"
        )
    if not settings:
        raise ValueError(
            "settings is empty; give at least one panel, e.g. {'model': {}}"
        )
    if isinstance(top, bool) or not is_integral(top) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    top = min(int(top), vocab_size)
    original = torch.softmax(row, dim=-1)
    shown = torch.sort(original, descending=True, stable=True).indices[:top]
    positions = np.arange(top)
    fig = _new_figure(figsize=(2.7 * len(settings) + 0.6, 3.2), layout="constrained")
    first_ax = None
    for index, (name, kwargs) in enumerate(settings.items()):
        probs = torch.softmax(filter_logits(row[None], **dict(kwargs))[0], dim=-1)
        kept = probs > 0
        ax = fig.add_subplot(1, len(settings), index + 1, sharey=first_ax)
        if first_ax is None:
            first_ax = ax
            ax.set_ylabel("probability of the next token")
        ax.bar(
            positions,
            probs[shown].numpy(),
            color=IMAGE_COLOUR,
            gid="reshaped",
            label="sampled from",
        )
        ax.bar(
            positions,
            original[shown].numpy(),
            fill=False,
            edgecolor="black",
            linewidth=0.8,
            gid="model",
            label="model",
        )
        ax.set_xticks(positions, [labels[i] for i in shown.tolist()], rotation=90)
        ax.set_title(
            f"{name}\n{int(kept.sum())} of {vocab_size} tokens, "
            f"{original[kept].sum().item():.0%} of the mass",
            fontsize="small",
        )
        ax.grid(True, axis="y", alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def spread_curves(
    panels: Mapping[str, Mapping[str, tuple[Any, Any, Any]]],
    xlabel: str,
    ylabel: str,
    references: Mapping[str, Mapping[str, float]] | None = None,
    xscale: str = "linear",
    ylim: tuple[float, float] | None = None,
    save_path: PathLike | None = None,
) -> Figure:
    """Draw measured curves with their spread over seeds, one subplot per panel.

    For results that are a mean over several runs at each setting (accuracy against the
    number of labelled examples, accuracy against an attack's budget): each series is a
    line through its means with a shaded band of plus and minus one standard deviation,
    so the reader sees at once whether two curves differ by more than their noise.

    Args:
        panels: panel title -> ``{series: (x, mean, std)}``; ``std`` may be ``None``
            (a single run: no band). x, mean and std are equally long sequences.
        xlabel, ylabel: axis labels (shared by every panel). references: panel title
            -> ``{label: y}``, drawn as dashed horizontal lines (a zero-shot baseline,
            chance). xscale: ``"linear"``, ``"log"`` or ``"symlog"``. ylim: the value
            range. save_path: also write the figure there.
    """
    if not panels:
        raise ValueError("panels is empty; give at least one panel of curves")
    checked: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]]
    checked = {}
    for title, series in panels.items():
        if not series:
            raise ValueError(f"panel {title!r} has no series")
        checked[title] = {}
        for name, (x, mean, std) in series.items():
            where = f"panels[{title!r}][{name!r}]"
            xs, means = _to_numpy(x, where + " x"), _to_numpy(mean, where + " mean")
            stds = None if std is None else _to_numpy(std, where + " std")
            shapes = [a.shape for a in (xs, means, stds) if a is not None]
            if len(set(shapes)) != 1 or xs.ndim != 1 or len(xs) == 0:
                raise ValueError(
                    f"{where}: x, mean and std must be equally long, non-empty 1-D "
                    f"sequences, got shapes {shapes}"
                )
            if stds is not None and (stds < 0).any():
                raise ValueError(f"{where}: std must be >= 0")
            checked[title][str(name)] = (xs, means, stds)
    unknown = set(references or {}) - set(panels)
    if unknown:
        raise ValueError(f"references name panels that do not exist: {sorted(unknown)}")
    if xscale not in ("linear", "log", "symlog"):
        raise ValueError(f"xscale must be 'linear', 'log' or 'symlog', got {xscale!r}")

    fig = _new_figure(figsize=(4.4 * len(checked), 3.4), layout="constrained")
    for index, (title, series) in enumerate(checked.items()):
        ax = fig.add_subplot(1, len(checked), index + 1)
        for name, (xs, means, stds) in series.items():
            (line,) = ax.plot(xs, means, marker="o", markersize=3.5, label=name)
            if stds is not None:
                ax.fill_between(
                    xs, means - stds, means + stds, color=line.get_color(), alpha=0.2
                )
        for label, y in (references or {}).get(title, {}).items():
            ax.axhline(y, color="grey", ls="--", lw=1, label=label)
        ax.set_xscale(xscale)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def stacked_shares(
    steps: Sequence[float] | ArrayLike,
    shares: Mapping[str, Sequence[float] | ArrayLike],
    xlabel: str = "training step",
    ylabel: str = "share of picks",
    title: str | None = None,
    save_path: PathLike | None = None,
) -> Figure:
    """Draw how a whole divides among a few choices over time, as stacked areas.

    For a learner that picks one of several actions at every step (a bandit choosing
    which negatives to train on): ``shares[name][t]`` is the fraction of the picks in
    window ``t`` that went to ``name``, and the fractions of a window must add up to 1.
    """
    if not shares:
        raise ValueError("shares is empty; give at least one choice")
    xs = _to_numpy(steps, "steps")
    if xs.ndim != 1 or len(xs) == 0:
        raise ValueError(
            f"steps must be a non-empty 1-D sequence, got shape {xs.shape}"
        )
    rows = []
    for name, values in shares.items():
        array = _to_numpy(values, f"shares[{name!r}]")
        if array.shape != xs.shape:
            raise ValueError(
                f"shares[{name!r}] must hold one value per step ({len(xs)}), got shape "
                f"{array.shape}"
            )
        if (array < 0).any() or (array > 1).any():
            raise ValueError(f"shares[{name!r}] must lie in [0, 1]")
        rows.append(array)
    totals = np.sum(rows, axis=0)
    if not np.allclose(totals, 1.0, atol=1e-6):
        raise ValueError(
            f"the shares of each step must add up to 1, got {totals.round(4).tolist()}"
        )
    fig = _new_figure(figsize=(6.0, 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.stackplot(xs, *rows, labels=[str(name) for name in shares], alpha=0.85)
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    fig.legend(loc="outside right center", fontsize="small")
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def save_figure(fig: Figure, path: PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically, creating parent folders; the suffix picks
    the format.

    The figure is written to a temporary file beside ``path`` and renamed onto it, so a
    crash never leaves a half-written image. Returns the path written.
    """
    target = Path(path)
    file_format = target.suffix.lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if file_format not in supported:
        raise ValueError(
            f"cannot tell the image format of {str(target)!r} from its suffix; "
            f"use one of: {', '.join('.' + name for name in sorted(supported))}"
        )
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=file_format, dpi=dpi, bbox_inches="tight")
    return target


def _to_numpy(values: ArrayLike | Sequence[float], name: str) -> np.ndarray:
    """Copy a tensor (any device, any dtype) or an array-like to a float64 NumPy
    array."""
    if isinstance(values, torch.Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name} must be a tensor, an array or a sequence of numbers: {error}"
        ) from error


def _to_display_images(images: ArrayLike, name: str) -> np.ndarray:
    """Check ``[K, 3, H, W]`` images in ``[0, 1]`` and return them as ``[K, H, W, 3]``
    for imshow."""
    array = _to_numpy(images, name)
    if array.ndim != 4 or array.shape[1] != 3 or array.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape [K, 3, H, W] with K >= 1, got {tuple(array.shape)}"
        )
    low, high = float(array.min()), float(array.max())
    if low < -_IMAGE_RANGE_TOLERANCE or high > 1 + _IMAGE_RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must hold values in [0, 1], found [{low:.3f}, {high:.3f}]; "
            "divide 8-bit images by 255 and undo any normalisation (x * std + mean) "
            "before plotting"
        )
    return np.clip(array, 0.0, 1.0).transpose(0, 2, 3, 1)


def _colour_scale(sim: np.ndarray) -> tuple[str, Normalize]:
    """Pick the colormap and its range: diverging around zero for signed values, else
    sequential."""
    if sim.min() < 0:
        limit = float(np.abs(sim).max())
        return DIVERGING_CMAP, Normalize(vmin=-limit, vmax=limit)
    return SEQUENTIAL_CMAP, Normalize(vmin=float(sim.min()), vmax=float(sim.max()))


def _outline_row_argmax(ax: Axes, sim: np.ndarray, colour: str) -> None:
    """Draw a box around each row's largest cell (tagged with ``ARGMAX_GID`` so it can
    be found)."""
    for row, col in enumerate(sim.argmax(axis=1)):
        outline = Rectangle(
            (col - 0.5, row - 0.5),
            1.0,
            1.0,
            fill=False,
            edgecolor=colour,
            linewidth=2.0,
        )
        outline.set_gid(ARGMAX_GID)
        ax.add_patch(outline)


def _write_cell_values(ax: Axes, heatmap: AxesImage) -> None:
    """Write each cell's value in it, black on light cells and white on dark ones."""
    for (row, col), value in np.ndenumerate(heatmap.get_array()):
        r, g, b, _ = heatmap.cmap(heatmap.norm(value))
        luminance = 0.299 * r + 0.587 * g + 0.114 * b
        text_colour = "black" if luminance > 0.5 else "white"
        ax.text(
            col,
            row,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize="small",
            color=text_colour,
        )


def _draw_row_thumbnails(
    ax: Axes, thumbnails: np.ndarray, row_labels: Sequence[str] | None
) -> None:
    """Draw one thumbnail left of each heatmap row, in data coordinates so each fills
    one cell."""
    for row, picture in enumerate(thumbnails):
        thumb_ax = ax.inset_axes(
            (_THUMBNAIL_LEFT, row - 0.5, 1.0, 1.0), transform=ax.transData
        )
        thumb_ax.imshow(picture, interpolation="nearest")
        thumb_ax.set_axis_off()
        if row_labels is not None:
            label = _wrap(row_labels[row], width=20, max_lines=2)
            thumb_ax.text(
                -0.08,
                0.5,
                label,
                transform=thumb_ax.transAxes,
                ha="right",
                va="center",
                fontsize="small",
            )


def _check_label_count(
    labels: Sequence[Any] | None, expected: int, name: str, what: str
) -> None:
    """Raise a ``ValueError`` unless ``labels`` is None or holds exactly ``expected``
    items."""
    if labels is not None and len(labels) != expected:
        raise ValueError(
            f"{name} has {len(labels)} items but there are {expected} {what}; give one "
            "per item"
        )


def _wrap(text: str, width: int, max_lines: int) -> str:
    """Wrap ``text`` to lines of at most ``width`` characters, cut to ``max_lines`` with
    an ellipsis."""
    lines = textwrap.wrap(str(text), width=width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return "\n".join(lines)


def _as_float(value: Any) -> float | None:
    """Return ``value`` as a float when it is a real number (or a one-element tensor),
    else None."""
    if isinstance(value, bool):
        return None
    if is_real(value):
        return float(value)
    if (
        isinstance(value, torch.Tensor)
        and value.numel() == 1
        and value.dtype != torch.bool
    ):
        return float(value.item())
    return None


def _numeric_keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys other than ``"step"`` with a numeric value somewhere in ``history``, by
    first appearance."""
    keys: dict[str, None] = {}
    for entry in history:
        for key, value in entry.items():
            if key != "step" and _as_float(value) is not None:
                keys.setdefault(key, None)
    return list(keys)


def _root_figure(ax: Axes) -> Figure:
    """Return the top-level figure of ``ax``, even when ``ax`` lives in a subfigure."""
    figure = ax.figure
    while isinstance(figure, SubFigure):
        figure = figure.get_figure()
    return figure

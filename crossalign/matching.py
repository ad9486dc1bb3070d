"""Matching without learning: the rule-based and statistical baselines on ShapesWorld.

Before any network is trained, two older ideas already match images with captions, and
they set the bar a learned aligner has to clear:

* **Rule-based matching** (:func:`keyword_match_scores`): read the attribute words of a
  caption (colours, shapes, sizes, synonyms mapped back to one name) and count how many
  of them the image's scene graph contains. It reads the symbolic scene graph, as if a
  perfect object detector had run, so its failures are failures of the rule alone: it
  ignores which colour belongs to which shape ("a red circle and a blue square" scores
  the same on a blue circle and a red square) and ignores every spatial word.
* **Statistical matching** (:class:`CorrelationMatcher`, :func:`correlation_match`):
  hand-made image features (:func:`handcrafted_image_features`: colour histograms per
  image region plus simple shape statistics) and bag-of-words caption vectors
  (:func:`bag_of_words`) are linked by canonical correlation analysis
  (:class:`crossalign.linear.CCA`) fitted on training pairs; a caption and an image are
  then compared by the cosine of their projections into the shared space. This is the
  pre-deep-learning recipe for cross-modal retrieval: nothing is learned by gradient
  descent, one eigenproblem links the two modalities.

Scores are ``[n_captions, n_images]`` matrices. To evaluate them with
:func:`crossalign.metrics.retrieval_metrics`, which scores by dot products, pass
``image_emb = torch.eye(n_images)`` and ``text_emb = scores``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from crossalign.data.shapes import (
    COLOUR_WORDS,
    COLOURS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    SceneGraph,
    caption_words,
)
from crossalign.data.vocab import simple_tokenize
from crossalign.linear import CCA
from crossalign.utils import is_real

__all__ = [
    "ATTRIBUTES",
    "CorrelationMatcher",
    "bag_of_words",
    "caption_attribute_counts",
    "correlation_match",
    "handcrafted_image_features",
    "keyword_match_scores",
    "scene_attribute_counts",
]

#: The attribute values the rule-based matcher reads, as (kind, canonical name) pairs;
# the : columns of :func:`caption_attribute_counts` and :func:`scene_attribute_counts`.
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    *(("shape", name) for name in SHAPES),
    *(("colour", name) for name in COLOURS),
    *(("size", name) for name in SIZES),
)


def _attribute_lookup() -> dict[str, int]:
    """Map every attribute word of the grammar (synonyms included) to its column in
    ``ATTRIBUTES``."""
    lookup: dict[str, int] = {}
    for kind, table in (
        ("shape", SHAPE_WORDS),
        ("colour", COLOUR_WORDS),
        ("size", SIZE_WORDS),
    ):
        for name, words in table.items():
            column = ATTRIBUTES.index((kind, name))
            for word in words:
                if (
                    simple_tokenize(word) != [word]
                    or lookup.get(word, column) != column
                ):
                    raise ValueError(
                        f"attribute word {word!r} of {kind} {name!r} must be one word "
                        "naming one value"
                    )
                lookup[word] = column
    return lookup


_ATTRIBUTE_OF_WORD = _attribute_lookup()


def _check_captions(captions: Sequence[str]) -> None:
    """Raise unless ``captions`` is a sequence of strings (and not a single string)."""
    if isinstance(captions, str):
        raise TypeError(
            "captions must be a list of strings, not a single str; wrap it in a list"
        )
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(
                f"captions[{index}] must be a str, got {type(caption).__name__}"
            )


def caption_attribute_counts(captions: Sequence[str]) -> torch.Tensor:
    """Count each attribute value a caption mentions: float32 [n_captions,
    len(ATTRIBUTES)].

    Words are split with :func:`crossalign.data.simple_tokenize`; synonyms count for
    their canonical value ("disc" is a circle, "big" is large); all other words are
    ignored.
    """
    _check_captions(captions)
    return _word_counts(captions, _ATTRIBUTE_OF_WORD, len(ATTRIBUTES))


def _word_counts(
    captions: Sequence[str], column_of: dict[str, int], width: int
) -> torch.Tensor:
    """Count, per caption, the words that ``column_of`` maps to a column: float32
    [n_captions, width]."""
    counts = [[0] * width for _ in captions]
    for row, caption in zip(counts, captions):
        for word in simple_tokenize(caption):
            column = column_of.get(word)
            if column is not None:
                row[column] += 1
    return torch.tensor(counts, dtype=torch.float32).reshape(len(captions), width)


def scene_attribute_counts(scenes: Sequence[SceneGraph]) -> torch.Tensor:
    """Count the objects with each attribute value in each scene: float32 [n_scenes,
    len(ATTRIBUTES)]."""
    counts = torch.zeros(len(scenes), len(ATTRIBUTES), dtype=torch.float32)
    for row, scene in enumerate(scenes):
        if not isinstance(scene, SceneGraph):
            raise TypeError(
                f"scenes[{row}] must be a SceneGraph (from ShapesWorld.scenes), got "
                f"{type(scene).__name__}"
            )
        for obj in scene.objects:
            for kind, value in (
                ("shape", obj.shape),
                ("colour", obj.colour),
                ("size", obj.size),
            ):
                counts[row, ATTRIBUTES.index((kind, value))] += 1
    return counts


def keyword_match_scores(
    captions: Sequence[str], scenes: Sequence[SceneGraph]
) -> torch.Tensor:
    """Rule-based matching: how many of a caption's attribute words each scene graph
    contains.

    The rule: count the caption's mentions of every attribute value (colour, shape,
    size; synonyms mapped back to one name) and the scene's objects having that value;
    the score is ``sum over values of min(mentions, objects)``, each mention matched by
    at most one object. Example: "a small red circle is left of a big red square"
    mentions small, large, circle, square once and red twice. A scene holding a small
    red circle and a large blue square scores 5 (red is matched once); a scene with a
    large red circle and a large red square also scores 5 (small is not matched); a
    scene with a small red circle and a large red square scores the maximum, 6. Relation
    and region words are not read, and the matching is a bag of attributes: which colour
    goes with which shape is ignored.

    Returns float32 ``[n_captions, n_images]`` holding whole numbers. Many images tie on
    the same score, and retrieval metrics count ties against the query, as they should.
    """
    mentions = caption_attribute_counts(captions)
    present = scene_attribute_counts(scenes)
    # min(a, b) = sum over m >= 1 of [a >= m][b >= m]: the score becomes one matrix
    # product.
    levels = int(
        max(
            [
                1.0,
                *(
                    float(counts.max())
                    for counts in (mentions, present)
                    if counts.numel()
                ),
            ]
        )
    )
    thresholds = torch.arange(1, levels + 1, dtype=torch.float32)
    mentions_at_least = (mentions.unsqueeze(-1) >= thresholds).flatten(1).float()
    present_at_least = (present.unsqueeze(-1) >= thresholds).flatten(1).float()
    return mentions_at_least @ present_at_least.T


# --------------------------------------------------------------------------- hand-made
# image features

_LEVELS = 3  # intensity levels per channel: 3 ** 3 = 27 colour codes
_CODES = _LEVELS**3
_GRID = 3  # regions per side, as in the captions' "top left" ... "bottom right"
# Bin edges, from the shapes' geometry (measured values on 64-pixel ShapesWorld images
# in brackets): fill ratio = area / bounding-box area: triangle, diamond, cross about
# 0.5-0.56 [0.47-0.64], circle pi/4 [0.69-0.84], square 1; height of the centre of mass
# in the box: 0.5 for the symmetric shapes [0.47-0.53], 2/3 for the upward triangle
# [0.63-0.67]; area as a fraction of the image: small objects 0.013-0.020, large ones
# 0.039-0.062, above that two same-coloured objects merged into one blob.
_FILL_BINS = (0.66, 0.9)
_CENTROID_BINS = (0.58,)
_AREA_BINS = (0.03, 0.08)
_ORIENTATIONS = 8
_CHUNK = 256


def _colour_codes(images: torch.Tensor) -> torch.Tensor:
    """Quantise every pixel to one of ``_LEVELS ** 3`` colours: LongTensor [B, H, W]."""
    levels = (images.clamp(0.0, 1.0) * _LEVELS).floor_().clamp_(max=_LEVELS - 1)
    place_values = torch.tensor(
        [_LEVELS**2, _LEVELS, 1], dtype=levels.dtype, device=levels.device
    )
    return (levels * place_values.view(1, 3, 1, 1)).sum(dim=1).long()


def _region_colour_histograms(codes: torch.Tensor) -> torch.Tensor:
    """Fraction of each region's pixels in each colour code: [B, GRID * GRID *
    CODES]."""
    batch, height, width = codes.shape
    rows = torch.arange(height, device=codes.device) * _GRID // height
    cols = torch.arange(width, device=codes.device) * _GRID // width
    region = (rows[:, None] * _GRID + cols[None, :]).flatten()
    index = region * _CODES + codes.flatten(1)
    counts = torch.zeros(batch, _GRID * _GRID * _CODES, device=codes.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=counts.dtype))
    pixels_per_region = torch.bincount(region, minlength=_GRID * _GRID).float()
    return (
        counts.view(batch, _GRID * _GRID, _CODES) / pixels_per_region[:, None]
    ).flatten(1)


def _one_hot_bins(values: torch.Tensor, edges: tuple[float, ...]) -> torch.Tensor:
    """One-hot bin membership of each value: [..., len(edges) + 1]."""
    index = torch.bucketize(
        values, torch.tensor(edges, dtype=values.dtype, device=values.device)
    )
    return F.one_hot(index, len(edges) + 1).to(values.dtype)


def _blob_shape_histograms(codes: torch.Tensor) -> torch.Tensor:
    """Shape and size statistics of each colour blob, summed over the blobs of each
    image.

    A blob is all pixels of one colour code other than the image's most common one (the
    background). For each blob: its fill ratio (area over bounding-box area), the height
    of its centre of mass within the box (a triangle pointing up is bottom-heavy) and
    its area. Binning these and summing over blobs gives counts such as "two blobs as
    full as a square", which relate linearly to word counts such as "square". Returns
    [B, 6 + 3]: 3 fill x 2 centre-of-mass bins, then 3 area bins.

    The price of simplicity: crosses and diamonds share a bin (they fill their boxes
    equally), and two objects of one colour merge into one blob that is described
    poorly.
    """
    batch, height, width = codes.shape
    flat = codes.flatten(1)
    device = codes.device
    ys = torch.arange(height, device=device).repeat_interleave(width).expand(batch, -1)
    xs = torch.arange(width, device=device).repeat(height).expand(batch, -1)

    def reduce(values: torch.Tensor, how: str, start: float) -> torch.Tensor:
        out = torch.full((batch, _CODES), start, device=device)
        return out.scatter_reduce_(
            1, flat, values.float(), reduce=how, include_self=how != "sum"
        )

    area = reduce(torch.ones_like(ys), "sum", 0.0)
    top, bottom = reduce(ys, "amin", float(height)), reduce(ys, "amax", -1.0)
    left, right = reduce(xs, "amin", float(width)), reduce(xs, "amax", -1.0)
    row_sum = reduce(ys, "sum", 0.0)
    background = area.argmax(dim=1, keepdim=True)
    is_blob = (area > 0) & (torch.arange(_CODES, device=device) != background)
    box_height = (bottom - top + 1).clamp_min(1.0)
    fill = area / (box_height * (right - left + 1).clamp_min(1.0))
    centroid = (row_sum / area.clamp_min(1.0) - top + 0.5) / box_height
    fill_bins, centroid_bins = (
        _one_hot_bins(fill, _FILL_BINS),
        _one_hot_bins(centroid, _CENTROID_BINS),
    )
    shape_bins = (fill_bins.unsqueeze(-1) * centroid_bins.unsqueeze(-2)).flatten(2)
    size_bins = _one_hot_bins(area / (height * width), _AREA_BINS)
    per_blob = torch.cat([shape_bins, size_bins], dim=2) * is_blob.unsqueeze(-1)
    return per_blob.sum(dim=1)


def _edge_orientation_histogram(images: torch.Tensor) -> torch.Tensor:
    """Distribution of edge directions, magnitude-weighted: [B, ORIENTATIONS].

    Sobel gradients of the grey image (interior pixels); a direction and its opposite
    are one orientation, and the bins are centred on multiples of 180 / ORIENTATIONS
    degrees, so horizontal and vertical edges fall in the middle of a bin, not on a
    border.
    """
    grey = images.mean(dim=1)
    across_columns = grey[:, :, 2:] - grey[:, :, :-2]
    gradient_x = (
        across_columns[:, :-2] + 2 * across_columns[:, 1:-1] + across_columns[:, 2:]
    )
    across_rows = grey[:, 2:] - grey[:, :-2]
    gradient_y = (
        across_rows[..., :-2] + 2 * across_rows[..., 1:-1] + across_rows[..., 2:]
    )
    magnitude = torch.hypot(gradient_x, gradient_y).flatten(1)
    angle = torch.atan2(gradient_y, gradient_x).flatten(1)
    bins = (
        torch.round(angle * (_ORIENTATIONS / math.pi)).long().remainder_(_ORIENTATIONS)
    )
    histogram = torch.zeros(
        images.shape[0], _ORIENTATIONS, device=images.device, dtype=magnitude.dtype
    )
    histogram.scatter_add_(1, bins, magnitude)
    return histogram / magnitude.sum(dim=1, keepdim=True).clamp_min(1e-12)


def _check_images(images: torch.Tensor) -> None:
    """Raise unless ``images`` is a non-empty float [B, 3, H, W] batch at least
    ``_GRID`` pixels on a side."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(
            "images must be a non-empty [B, 3, H, W] RGB batch, got shape "
            f"{tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must hold floats in [0, 1], got dtype {images.dtype}")
    if min(images.shape[2:]) < _GRID:
        raise ValueError(
            f"images must be at least {_GRID} pixels on a side, got "
            f"{tuple(images.shape[2:])}"
        )


def handcrafted_image_features(images: torch.Tensor) -> torch.Tensor:
    """Describe images with hand-made features, no learning: float32 [B, F] on the
    images' device.

    Three blocks, concatenated (F = 243 + 9 + 8 = 260):

    * colour layout: each pixel quantised to 27 colours (3 levels per channel); the
      fraction of each of the 3 x 3 regions' pixels in each colour (243 numbers,
      region-major: column ``27 * region + colour``, regions row by row from the top
      left, colour ``9 * red_level + 3 * green_level + blue_level``);
    * blob shapes: for every colour blob but the background, its fill ratio, vertical
      centre of mass and area, binned and summed over blobs (6 shape bins, 3 size bins);
    * edge directions: the magnitude-weighted histogram of Sobel gradient directions
      over 8 orientations (axis-aligned edges for squares and crosses, diagonal ones for
      diamonds).

    ``images`` is a float tensor [B, 3, H, W] with values in [0, 1] (as ShapesWorld
    gives); values outside are clipped. Computed ``_CHUNK`` images at a time to bound
    memory.
    """
    _check_images(images)
    blocks = []
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        codes = _colour_codes(chunk)
        blocks.append(
            torch.cat(
                [
                    _region_colour_histograms(codes),
                    _blob_shape_histograms(codes),
                    _edge_orientation_histogram(chunk),
                ],
                dim=1,
            )
        )
    return torch.cat(blocks)


def _checked_vocabulary(vocabulary: Sequence[str]) -> dict[str, int]:
    """Map each word of ``vocabulary`` to its column, refusing empty, non-string or
    repeated entries."""
    if isinstance(vocabulary, str) or len(vocabulary) == 0:
        raise ValueError(
            "vocabulary must be a non-empty list of words, e.g. "
            "crossalign.data.caption_words()"
        )
    for index, word in enumerate(vocabulary):
        if not isinstance(word, str):
            raise TypeError(
                f"vocabulary[{index}] must be a str, got {type(word).__name__}"
            )
    repeated = sorted(word for word, count in Counter(vocabulary).items() if count > 1)
    if repeated:
        raise ValueError(f"vocabulary words must be unique; repeated: {repeated[:10]}")
    return {word: column for column, word in enumerate(vocabulary)}


def bag_of_words(captions: Sequence[str], vocabulary: Sequence[str]) -> torch.Tensor:
    """Count each vocabulary word in each caption: float32 [n_captions,
    len(vocabulary)].

    Captions are split with :func:`crossalign.data.simple_tokenize` (lower case,
    punctuation dropped); words outside ``vocabulary`` are ignored. Word order is lost,
    so "a circle left of a square" and "a square left of a circle" get the same vector.
    """
    _check_captions(captions)
    column_of = _checked_vocabulary(vocabulary)
    return _word_counts(captions, column_of, len(column_of))


class CorrelationMatcher:
    """Statistical matching: CCA between hand-made image features and bag-of-words
    captions.

    :meth:`fit` turns every training caption and its image into a pair (image features
    from :func:`handcrafted_image_features`, caption counts from :func:`bag_of_words`)
    and fits a :class:`crossalign.linear.CCA`. :meth:`embed_images` and
    :meth:`embed_captions` project into the shared space, scale dimension ``i`` by
    ``correlations[i] ** correlation_power`` and L2-normalise, so :meth:`scores` are
    cosine similarities in that weighted space.

    Why the weighting: on ShapesWorld about a dozen canonical pairs are strongly
    correlated (colour, shape and size words) and the rest are weak and noisy. With
    plain cosine (``correlation_power=0``) every kept dimension counts equally, so
    keeping too many drowns the strong ones; weighting by the correlations makes the
    result depend little on ``n_components``.

    Args:
        vocabulary: words of the bag of words (default: every word of the ShapesWorld
            grammar, :func:`crossalign.data.caption_words`).
        n_components: dimensions of the shared space (canonical pairs kept).
        reg: CCA regularisation relative to each side's mean variance; the features are
            sparse and partly collinear, so a value well above zero generalises better.
        correlation_power: exponent of the canonical correlations that weight the shared
            dimensions before the cosine (0 for plain cosine).
    """

    def __init__(
        self,
        vocabulary: Sequence[str] | None = None,
        n_components: int = 16,
        reg: float = 0.1,
        correlation_power: float = 1.0,
    ) -> None:
        self.vocabulary = list(caption_words() if vocabulary is None else vocabulary)
        _checked_vocabulary(self.vocabulary)
        if (
            isinstance(correlation_power, bool)
            or not is_real(correlation_power)
            or not math.isfinite(correlation_power)
            or correlation_power < 0
        ):
            raise ValueError(
                "correlation_power must be a finite number >= 0, got "
                f"{correlation_power!r}"
            )
        self.correlation_power = float(correlation_power)
        self.cca = CCA(n_components=n_components, reg=reg)

    def __repr__(self) -> str:
        return (
            f"CorrelationMatcher(vocabulary={len(self.vocabulary)} words, "
            f"n_components={self.cca.n_components}, "
            f"reg={self.cca.reg}, correlation_power={self.correlation_power})"
        )

    def fit(
        self,
        images: torch.Tensor,
        captions: Sequence[str],
        caption_to_image: torch.Tensor | Sequence[int],
    ) -> CorrelationMatcher:
        """Fit the CCA on training pairs: caption ``j`` describes
        ``images[caption_to_image[j]]``."""
        _check_images(images)
        words = bag_of_words(captions, self.vocabulary)
        owner = torch.as_tensor(caption_to_image)
        if (
            owner.is_floating_point()
            or owner.dtype == torch.bool
            or owner.dim() != 1
            or owner.numel() != len(captions)
        ):
            raise ValueError(
                "caption_to_image must hold one integer image index per caption "
                f"({len(captions)}), "
                f"got dtype {owner.dtype} and shape {tuple(owner.shape)}"
            )
        if owner.numel() and (
            int(owner.min()) < 0 or int(owner.max()) >= images.shape[0]
        ):
            raise ValueError(
                f"caption_to_image holds indices outside 0..{images.shape[0] - 1} (the "
                "images given)"
            )
        features = handcrafted_image_features(images)
        owner = owner.to(device=features.device, dtype=torch.long)
        self.cca.fit(features[owner], words.to(features.device))
        return self

    def _fitted_correlations(self) -> torch.Tensor:
        """The canonical correlations, or a RuntimeError naming the fix before fit."""
        if self.cca.correlations is None:
            raise RuntimeError(
                "this CorrelationMatcher is not fitted yet; call fit(images, captions, "
                "caption_to_image) first"
            )
        return self.cca.correlations

    def _weighted(self, projections: torch.Tensor) -> torch.Tensor:
        """Scale the shared dimensions by ``correlations ** correlation_power`` and
        L2-normalise rows."""
        weights = (
            self._fitted_correlations().to(projections.device).clamp_min(0.0)
            ** self.correlation_power
        )
        return F.normalize(projections * weights.to(projections.dtype), dim=1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in the shared space, unit rows: float32 [B, n_components]
        on their device."""
        self._fitted_correlations()  # this error, not the CCA's, when not fitted
        return self._weighted(self.cca.transform_x(handcrafted_image_features(images)))

    def embed_captions(self, captions: Sequence[str]) -> torch.Tensor:
        """Captions in the shared space, unit rows: float32 [n_captions, n_components].

        The result lies on the device the matcher was fitted on (captions have none of
        their own).
        """
        fitted_on = self._fitted_correlations().device
        words = bag_of_words(captions, self.vocabulary)
        return self._weighted(self.cca.transform_y(words.to(fitted_on)))

    def scores(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """Cosine similarity of every caption with every image: float32 [n_captions,
        n_images], images' device."""
        image_emb = self.embed_images(images)
        return self.embed_captions(captions).to(image_emb.device) @ image_emb.T


def correlation_match(
    train_images: torch.Tensor,
    train_captions: Sequence[str],
    train_caption_to_image: torch.Tensor | Sequence[int],
    test_images: torch.Tensor,
    test_captions: Sequence[str],
    vocabulary: Sequence[str] | None = None,
    n_components: int = 16,
    reg: float = 0.1,
    correlation_power: float = 1.0,
) -> torch.Tensor:
    """Statistical matching in one call: fit a :class:`CorrelationMatcher` on training
    pairs, score test pairs.

    Returns the cosine similarities float32 ``[len(test_captions), len(test_images)]``
    in the (correlation-weighted) shared CCA space, on the test images' device. See
    :class:`CorrelationMatcher` for the arguments.
    """
    matcher = CorrelationMatcher(
        vocabulary,
        n_components=n_components,
        reg=reg,
        correlation_power=correlation_power,
    )
    return matcher.fit(train_images, train_captions, train_caption_to_image).scores(
        test_images, test_captions
    )

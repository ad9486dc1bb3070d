"""ShapesWorld: a procedural image-caption world for teaching alignment offline.

Every image holds one to three coloured shapes on a plain (optionally noisy) background
and keeps its *scene graph* (objects, attributes, positions, relations) as ground truth.
Five captions per image come from a small grammar with synonyms and several templates,
so multi-reference metrics and many-to-many retrieval behave as on Flickr8k.

Three properties make it useful in a book:

* **Index-addressable and reproducible.** Sample ``i`` of split ``s`` with seed ``k`` is
  always the same, whatever batch it is drawn in: every random number is a hash of
  ``(seed, split, index, stream)`` (a counter-based generator), not a draw from a shared
  state. A train split can therefore be as large as you like at no memory cost.
* **Fast.** :meth:`ShapesWorld.render` draws a whole batch at once: every object is
  drawn on a small patch around it, and all patches are scattered into the canvases in
  one indexed write. :meth:`ShapesWorld.render_one` is the plain per-sample path, kept
  as the reference the vectorised one is tested against (and benchmarked against).
* **Diagnostic.** The ``compositional`` split contains colour-shape pairs that never
  occur in train/val/test (for example no red triangle is ever seen in training), and
  :meth:`ShapesWorld.relation_swap` / :meth:`ShapesWorld.attribute_swap` give hard
  negative captions ("left of" <-> "right of"; colours exchanged between two objects).

Grammar of a caption (regular, so captions can be parsed back)::

    object   := article size colour shape           e.g. "a small red circle" 1 object
    := object region | "there is" object region | ...   ("at the top left") 2 objects:=
    object ["is"] relation object | object2 "is" inverse-relation object1 | ... 3
    objects:= 2-object clause ", and" object "is" relation "the" size colour shape
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
import torch
from torch.utils.data import Dataset

from crossalign.utils import is_integral

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
COLOURS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "white",
)
SIZES: tuple[str, ...] = ("small", "large")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
SPLITS: tuple[str, ...] = ("train", "val", "test", "compositional")

COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "orange": (1.00, 0.55, 0.05),
    "white": (0.95, 0.95, 0.95),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.18, 0.35, 0.95),
    "yellow": (0.95, 0.88, 0.15),
    "purple": (0.62, 0.22, 0.85),
    "cyan": (0.10, 0.85, 0.90),
}
#: Object radius as a fraction of the image side, per size.
SIZE_RADIUS: dict[str, float] = {"small": 0.08, "large": 0.14}
#: Colour-shape pairs never seen in train/val/test; the compositional split is built
# from them.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "circle"),
    ("blue", "square"),
    ("yellow", "cross"),
    ("purple", "diamond"),
)

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "orange": ("orange",),
    "white": ("white",),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow",),
    "purple": ("purple", "violet"),
    "cyan": ("cyan", "turquoise"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
OPPOSITE_RELATION: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
#: (vertical, horizontal) region of a lone object -> the phrases that name it.
REGION_WORDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("top", "left"): ("at the top left", "in the top left corner"),
    ("top", "centre"): ("at the top", "near the top"),
    ("top", "right"): ("at the top right", "in the top right corner"),
    ("middle", "left"): ("on the left", "at the left side"),
    ("middle", "centre"): ("in the middle", "in the centre"),
    ("middle", "right"): ("on the right", "at the right side"),
    ("bottom", "left"): ("at the bottom left", "in the bottom left corner"),
    ("bottom", "centre"): ("at the bottom", "near the bottom"),
    ("bottom", "right"): ("at the bottom right", "in the bottom right corner"),
}

#: Centres must differ by more than this (fraction of the side) along an axis for a
# relation.
RELATION_MARGIN = 0.06
#: Distance from the centre to the farthest point of each shape, in radii (triangle base
#: corners: sqrt 2; square corners: 0.85 * sqrt 2; cross arm corners: sqrt(1 + 1/9)).
_BOUNDING_RADIUS: dict[str, float] = {
    "circle": 1.0,
    "square": 1.21,
    "triangle": 1.42,
    "diamond": 1.0,
    "cross": 1.06,
}
_GAP = 0.03
_REGION_MARGIN = 0.04
_POSITION_TRIES = 96
_MAX_OBJECTS = 3
_SQUARE_HALF_SIDE = 0.85
_CROSS_HALF_WIDTH = 1.0 / 3.0
_BACKGROUND = 0.12
DEFAULT_SPLIT_SIZES: dict[str, int] = {
    "train": 20000,
    "val": 1000,
    "test": 1000,
    "compositional": 1000,
}
_NUM_CAPTION_STREAM_BASE = 100
_PLAN_RANDOMS = 20

_U64 = np.uint64
_MASK53 = float(2**-53)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective scrambling of 64-bit integers (wrap-around
    arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def hash_uniform(
    seed: int, split: int, indices: np.ndarray, stream: int, n: int
) -> np.ndarray:
    """Uniform numbers in [0, 1) that depend only on (seed, split, index, stream,
    position).

    Returns an array of shape ``[len(indices), n]``. This counter-based generator is
    what makes every sample index-addressable: no draw depends on what was drawn before.
    """
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        key = _mix64(
            np.array([(seed * 0x9E3779B97F4A7C15 + split + 1) % 2**64], dtype=np.uint64)
        )
        h = _mix64(key ^ _mix64(idx + _U64(0x632BE59BD9B4E019)))
        counters = np.arange(n, dtype=np.uint64).reshape(1, -1) + _U64(stream) * _U64(
            1 << 20
        )
        h = _mix64(h ^ _mix64(counters + _U64(0xD1B54A32D192ED03)))
    return (h >> _U64(11)).astype(np.float64) * _MASK53


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: attributes plus centre (x right, y down, fractions of the
    side)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float

    def phrase(self) -> str:
        """The canonical noun phrase without article, e.g. ``"small red circle"``."""
        return f"{self.size} {self.colour} {self.shape}"

    def region(self) -> tuple[str, str]:
        """Which third of the image the centre lies in: (top|middle|bottom,
        left|centre|right)."""
        vertical = (
            "top" if self.y < 1 / 3 else ("bottom" if self.y > 2 / 3 else "middle")
        )
        horizontal = (
            "left" if self.x < 1 / 3 else ("right" if self.x > 2 / 3 else "centre")
        )
        return vertical, horizontal


@dataclass(frozen=True)
class Relation:
    """A true spatial fact ``objects[subject] <relation> objects[object]``."""

    subject: int
    relation: str
    object: int


@dataclass(frozen=True)
class SceneGraph:
    """Ground truth of one image: its objects and every spatial relation that holds."""

    objects: tuple[ShapeObject, ...]
    relations: tuple[Relation, ...]

    def to_dict(self) -> dict:
        """A JSON-serialisable form (for saving scene graphs beside images)."""
        return {
            "objects": [asdict(o) for o in self.objects],
            "relations": [asdict(r) for r in self.relations],
        }

    def holds(self, subject: int, relation: str, obj: int) -> bool:
        """Whether ``objects[subject] relation objects[obj]`` is true in this scene."""
        return Relation(subject, relation, obj) in self.relations


def spatial_relations(
    objects: Sequence[ShapeObject], margin: float = RELATION_MARGIN
) -> tuple[Relation, ...]:
    """Every directed relation that holds between distinct objects (an axis needs
    ``margin``)."""
    found = []
    for i, a in enumerate(objects):
        for j, b in enumerate(objects):
            if i == j:
                continue
            if a.x < b.x - margin:
                found.append(Relation(i, "left of", j))
            if a.x > b.x + margin:
                found.append(Relation(i, "right of", j))
            if a.y < b.y - margin:
                found.append(Relation(i, "above", j))
            if a.y > b.y + margin:
                found.append(Relation(i, "below", j))
    return tuple(found)


@dataclass(frozen=True)
class _Layout:
    """Scene parameters of a batch as arrays ([B, 3] each; ``valid`` marks real
    objects)."""

    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray


def _allowed_colours() -> np.ndarray:
    """For each shape, the colour ids allowed outside the compositional split ([shapes,
    colours - 1])."""
    table = []
    for shape in SHAPES:
        banned = {COLOURS.index(c) for c, s in HELD_OUT_PAIRS if s == shape}
        table.append([c for c in range(len(COLOURS)) if c not in banned])
    return np.array(table, dtype=np.int64)


_ALLOWED_COLOURS = _allowed_colours()
_HELD_OUT_IDS = np.array(
    [(COLOURS.index(c), SHAPES.index(s)) for c, s in HELD_OUT_PAIRS], dtype=np.int64
)


def _scene_graphs(lay: _Layout) -> list[SceneGraph]:
    """Turn a batch layout into one :class:`SceneGraph` per image."""
    graphs = []
    for row in range(lay.valid.shape[0]):
        objects = tuple(
            ShapeObject(
                shape=SHAPES[lay.shape[row, k]],
                colour=COLOURS[lay.colour[row, k]],
                size=SIZES[lay.size[row, k]],
                x=float(lay.x[row, k]),
                y=float(lay.y[row, k]),
            )
            for k in range(_MAX_OBJECTS)
            if lay.valid[row, k]
        )
        graphs.append(SceneGraph(objects=objects, relations=spatial_relations(objects)))
    return graphs


def _shape_mask(
    shape: str, dx: torch.Tensor, dy: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """Which pixels with offsets (dx, dy) from the centre lie inside the shape (y points
    down)."""
    adx, ady = dx.abs(), dy.abs()
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        half = radius * _SQUARE_HALF_SIDE
        return (adx <= half) & (ady <= half)
    if shape == "triangle":
        return (dy >= -radius) & (dy <= radius) & (adx <= (dy + radius) * 0.5)
    if shape == "diamond":
        return adx + ady <= radius
    if shape == "cross":
        arm = radius * _CROSS_HALF_WIDTH
        return ((adx <= arm) & (ady <= radius)) | ((ady <= arm) & (adx <= radius))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


class ShapesWorld(Dataset):
    """A split of ShapesWorld: index-addressable images, scene graphs and five captions
    each.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"compositional"``. size: number
        of images (default 20,000 for train, 1,000 otherwise). Any size works:
            images are generated on demand, nothing is stored.
        image_size: side of the square RGB images in pixels (32 to 224). seed: world
        seed; the same (seed, split, index) always gives the same sample. min_objects,
        max_objects: range of objects per image (1 to 3). object_weights: relative
        frequency of 1, 2 and 3 objects (default 0.1, 0.45, 0.45:
            lone objects are described only by their region, so they are kept rarer to
            keep captions specific enough for retrieval).
        noise: standard deviation of Gaussian pixel noise added to the background and
        shapes. captions_per_image: how many captions each image gets (default 5).

    ``dataset[i]`` is a dict
    ``{"image": FloatTensor[3, H, W] in [0, 1], "captions": list[str], "index": i}``;
    the scene graph is ``dataset.scene(i)``. A ``DataLoader`` over this data set fetches
    whole batches through :meth:`__getitems__`, so rendering stays vectorised.
    """

    def __init__(
        self,
        split: str = "train",
        size: int | None = None,
        image_size: int = 64,
        seed: int = 0,
        min_objects: int = 1,
        max_objects: int = 3,
        object_weights: Sequence[float] | None = (0.1, 0.45, 0.45),
        noise: float = 0.0,
        captions_per_image: int = 5,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(
                f"split={split!r} is not a ShapesWorld split; expected one of {SPLITS}"
            )
        size = DEFAULT_SPLIT_SIZES[split] if size is None else size
        if not is_integral(size) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size={size!r} must be a positive integer")
        if not is_integral(image_size) or not 32 <= image_size <= 224:
            raise ValueError(
                f"image_size={image_size!r} must be a whole number of pixels between "
                "32 and 224"
            )
        if not is_integral(seed):
            raise ValueError(f"seed={seed!r} must be an integer")
        if not 1 <= min_objects <= max_objects <= _MAX_OBJECTS:
            raise ValueError(
                f"min_objects={min_objects}, max_objects={max_objects}: need 1 <= min "
                f"<= max <= {_MAX_OBJECTS}"
            )
        if not math.isfinite(noise) or noise < 0:
            raise ValueError(f"noise={noise} must be a finite number >= 0")
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image={captions_per_image} must be >= 1")
        weights = (
            np.ones(_MAX_OBJECTS)
            if object_weights is None
            else np.asarray(object_weights, dtype=np.float64)
        )
        if (
            weights.shape != (_MAX_OBJECTS,)
            or not np.isfinite(weights).all()
            or (weights < 0).any()
        ):
            raise ValueError(
                f"object_weights={object_weights!r} must be {_MAX_OBJECTS} "
                "non-negative numbers"
            )
        weights = weights.copy()
        weights[: min_objects - 1] = 0.0
        weights[max_objects:] = 0.0
        if weights.sum() <= 0:
            raise ValueError(
                f"object_weights={object_weights!r} give zero weight to every count in "
                f"[{min_objects}, {max_objects}]"
            )
        self.split = split
        self.size = int(size)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.object_cdf = np.cumsum(weights / weights.sum())
        self.noise = float(noise)
        self.captions_per_image = captions_per_image
        self._split_code = SPLITS.index(split)
        self._caption_cache: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"ShapesWorld(split={self.split!r}, size={self.size}, "
            f"image_size={self.image_size}, "
            f"seed={self.seed}, objects={self.min_objects}-{self.max_objects}, "
            f"noise={self.noise})"
        )

    def _check_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            bad = idx[(idx < 0) | (idx >= self.size)][0]
            raise IndexError(
                f"index {bad} is out of range for {self!r} (valid: 0..{self.size - 1})"
            )
        return idx

    def _uniform(self, idx: np.ndarray, stream: int, n: int) -> np.ndarray:
        return hash_uniform(self.seed, self._split_code, idx, stream, n)

    def layout(self, indices: Sequence[int] | np.ndarray) -> _Layout:
        """Sample the scene parameters of many images at once (vectorised,
        index-addressable)."""
        idx = self._check_indices(indices)
        b = idx.size
        count = 1 + np.searchsorted(
            self.object_cdf, self._uniform(idx, 0, 1)[:, 0], side="right"
        )
        count = np.minimum(count, self.max_objects)
        shape = np.minimum(
            (self._uniform(idx, 1, _MAX_OBJECTS) * len(SHAPES)).astype(np.int64),
            len(SHAPES) - 1,
        )
        size = np.minimum(
            (self._uniform(idx, 2, _MAX_OBJECTS) * len(SIZES)).astype(np.int64),
            len(SIZES) - 1,
        )
        u_colour = self._uniform(idx, 3, _MAX_OBJECTS)
        if self.split == "compositional":
            colour = np.minimum(
                (u_colour * len(COLOURS)).astype(np.int64), len(COLOURS) - 1
            )
            pair = np.minimum(
                (self._uniform(idx, 4, 1)[:, 0] * len(HELD_OUT_PAIRS)).astype(np.int64),
                len(HELD_OUT_PAIRS) - 1,
            )
            colour[:, 0] = _HELD_OUT_IDS[pair, 0]
            shape[:, 0] = _HELD_OUT_IDS[pair, 1]
        else:
            n_allowed = _ALLOWED_COLOURS.shape[1]
            choice = np.minimum((u_colour * n_allowed).astype(np.int64), n_allowed - 1)
            colour = _ALLOWED_COLOURS[shape, choice]
        radius = np.array([SIZE_RADIUS[s] for s in SIZES])[size]
        extent = radius * np.array([_BOUNDING_RADIUS[s] for s in SHAPES])[shape]
        x = np.zeros((b, _MAX_OBJECTS))
        y = np.zeros((b, _MAX_OBJECTS))
        valid = np.zeros((b, _MAX_OBJECTS), dtype=bool)
        for k in range(_MAX_OBJECTS):
            wanted = count > k
            r = radius[:, k : k + 1]
            cx = r + self._uniform(idx, 10 + 2 * k, _POSITION_TRIES) * (1 - 2 * r)
            cy = r + self._uniform(idx, 11 + 2 * k, _POSITION_TRIES) * (1 - 2 * r)
            ok = np.ones_like(cx, dtype=bool)
            for j in range(k):
                need = extent[:, k : k + 1] + extent[:, j : j + 1] + _GAP
                far = (cx - x[:, j : j + 1]) ** 2 + (
                    cy - y[:, j : j + 1]
                ) ** 2 > need**2
                ok &= far | ~valid[:, j : j + 1]
            first = ok.argmax(axis=1)
            placed = wanted & ok[np.arange(b), first]
            x[:, k] = np.where(placed, cx[np.arange(b), first], 0.0)
            y[:, k] = np.where(placed, cy[np.arange(b), first], 0.0)
            valid[:, k] = placed
        self._place_lone_objects(idx, count, radius[:, 0], x, y)
        return _Layout(shape=shape, colour=colour, size=size, x=x, y=y, valid=valid)

    def _place_lone_objects(
        self,
        idx: np.ndarray,
        count: np.ndarray,
        radius: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
    ) -> None:
        """Move each lone object well inside one of the nine regions its caption names.

        A lone object is described only by its region ("at the top left"), so its centre
        is kept ``_REGION_MARGIN`` away from the region borders at 1/3 and 2/3: the
        region phrase is then unambiguous, as a caption should be.
        """
        lone = count == 1
        if not lone.any():
            return
        u = self._uniform(idx[lone], 6, 4)
        cell = np.minimum((u[:, :2] * 3).astype(np.int64), 2)
        low = np.maximum(cell / 3 + _REGION_MARGIN, radius[lone, None])
        high = np.minimum((cell + 1) / 3 - _REGION_MARGIN, 1 - radius[lone, None])
        centre = low + u[:, 2:] * (high - low)
        x[lone, 0], y[lone, 0] = centre[:, 0], centre[:, 1]

    def scene(self, index: int) -> SceneGraph:
        """The scene graph of image ``index``: its objects and all true relations."""
        return self.scenes([index])[0]

    def scenes(self, indices: Sequence[int] | np.ndarray) -> list[SceneGraph]:
        """The scene graphs of many images, from one vectorised :meth:`layout` call."""
        return _scene_graphs(self.layout(indices))

    # ------------------------------------------------------------------ rendering
    def _canvas(self, idx: np.ndarray) -> torch.Tensor:
        s = self.image_size
        return torch.full((idx.size, 3, s, s), _BACKGROUND, dtype=torch.float32)

    def _add_noise(self, images: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        if self.noise == 0:
            return images
        for row, i in enumerate(idx):
            gen = torch.Generator().manual_seed(
                int(self._uniform(np.array([i]), 5, 1)[0, 0] * 2**62)
            )
            images[row] += self.noise * torch.randn(images.shape[1:], generator=gen)
        return images.clamp_(0.0, 1.0)

    def render(
        self, indices: Sequence[int] | np.ndarray, layout: _Layout | None = None
    ) -> torch.Tensor:
        """Draw many images at once: FloatTensor[B, 3, H, W] in [0, 1] (vectorised
        path).

        Each object is evaluated on a small square patch around its centre (not the
        whole canvas), then every inside pixel of every patch is written with one
        indexed store. ``layout`` may pass the already sampled :meth:`layout` of
        ``indices``.
        """
        idx = self._check_indices(indices)
        s = self.image_size
        images = self._canvas(idx)
        lay = self.layout(idx) if layout is None else layout
        b_idx, k_idx = np.nonzero(lay.valid)
        if b_idx.size:
            radius_px = max(SIZE_RADIUS.values()) * max(_BOUNDING_RADIUS.values()) * s
            patch = int(np.ceil(2 * radius_px)) + 3
            cx = torch.from_numpy(lay.x[b_idx, k_idx]).float()
            cy = torch.from_numpy(lay.y[b_idx, k_idx]).float()
            radius = torch.tensor([SIZE_RADIUS[n] for n in SIZES], dtype=torch.float32)[
                torch.from_numpy(lay.size[b_idx, k_idx])
            ]
            x0 = torch.floor(cx * s).long() - patch // 2
            y0 = torch.floor(cy * s).long() - patch // 2
            offsets = torch.arange(patch)
            px = x0[:, None, None] + offsets[None, None, :]  # [N, 1, P]
            py = y0[:, None, None] + offsets[None, :, None]  # [N, P, 1]
            dx = (px.float() + 0.5) / s - cx[:, None, None]
            dy = (py.float() + 0.5) / s - cy[:, None, None]
            r = radius[:, None, None]
            shapes = torch.from_numpy(lay.shape[b_idx, k_idx])
            inside = torch.zeros((b_idx.size, patch, patch), dtype=torch.bool)
            for shape_id, shape in enumerate(SHAPES):
                rows = (shapes == shape_id).nonzero().flatten()
                if rows.numel():
                    inside[rows] = _shape_mask(shape, dx[rows], dy[rows], r[rows])
            inside &= (px >= 0) & (px < s) & (py >= 0) & (py < s)
            n, yy, xx = inside.nonzero(as_tuple=True)
            img = torch.from_numpy(b_idx)[n]
            pixel_y = py[n, yy, 0]
            pixel_x = px[n, 0, xx]
            rgb = torch.tensor([COLOUR_RGB[c] for c in COLOURS], dtype=torch.float32)
            colours = rgb[torch.from_numpy(lay.colour[b_idx, k_idx])][n]  # [M, 3]
            flat = images.permute(0, 2, 3, 1)  # [B, H, W, 3] view
            flat[img, pixel_y, pixel_x] = colours
        return self._add_noise(images, idx)

    def render_one(self, index: int) -> torch.Tensor:
        """Draw one image the plain way: every object evaluated on the whole canvas.

        The per-sample reference for :meth:`render` (same pixels, exactly) and the
        baseline of ``benchmarks/bench_shapes.py``.
        """
        idx = self._check_indices([index])
        s = self.image_size
        image = self._canvas(idx)[0]
        coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        for obj in self.scene(index).objects:
            dx = coords[None, :] - torch.tensor(obj.x, dtype=torch.float32)
            dy = coords[:, None] - torch.tensor(obj.y, dtype=torch.float32)
            mask = _shape_mask(
                obj.shape,
                dx,
                dy,
                torch.tensor(SIZE_RADIUS[obj.size], dtype=torch.float32),
            )
            image[:, mask] = torch.tensor(COLOUR_RGB[obj.colour], dtype=torch.float32)[
                :, None
            ]
        return self._add_noise(image[None], idx)[0]

    # ------------------------------------------------------------------ captions
    def _caption_rng(self, index: int, caption: int, n: int) -> list[float]:
        return self._uniform(np.array([index]), _NUM_CAPTION_STREAM_BASE + caption, n)[
            0
        ].tolist()

    def captions(self, index: int) -> list[str]:
        """The ``captions_per_image`` captions of image ``index`` (cached after the
        first call)."""
        return self._captions_of(self._check_indices([index]))[0]

    def _captions_of(
        self, idx: np.ndarray, layout: _Layout | None = None
    ) -> list[list[str]]:
        """Captions of many images; scene graphs are built (in one batch) only for
        uncached ones."""
        missing = [
            row for row, i in enumerate(idx) if int(i) not in self._caption_cache
        ]
        if missing:
            if layout is None or len(missing) < len(idx):
                scenes = self.scenes(idx[missing])
            else:
                scenes = _scene_graphs(layout)
            for row, scene in zip(missing, scenes):
                i = int(idx[row])
                self._caption_cache[i] = [
                    _render_caption(
                        scene,
                        _caption_plan(scene, self._caption_rng(i, c, _PLAN_RANDOMS)),
                    )
                    for c in range(self.captions_per_image)
                ]
        return [list(self._caption_cache[int(i)]) for i in idx]

    def relation_swap(self, index: int, caption: int = 0) -> str | None:
        """Caption ``caption`` of image ``index`` with its main relation reversed (a
        false caption).

        Everything else (template, synonyms, objects) stays the same, so only the
        relation distinguishes it from the true caption. ``None`` for images with a
        single object, and for images with two look-alike objects (same size, colour and
        shape), where "A above A" reversed can be just as true.
        """
        scene = self.scene(index)
        plan = _caption_plan(scene, self._caption_rng(index, caption, _PLAN_RANDOMS))
        descriptions = [obj.phrase() for obj in scene.objects]
        if plan.main is None or len(set(descriptions)) < len(descriptions):
            return None
        swapped = Relation(
            plan.main.subject, OPPOSITE_RELATION[plan.main.relation], plan.main.object
        )
        return _render_caption(
            scene, _CaptionPlan(**{**plan.__dict__, "main": swapped})
        )

    def attribute_swap(self, index: int, caption: int = 0) -> str | None:
        """Caption ``caption`` of image ``index`` with the colours of its two main
        objects exchanged.

        Tests attribute binding: the words are the same, only which object has which
        colour changes. ``None`` when the scene has one object or both objects share a
        colour.
        """
        scene = self.scene(index)
        plan = _caption_plan(scene, self._caption_rng(index, caption, _PLAN_RANDOMS))
        if plan.main is None:
            return None
        a, b = plan.main.subject, plan.main.object
        if scene.objects[a].colour == scene.objects[b].colour:
            return None
        objects = list(scene.objects)
        objects[a] = ShapeObject(
            **{**asdict(objects[a]), "colour": scene.objects[b].colour}
        )
        objects[b] = ShapeObject(
            **{**asdict(objects[b]), "colour": scene.objects[a].colour}
        )
        return _render_caption(SceneGraph(tuple(objects), scene.relations), plan)

    def caption_image_index(self) -> tuple[list[str], torch.Tensor]:
        """All captions flattened, and for each the index of its image (for retrieval
        metrics)."""
        texts: list[str] = []
        owner: list[int] = []
        for i, caps in enumerate(self._captions_of(np.arange(self.size))):
            texts.extend(caps)
            owner.extend([i] * len(caps))
        return texts, torch.tensor(owner, dtype=torch.long)

    # ------------------------------------------------------------------ Dataset
    # protocol
    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Fetch a batch with one vectorised render (``DataLoader`` calls this when
        present)."""
        idx = self._check_indices(indices)
        lay = self.layout(idx)
        images = self.render(idx, layout=lay)
        captions = self._captions_of(idx, layout=lay)
        return [
            {"image": images[row], "captions": captions[row], "index": int(i)}
            for row, i in enumerate(idx)
        ]


@dataclass(frozen=True)
class _CaptionPlan:
    """The random choices behind one caption, kept apart from the words so negatives can
    reuse them."""

    template: int
    synonyms: tuple[float, ...]
    main: Relation | None
    extra: Relation | None
    inverse: bool


def _pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _caption_plan(scene: SceneGraph, u: Sequence[float]) -> _CaptionPlan:
    """Choose template, synonyms and which true relations a caption states."""
    main = extra = None
    if len(scene.objects) >= 2:
        relations = list(scene.relations)
        main = relations[min(int(u[1] * len(relations)), len(relations) - 1)]
        if len(scene.objects) == 3:
            third = ({0, 1, 2} - {main.subject, main.object}).pop()
            candidates = [
                r
                for r in relations
                if r.subject == third and r.object in (main.subject, main.object)
            ]
            extra = candidates[min(int(u[2] * len(candidates)), len(candidates) - 1)]
    return _CaptionPlan(
        template=min(int(u[0] * 5), 4),
        synonyms=tuple(u[4:]),
        main=main,
        extra=extra,
        inverse=u[3] < 0.2,
    )


def _noun(obj: ShapeObject, u: Sequence[float], article: str) -> str:
    size = _pick(SIZE_WORDS[obj.size], u[0])
    colour = _pick(COLOUR_WORDS[obj.colour], u[1])
    shape = _pick(SHAPE_WORDS[obj.shape], u[2])
    return f"{article} {size} {colour} {shape}"


def _render_caption(scene: SceneGraph, plan: _CaptionPlan) -> str:
    """Turn a caption plan into words with the grammar in the module docstring."""
    u = plan.synonyms
    objs = scene.objects
    if plan.main is None:
        where = _pick(REGION_WORDS[objs[0].region()], u[0])
        a = _noun(objs[0], u[1:4], "a")
        return (
            f"{a} {where}",
            f"there is {a} {where}",
            f"{a} is {where}",
            f"a picture of {a} {where}",
            f"{where}, there is {a}",
        )[plan.template]
    rel = plan.main
    a = _noun(objs[rel.subject], u[1:4], "a")
    b = _noun(objs[rel.object], u[4:7], "a")
    if plan.inverse:
        clause = (
            f"{b} is {_pick(RELATION_WORDS[OPPOSITE_RELATION[rel.relation]], u[7])} {a}"
        )
    else:
        words = _pick(RELATION_WORDS[rel.relation], u[7])
        clause = (
            f"{a} {words} {b}",
            f"{a} is {words} {b}",
            f"there is {a} {words} {b}",
            f"a picture of {a} {words} {b}",
            f"in this image, {a} is {words} {b}",
        )[plan.template]
    if plan.extra is None:
        return clause
    c = _noun(objs[plan.extra.subject], u[8:11], "a")
    target = _noun(objs[plan.extra.object], u[11:14], "the")
    joiner = ", and" if plan.template % 2 == 0 else " and"
    relation = _pick(RELATION_WORDS[plan.extra.relation], u[14])
    return f"{clause}{joiner} {c} is {relation} {target}"


@cache
def caption_words() -> tuple[str, ...]:
    """Every word the ShapesWorld grammar can produce (sorted), e.g. to size a
    vocabulary."""
    words = {"a", "the", "is", "there", "picture", "of", "and", "in", "this", "image"}
    for table in (SHAPE_WORDS, COLOUR_WORDS, SIZE_WORDS, RELATION_WORDS, REGION_WORDS):
        for options in table.values():
            for phrase in options:
                words.update(phrase.split())
    return tuple(sorted(words))

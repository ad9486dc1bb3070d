"""ShapesWorld tasks that need fusion: image-text matching and short visual question
answering.

Retrieval can be solved by comparing two separately computed embeddings. The two tasks
here ask for a single decision about an (image, text) *pair*, which is what fusion
modules are for:

* :class:`ShapesMatching` -- does this caption describe this image? Negatives are chosen
  to be hard: the same caption with its relation reversed ("left of" -> "right of") or
  with the colours of its two objects exchanged, so a bag of words cannot tell them from
  the truth.
* :class:`ShapesQA` -- answer a short question ("what colour is the circle?", "is the
  red square above the cross?") with one word from a fixed vocabulary :data:`ANSWERS`.

Both are index-addressable like :class:`~crossalign.data.shapes.ShapesWorld`: every
choice for item ``i`` is a hash of ``(seed, split, i, stream)`` (:func:`hash_uniform`),
with stream ids of their own, so an item never depends on which batch it is drawn in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset

from crossalign.data.shapes import (
    COLOURS,
    OPPOSITE_RELATION,
    SHAPES,
    SIZES,
    SPLITS,
    SceneGraph,
    ShapeObject,
    ShapesWorld,
    hash_uniform,
)
from crossalign.utils import is_integral, is_real

#: The kinds of negative caption :class:`ShapesMatching` can draw, in fallback order.
NEGATIVE_KINDS: tuple[str, ...] = ("relation", "attribute", "random")
#: Every answer :class:`ShapesQA` can give; ``answer_id`` indexes this tuple.
ANSWERS: tuple[str, ...] = (*COLOURS, *SHAPES, *SIZES, "1", "2", "3", "yes", "no")
#: The question types of :class:`ShapesQA`, in fallback order.
QUESTION_TYPES: tuple[str, ...] = ("colour", "shape", "count", "relation", "size")

# Stream ids for hash_uniform, far from the ones ShapesWorld uses (0-20 and 100+).
_MATCHING_STREAM = 1000
_RANDOM_PARTNER_STREAM = 1001
_QA_STREAM = 2000
_RANDOM_PARTNER_TRIES = 8
_QA_RANDOMS = 4


def _choose(u: float, n: int) -> int:
    """Map a uniform number in [0, 1) to an index in ``range(n)``."""
    return min(int(u * n), n - 1)


def _check_world(world: object) -> ShapesWorld:
    if not isinstance(world, ShapesWorld):
        raise ValueError(f"world={world!r} must be a ShapesWorld")
    return world


def _check_seed(seed: int) -> int:
    if not is_integral(seed) or isinstance(seed, bool):
        raise ValueError(f"seed={seed!r} must be an integer")
    return int(seed)


class ShapesMatching(Dataset):
    """Image-text matching on ShapesWorld: is ``caption`` a true description of
    ``image``?

    Args:
        world: the images, scene graphs and captions.
        negatives: which kinds of false caption to draw (any of :data:`NEGATIVE_KINDS`):
            ``"relation"`` (:meth:`ShapesWorld.relation_swap`), ``"attribute"``
            (:meth:`ShapesWorld.attribute_swap`) or ``"random"`` (a caption of another
            image with at least one object this image lacks, so it cannot be true here).
        positive_rate: probability that an item is a true pair.
        seed: seed of the task's own choices (the images come from ``world``'s seed).

    Each item chooses its negative kind uniformly among ``negatives``. When that kind
    does not exist for the image (one object: no relation; two objects of one colour: no
    attribute swap) the next kind in ``negatives`` is tried, cyclically, and
    ``"random"`` is the last resort. Items are dicts
    ``{"image", "caption", "label", "kind", "index"}`` with ``label`` 1 for a true
    caption and ``kind`` one of ``"positive"`` or the negative kinds.
    """

    def __init__(
        self,
        world: ShapesWorld,
        negatives: Sequence[str] = NEGATIVE_KINDS,
        positive_rate: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.world = _check_world(world)
        negatives = tuple(negatives)
        unknown = [kind for kind in negatives if kind not in NEGATIVE_KINDS]
        if not negatives or unknown or len(set(negatives)) < len(negatives):
            raise ValueError(
                f"negatives={negatives!r} must be a non-empty list of distinct kinds "
                f"from {NEGATIVE_KINDS}"
            )
        is_number = is_real(positive_rate) and not isinstance(positive_rate, bool)
        if (
            not is_number
            or not math.isfinite(positive_rate)
            or not 0 <= positive_rate <= 1
        ):
            raise ValueError(
                f"positive_rate={positive_rate!r} must be a number in [0, 1]"
            )
        if world.size < 2:
            raise ValueError(
                f"world has {world.size} image; matching needs at least 2 (for random "
                "negatives)"
            )
        self.negatives = negatives
        self.positive_rate = float(positive_rate)
        self.seed = _check_seed(seed)
        self._split_code = SPLITS.index(world.split)

    def __len__(self) -> int:
        return len(self.world)

    def __repr__(self) -> str:
        return (
            f"ShapesMatching(world={self.world!r}, negatives={self.negatives}, "
            f"positive_rate={self.positive_rate}, seed={self.seed})"
        )

    def pair(self, index: int) -> tuple[str, int, str]:
        """The (caption, label, kind) of item ``index``, without rendering its image."""
        idx = self.world._check_indices([index])
        i = int(idx[0])
        u_positive, u_caption, u_kind = hash_uniform(
            self.seed, self._split_code, idx, _MATCHING_STREAM, 3
        )[0]
        caption = _choose(u_caption, self.world.captions_per_image)
        if u_positive < self.positive_rate:
            return self.world.captions(i)[caption], 1, "positive"
        start = _choose(u_kind, len(self.negatives))
        for kind in self.negatives[start:] + self.negatives[:start]:
            text = self._negative(i, caption, kind)
            if text is not None:
                return text, 0, kind
        return self._random_negative(i, caption), 0, "random"

    def _negative(self, index: int, caption: int, kind: str) -> str | None:
        if kind == "relation":
            return self.world.relation_swap(index, caption)
        if kind == "attribute":
            return self.world.attribute_swap(index, caption)
        return self._random_negative(index, caption)

    def _random_negative(self, index: int, caption: int) -> str:
        """Caption ``caption`` of another image that has an object this image lacks.

        Every caption names all objects of its image, so such a caption is false here.
        Candidates are drawn by hash; if all of them fail, the images after ``index``
        are scanned in order.
        """
        own = {obj.phrase() for obj in self.world.scene(index).objects}
        idx = np.array([index])
        u = hash_uniform(
            self.seed,
            self._split_code,
            idx,
            _RANDOM_PARTNER_STREAM,
            _RANDOM_PARTNER_TRIES,
        )[0]
        size = self.world.size
        drawn = [(index + 1 + _choose(v, size - 1)) % size for v in u]
        scan = [(index + step) % size for step in range(1, size)]
        for partner in drawn + scan:
            if not {obj.phrase() for obj in self.world.scene(partner).objects} <= own:
                return self.world.captions(partner)[caption]
        raise ValueError(
            f"no image of {self.world!r} has an object that image {index} lacks; use a "
            "larger world"
        )

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Fetch a batch with one vectorised :meth:`ShapesWorld.render` call."""
        idx = self.world._check_indices(indices)
        images = self.world.render(idx)
        items = []
        for row, i in enumerate(idx):
            caption, label, kind = self.pair(int(i))
            items.append(
                {
                    "image": images[row],
                    "caption": caption,
                    "label": label,
                    "kind": kind,
                    "index": int(i),
                }
            )
        return items


class QuestionAnswer(NamedTuple):
    """One generated question with its answer (a member of :data:`ANSWERS`) and type."""

    question: str
    answer: str
    type: str


def _unique(objects: Sequence[ShapeObject], key) -> list[int]:
    """Indices of the objects whose ``key(obj)`` no other object shares."""
    keys = [key(obj) for obj in objects]
    return [k for k, value in enumerate(keys) if keys.count(value) == 1]


def _shortest_description(objects: Sequence[ShapeObject], k: int) -> str | None:
    """The shortest of "shape", "colour shape", "size colour shape" that names only
    object ``k``."""
    for key in (
        lambda o: (o.shape,),
        lambda o: (o.colour, o.shape),
        lambda o: (o.size, o.colour, o.shape),
    ):
        if k in _unique(objects, key):
            return " ".join(key(objects[k]))
    return None


def _ask(scene: SceneGraph, qtype: str, u: np.ndarray) -> QuestionAnswer | None:
    """A question of type ``qtype`` about ``scene``, or ``None`` if none is
    unambiguous."""
    objects = scene.objects
    if qtype == "count":
        return QuestionAnswer("how many objects are there?", str(len(objects)), qtype)
    if qtype == "colour":
        options = _unique(objects, lambda o: o.shape)
        if options:
            obj = objects[options[_choose(u[0], len(options))]]
            return QuestionAnswer(f"what colour is the {obj.shape}?", obj.colour, qtype)
        return None
    if qtype == "shape":
        options = _unique(objects, lambda o: o.colour)
        if options:
            obj = objects[options[_choose(u[0], len(options))]]
            return QuestionAnswer(
                f"what shape is the {obj.colour} object?", obj.shape, qtype
            )
        return None
    if qtype == "size":
        options = _unique(objects, lambda o: (o.colour, o.shape))
        if options:
            obj = objects[options[_choose(u[0], len(options))]]
            return QuestionAnswer(
                f"what size is the {obj.colour} {obj.shape}?", obj.size, qtype
            )
        return None
    names = [_shortest_description(objects, k) for k in range(len(objects))]
    facts = [
        r
        for r in scene.relations
        if names[r.subject] is not None and names[r.object] is not None
    ]
    if not facts:
        return None
    fact = facts[_choose(u[0], len(facts))]
    truthful = u[1] < 0.5
    relation = fact.relation if truthful else OPPOSITE_RELATION[fact.relation]
    question = f"is the {names[fact.subject]} {relation} the {names[fact.object]}?"
    return QuestionAnswer(question, "yes" if truthful else "no", qtype)


class ShapesQA(Dataset):
    """Short visual question answering on ShapesWorld, answered from the scene graph.

    Args:
        world: the images and scene graphs.
        seed: seed of the question choices (the images come from ``world``'s seed).

    Question types (:data:`QUESTION_TYPES`): ``"colour"`` ("what colour is the circle?",
    asked only of a shape that occurs once), ``"shape"`` ("what shape is the red
    object?", unique colour), ``"count"`` ("how many objects are there?"),
    ``"relation"`` ("is the red circle left of the square?", each object named by its
    shortest unique description; the answer is "yes" or "no" with equal probability, a
    "no" being the reverse of a true relation) and ``"size"`` ("what size is the red
    circle?", unique colour and shape). Each item draws a type uniformly and falls back
    to the next type in order when the scene has no unambiguous question of that type
    ("count" always has one).

    Items are dicts ``{"image", "question", "answer", "answer_id", "type", "index"}``
    with ``answer_id`` the position of ``answer`` in :data:`ANSWERS`.
    """

    def __init__(self, world: ShapesWorld, seed: int = 0) -> None:
        self.world = _check_world(world)
        self.seed = _check_seed(seed)
        self._split_code = SPLITS.index(world.split)

    def __len__(self) -> int:
        return len(self.world)

    def __repr__(self) -> str:
        return f"ShapesQA(world={self.world!r}, seed={self.seed})"

    def question(self, index: int) -> QuestionAnswer:
        """The question, answer and type of item ``index``, without rendering its
        image."""
        return self._questions(self.world._check_indices([index]))[0]

    def _questions(self, idx: np.ndarray) -> list[QuestionAnswer]:
        u = hash_uniform(self.seed, self._split_code, idx, _QA_STREAM, _QA_RANDOMS)
        out = []
        for row, scene in enumerate(self.world.scenes(idx)):
            start = _choose(u[row, 0], len(QUESTION_TYPES))
            for qtype in QUESTION_TYPES[start:] + QUESTION_TYPES[:start]:
                qa = _ask(scene, qtype, u[row, 1:])
                if qa is not None:
                    out.append(qa)
                    break
        return out

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Fetch a batch with one vectorised :meth:`ShapesWorld.render` call."""
        idx = self.world._check_indices(indices)
        images = self.world.render(idx)
        return [
            {
                "image": images[row],
                "question": qa.question,
                "answer": qa.answer,
                "answer_id": ANSWERS.index(qa.answer),
                "type": qa.type,
                "index": int(i),
            }
            for row, (i, qa) in enumerate(zip(idx, self._questions(idx)))
        ]

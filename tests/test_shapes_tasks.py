"""Tests for the ShapesWorld fusion tasks (crossalign.data.shapes_tasks).

The truth used here is computed independently of the module under test:

* matching: positives and hard negatives are compared with the world's own captions and
  ``relation_swap`` / ``attribute_swap`` outputs; random negatives are traced back to
  the image that owns them;
* QA: a small regex parser reads each question back, finds the objects it refers to in
  the scene graph, checks that the reference is unique, and computes the answer itself
  (spatial relations recomputed from the object centres and ``RELATION_MARGIN``).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

from crossalign.data.shapes import (
    COLOURS,
    RELATION_MARGIN,
    SHAPES,
    SIZES,
    ShapeObject,
    ShapesWorld,
)
from crossalign.data.shapes_tasks import ANSWERS, ShapesMatching, ShapesQA


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld("train", size=1000, image_size=32, seed=3)


def same_item(a: dict, b: dict) -> bool:
    """Whether two items have identical fields (images compared exactly)."""
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
        for k in a
    )


def phrases(world: ShapesWorld, index: int) -> set[str]:
    return {f"{o.size} {o.colour} {o.shape}" for o in world.scene(index).objects}


# ---------------------------------------------------------------------------- matching
def test_matching_is_deterministic_whatever_the_batch(world: ShapesWorld) -> None:
    data = ShapesMatching(world, seed=1)
    again = ShapesMatching(world, seed=1)
    batch_a = data.__getitems__([5, 17, 42, 8])
    batch_b = again.__getitems__([42, 99, 5, 300, 17, 8])
    by_index = {item["index"]: item for item in batch_b}
    for item in batch_a:
        assert same_item(item, by_index[item["index"]])
        assert same_item(item, data[item["index"]])


def test_matching_getitems_equals_single_fetches(world: ShapesWorld) -> None:
    data = ShapesMatching(world)
    indices = [3, 0, 999, 3, 250]
    for item, index in zip(data.__getitems__(indices), indices):
        single = data[index]
        assert same_item(item, single)
        assert torch.equal(item["image"], world.render_one(index))


def test_matching_items_are_true_or_false_as_labelled(world: ShapesWorld) -> None:
    data = ShapesMatching(world, seed=2)
    owners: dict[str, set[int]] = {}
    texts, owner = world.caption_image_index()
    for text, i in zip(texts, owner.tolist()):
        owners.setdefault(text, set()).add(i)
    kinds = Counter()
    for i in range(300):
        caption, label, kind = data.pair(i)
        kinds[kind] += 1
        if kind == "positive":
            assert label == 1 and caption in world.captions(i)
            continue
        assert label == 0 and caption not in world.captions(i)
        if kind == "relation":
            assert caption in {
                world.relation_swap(i, c) for c in range(world.captions_per_image)
            }
        elif kind == "attribute":
            assert caption in {
                world.attribute_swap(i, c) for c in range(world.captions_per_image)
            }
        else:
            assert kind == "random"
            others = owners.get(caption, set()) - {i}
            assert others, (
                f"random negative of image {i} is not a caption of another image"
            )
            assert any(not phrases(world, j) <= phrases(world, i) for j in others)
    assert set(kinds) == {"positive", "relation", "attribute", "random"}


@pytest.mark.parametrize("rate", [0.5, 0.2])
def test_matching_label_balance_follows_positive_rate(
    world: ShapesWorld, rate: float
) -> None:
    data = ShapesMatching(world, positive_rate=rate, seed=4)
    labels = np.array([data.pair(i)[1] for i in range(1000)])
    # Binomial standard deviation is at most 0.016 over 1000 items: allow about 3 of
    # them.
    assert abs(labels.mean() - rate) < 0.05


def test_matching_only_requested_negative_kinds_when_available(
    world: ShapesWorld,
) -> None:
    data = ShapesMatching(world, negatives=("relation",), positive_rate=0.0)
    for i in range(100):
        _, label, kind = data.pair(i)
        assert label == 0
        if len(world.scene(i).objects) >= 2 and len(phrases(world, i)) == len(
            world.scene(i).objects
        ):
            assert kind == "relation"
        else:
            assert kind == "random"


def test_matching_falls_back_on_one_object_scenes() -> None:
    lone = ShapesWorld("val", size=60, image_size=32, max_objects=1)
    for negatives in (("relation", "attribute", "random"), ("attribute", "relation")):
        data = ShapesMatching(lone, negatives=negatives, positive_rate=0.0)
        for i in range(60):
            caption, label, kind = data.pair(i)
            assert (label, kind) == (0, "random")
            assert caption not in lone.captions(i)


def test_matching_attribute_falls_back_exactly_when_colours_match() -> None:
    pairs = ShapesWorld(
        "test",
        size=200,
        image_size=32,
        min_objects=2,
        max_objects=2,
        object_weights=(0, 1, 0),
    )
    data = ShapesMatching(pairs, negatives=("attribute", "relation"), positive_rate=0.0)
    seen_fallback = False
    for i in range(200):
        objects = pairs.scene(i).objects
        if len(objects) != 2:
            continue
        _, _, kind = data.pair(i)
        if objects[0].colour == objects[1].colour:
            seen_fallback = True
            assert kind in ("relation", "random")
            assert kind == "random" or objects[0].phrase() != objects[1].phrase()
    assert seen_fallback


def test_matching_rejects_bad_arguments(world: ShapesWorld) -> None:
    with pytest.raises(ValueError, match="negatives"):
        ShapesMatching(world, negatives=("colour",))
    with pytest.raises(ValueError, match="negatives"):
        ShapesMatching(world, negatives=())
    with pytest.raises(ValueError, match="positive_rate"):
        ShapesMatching(world, positive_rate=1.5)
    with pytest.raises(ValueError, match="world"):
        ShapesMatching(ShapesWorld("val", size=1, image_size=32))
    with pytest.raises(IndexError):
        ShapesMatching(world)[1000]


# ---------------------------------------------------------------------------- QA
# checker
OBJECT = (
    r"(?:(small|large) )?(?:(" + "|".join(COLOURS) + r") )?(" + "|".join(SHAPES) + r")"
)
RELATION = r"(left of|right of|above|below)"
QUESTION_PATTERNS = {
    "colour": re.compile(rf"what colour is the ({'|'.join(SHAPES)})\?"),
    "shape": re.compile(rf"what shape is the ({'|'.join(COLOURS)}) object\?"),
    "count": re.compile(r"how many objects are there\?"),
    "size": re.compile(
        rf"what size is the ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\?"
    ),
    "relation": re.compile(rf"is the {OBJECT} {RELATION} the {OBJECT}\?"),
}


def holds(a: ShapeObject, relation: str, b: ShapeObject) -> bool:
    """Whether ``a relation b`` is true: centres must differ by more than the margin (y
    down)."""
    return {
        "left of": b.x - a.x > RELATION_MARGIN,
        "right of": a.x - b.x > RELATION_MARGIN,
        "above": b.y - a.y > RELATION_MARGIN,
        "below": a.y - b.y > RELATION_MARGIN,
    }[relation]


def the_one(objects, size=None, colour=None, shape=None) -> ShapeObject:
    """The single object matching the given attributes; fails if there are none or
    several."""
    found = [
        o
        for o in objects
        if (size is None or o.size == size)
        and (colour is None or o.colour == colour)
        and (shape is None or o.shape == shape)
    ]
    assert len(found) == 1, (
        f"description {(size, colour, shape)} matches {len(found)} objects"
    )
    return found[0]


def answer_from_scene(question: str, objects) -> tuple[str, str]:
    """Parse ``question`` and compute (type, answer) from the objects alone."""
    for qtype, pattern in QUESTION_PATTERNS.items():
        m = pattern.fullmatch(question)
        if m is None:
            continue
        if qtype == "colour":
            return qtype, the_one(objects, shape=m[1]).colour
        if qtype == "shape":
            return qtype, the_one(objects, colour=m[1]).shape
        if qtype == "count":
            return qtype, str(len(objects))
        if qtype == "size":
            return qtype, the_one(objects, colour=m[1], shape=m[2]).size
        a = the_one(objects, size=m[1], colour=m[2], shape=m[3])
        b = the_one(objects, size=m[5], colour=m[6], shape=m[7])
        assert a is not b
        return qtype, "yes" if holds(a, m[4], b) else "no"
    raise AssertionError(f"question {question!r} does not follow any template")


# ---------------------------------------------------------------------------- QA
def test_qa_answers_match_an_independent_reading_of_the_scene(
    world: ShapesWorld,
) -> None:
    data = ShapesQA(world, seed=5)
    types = Counter()
    for i in range(500):
        qa = data.question(i)
        qtype, answer = answer_from_scene(qa.question, world.scene(i).objects)
        assert (qa.type, qa.answer) == (qtype, answer), f"item {i}: {qa}"
        types[qtype] += 1
    assert set(types) == set(QUESTION_PATTERNS)


def test_qa_yes_no_balance(world: ShapesWorld) -> None:
    data = ShapesQA(world)
    answers = [
        qa.answer for qa in map(data.question, range(1000)) if qa.type == "relation"
    ]
    assert len(answers) > 100
    assert 0.4 <= answers.count("yes") / len(answers) <= 0.6


def test_qa_items_answer_ids_index_answers(world: ShapesWorld) -> None:
    assert len(set(ANSWERS)) == len(ANSWERS)
    assert set(ANSWERS) == set(COLOURS) | set(SHAPES) | set(SIZES) | {
        "1",
        "2",
        "3",
        "yes",
        "no",
    }
    data = ShapesQA(world, seed=6)
    for item in data.__getitems__(range(64)):
        assert ANSWERS[item["answer_id"]] == item["answer"]
        assert isinstance(item["answer_id"], int)
        assert item["image"].shape == (3, 32, 32)


def test_qa_is_deterministic_and_batch_independent(world: ShapesWorld) -> None:
    data = ShapesQA(world, seed=7)
    indices = [10, 500, 3, 10, 77]
    batch = data.__getitems__(indices)
    shuffled = {
        item["index"]: item
        for item in ShapesQA(world, seed=7).__getitems__([77, 3, 999, 500, 10])
    }
    for item, index in zip(batch, indices):
        assert same_item(item, data[index])
        assert same_item(item, shuffled[index])
        assert torch.equal(item["image"], world.render_one(index))


def test_qa_seed_changes_questions(world: ShapesWorld) -> None:
    a, b = ShapesQA(world, seed=0), ShapesQA(world, seed=1)
    assert sum(a.question(i) != b.question(i) for i in range(50)) > 10


def test_qa_one_object_scenes_never_ask_relations() -> None:
    lone = ShapesWorld("val", size=100, image_size=32, max_objects=1)
    data = ShapesQA(lone)
    for i in range(100):
        qa = data.question(i)
        assert qa.type != "relation"
        assert answer_from_scene(qa.question, lone.scene(i).objects) == (
            qa.type,
            qa.answer,
        )


def test_qa_rejects_bad_arguments(world: ShapesWorld) -> None:
    with pytest.raises(ValueError, match="world"):
        ShapesQA([1, 2, 3])
    with pytest.raises(ValueError, match="seed"):
        ShapesQA(world, seed=1.5)

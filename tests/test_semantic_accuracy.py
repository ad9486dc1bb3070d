"""Semantic caption accuracy: every true caption of the grammar matches its scene, false
ones do not."""

from __future__ import annotations

import pytest

from crossalign.data.shapes import (
    Relation,
    SceneGraph,
    ShapeObject,
    ShapesWorld,
    spatial_relations,
)
from crossalign.metrics.semantic import (
    ObjectMention,
    caption_matches_scene,
    parse_caption,
    semantic_accuracy,
    semantic_report,
)


def _scene(*objects: ShapeObject) -> SceneGraph:
    return SceneGraph(tuple(objects), spatial_relations(objects))


RED = ShapeObject("circle", "red", "small", 0.2, 0.5)
BLUE = ShapeObject("square", "blue", "large", 0.8, 0.5)
GREEN = ShapeObject("triangle", "green", "small", 0.5, 0.15)
TWO = _scene(RED, BLUE)
THREE = _scene(RED, BLUE, GREEN)
LONE = _scene(ShapeObject("cross", "cyan", "large", 0.15, 0.85))


@pytest.mark.parametrize("split", ["train", "test", "compositional"])
def test_every_ground_truth_caption_matches_its_scene(split):
    world = ShapesWorld(split, size=300, seed=3)
    scenes = world.scenes(range(len(world)))
    captions = [world.captions(i) for i in range(len(world))]
    for k in range(5):
        assert semantic_accuracy([c[k] for c in captions], scenes) == 1.0
    assert {len(s.objects) for s in scenes} == {1, 2, 3}


def test_relation_and_attribute_swaps_never_match():
    world = ShapesWorld("test", size=100, seed=4)
    checked = 0
    for i in range(len(world)):
        scene = world.scene(i)
        for k in range(5):
            for negative in (world.relation_swap(i, k), world.attribute_swap(i, k)):
                if negative is not None:
                    assert parse_caption(negative) is not None, negative
                    assert not caption_matches_scene(negative, scene), negative
                    checked += 1
    assert checked > 400


def test_parse_reads_synonyms_templates_and_the_back_reference():
    parsed = parse_caption(
        "in this image, a little violet disc is to the left of a big turquoise "
        "rhombus, "
        "and a tiny red plus is under the big turquoise rhombus"
    )
    assert parsed.objects == (
        ObjectMention("small", "purple", "circle"),
        ObjectMention("large", "cyan", "diamond"),
        ObjectMention("small", "red", "cross"),
    )
    assert parsed.relations == ((0, "left of", 1), (2, "below", 1))
    lone = parse_caption("in the bottom left corner, there is a big white square")
    assert lone.objects == (
        ObjectMention("large", "white", "square"),
    ) and lone.region == ("bottom", "left")


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a small red circle is left of a large blue square", True),
        ("a large blue square is to the right of a small red circle", True),
        ("there is a small red circle on the left of a large blue square", True),
        ("a small red circle is right of a large blue square", False),  # relation wrong
        # shapes swapped between objects
        (
            "a small red square is left of a large blue circle",
            False,
        ),
        ("a large red circle is left of a large blue square", False),  # size wrong
        # not a relation of the scene
        (
            "a small red circle is above a large blue square",
            False,
        ),
        # "the" before it was introduced
        (
            "a small red circle is left of the large blue square",
            False,
        ),
        ("a small red circle is left of a large blue", False),  # not grammatical
        ("a small red circle at the left", False),  # one object for a two-object scene
        ("", False),
    ],
)
def test_two_object_captions(caption, expected):
    assert caption_matches_scene(caption, TWO) is expected


@pytest.mark.parametrize(
    "caption, expected",
    [
        (
            "a small red circle is left of a large blue square and a small green "
            "triangle is above the small red circle",
            True,
        ),
        (
            "a small red circle is left of a large blue square, and a small green "
            "triangle is over the large blue square",
            True,
        ),
        (
            "a small red circle is left of a large blue square and a small green "
            "triangle is below the small red circle",
            False,
        ),
        (
            "a small red circle is left of a large blue square and a small green "
            "triangle is above the small green triangle",
            False,
        ),
        (
            "a small red circle is left of a large blue square and a small green "
            "circle is above the small red circle",
            False,
        ),
        # the third object is missing
        (
            "a small red circle is left of a large blue square",
            False,
        ),
    ],
)
def test_three_object_captions(caption, expected):
    assert caption_matches_scene(caption, THREE) is expected


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a large cyan cross at the bottom left", True),
        ("at the bottom left there is a big turquoise plus", True),
        ("a picture of a large cyan cross in the bottom left corner", True),
        ("a large cyan cross at the bottom right", False),
        ("a large cyan cross at the bottom", False),
        ("the large cyan cross at the bottom left", False),
    ],
)
def test_one_object_captions(caption, expected):
    assert caption_matches_scene(caption, LONE) is expected


def test_look_alike_objects_are_matched_in_either_order():
    twin_left = ShapeObject("circle", "red", "small", 0.2, 0.5)
    twin_right = ShapeObject("circle", "red", "small", 0.8, 0.5)
    scene = _scene(
        twin_left, twin_right, ShapeObject("square", "blue", "large", 0.5, 0.85)
    )
    caption = (
        "a small red circle is right of a small red circle, "
        "and a large blue square is below the small red circle"
    )
    assert caption_matches_scene(caption, scene)
    assert (
        scene.holds(0, "left of", 1) and Relation(1, "right of", 0) in scene.relations
    )


def test_report_counts_each_check_including_the_previous_ones():
    captions = [
        "a small red circle is left of a large blue square",  # exact
        # attributes right, relation wrong
        "a small red circle is right of a large blue square",
        "a small red square is left of a large blue square",  # attribute wrong
        "a small red circle at the top",  # wrong object count
        "red circle",  # not grammatical
    ]
    report = semantic_report(captions, [TWO] * 5)
    assert report == {
        "grammatical": 0.8,
        "object_count": 0.6,
        "attributes": 0.4,
        "exact": 0.2,
    }
    assert semantic_accuracy(captions, [TWO] * 5) == report["exact"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="2 captions for 1 scenes"):
        semantic_accuracy(["a", "b"], [TWO])
    with pytest.raises(TypeError, match="single str"):
        semantic_accuracy("a small red circle", [TWO])
    with pytest.raises(ValueError, match="empty"):
        semantic_report([], [])
    with pytest.raises(TypeError, match="must be a str"):
        parse_caption(3)

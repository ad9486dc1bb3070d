"""Tests for ShapesWorld (crossalign.data.shapes) and the caption collator.

Every check compares the data set with truth computed here, independently of the module:

* a regex parser for the caption grammar (the module docstring) turns each caption back
  into noun phrases and stated relations, which are then evaluated on the scene graph;
* spatial relations are recomputed from the object centres and ``RELATION_MARGIN``;
* a float64 rasteriser, written from the shape geometry (circle of radius r, square of
  half side 0.85 r, upward triangle inside the r-box, diamond, cross with arms r/3
  wide), gives the pixels each object must cover.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from crossalign.data.collate import CaptionCollator
from crossalign.data.shapes import (
    COLOUR_RGB,
    COLOUR_WORDS,
    COLOURS,
    HELD_OUT_PAIRS,
    REGION_WORDS,
    RELATION_MARGIN,
    RELATION_WORDS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_RADIUS,
    SIZE_WORDS,
    Relation,
    SceneGraph,
    ShapeObject,
    ShapesWorld,
    caption_words,
    spatial_relations,
)
from crossalign.data.vocab import Vocabulary

OPPOSITE = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
Description = tuple[str, str, str]  # (size, colour, shape), canonical names


# ----------------------------------------------------------------------------
# independent truth
def describe(obj: ShapeObject) -> Description:
    """The canonical (size, colour, shape) of an object."""
    return (obj.size, obj.colour, obj.shape)


def relations_between(a: ShapeObject, b: ShapeObject) -> set[str]:
    """Every relation ``a <relation> b`` that holds: centres must differ by more than
    the margin."""
    found = set()
    if b.x - a.x > RELATION_MARGIN:
        found.add("left of")
    if a.x - b.x > RELATION_MARGIN:
        found.add("right of")
    if b.y - a.y > RELATION_MARGIN:
        found.add("above")
    if a.y - b.y > RELATION_MARGIN:
        found.add("below")
    return found


def region_of(obj: ShapeObject) -> tuple[str, str]:
    """The third of the image (vertical, horizontal) that holds the centre (y points
    down)."""
    thirds = ("top", "middle", "bottom"), ("left", "centre", "right")
    vertical = thirds[0][min(int(obj.y * 3), 2)]
    horizontal = thirds[1][min(int(obj.x * 3), 2)]
    return vertical, horizontal


def shape_level(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """A function that is <= 0 exactly inside the shape (float64; offsets from the
    centre, y down)."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy - r * r
    if shape == "square":
        return np.maximum(ax, ay) - 0.85 * r
    # apex at the top (dy = -r), base of width 2r at the bottom (dy = r)
    if shape == "triangle":
        return np.maximum(np.maximum(-r - dy, dy - r), ax - (dy + r) / 2)
    if shape == "diamond":
        return ax + ay - r
    if shape == "cross":
        arm = r / 3
        return np.minimum(np.maximum(ax - arm, ay - r), np.maximum(ay - arm, ax - r))
    raise AssertionError(f"the test knows no geometry for {shape!r}")


def object_level(obj: ShapeObject, side: int, pad: int = 0) -> np.ndarray:
    """``shape_level`` at the pixel centres of a side x side image, extended by ``pad``
    pixels."""
    coords = (np.arange(-pad, side + pad) + 0.5) / side
    return shape_level(
        obj.shape,
        coords[None, :] - obj.x,
        coords[:, None] - obj.y,
        SIZE_RADIUS[obj.size],
    )


# ---------------------------------------------------------------------------- caption
# parser
def _reverse(table: dict) -> dict[str, str]:
    """Map every synonym back to its canonical name (the synonym sets must not
    overlap)."""
    back: dict[str, str] = {}
    for canonical, words in table.items():
        for word in words:
            assert word not in back, (
                f"synonym {word!r} names both {back[word]!r} and {canonical!r}"
            )
            back[word] = canonical
    return back


SIZE_OF = _reverse(SIZE_WORDS)
COLOUR_OF = _reverse(COLOUR_WORDS)
SHAPE_OF = _reverse(SHAPE_WORDS)
RELATION_OF = _reverse(RELATION_WORDS)
REGION_OF = _reverse(REGION_WORDS)


def _alternatives(words) -> str:
    """A regex alternation of literal phrases, longest first."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _noun(name: str, article: str = "a") -> str:
    """Regex of an object phrase (article, size, colour, shape words) with named
    groups."""
    return (
        rf"(?P<{name}>{article} (?P<{name}_size>{_alternatives(SIZE_OF)}) "
        rf"(?P<{name}_colour>{_alternatives(COLOUR_OF)})"
        rf" (?P<{name}_shape>{_alternatives(SHAPE_OF)}))"
    )


def _relation(name: str) -> str:
    """Regex of a relation phrase in a named group."""
    return rf"(?P<{name}>{_alternatives(RELATION_OF)})"


_REGION = rf"(?P<region>{_alternatives(REGION_OF)})"
_A, _B = _noun("a"), _noun("b")
# "A <rel> B" in every template; the inverse "B is <opposite> A" reads the same way.
_CLAUSES = [
    rf"{_A} {_relation('main')} {_B}",
    rf"{_A} is {_relation('main')} {_B}",
    rf"there is {_A} {_relation('main')} {_B}",
    rf"a picture of {_A} {_relation('main')} {_B}",
    rf"in this image, {_A} is {_relation('main')} {_B}",
]
_EXTRA = rf"(?:, and| and) {_noun('c')} is {_relation('extra')} {_noun('d', 'the')}"
_LONE = [
    rf"{_A} {_REGION}",
    rf"there is {_A} {_REGION}",
    rf"{_A} is {_REGION}",
    rf"a picture of {_A} {_REGION}",
    rf"{_REGION}, there is {_A}",
]
_GRAMMAR = [re.compile(p) for p in _LONE + _CLAUSES + [c + _EXTRA for c in _CLAUSES]]


@dataclass
class Parsed:
    """A caption read back: noun phrases by role, stated relations, region of a lone
    object."""

    nouns: dict[str, Description]
    statements: list[tuple[str, str, str]] = field(default_factory=list)
    region: tuple[str, str] | None = None
    match: re.Match | None = None


def parse(caption: str) -> Parsed:
    """Parse a caption with the grammar; fail the test if it does not fit."""
    for pattern in _GRAMMAR:
        m = pattern.fullmatch(caption)
        if m is None:
            continue
        groups = m.groupdict()
        nouns = {
            role: (
                SIZE_OF[groups[f"{role}_size"]],
                COLOUR_OF[groups[f"{role}_colour"]],
                SHAPE_OF[groups[f"{role}_shape"]],
            )
            for role in "abcd"
            if groups.get(role) is not None
        }
        parsed = Parsed(nouns=nouns, match=m)
        if groups.get("region") is not None:
            parsed.region = REGION_OF[groups["region"]]
        if groups.get("main") is not None:
            parsed.statements.append(("a", RELATION_OF[groups["main"]], "b"))
        if groups.get("extra") is not None:
            parsed.statements.append(("c", RELATION_OF[groups["extra"]], "d"))
        return parsed
    raise AssertionError(f"caption does not fit the grammar: {caption!r}")


def is_true(parsed: Parsed, objects: tuple[ShapeObject, ...]) -> bool:
    """Whether some binding of the phrases to distinct objects makes every statement
    true.

    ``the`` (role d) refers back to one of the two objects of the first clause.
    """
    if parsed.region is not None:
        return any(
            describe(o) == parsed.nouns["a"] and region_of(o) == parsed.region
            for o in objects
        )
    roles = [r for r in "abc" if r in parsed.nouns]
    for chosen in itertools.permutations(range(len(objects)), len(roles)):
        binding = dict(zip(roles, chosen))
        if any(describe(objects[binding[r]]) != parsed.nouns[r] for r in roles):
            continue
        referents = [binding["a"], binding["b"]] if "d" in parsed.nouns else [None]
        for referent in referents:
            if referent is not None:
                if describe(objects[referent]) != parsed.nouns["d"]:
                    continue
                binding["d"] = referent
            statements = parsed.statements
            if all(
                rel in relations_between(objects[binding[s]], objects[binding[o]])
                for s, rel, o in statements
            ):
                return True
    return False


def words_of(text: str) -> list[str]:
    """The words of a caption, punctuation dropped."""
    return re.findall(r"[a-z]+", text)


# ---------------------------------------------------------------------------- fixtures
N_SCENES = 300


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    """A train split shared by the read-only tests (captions are cached inside)."""
    return ShapesWorld("train", size=N_SCENES, seed=11)


@pytest.fixture(scope="module")
def scenes(world):
    """Scene graphs of the shared split."""
    return [world.scene(i) for i in range(N_SCENES)]


@pytest.fixture(scope="module")
def captions(world):
    """Captions of the shared split."""
    return [world.captions(i) for i in range(N_SCENES)]


# ----------------------------------------------------------------------------
# determinism
def test_sample_is_the_same_alone_in_any_batch_and_in_any_order():
    ds = ShapesWorld("train", size=200, seed=5, noise=0.05)
    alone = torch.stack([ds.render([i])[0] for i in (3, 17, 150)])
    in_batch = ds.render(range(200))[[3, 17, 150]]
    shuffled_order = [150, 9, 3, 77, 17, 3]
    shuffled = ds.render(shuffled_order)
    assert torch.equal(alone, in_batch)
    assert torch.equal(shuffled[[2, 4, 0]], alone)
    # a repeated index in one batch gives the same image twice
    assert torch.equal(shuffled[5], alone[0])
    assert torch.equal(ds[17]["image"], alone[1])


def test_batched_scenes_layouts_and_captions_equal_the_per_index_ones():
    ds = ShapesWorld("train", size=100, seed=6)
    order = [42, 7, 42, 99, 0]
    assert ds.scenes(order) == [
        ShapesWorld("train", size=100, seed=6).scene(i) for i in order
    ]
    assert torch.equal(ds.render(order, layout=ds.layout(order)), ds.render(order))
    ds.captions(7)  # a batch mixing cached and uncached captions
    items = ds.__getitems__(order)
    fresh = ShapesWorld("train", size=100, seed=6)
    assert [item["captions"] for item in items] == [fresh.captions(i) for i in order]


def test_two_instances_with_the_same_seed_and_split_agree():
    first = ShapesWorld("val", size=50, seed=7, image_size=48, noise=0.02)
    second = ShapesWorld("val", size=50, seed=7, image_size=48, noise=0.02)
    indices = [0, 13, 49]
    assert torch.equal(first.render(indices), second.render(indices))
    for i in indices:
        assert first.captions(i) == second.captions(i)
        assert first.scene(i) == second.scene(i)
        assert first.relation_swap(i) == second.relation_swap(i)
    # Neither the split size nor the resolution changes what sample i is.
    other = ShapesWorld("val", size=5000, seed=7, image_size=96)
    for i in indices:
        assert other.scene(i) == first.scene(i) and other.captions(i) == first.captions(
            i
        )


@pytest.mark.parametrize(
    "other",
    [
        dict(split="train", seed=7),
        dict(split="val", seed=8),
        dict(split="test", seed=7),
    ],
)
def test_different_seed_or_split_gives_different_samples(other):
    base = ShapesWorld("val", size=40, seed=7)
    changed = ShapesWorld(size=40, **other)
    indices = range(40)
    same_scene = sum(base.scene(i) == changed.scene(i) for i in indices)
    same_caption = sum(base.captions(i)[0] == changed.captions(i)[0] for i in indices)
    same_image = sum(
        torch.equal(a, b) for a, b in zip(base.render(indices), changed.render(indices))
    )
    assert same_scene == 0 and same_image == 0
    assert same_caption <= 2


def test_captions_do_not_depend_on_how_many_are_asked_for(world):
    fewer = ShapesWorld("train", size=N_SCENES, seed=11, captions_per_image=2)
    for i in range(30):
        assert fewer.captions(i) == world.captions(i)[:2]
    returned = world.captions(0)
    returned.append("something else")
    assert len(world.captions(0)) == 5  # the cache hands out copies


# ---------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("image_size", [32, 64, 100, 224])
@pytest.mark.parametrize("noise", [0.0, 0.08])
def test_vectorised_render_equals_per_sample_render(image_size, noise):
    ds = ShapesWorld("test", size=1000, seed=2, image_size=image_size, noise=noise)
    indices = list(range(0, 1000, 1000 // (12 if image_size == 224 else 40)))
    batch = ds.render(indices)
    reference = torch.stack([ds.render_one(i) for i in indices])
    assert (
        batch.shape == (len(indices), 3, image_size, image_size)
        and batch.dtype == torch.float32
    )
    assert torch.equal(batch, reference)
    assert batch.min() >= 0 and batch.max() <= 1


@pytest.mark.parametrize("image_size", [32, 64, 100])
def test_render_matches_an_independent_float64_rasteriser(image_size):
    ds = ShapesWorld("train", size=80, seed=4, image_size=image_size)
    images = ds.render(range(80))
    palette = {c: torch.tensor(COLOUR_RGB[c], dtype=torch.float32) for c in COLOURS}
    for i in range(80):
        image = images[i]
        covered = np.zeros((image_size, image_size), dtype=bool)
        uncertain = np.zeros_like(covered)
        for obj in ds.scene(i).objects:
            level = object_level(obj, image_size)
            inside = level <= 0
            # pixel centres on an edge: float32 may round either way
            uncertain |= np.abs(level) < 1e-6
            sure = torch.from_numpy(inside & ~uncertain)
            assert torch.equal(
                image[:, sure], palette[obj.colour][:, None].expand(3, int(sure.sum()))
            )
            covered |= inside
        background = image[:, torch.from_numpy(~covered & ~uncertain)]
        assert background.numel() > 0
        assert torch.equal(background, background[:, :1].expand_as(background)), (
            "background must be one grey"
        )
        assert background[0, 0] == background[1, 0] == background[2, 0]


def test_centre_pixel_has_the_object_colour(world, scenes):
    images = world.render(range(N_SCENES))
    s = world.image_size
    for image, scene in zip(images, scenes):
        for obj in scene.objects:
            pixel = image[:, int(obj.y * s), int(obj.x * s)]
            assert torch.equal(
                pixel, torch.tensor(COLOUR_RGB[obj.colour], dtype=torch.float32)
            ), obj


def test_noise_changes_pixels_by_the_requested_amount():
    clean = ShapesWorld("train", size=64, seed=1).render(range(64))
    noisy = ShapesWorld("train", size=64, seed=1, noise=0.05).render(range(64))
    # far from 0 and 1, so clamping never bites
    unclipped = (clean > 0.25) & (clean < 0.75)
    residual = (noisy - clean)[unclipped]
    assert abs(residual.mean().item()) < 0.002
    assert abs(residual.std().item() - 0.05) < 0.002


# ---------------------------------------------------------------------------- scene
# graphs
def test_objects_lie_inside_the_image_and_never_overlap(world, scenes):
    # finer than the default 64 px; the padding shows any part outside the image
    side, pad = (
        128,
        40,
    )
    for scene in scenes:
        assert 1 <= len(scene.objects) <= 3
        masks = []
        for obj in scene.objects:
            r = SIZE_RADIUS[obj.size]
            assert r <= obj.x <= 1 - r and r <= obj.y <= 1 - r, obj
            full = object_level(obj, side, pad) <= 0
            inner = full[pad:-pad, pad:-pad]
            assert full.sum() == inner.sum() > 0, f"{obj} reaches outside the image"
            masks.append(inner)
        for a, b in itertools.combinations(masks, 2):
            assert not (a & b).any(), scene


def test_relations_are_exactly_those_implied_by_the_centres(scenes):
    for scene in scenes:
        expected = {
            (i, rel, j)
            for i, a in enumerate(scene.objects)
            for j, b in enumerate(scene.objects)
            if i != j
            for rel in relations_between(a, b)
        }
        listed = [(r.subject, r.relation, r.object) for r in scene.relations]
        assert len(listed) == len(set(listed)) and set(listed) == expected
        for i, j in itertools.combinations(range(len(scene.objects)), 2):
            assert relations_between(scene.objects[i], scene.objects[j]), (
                f"objects {i}, {j} have no relation"
            )
        for i, rel, j in expected:
            assert scene.holds(i, rel, j) and not scene.holds(i, OPPOSITE[rel], j)


def test_scene_graph_survives_a_json_round_trip(scenes):
    for scene in scenes[:20]:
        data = json.loads(json.dumps(scene.to_dict()))
        objects = tuple(ShapeObject(**o) for o in data["objects"])
        rebuilt = SceneGraph(objects, tuple(Relation(**r) for r in data["relations"]))
        assert rebuilt == scene


def test_relation_margin_is_respected_at_the_boundary():
    a = ShapeObject("circle", "red", "small", 0.30, 0.50)
    just_inside = ShapeObject(
        "circle",
        "blue",
        "small",
        0.30 + RELATION_MARGIN * 0.999,
        0.50 + RELATION_MARGIN * 1.001,
    )
    assert relations_between(a, just_inside) == {"above"}
    listed = {
        (r.subject, r.relation, r.object) for r in spatial_relations([a, just_inside])
    }
    assert listed == {(0, "above", 1), (1, "below", 0)}


def object_counts(ds: ShapesWorld) -> np.ndarray:
    """How many images have 1, 2 and 3 objects (batched layout, cross-checked with scene
    graphs)."""
    per_image = ds.layout(np.arange(len(ds))).valid.sum(axis=1)
    assert all(per_image[i] == len(ds.scene(i).objects) for i in range(0, len(ds), 30))
    return np.bincount(per_image, minlength=4)[1:]


def test_object_count_follows_the_weights():
    counts = object_counts(ShapesWorld("train", size=3000, seed=21))
    expected = 3000 * np.array([0.1, 0.45, 0.45])
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    # the 0.1 % point of chi-square with 2 dof
    assert chi_square < 13.8, (
        counts,
        chi_square,
    )


@pytest.mark.parametrize(
    "kwargs, allowed",
    [
        (dict(min_objects=2), {2, 3}),
        (dict(max_objects=1), {1}),
        (dict(min_objects=3, max_objects=3), {3}),
        (dict(object_weights=(1.0, 0.0, 1.0)), {1, 3}),
        (dict(min_objects=2, max_objects=2, object_weights=(5.0, 1.0, 5.0)), {2}),
    ],
)
def test_object_count_range_and_zero_weights(kwargs, allowed):
    ds = ShapesWorld("train", size=400, seed=3, **kwargs)
    seen = {len(ds.scene(i).objects) for i in range(400)}
    assert seen == allowed


def test_min_objects_holds_for_every_image():
    """Every image holds at least min_objects objects: placement never silently drops
    one.

    Each object tries many random centres; with too few tries about 0.4 % of
    three-object images once lost an object, and min_objects was not respected.
    """
    ds = ShapesWorld("train", size=3000, seed=3, min_objects=3)
    per_image = ds.layout(np.arange(3000)).valid.sum(axis=1)
    short = np.nonzero(per_image < 3)[0]
    assert short.size == 0, (
        f"{short.size} images have fewer than 3 objects, e.g. {short[:5].tolist()}"
    )


def test_object_weights_none_means_uniform_counts():
    counts = object_counts(ShapesWorld("train", size=3000, seed=8, object_weights=None))
    chi_square = float(((counts - 1000) ** 2 / 1000).sum())
    assert chi_square < 13.8, counts


# ---------------------------------------------------------------------------- captions
def test_captions_parse_and_describe_the_scene_truthfully(world, scenes, captions):
    for index, (scene, caps) in enumerate(zip(scenes, captions)):
        assert len(caps) == 5
        described = sorted(describe(o) for o in scene.objects)
        for caption in caps:
            parsed = parse(caption)
            mentioned = sorted(
                parsed.nouns[role] for role in "abc" if role in parsed.nouns
            )
            # every object, and only the scene's objects
            assert mentioned == described, (
                index,
                caption,
            )
            if "d" in parsed.nouns:
                assert parsed.nouns["d"] in (parsed.nouns["a"], parsed.nouns["b"]), (
                    caption
                )
            assert is_true(parsed, scene.objects), (index, caption, scene)


def test_lone_objects_get_their_region(world, scenes, captions):
    lone = [
        (s.objects[0], caps) for s, caps in zip(scenes, captions) if len(s.objects) == 1
    ]
    assert len(lone) > 20
    regions_seen = set()
    for obj, caps in lone:
        for caption in caps:
            parsed = parse(caption)
            assert parsed.region == region_of(obj), (caption, obj)
            regions_seen.add(parsed.region)
    assert len(regions_seen) >= 7


def test_region_thirds_on_hand_picked_points():
    def region(x, y):
        return ShapeObject("circle", "red", "small", x, y).region()

    assert region(0.1, 0.1) == ("top", "left")
    assert region(0.5, 0.5) == ("middle", "centre")
    assert region(0.9, 0.2) == ("top", "right")
    assert region(0.2, 0.8) == ("bottom", "left")
    assert region(0.34, 0.66) == ("middle", "centre")


def test_caption_words_is_exactly_the_vocabulary_used(captions):
    used = {w for caps in captions for c in caps for w in words_of(c)}
    assert used == set(caption_words())
    assert list(caption_words()) == sorted(caption_words())


def test_captions_vary_within_an_image_and_use_every_template(captions):
    distinct = np.mean([len(set(caps)) for caps in captions])
    assert distinct > 4.5
    patterns_used = {
        next(k for k, p in enumerate(_GRAMMAR) if p.fullmatch(c))
        for caps in captions
        for c in caps
    }
    assert patterns_used == set(range(len(_GRAMMAR)))


def test_inverse_template_is_used(captions):
    """The inverse template "B is <opposite> A" is the only source of "X is R Y, and
    ...".

    The plain "X is R Y" template joins a third object with " and" (odd templates use no
    comma), so a comma there shows an inverse clause; the truth test above checks its
    meaning.
    """
    inverse_form = re.compile(_CLAUSES[1] + r", and ")
    inverse = [c for caps in captions for c in caps if inverse_form.match(c)]
    assert len(inverse) > 10


# ----------------------------------------------------------------------------
# compositional split
def _pairs(scene) -> set[tuple[str, str]]:
    """The (colour, shape) pairs present in a scene."""
    return {(o.colour, o.shape) for o in scene.objects}


def test_held_out_pairs_never_appear_outside_the_compositional_split():
    held_out = set(HELD_OUT_PAIRS)
    seen: set[tuple[str, str]] = set()
    for split in ("train", "val", "test"):
        ds = ShapesWorld(split, size=300, seed=1)
        for i in range(300):
            pairs = _pairs(ds.scene(i))
            assert not pairs & held_out, (split, i, pairs)
            seen |= pairs
    all_pairs = {(c, s) for c in COLOURS for s in SHAPES}
    assert seen == all_pairs - held_out  # nothing else is withheld


def test_every_compositional_image_holds_a_held_out_pair():
    ds = ShapesWorld("compositional", size=300, seed=1)
    held_out = set(HELD_OUT_PAIRS)
    hits: set[tuple[str, str]] = set()
    for i in range(300):
        pairs = _pairs(ds.scene(i)) & held_out
        assert pairs, i
        hits |= pairs
        if i < 60:
            assert all(
                is_true(parse(caption), ds.scene(i).objects)
                for caption in ds.captions(i)
            )
    assert hits == held_out


# ---------------------------------------------------------------------------- hard
# negatives
def test_relation_swap_changes_only_the_relation_phrase(world, scenes, captions):
    swaps = 0
    for index, (scene, caps) in enumerate(zip(scenes, captions)):
        for k, caption in enumerate(caps):
            swapped = world.relation_swap(index, k)
            descriptions = [describe(o) for o in scene.objects]
            if len(scene.objects) == 1 or len(set(descriptions)) < len(descriptions):
                # no relation, or look-alike objects (see the next test)
                assert swapped is None
                continue
            swaps += 1
            true, false = parse(caption), parse(swapped)
            assert true.match.re is false.match.re  # same template
            (t0, t1), (f0, f1) = true.match.span("main"), false.match.span("main")
            assert caption[:t0] == swapped[:f0] and caption[t1:] == swapped[f1:]
            assert false.statements[0][1] == OPPOSITE[true.statements[0][1]]
    assert swaps > 500


def test_relation_swap_is_false_when_objects_are_distinguishable(world, scenes):
    for index, scene in enumerate(scenes):
        descriptions = [describe(o) for o in scene.objects]
        if len(set(descriptions)) < len(descriptions) or len(scene.objects) == 1:
            continue
        for k in range(5):
            assert not is_true(parse(world.relation_swap(index, k)), scene.objects), (
                index,
                k,
            )


def test_relation_swap_is_false_even_when_two_objects_look_alike():
    """A relation swap is never true, even when two objects look alike.

    Two large blue diamonds, one above the other: "a blue diamond beneath a blue
    diamond" and its swap "a blue diamond over a blue diamond" are both true, so
    relation_swap must give None for such scenes (about 2 % of two-object scenes)
    instead of a "negative" that is true.
    """
    ds = ShapesWorld("train", size=3000, seed=11, min_objects=2, max_objects=2)
    look_alike = next(
        i for i in range(3000) if len({describe(o) for o in ds.scene(i).objects}) == 1
    )
    scene = ds.scene(look_alike)
    for k in range(5):
        swapped = ds.relation_swap(look_alike, k)
        assert swapped is None or not is_true(parse(swapped), scene.objects), (
            look_alike,
            swapped,
        )


def test_attribute_swap_exchanges_two_colours_and_is_false(world, scenes, captions):
    swaps = 0
    for index, (scene, caps) in enumerate(zip(scenes, captions)):
        for k, caption in enumerate(caps):
            swapped = world.attribute_swap(index, k)
            if len(scene.objects) == 1:
                assert swapped is None
                continue
            true = parse(caption)
            a, b = true.nouns["a"], true.nouns["b"]
            if a[1] == b[1]:
                assert swapped is None, (caption, swapped)
                continue
            swaps += 1
            false = parse(swapped)
            recoloured = {a: (a[0], b[1], a[2]), b: (b[0], a[1], b[2])}
            assert (
                false.nouns["a"] == recoloured[a] and false.nouns["b"] == recoloured[b]
            )
            if "c" in true.nouns:
                assert false.nouns["c"] == true.nouns["c"]
                assert false.nouns["d"] == recoloured[true.nouns["d"]]
            assert false.statements == true.statements
            # Word for word the same, except for colour words.
            true_words, false_words = caption.split(" "), swapped.split(" ")
            assert len(true_words) == len(false_words)
            changed = [(t, f) for t, f in zip(true_words, false_words) if t != f]
            assert changed and all(
                t.strip(",") in COLOUR_OF and f.strip(",") in COLOUR_OF
                for t, f in changed
            )
            assert not is_true(false, scene.objects), (index, k, swapped)
    assert swaps > 400


def test_hard_negatives_are_none_for_lone_objects():
    ds = ShapesWorld("val", size=20, seed=0, max_objects=1)
    for i in range(20):
        assert ds.relation_swap(i) is None and ds.attribute_swap(i, 3) is None


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, error, argument",
    [
        (dict(split="training"), ValueError, "split"),
        (dict(size=0), ValueError, "size"),
        (dict(size=-5), ValueError, "size"),
        (dict(size=2.5), ValueError, "size"),
        (dict(image_size=31), ValueError, "image_size"),
        (dict(image_size=225), ValueError, "image_size"),
        (dict(min_objects=0), ValueError, "min_objects"),
        (dict(max_objects=4), ValueError, "max_objects"),
        (dict(min_objects=3, max_objects=2), ValueError, "min_objects"),
        (dict(object_weights=(1.0, 2.0)), ValueError, "object_weights"),
        (dict(object_weights=(1.0, -1.0, 1.0)), ValueError, "object_weights"),
        (
            dict(object_weights=(0.0, 0.0, 1.0), max_objects=2),
            ValueError,
            "object_weights",
        ),
        (dict(noise=-0.1), ValueError, "noise"),
        (dict(captions_per_image=0), ValueError, "captions_per_image"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, argument):
    with pytest.raises(error, match=argument):
        ShapesWorld(**{"size": 10, **kwargs})


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(image_size=64.5), "image_size"),
        (dict(noise=float("nan")), "noise"),
        (dict(object_weights=(float("nan"), 1.0, 1.0)), "object_weights"),
    ],
)
def test_non_numbers_are_refused_by_name(kwargs, argument):
    """Arguments that are not (finite) numbers are refused at construction, by name.

    Otherwise image_size=64.5 fails deep inside torch.full, noise=nan gives images full
    of NaN, and a NaN object weight silently corrupts the object-count distribution.
    """
    with pytest.raises(ValueError, match=argument):
        ShapesWorld(size=10, **kwargs)


def test_out_of_range_indices_raise_index_error():
    ds = ShapesWorld("val", size=10)
    for call in (
        lambda: ds[10],
        lambda: ds[-1],
        lambda: ds.render([0, 12]),
        lambda: ds.render_one(10),
        lambda: ds.scene(11),
        lambda: ds.captions(10),
        lambda: ds.relation_swap(10),
    ):
        with pytest.raises(IndexError, match="index"):
            call()


# ---------------------------------------------------------------------------- Dataset
# protocol
class _CountingWorld(ShapesWorld):
    """ShapesWorld that records which fetch method a DataLoader uses."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[list[int]] = []
        self.single_fetches = 0

    def __getitem__(self, index):
        self.single_fetches += 1
        return super().__getitem__(index)

    def __getitems__(self, indices):
        self.batches.append(list(indices))
        return super().__getitems__(indices)


def test_dataloader_fetches_whole_batches_through_getitems():
    ds = _CountingWorld("train", size=30, seed=9, noise=0.03)
    loader = DataLoader(
        ds,
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=lambda items: items,
    )
    reference_world = ShapesWorld("train", size=30, seed=9, noise=0.03)
    seen = []
    for batch in loader:
        for item in batch:
            assert set(item) == {"image", "captions", "index"}
            seen.append(item["index"])
            reference = reference_world[item["index"]]
            assert (
                torch.equal(item["image"], reference["image"])
                and item["captions"] == reference["captions"]
            )
    assert sorted(seen) == list(range(30))
    assert [len(b) for b in ds.batches] == [8, 8, 8, 6] and ds.single_fetches == 0


def test_len_and_default_split_sizes():
    assert (
        len(ShapesWorld("train")) == 20000 and len(ShapesWorld("compositional")) == 1000
    )
    assert len(ShapesWorld("val", size=7)) == 7


def test_caption_image_index_lists_every_caption_with_its_image():
    ds = ShapesWorld("test", size=6, seed=3, captions_per_image=4)
    texts, owner = ds.caption_image_index()
    assert len(texts) == 24 and owner.tolist() == [
        i for i in range(6) for _ in range(4)
    ]
    assert texts[4:8] == ds.captions(1)


# ---------------------------------------------------------------------------- caption
# collator
@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    """A word vocabulary covering the ShapesWorld grammar."""
    return Vocabulary.build(caption_words())


def _fake_items(indices, n_captions=5):
    """Items whose captions name their position, so a choice can be read back
    unambiguously."""
    return [
        {
            "image": torch.full((3, 4, 4), float(i)),
            "captions": [f"caption {k}" for k in range(n_captions)],
            "index": i,
        }
        for i in indices
    ]


def _chosen_positions(collator, items) -> list[int]:
    """Which caption number the collator picked for each item."""
    return [int(text.split()[1]) for text in collator.choose(items)]


def test_random_caption_choice_ignores_batch_composition(vocab):
    collator = CaptionCollator(vocab, caption="random", seed=4)
    collator.set_epoch(3)
    together = _chosen_positions(collator, _fake_items(range(40)))
    reversed_batch = _chosen_positions(collator, _fake_items(range(39, -1, -1)))[::-1]
    one_by_one = [_chosen_positions(collator, _fake_items([i]))[0] for i in range(40)]
    assert together == reversed_batch == one_by_one
    again = CaptionCollator(vocab, caption="random", seed=4)
    again.set_epoch(3)
    assert _chosen_positions(again, _fake_items(range(40))) == together
    other_seed = CaptionCollator(vocab, caption="random", seed=5)
    other_seed.set_epoch(3)
    assert _chosen_positions(other_seed, _fake_items(range(40))) != together


def test_random_caption_choice_changes_with_epoch_and_covers_all_captions(vocab):
    collator = CaptionCollator(vocab, caption="random", seed=0)
    per_epoch = []
    for epoch in range(60):
        collator.set_epoch(epoch)
        per_epoch.append(_chosen_positions(collator, _fake_items(range(50))))
    choices = np.array(per_epoch)  # [epoch, item]
    changed = (choices[1:] != choices[:-1]).mean()
    assert 0.7 < changed < 0.9  # independent uniform picks differ 4 times in 5
    for item in range(50):
        assert set(choices[:, item]) == set(range(5))
    counts = np.bincount(choices.ravel(), minlength=5)
    assert ((counts - 600) ** 2 / 600).sum() < 18.5  # chi-square, 4 dof, 0.1 % point


def test_collator_builds_the_batch_tensors(vocab):
    ds = ShapesWorld("val", size=12, seed=2)
    items = ds.__getitems__([4, 0, 9])
    batch = CaptionCollator(vocab, caption="first")(items)
    assert torch.equal(
        batch["images"], torch.stack([ds[i]["image"] for i in (4, 0, 9)])
    )
    assert batch["captions"] == [ds.captions(i)[0] for i in (4, 0, 9)]
    ids, mask = vocab.encode_batch(batch["captions"])
    assert torch.equal(batch["input_ids"], ids) and torch.equal(
        batch["attention_mask"], mask
    )
    assert batch["indices"].tolist() == [4, 0, 9]
    assert vocab.unk_id not in batch["input_ids"][batch["attention_mask"]].tolist()
    third = CaptionCollator(vocab, caption=3, max_len=6)(items)
    assert third["captions"] == [ds.captions(i)[3] for i in (4, 0, 9)]
    assert third["input_ids"].shape[1] <= 6


def test_collator_errors(vocab):
    for bad in ("last", -1, 1.5):
        with pytest.raises(ValueError, match="caption"):
            CaptionCollator(vocab, caption=bad)
    with pytest.raises(IndexError, match="caption"):
        CaptionCollator(vocab, caption=5).choose(_fake_items([0]))
    with pytest.raises(ValueError, match="empty"):
        CaptionCollator(vocab)([])


def test_lone_objects_sit_well_inside_their_region(world, scenes):
    """A lone object's caption names its region, so its centre keeps clear of the 1/3
    and 2/3 borders."""
    lone = [s.objects[0] for s in scenes if len(s.objects) == 1]
    assert lone
    for obj in lone:
        distance = min(
            abs(coord - border) for coord in (obj.x, obj.y) for border in (1 / 3, 2 / 3)
        )
        assert distance >= 0.04 - 1e-12, obj

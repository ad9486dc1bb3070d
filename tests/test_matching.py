"""Rule-based and statistical matching (crossalign.matching) against hand-made examples
and controls.

* Keyword scores: worked examples computed by hand, a brute-force reference (Counter and
  ``min``) on ShapesWorld captions, and the rule's known blind spot (attribute binding).
* Hand-made features: hand-drawn images whose histograms, blob bins and edge directions
  are known exactly; blob bins of ShapesWorld objects against their scene graphs.
* Retrieval on 200 ShapesWorld test images (text->image chance R@1 is 1/200): keyword
  matching reaches about R@1 0.46 (image->text) and 0.62 (text->image); CCA matching
  about 0.8 both ways. Only safe bounds are asserted; ``pytest -s`` prints the numbers.
  A control with shuffled training pairs must fall back to chance.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from crossalign import matching
from crossalign.data.shapes import (
    COLOUR_RGB,
    COLOUR_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    SceneGraph,
    ShapeObject,
    ShapesWorld,
    caption_words,
)
from crossalign.linear import CCA
from crossalign.matching import (
    ATTRIBUTES,
    CorrelationMatcher,
    bag_of_words,
    caption_attribute_counts,
    correlation_match,
    handcrafted_image_features,
    keyword_match_scores,
)
from crossalign.metrics import retrieval_metrics

N_TEST, N_TRAIN = 200, 1000
REGION_BLOCK, BLOB_BLOCK, EDGE_BLOCK = slice(0, 243), slice(243, 252), slice(252, 260)
BACKGROUND_GREY = 0.12


def _scene(*objects: tuple[str, str, str]) -> SceneGraph:
    """A scene graph from (size, colour, shape) triples; positions and relations do not
    matter here."""
    placed = tuple(
        ShapeObject(shape=shape, colour=colour, size=size, x=0.2 + 0.3 * i, y=0.5)
        for i, (size, colour, shape) in enumerate(objects)
    )
    return SceneGraph(objects=placed, relations=())


def _retrieval_from_scores(
    scores: torch.Tensor, owner: torch.Tensor
) -> dict[str, float]:
    """retrieval_metrics on a caption-by-image score matrix (identity image
    embeddings)."""
    return retrieval_metrics(torch.eye(scores.shape[1]), scores, owner)


@pytest.fixture(scope="module")
def test_split() -> dict:
    world = ShapesWorld("test", size=N_TEST)
    captions = [caption for i in range(N_TEST) for caption in world.captions(i)]
    owner = torch.arange(N_TEST).repeat_interleave(world.captions_per_image)
    images, scenes = world.render(range(N_TEST)), world.scenes(range(N_TEST))
    return {
        "world": world,
        "images": images,
        "scenes": scenes,
        "captions": captions,
        "owner": owner,
    }


@pytest.fixture(scope="module")
def train_split() -> dict:
    world = ShapesWorld("train", size=N_TRAIN)
    captions = [caption for i in range(N_TRAIN) for caption in world.captions(i)]
    owner = torch.arange(N_TRAIN).repeat_interleave(world.captions_per_image)
    return {
        "images": world.render(range(N_TRAIN)),
        "captions": captions,
        "owner": owner,
    }


# --------------------------------------------------------------------------- rule-based
# matching


def test_keyword_scores_worked_example() -> None:
    """The docstring's example: mentions small, large, circle, square once and red
    twice."""
    caption = "a small red circle is left of a big red square"
    scenes = [
        _scene(("small", "red", "circle"), ("large", "blue", "square")),
        _scene(("large", "red", "circle"), ("large", "red", "square")),
        _scene(("small", "red", "circle"), ("large", "red", "square")),
        _scene(("small", "green", "triangle")),
    ]
    assert keyword_match_scores([caption], scenes).tolist() == [[5.0, 5.0, 6.0, 1.0]]


def test_keyword_scores_read_synonyms_and_ignore_other_words() -> None:
    scenes = [
        _scene(("small", "purple", "circle")),
        _scene(("large", "cyan", "diamond")),
    ]
    captions = [
        "A tiny violet disc, in the top left corner.",
        "a big turquoise rhombus",
        "there is nothing here",
    ]
    assert keyword_match_scores(captions, scenes).tolist() == [
        [3.0, 0.0],
        [0.0, 3.0],
        [0.0, 0.0],
    ]
    counts = caption_attribute_counts(
        ["a little orange plus above the big orange cross"]
    )
    named = {ATTRIBUTES[i]: int(c) for i, c in enumerate(counts[0]) if c}
    assert named == {
        ("size", "small"): 1,
        ("size", "large"): 1,
        ("colour", "orange"): 2,
        ("shape", "cross"): 2,
    }


def _reference_keyword_scores(
    captions: list[str], scenes: list[SceneGraph]
) -> list[list[int]]:
    """Brute force: Counters of canonical attribute values, summed minima, one pair at a
    time."""
    canonical = {}
    for table in (SHAPE_WORDS, COLOUR_WORDS, SIZE_WORDS):
        for name, words in table.items():
            canonical.update(dict.fromkeys(words, name))
    mentions = [
        Counter(
            canonical[w] for w in re.findall(r"[a-z]+", c.lower()) if w in canonical
        )
        for c in captions
    ]
    present = [
        Counter(v for o in s.objects for v in (o.shape, o.colour, o.size))
        for s in scenes
    ]
    return [
        [sum(min(m[value], p[value]) for value in m) for p in present] for m in mentions
    ]


def test_keyword_scores_match_brute_force_reference(test_split: dict) -> None:
    captions, scenes = test_split["captions"][:250], test_split["scenes"][:60]
    assert keyword_match_scores(
        captions, scenes
    ).long().tolist() == _reference_keyword_scores(captions, scenes)


def test_keyword_scores_are_blind_to_attribute_binding(test_split: dict) -> None:
    """In a two-object caption, swapping the objects' colours keeps the bag of attribute
    words: no score changes.

    (With three objects the swapped colour of an object named twice changes the bag.)
    """
    world, scenes = test_split["world"], test_split["scenes"]
    two_objects = [i for i in range(80) if len(scenes[i].objects) == 2]
    pairs = [(world.captions(i)[0], world.attribute_swap(i, 0)) for i in two_objects]
    pairs = [(true, swapped) for true, swapped in pairs if swapped is not None]
    assert len(pairs) >= 15 and all(true != swapped for true, swapped in pairs)
    true_scores = keyword_match_scores([t for t, _ in pairs], scenes)
    swapped_scores = keyword_match_scores([s for _, s in pairs], scenes)
    assert torch.equal(true_scores, swapped_scores)


def test_keyword_matching_retrieval_beats_chance_but_is_far_from_perfect(
    test_split: dict,
) -> None:
    """Measured: R@1 image->text 0.46, text->image 0.62 (chance: about 0.005)."""
    scores = keyword_match_scores(test_split["captions"], test_split["scenes"])
    metrics = _retrieval_from_scores(scores, test_split["owner"])
    print(
        f"keyword matching R@1: i2t {metrics['i2t_r1']:.3f}, t2i "
        f"{metrics['t2i_r1']:.3f}"
    )
    assert 0.25 < metrics["i2t_r1"] < 0.8
    assert 0.35 < metrics["t2i_r1"] < 0.85


def test_keyword_scores_reject_bad_input() -> None:
    with pytest.raises(TypeError, match="single str"):
        keyword_match_scores("a red circle", [])
    with pytest.raises(TypeError, match=r"captions\[1\]"):
        keyword_match_scores(["a red circle", 3], [])
    with pytest.raises(TypeError, match="SceneGraph"):
        keyword_match_scores(["a red circle"], [{"objects": []}])


# --------------------------------------------------------------------------- hand-made
# features


def _background(size: int = 30) -> torch.Tensor:
    return torch.full((3, size, size), BACKGROUND_GREY)


def _paint(image: torch.Tensor, mask: torch.Tensor, colour: str) -> torch.Tensor:
    image[:, mask] = torch.tensor(COLOUR_RGB[colour])[:, None]
    return image


def test_region_histogram_of_a_square_in_one_region() -> None:
    """A 10x10 red square filling exactly the top-left region (one ninth) of a 30x30
    image."""
    mask = torch.zeros(30, 30, dtype=torch.bool)
    mask[:10, :10] = True
    features = handcrafted_image_features(_paint(_background(), mask, "red")[None])[0]
    expected = torch.zeros(9, 27)
    expected[:, 0] = 1.0  # background: every level 0
    expected[0] = 0.0
    expected[0, 2 * 9 + 0 * 3 + 0] = 1.0  # red (0.9, 0.12, 0.12): levels (2, 0, 0)
    torch.testing.assert_close(
        features[REGION_BLOCK], expected.flatten(), rtol=0, atol=1e-7
    )


def test_blob_bins_of_hand_drawn_square_and_triangle() -> None:
    square = torch.zeros(30, 30, dtype=torch.bool)
    square[:10, :10] = True  # fill 1, centre of mass halfway down, area 100/900
    triangle = torch.zeros(30, 30, dtype=torch.bool)
    # row k is 2k + 1 wide: fill 100/190, centre of mass at (6.15 + 0.5)/10
    for k in range(10):
        triangle[10 + k, 15 - k : 16 + k] = True
    images = torch.stack(
        [
            _paint(_background(), square, "blue"),
            _paint(_background(), triangle, "green"),
        ]
    )
    blobs = handcrafted_image_features(images)[:, BLOB_BLOCK]
    expected = torch.zeros(2, 9)
    expected[0, 2 * 2 + 0] = 1.0  # fill bin 2 (> 0.9), symmetric
    expected[1, 0 * 2 + 1] = 1.0  # fill bin 0 (< 0.66), bottom-heavy
    expected[:, 6 + 2] = 1.0  # area 0.111 > 0.08
    torch.testing.assert_close(blobs, expected, rtol=0, atol=0)


def test_blob_bins_agree_with_shapesworld_scene_graphs() -> None:
    """Every lone ShapesWorld object lands in the bin its shape and size predict."""
    world = ShapesWorld("val", size=150, min_objects=1, max_objects=1)
    blobs = handcrafted_image_features(world.render(range(150)))[:, BLOB_BLOCK]
    shape_bin = {"triangle": 1, "diamond": 0, "cross": 0, "circle": 2, "square": 4}
    size_bin = {"small": 6, "large": 7}
    for row, scene in enumerate(world.scenes(range(150))):
        obj = scene.objects[0]
        expected = torch.zeros(9)
        expected[shape_bin[obj.shape]] = expected[size_bin[obj.size]] = 1.0
        assert torch.equal(blobs[row], expected), (row, obj)


def test_edge_directions_of_hand_drawn_boundaries() -> None:
    """Vertical boundary -> bin 0, horizontal -> bin 4, the two diagonals -> bins 2 and
    6."""
    rows, cols = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    masks = [cols >= 10, rows >= 10, cols > rows, cols > 19 - rows]
    images = torch.stack([_paint(_background(20), mask, "white") for mask in masks])
    edges = handcrafted_image_features(images)[:, EDGE_BLOCK]
    torch.testing.assert_close(edges.argmax(dim=1), torch.tensor([0, 4, 6, 2]))
    torch.testing.assert_close(
        edges.max(dim=1).values, torch.ones(4), rtol=0, atol=1e-6
    )
    plain = handcrafted_image_features(_background(20)[None])[0]
    assert plain[EDGE_BLOCK].abs().sum() == 0 and plain[BLOB_BLOCK].abs().sum() == 0


def test_features_do_not_depend_on_chunking(
    monkeypatch: pytest.MonkeyPatch, test_split: dict
) -> None:
    images = test_split["images"][:8]
    whole = handcrafted_image_features(images)
    monkeypatch.setattr(matching, "_CHUNK", 3)
    assert torch.equal(handcrafted_image_features(images), whole)
    assert torch.equal(handcrafted_image_features(images[5:6])[0], whole[5])


def test_features_reject_bad_images() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        handcrafted_image_features(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="floats"):
        handcrafted_image_features(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least 3 pixels"):
        handcrafted_image_features(torch.zeros(1, 3, 2, 8))


# --------------------------------------------------------------------------- bag of
# words


def test_bag_of_words_counts_by_hand() -> None:
    counts = bag_of_words(
        ["A red circle, a RED square!", "blue"],
        ["red", "circle", "square", "blue", "green"],
    )
    assert counts.tolist() == [[2, 1, 1, 0, 0], [0, 0, 0, 1, 0]]


def test_grammar_vocabulary_covers_every_caption_word(test_split: dict) -> None:
    captions = test_split["captions"][:300]
    counts = bag_of_words(captions, caption_words())
    assert counts.sum(dim=1).tolist() == [
        len(re.findall(r"[a-z]+", c)) for c in captions
    ]


def test_bag_of_words_rejects_bad_vocabulary() -> None:
    with pytest.raises(ValueError, match="repeated"):
        bag_of_words(["a"], ["a", "b", "a"])
    with pytest.raises(ValueError, match="non-empty"):
        bag_of_words(["a"], [])
    with pytest.raises(TypeError, match=r"vocabulary\[1\]"):
        bag_of_words(["a"], ["a", 2])


# ---------------------------------------------------------------------------
# statistical matching


def test_correlation_matching_beats_chance(train_split: dict, test_split: dict) -> None:
    """Measured: R@1 about 0.8 both ways on 200 test images (chance: about 0.005)."""
    train, test = train_split, test_split
    scores = correlation_match(
        train["images"],
        train["captions"],
        train["owner"],
        test["images"],
        test["captions"],
    )
    assert scores.shape == (len(test_split["captions"]), N_TEST)
    metrics = _retrieval_from_scores(scores, test_split["owner"])
    print(f"CCA matching R@1: i2t {metrics['i2t_r1']:.3f}, t2i {metrics['t2i_r1']:.3f}")
    assert metrics["i2t_r1"] > 0.4 and metrics["t2i_r1"] > 0.4


def test_correlation_matching_needs_true_pairs(
    train_split: dict, test_split: dict
) -> None:
    """Control: trained on captions paired with random images, retrieval falls to
    chance."""
    train, test = train_split, test_split
    shuffled = train["owner"][
        torch.randperm(len(train["owner"]), generator=torch.Generator().manual_seed(0))
    ]
    scores = correlation_match(
        train["images"], train["captions"], shuffled, test["images"], test["captions"]
    )
    metrics = _retrieval_from_scores(scores, test_split["owner"])
    print(
        f"CCA matching on shuffled pairs R@1: i2t {metrics['i2t_r1']:.3f}, t2i "
        f"{metrics['t2i_r1']:.3f}"
    )
    assert metrics["i2t_r1"] < 0.06 and metrics["t2i_r1"] < 0.06


def test_matcher_is_cca_of_features_and_words_with_weighted_cosine(
    train_split: dict, test_split: dict
) -> None:
    """The matcher's scores equal the pipeline written out: CCA, weight by rho ** power,
    cosine."""
    images, captions, owner = (
        train_split["images"][:300],
        train_split["captions"][:1500],
        train_split["owner"][:1500],
    )
    matcher = CorrelationMatcher(n_components=10, reg=0.05, correlation_power=2.0).fit(
        images, captions, owner
    )
    vocabulary = caption_words()
    cca = CCA(10, reg=0.05).fit(
        handcrafted_image_features(images)[owner], bag_of_words(captions, vocabulary)
    )
    weights = cca.correlations.float() ** 2
    test_images, test_captions = test_split["images"][:20], test_split["captions"][:50]
    image_emb = F.normalize(
        cca.transform_x(handcrafted_image_features(test_images)) * weights, dim=1
    )
    text_emb = F.normalize(
        cca.transform_y(bag_of_words(test_captions, vocabulary)) * weights, dim=1
    )
    expected = text_emb @ image_emb.T
    torch.testing.assert_close(
        matcher.scores(test_images, test_captions), expected, rtol=0, atol=1e-5
    )


def test_matcher_rejects_misuse(test_split: dict) -> None:
    images, captions = test_split["images"][:4], test_split["captions"][:20]
    with pytest.raises(RuntimeError, match="not fitted"):
        CorrelationMatcher().embed_captions(captions)
    with pytest.raises(ValueError, match="one integer image index per caption"):
        CorrelationMatcher().fit(images, captions, torch.zeros(19, dtype=torch.long))
    with pytest.raises(ValueError, match="outside 0..3"):
        CorrelationMatcher().fit(images, captions, torch.full((20,), 4))
    with pytest.raises(ValueError, match="correlation_power"):
        CorrelationMatcher(correlation_power=-1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_features_and_matcher_match_cpu(
    train_split: dict, test_split: dict
) -> None:
    images = test_split["images"][:64]
    on_gpu = handcrafted_image_features(images.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(
        on_gpu.cpu(), handcrafted_image_features(images), rtol=0, atol=1e-5
    )
    train = (
        train_split["images"][:300],
        train_split["captions"][:1500],
        train_split["owner"][:1500],
    )
    cpu = CorrelationMatcher().fit(*train).scores(images, test_split["captions"][:100])
    gpu_matcher = CorrelationMatcher().fit(train[0].cuda(), train[1], train[2])
    gpu = gpu_matcher.scores(images.cuda(), test_split["captions"][:100])
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)

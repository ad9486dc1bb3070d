"""Caption metrics against pycocoevalcap's own scorers, hand-computed cases, and input
errors.

pycocoevalcap's Bleu, Rouge and Cider are pure Python, so they run here as the reference
on generated corpora (random vocabularies and seeds, empty and one-word candidates,
repeated n-grams, 1 to 7 references per image, single images) and on a small realistic
corpus. The tokeniser is checked against outputs recorded from pycocoevalcap's Java
PTBTokenizer, and against the tokenizer itself when Java is installed.
"""

from __future__ import annotations

import math
import random
import shutil
import sys

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from crossalign.metrics import captioning
from crossalign.metrics.captioning import (
    caption_metrics,
    cider_d,
    corpus_bleu,
    meteor,
    rouge_l,
    tokenize_caption,
)

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D")


def pycocoevalcap_scores(
    candidates: dict, references: dict, sigma: float = 6.0
) -> dict[str, float]:
    """The six scores from pycocoevalcap, fed the ``{id: [caption]}`` candidates it
    expects."""
    results = {image: [caption] for image, caption in candidates.items()}
    bleu, _ = Bleu(4).compute_score(references, results, verbose=0)
    rouge, _ = Rouge().compute_score(references, results)
    cider, _ = Cider(sigma=sigma).compute_score(references, results)
    return dict(zip(METRICS, [*bleu, float(rouge), float(cider)]))


def assert_same_scores(ours: dict[str, float], theirs: dict[str, float]) -> None:
    """Equal to float rounding: relative 1e-9 (far inside the 1e-6 promised), so tiny
    BLEU-4 values count too."""
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert math.isclose(ours[name], theirs[name], rel_tol=1e-9, abs_tol=1e-13), (
            name,
            ours[name],
            theirs[name],
        )


def random_corpus(
    seed: int, n_images: int, vocab_size: int
) -> tuple[dict[int, str], dict[int, list[str]]]:
    """A seeded corpus of 1-7 references per image and candidates of every awkward kind.

    Candidates are empty, one word, a repeated short n-gram, a reference with edits, or
    random; references are 1-15 words, with repeats likely from a small vocabulary.
    """
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab_size)]

    def caption(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    candidates: dict[int, str] = {}
    references: dict[int, list[str]] = {}
    for image in range(n_images):
        references[image] = [caption(1, 15) for _ in range(rng.randint(1, 7))]
        kind = rng.choice(["empty", "one word", "repeated", "edited", "random"])
        if kind == "empty":
            candidates[image] = ""
        elif kind == "one word":
            candidates[image] = rng.choice(words)
        elif kind == "repeated":
            candidates[image] = " ".join([caption(1, 2)] * rng.randint(2, 5))
        elif kind == "edited":
            source = rng.choice(references[image]).split()
            candidates[image] = " ".join(
                w if rng.random() < 0.7 else rng.choice(words) for w in source
            )
        else:
            candidates[image] = caption(1, 15)
    return candidates, references


@pytest.mark.parametrize(
    ("seed", "n_images", "vocab_size"),
    [
        (0, 1, 6),
        (1, 2, 3),
        (2, 3, 12),
        (3, 12, 4),
        (4, 30, 40),
        (5, 90, 150),
        (6, 200, 600),
        (7, 600, 2000),
    ],
)
def test_all_metrics_equal_pycocoevalcap_on_random_corpora(
    seed: int, n_images: int, vocab_size: int
) -> None:
    candidates, references = random_corpus(seed, n_images, vocab_size)
    ours = caption_metrics(candidates, references)
    assert_same_scores(ours, pycocoevalcap_scores(candidates, references))
    assert corpus_bleu(candidates, references) == [
        ours[f"BLEU-{n}"] for n in range(1, 5)
    ]
    assert rouge_l(candidates, references) == ours["ROUGE-L"]
    assert cider_d(candidates, references) == ours["CIDEr-D"]


def test_random_corpora_cover_the_awkward_cases() -> None:
    candidates, references = random_corpus(6, 200, 600)
    assert {len(refs) for refs in references.values()} == set(range(1, 8))
    assert "" in candidates.values()
    assert any(len(c.split()) == 1 for c in candidates.values())
    assert any(len(c.split()) > len(set(c.split())) for c in candidates.values())


@pytest.mark.parametrize(
    "candidate",
    ["", "w1", "w1 w1 w1 w1 w1"],
    ids=["empty", "one word", "one word repeated"],
)
def test_degenerate_candidates_equal_pycocoevalcap(candidate: str) -> None:
    _, references = random_corpus(7, 20, 10)
    candidates = dict.fromkeys(references, candidate)
    ours = caption_metrics(candidates, references)
    assert_same_scores(ours, pycocoevalcap_scores(candidates, references))
    if candidate == "":
        assert all(value == 0.0 for value in ours.values())


def test_single_image_corpus_equals_pycocoevalcap_and_has_zero_cider() -> None:
    candidates = {"only": "a dog runs on the grass"}
    references = {
        "only": [
            "a dog is running on the grass",
            "the dog runs",
            "a brown dog on grass",
        ]
    }
    ours = caption_metrics(candidates, references)
    assert_same_scores(ours, pycocoevalcap_scores(candidates, references))
    assert ours["CIDEr-D"] == 0.0  # log(N / df) = log(1 / 1) for every reference n-gram
    assert ours["BLEU-1"] > 0.5


REALISTIC_REFERENCES = {
    "beach": [
        "A black dog is running along the beach with a red ball in its mouth.",
        "A dog carries a ball across the wet sand.",
        "The black-and-white dog runs on the beach near the water.",
        "A dog plays fetch at the seashore",
        "A wet dog running on a sandy beach , holding a toy .",
    ],
    "bike": [
        "A man in a blue t-shirt rides his bike down a dirt path.",
        "A cyclist speeds along a trail in the woods.",
        "Mountain biker on a forest trail.",
        "A man riding a bicycle through the trees",
        "A person on a mountain bike is going down a hill .",
    ],
    "kids": [
        "Two young children are playing in a fountain on a hot day.",
        "Kids splash in the water of a city fountain.",
        "A boy and a girl run through the sprinklers.",
        "Two children play in the water jets.",
    ],
    "climber": [
        "A climber scales a steep rock face.",
        "A woman is rock climbing with a rope and harness.",
        "A person in a red helmet climbs a rock.",
    ],
    "street": [
        "People walk down a busy city street at night.",
        "A crowd of people crossing a street in the city.",
        "Pedestrians on a crowded sidewalk , lit by neon signs .",
        "Many people are walking in the street.",
        "A busy street with people and shops",
    ],
    "snow": [
        "A skier jumps off a snowy hill.",
        "A person on skis is in the air above the snow.",
        "A skier doing a trick in mid-air.",
        "Someone skiing down a mountain slope",
        "The man's skis are crossed as he jumps .",
    ],
    "guitar": [
        "A man plays the guitar on stage.",
        "A musician is playing an electric guitar.",
    ],
    "cat": [
        "A cat is sleeping on a couch.",
        "A gray cat naps on the sofa.",
        "The cat's asleep on a pillow.",
        "A kitten curled up on a cushion.",
        "A cat lying on a brown couch , with its eyes closed",
    ],
}
REALISTIC_CANDIDATES = {
    "beach": "A black dog is running on the beach with a ball.",
    "bike": "A man riding a bike on a dirt path.",
    "kids": "Two children are playing in the water.",
    "climber": "A man is climbing a rock.",
    "street": "A group of people walking down a street.",
    "snow": "A man is skiing down a snowy hill.",
    "guitar": "A man is playing a guitar.",
    "cat": "A dog is sleeping on a couch.",
}


def test_realistic_corpus_equals_pycocoevalcap() -> None:
    def tokenised(text: str) -> str:
        return " ".join(tokenize_caption(text))

    candidates = {
        image: tokenised(text) for image, text in REALISTIC_CANDIDATES.items()
    }
    references = {
        image: [tokenised(text) for text in texts]
        for image, texts in REALISTIC_REFERENCES.items()
    }
    ours = caption_metrics(candidates, references)
    assert_same_scores(ours, pycocoevalcap_scores(candidates, references))
    assert 0.3 < ours["BLEU-4"] < ours["BLEU-1"] < 1 and ours["CIDEr-D"] > 1


@pytest.mark.parametrize("max_n", [1, 2, 3])
def test_shorter_bleu_equals_pycocoevalcap(max_n: int) -> None:
    candidates, references = random_corpus(8, 40, 15)
    theirs, _ = Bleu(max_n).compute_score(
        references, {i: [c] for i, c in candidates.items()}, verbose=0
    )
    ours = corpus_bleu(candidates, references, max_n=max_n)
    assert len(ours) == max_n
    assert all(
        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-13) for a, b in zip(ours, theirs)
    )


@pytest.mark.parametrize("sigma", [1.0, 3.0, 20.0])
def test_cider_d_sigma_equals_pycocoevalcap(sigma: float) -> None:
    candidates, references = random_corpus(9, 40, 15)
    theirs, _ = Cider(sigma=sigma).compute_score(
        references, {i: [c] for i, c in candidates.items()}
    )
    assert math.isclose(
        cider_d(candidates, references, sigma=sigma), theirs, rel_tol=1e-9
    )


def test_irregular_spaces_are_split_as_pycocoevalcap_splits_them() -> None:
    # BLEU and CIDEr split on any whitespace, ROUGE on single spaces (a double space is
    # an empty token).
    candidates = {0: "a  dog runs ", 1: " two cats", 2: "a bird\tflies"}
    references = {
        0: ["a dog  runs", "dogs run"],
        1: ["two cats  sit"],
        2: ["a bird flies", "a  bird"],
    }
    assert_same_scores(
        caption_metrics(candidates, references),
        pycocoevalcap_scores(candidates, references),
    )


# --------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------

# The smoothing constants move a hand-computed precision by at most ~1e-9 relative.
SMOOTHED = 1e-6


@pytest.mark.parametrize(
    ("candidates", "references", "expected"),
    [
        # the, cat, on, the, mat match; "sat" does not: 5/6, equal lengths so no brevity
        # penalty.
        (["the cat sat on the mat"], [["the cat is on the mat"]], 5 / 6),
        # Clipping: "the" counts at most twice, as often as in the reference.
        (["the the the the the the the"], [["the cat is on the mat"]], 2 / 7),
        # Clipping uses the reference holding the n-gram most often (3 times in the
        # second).
        (["a a a a"], [["a b", "a a a c"]], 3 / 4),
        # Brevity penalty: 2 words against 6, exp(1 - 6/2).
        (["the cat"], [["the cat sat on the mat"]], math.exp(-2)),
        # A slightly short candidate is penalised too: 19 words against 20, exp(1 -
        # 20/19).
        (
            [" ".join("abcdefghijklmnopqrs")],
            [[" ".join("abcdefghijklmnopqrst")]],
            math.exp(1 - 20 / 19),
        ),
        # The closest reference length (2) is used: no penalty.
        (["the cat"], [["the cat sat on the mat", "a cat"]], 1.0),
        # Tie between lengths 3 and 5 for a 4-word candidate: the shorter wins, so no
        # penalty.
        (["a b c d"], [["a b c", "a b c d e"]], 1.0),
        # Corpus pooling: (2 + 0) / (2 + 4) = 1/3, where the mean of per-image BLEU-1
        # would be 1/2.
        (["a b", "c d e f"], [["a b"], ["w x y z"]], 1 / 3),
    ],
    ids=[
        "overlap",
        "clipping",
        "clip by best reference",
        "brevity",
        "slight brevity",
        "closest length",
        "tie",
        "pooling",
    ],
)
def test_bleu_1_hand_computed(
    candidates: list[str], references: list[list[str]], expected: float
) -> None:
    assert corpus_bleu(candidates, references, max_n=1)[0] == pytest.approx(
        expected, rel=SMOOTHED
    )


def test_bleu_4_without_a_4_gram_match_is_tiny_but_positive() -> None:
    candidates = ["a b c d", "e f g h"]
    references = [["a b c x"], ["e f g y"]]
    bleu = corpus_bleu(candidates, references)
    # p1 = 6/8, p2 = 4/6, p3 = 2/4, p4 = 1e-15 / 2: BLEU-4 = (p1 p2 p3 p4)^(1/4).
    assert bleu[:3] == pytest.approx(
        [0.75, (0.75 * 4 / 6) ** 0.5, (0.75 * 4 / 6 * 0.5) ** (1 / 3)], rel=SMOOTHED
    )
    assert bleu[3] == pytest.approx(
        (0.75 * 4 / 6 * 0.5 * 1e-15 / 2) ** 0.25, rel=SMOOTHED
    )
    assert 0 < bleu[3] < 1e-3


def rouge_f(precision: float, recall: float) -> float:
    """ROUGE-L's F-measure with beta = 1.2."""
    return (1 + 1.2**2) * precision * recall / (recall + 1.2**2 * precision)


@pytest.mark.parametrize(
    ("candidate", "references", "expected"),
    [
        # LCS("a b c d", "a c e d f") = "a c d": P = 3/4, R = 3/5.
        ("a b c d", ["a c e d f"], rouge_f(3 / 4, 3 / 5)),
        # Precision and recall are maximised separately: P = 1 from the long reference,
        # R = 1 from the short one, so F = 1 though neither reference alone gives it.
        ("a b c d", ["a b", "a b c d e f g h"], 1.0),
        # Order matters: LCS("a b c", "c b a") = 1.
        ("a b c", ["c b a"], rouge_f(1 / 3, 1 / 3)),
        ("a b", ["c d"], 0.0),
        ("", ["a b"], 0.0),
    ],
    ids=["lcs", "separate maxima", "order", "no overlap", "empty candidate"],
)
def test_rouge_l_hand_computed(
    candidate: str, references: list[str], expected: float
) -> None:
    assert rouge_l([candidate], [references]) == pytest.approx(expected, rel=1e-12)


def test_rouge_l_is_the_mean_over_images() -> None:
    assert rouge_l(["a b", "a b c d"], [["a b"], ["a c e d f"]]) == pytest.approx(
        (1 + rouge_f(3 / 4, 3 / 5)) / 2
    )


def test_cider_d_of_perfect_captions_with_distinct_words_is_10() -> None:
    # Every n-gram is in one image out of 2 (idf = log 2 for all), so each order's
    # cosine is 1.
    assert cider_d(
        ["a b c d e", "f g h i"], [["a b c d e"], ["f g h i"]]
    ) == pytest.approx(10.0, rel=1e-12)
    # A one-word caption has only a unigram: orders 2-4 give 0, so 10 x 1/4.
    assert cider_d(["a", "b"], [["a"], ["b"]]) == pytest.approx(2.5, rel=1e-12)


def test_lcs_length_equals_dynamic_programming() -> None:
    def lcs_table(first: list[str], second: list[str]) -> int:
        row = [0] * (len(second) + 1)
        for token in first:
            diagonal = 0
            for j, other in enumerate(second, start=1):
                diagonal, row[j] = (
                    row[j],
                    diagonal + 1 if token == other else max(row[j], row[j - 1]),
                )
        return row[-1]

    rng = random.Random(0)
    for _ in range(300):
        first = rng.choices("abcd", k=rng.randint(0, 12))
        second = rng.choices("abcde", k=rng.randint(0, 12))
        assert captioning._lcs_length(first, second) == lcs_table(first, second), (
            first,
            second,
        )


# --------------------------------------------------------------------------------------
# Input forms and errors
# --------------------------------------------------------------------------------------


def test_lists_dicts_and_pycocoevalcap_form_give_the_same_scores() -> None:
    candidates, references = random_corpus(10, 15, 8)
    as_dicts = caption_metrics(candidates, references)
    ids = list(references)
    assert (
        caption_metrics([candidates[i] for i in ids], [references[i] for i in ids])
        == as_dicts
    )
    assert (
        caption_metrics({i: [c] for i, c in candidates.items()}, references) == as_dicts
    )
    shuffled = dict(reversed(list(candidates.items())))
    assert caption_metrics(shuffled, references) == pytest.approx(as_dicts, rel=1e-12)


@pytest.mark.parametrize(
    ("candidates", "references", "error", "message"),
    [
        (
            {1: "a"},
            {2: ["a"]},
            ValueError,
            r"same image ids.*no references: \[1\].*no candidate: \[2\]",
        ),
        (["a", "b"], [["a"]], ValueError, "2 candidates but 1 reference lists"),
        ([], [], ValueError, "corpus is empty"),
        ({1: "a"}, [["a"]], TypeError, "same form"),
        ("a dog", [["a dog"]], TypeError, "not a single str"),
        ({1: "a"}, {1: []}, ValueError, "references of image 1 are an empty list"),
        ({1: "a"}, {1: "a dog"}, TypeError, "got one str; wrap it in a list"),
        (["a"], [["a dog", "  "]], ValueError, "reference 1 at index 0 is empty"),
        (["a"], [["a dog", 3]], TypeError, "reference 1 at index 0 must be a str"),
        (
            [["a", "b"]],
            [["a"]],
            TypeError,
            "candidate at index 0 must be one caption string",
        ),
        ([None], [["a"]], TypeError, "candidate at index 0"),
    ],
    ids=[
        "ids",
        "lengths",
        "empty",
        "mixed forms",
        "str corpus",
        "no references",
        "str references",
        "empty reference",
        "non-str reference",
        "two candidates",
        "None candidate",
    ],
)
def test_bad_inputs_raise_clear_errors(
    candidates: object, references: object, error: type, message: str
) -> None:
    for metric in (caption_metrics, corpus_bleu, rouge_l, cider_d):
        with pytest.raises(error, match=message):
            metric(candidates, references)


@pytest.mark.parametrize("max_n", [0, 5, 2.0, True])
def test_corpus_bleu_rejects_orders_outside_1_to_4(max_n: object) -> None:
    with pytest.raises(ValueError, match="max_n must be an integer from 1 to 4"):
        corpus_bleu(["a"], [["a"]], max_n=max_n)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("inf"), float("nan"), "6"])
def test_cider_d_rejects_bad_sigma(sigma: object) -> None:
    with pytest.raises(ValueError, match="sigma must be a positive finite number"):
        cider_d(["a"], [["a"]], sigma=sigma)


# --------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------

# Outputs recorded from pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1 with
# -lowerCase, then its punctuation filter).
PTB_TOKENISED = {
    "A dog runs.": "a dog runs",
    "A Dog, a CAT; and a bird: all running!": "a dog a cat and a bird all running",
    "The dog's ball isn't red.": "the dog 's ball is n't red",
    "They're sure it can't be, and we'll see; I'm here, you've gone, he'd go.": (
        "they 're sure it ca n't be and we 'll see i 'm here you 've gone he 'd go"
    ),
    "A man in a t-shirt and black-and-white shoes.": (
        "a man in a t-shirt and black-and-white shoes"
    ),
    "A 3-year-old boy holds 1,000 balloons at 10:30 on 3.5 acres.": (
        "a 3-year-old boy holds 1,000 balloons at 10:30 on 3.5 acres"
    ),
    "She said \"hello\" and 'goodbye' to the dogs' owner.": (
        "she said hello and goodbye to the dogs owner"
    ),
    "Wait... what?! Really?? No!": "wait what ?! really ?? no",
    "A sign reads $5 & 20% off #1 (cheap) [new] {big}": (
        "a sign reads $ 5 & 20 % off # 1 "
        "-lrb- cheap -rrb- -lsb- new -rsb- -lcb- big -rcb-"
    ),
    "A woman from the U.S. meets Mr. Smith at 5 p.m. on Main St.": (
        "a woman from the u.s. meets mr. smith at 5 p.m. on main st."
    ),
    "Two dogs -- one big - one small -- play.": "two dogs one big one small play",
    "I cannot wanna gonna do it.": "i can not wan na gon na do it",
    "a dog ' s ball and it 's here": "a dog s ball and it 's here",
    "Café naïve dog\u2019s \u201cquoted\u201d \u2018single\u2019 words": (
        "café naïve dog 's quoted single words"
    ),
    "  leading and trailing spaces   ": "leading and trailing spaces",
    "A": "a",
    ".": "",
    "A man 's face/hand and o'clock": "a man 's face/hand and o'clock",
}


@pytest.mark.parametrize("text", list(PTB_TOKENISED))
def test_tokenize_caption_matches_recorded_ptb_output(text: str) -> None:
    assert " ".join(tokenize_caption(text)) == PTB_TOKENISED[text]


def test_tokenize_caption_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="expects a str, got list"):
        tokenize_caption(["a", "dog"])


@pytest.mark.skipif(
    shutil.which("java") is None, reason="the PTB tokenizer of pycocoevalcap needs Java"
)
def test_tokenize_caption_matches_the_java_ptb_tokenizer() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = list(PTB_TOKENISED) + [
        text for texts in REALISTIC_REFERENCES.values() for text in texts
    ]
    tokenised = PTBTokenizer().tokenize(
        {i: [{"caption": text}] for i, text in enumerate(texts)}
    )
    for i, text in enumerate(texts):
        assert " ".join(tokenize_caption(text)) == tokenised[i][0], text


# --------------------------------------------------------------------------------------
# METEOR (Java only)
# --------------------------------------------------------------------------------------


def test_meteor_without_java_says_java_is_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="METEOR needs Java.*no 'java' executable"):
        meteor(["a dog"], [["a dog runs"]])


def test_meteor_without_pycocoevalcap_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    # makes the import fail
    monkeypatch.setitem(sys.modules, "pycocoevalcap.meteor.meteor", None)
    with pytest.raises(RuntimeError, match="METEOR needs the pycocoevalcap package"):
        meteor(["a dog"], [["a dog runs"]])

"""Tests for the count-based n-gram language models (add-k and interpolated
Kneser-Ney)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from crossalign.models.ngram import BOS, EOS, UNK, NGramLM

# Tiny corpus used for the hand-computed values. Padded for a bigram model:
#   <s> a b </s>     <s> a c </s>     <s> b a </s>
# V = {</s>, <unk>, a, b, c}, |V| = 5.
TINY = [["a", "b"], ["a", "c"], ["b", "a"]]

SMOOTHINGS = [("add_k", {"k": 0.5}), ("kneser_ney", {"discount": 0.75})]


def _models(orders=(1, 2, 3, 4)):
    return [
        NGramLM(order=order, smoothing=smoothing, **params)
        for order in orders
        for smoothing, params in SMOOTHINGS
    ]


def _training_corpus() -> list[list[str]]:
    rng = np.random.default_rng(0)
    words = ["the", "red", "blue", "circle", "square", "is", "left", "of", "above"]
    return [
        [words[i] for i in rng.integers(0, len(words), size=rng.integers(0, 7))]
        for _ in range(40)
    ]


@pytest.mark.parametrize("model", _models(), ids=repr)
def test_distribution_sums_to_one_for_seen_unseen_and_start_contexts(model):
    model.fit(_training_corpus())
    vocabulary = model.vocabulary
    assert BOS not in vocabulary and EOS in vocabulary and UNK in vocabulary
    rng = np.random.default_rng(1)
    tokens = list(vocabulary) + [BOS, "never-seen"]
    contexts = [
        (),
        (BOS,),
        ("the", BOS),
        (BOS, BOS, BOS),
        ("never-seen",),
        ("red", "never-seen", BOS),
    ]
    contexts += [tuple(rng.choice(tokens, size=rng.integers(0, 5))) for _ in range(40)]
    for context in contexts:
        distribution = model.distribution(context)
        assert set(distribution) == set(vocabulary)
        assert math.fsum(distribution.values()) == pytest.approx(1.0, abs=1e-9)
        assert min(distribution.values()) > 0
        for word in vocabulary:
            assert model.prob(word, context) == pytest.approx(
                distribution[word], rel=1e-12
            )
            assert model.logprob(word, context) == pytest.approx(
                math.log(distribution[word]), rel=1e-12
            )


def test_add_k_matches_hand_computation():
    lm = NGramLM(order=2, smoothing="add_k", k=1.0).fit(TINY)
    assert lm.vocabulary == ("</s>", "<unk>", "a", "b", "c")
    # Bigram counts: c(<s> a) = 2, c(<s> b) = 1, so c(<s>) = 3; c(a b) = c(a c) = c(a
    # </s>) = 1, c(a) = 3.
    # empty context = sentence start
    assert lm.prob("a", ()) == pytest.approx((2 + 1) / (3 + 5))
    assert lm.prob("b", (BOS,)) == pytest.approx((1 + 1) / (3 + 5))
    assert lm.prob("c", ("a",)) == pytest.approx((1 + 1) / (3 + 5))
    assert lm.prob("a", ("a",)) == pytest.approx((0 + 1) / (3 + 5))
    # c(c </s>) = 1, c(c) = 1.
    assert lm.prob(EOS, ("b", "c")) == pytest.approx((1 + 1) / (1 + 5))
    # An unknown word is scored as <unk>; an unseen context gives the uniform 1/|V|.
    assert lm.prob("zebra", ("a",)) == pytest.approx(1 / 8)
    assert lm.prob("a", ("zebra",)) == pytest.approx(1 / 5)


def test_kneser_ney_bigram_matches_hand_computation():
    lm = NGramLM(order=2, smoothing="kneser_ney", discount=0.5).fit(TINY)
    # Unigram continuation counts N1+(. w): a after {<s>, b} = 2, b after {a, <s>} = 2,
    # c after {a} = 1, </s> after {b, c, a} = 3, <unk> = 0. Total 8, 4 distinct words,
    # so the uniform weight is 0.5 * 4 / 8.
    p1 = {
        "a": 1.5 / 8 + 0.25 / 5,
        "b": 1.5 / 8 + 0.25 / 5,
        "c": 0.5 / 8 + 0.25 / 5,
        EOS: 2.5 / 8 + 0.25 / 5,
        UNK: 0.25 / 5,
    }
    assert p1["a"] == pytest.approx(0.2375) and p1["c"] == pytest.approx(0.1125)
    # Context "a": b, c, </s> once each: c(a) = 3, N1+(a .) = 3.
    # = 0.2229166...
    assert lm.prob("c", ("a",)) == pytest.approx(0.5 / 3 + 0.5 * 3 / 3 * p1["c"])
    assert lm.prob("a", ("a",)) == pytest.approx(0.5 * 3 / 3 * p1["a"])  # = 0.11875
    assert lm.prob(UNK, ("a",)) == pytest.approx(0.5 * p1[UNK])
    # Unseen context "<unk>": the whole mass comes from the unigram level.
    for word, expected in p1.items():
        assert lm.prob(word, ("zebra",)) == pytest.approx(expected)


def test_kneser_ney_trigram_uses_continuation_counts_at_the_middle_level():
    lm = NGramLM(order=3, smoothing="kneser_ney", discount=0.5).fit(TINY)
    # Trigram types: (<s> <s> a) x2, (<s> a b), (a b </s>), (<s> a c), (a c </s>), (<s>
    # <s> b), (<s> b a), (b a </s>). Every bigram has a continuation count of 1, e.g.
    # N1+(. <s> a) = 1 although c(<s> a) = 2. Unigram level as in the bigram test: P1(a)
    # = 0.2375, P1(c) = 0.1125.
    # bigram level, context a: {b, c, </s>} once each
    p2_c_given_a = 0.5 / 3 + 0.5 * 3 / 3 * 0.1125
    # Trigram context (<s>, a): b once, c once -> c = 2, N1+ = 2.
    # = 0.3614583...
    assert lm.prob("c", ("a",)) == pytest.approx(0.5 / 2 + 0.5 * 2 / 2 * p2_c_given_a)
    # Unseen trigram context (<unk>, <s>) backs off to the bigram level, context <s>:
    # continuation counts a: 1, b: 1 (not the raw counts 2 and 1): 0.5 / 2 + 0.5 * 2 / 2
    # * P1(a).
    # = 0.36875
    assert lm.prob("a", ("zebra", BOS)) == pytest.approx(0.5 / 2 + 0.5 * 0.2375)


def test_kneser_ney_unigram_level_prefers_words_completing_many_contexts():
    # "francisco" occurs 6 times, always after "san"; "glasses" occurs 3 times, after
    # three different words.
    corpus = [["san", "francisco"]] * 6 + [
        ["reading", "glasses"],
        ["new", "glasses"],
        ["sun", "glasses"],
    ]
    kn = NGramLM(order=2, smoothing="kneser_ney", discount=0.75).fit(corpus)
    raw = NGramLM(order=1, smoothing="add_k", k=1.0).fit(corpus)
    # (6 + 1) / (27 + 8) vs (3 + 1) / (27 + 8)
    assert raw.prob("francisco") > raw.prob("glasses")
    # an unseen context exposes the unigram (continuation) level alone
    unseen = ("zebra",)
    assert kn.prob("francisco", unseen) < kn.prob("glasses", unseen)
    # Continuation counts: francisco 1, glasses 3, san/reading/new/sun 1 each (after
    # <s>), </s> 2 (after francisco, glasses): total 10 over 7 distinct words, uniform
    # weight 0.75 * 7 / 10 over |V| = 8.
    assert len(kn.vocabulary) == 8
    floor = 0.75 * 7 / 10 / 8
    assert kn.prob("francisco", unseen) == pytest.approx(0.25 / 10 + floor)
    assert kn.prob("glasses", unseen) == pytest.approx(2.25 / 10 + floor)


def test_perplexity_equals_exp_of_mean_negative_log_probability_by_hand():
    lm = NGramLM(order=2, smoothing="add_k", k=1.0).fit(TINY)
    held_out = [["a", "c"], ["zebra"]]
    # a c: P(a|<s>) = 3/8, P(c|a) = 2/8, P(</s>|c) = 2/6; zebra -> <unk>: P(<unk>|<s>) =
    # 1/8, P(</s>|<unk>) = 1/5 (unseen context). Five predicted tokens.
    logs = [
        math.log(3 / 8),
        math.log(2 / 8),
        math.log(2 / 6),
        math.log(1 / 8),
        math.log(1 / 5),
    ]
    assert lm.perplexity(held_out) == pytest.approx(math.exp(-sum(logs) / 5))
    kn = NGramLM(order=3, smoothing="kneser_ney").fit(TINY)
    assert math.isfinite(kn.perplexity(held_out))


def test_add_k_perplexity_approaches_vocabulary_size_for_huge_k():
    lm = NGramLM(order=3, smoothing="add_k", k=1e9).fit(_training_corpus())
    assert lm.perplexity([["the", "red", "circle"], ["zebra", "is"]]) == pytest.approx(
        len(lm.vocabulary), rel=1e-6
    )


@pytest.mark.parametrize("smoothing", ["add_k", "kneser_ney"])
def test_sampling_is_reproducible_in_vocabulary_and_stops_at_end(smoothing):
    lm = NGramLM(order=2, smoothing=smoothing).fit(_training_corpus())
    first = [lm.sample(rng=np.random.default_rng(7), max_len=12) for _ in range(3)]
    again = [lm.sample(rng=np.random.default_rng(7), max_len=12) for _ in range(3)]
    assert first == again
    assert lm.sample(rng=3) == lm.sample(rng=3)
    rng = np.random.default_rng(11)
    samples = [lm.sample(("the",), max_len=12, rng=rng) for _ in range(200)]
    assert len({tuple(s) for s in samples}) > 10
    for sample in samples:
        assert 1 <= len(sample) <= 12
        assert set(sample) <= set(lm.vocabulary)
        assert EOS not in sample[:-1]
        assert (sample[-1] == EOS) or len(sample) == 12
    assert any(sample[-1] == EOS for sample in samples)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sampling_frequencies_follow_the_tempered_distribution(temperature):
    lm = NGramLM(order=2, smoothing="kneser_ney", discount=0.5).fit(TINY)
    probs = np.array([lm.prob(word, ("a",)) for word in lm.vocabulary])
    tempered = probs ** (1 / temperature) / np.sum(probs ** (1 / temperature))
    rng = np.random.default_rng(0)
    draws = 20000
    counts = dict.fromkeys(lm.vocabulary, 0)
    for _ in range(draws):
        counts[lm.sample(("a",), max_len=1, temperature=temperature, rng=rng)[0]] += 1
    for word, expected in zip(lm.vocabulary, tempered):
        assert counts[word] / draws == pytest.approx(
            expected, abs=4 * math.sqrt(expected * (1 - expected) / draws)
        )


def test_temperature_zero_is_greedy_argmax():
    lm = NGramLM(order=3, smoothing="kneser_ney").fit(_training_corpus())
    history, expected = ["the"], []
    while len(expected) < 8 and (not expected or expected[-1] != EOS):
        distribution = lm.distribution(history)
        best = max(distribution, key=distribution.get)
        expected.append(best)
        history.append(best)
    for seed in range(3):
        assert lm.sample(("the",), max_len=8, temperature=0, rng=seed) == expected
    # A tiny positive temperature concentrates essentially all mass on the argmax too.
    assert lm.sample(("the",), max_len=8, temperature=1e-4, rng=0) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order": 0}, "order"),
        ({"order": 2.5}, "order"),
        ({"smoothing": "witten_bell"}, "smoothing"),
        ({"k": 0.0}, "k"),
        ({"k": -1.0}, "k"),
        ({"discount": 0.0}, "discount"),
        ({"discount": 1.0}, "discount"),
        ({"discount": 1.5}, "discount"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NGramLM(**kwargs)


def test_bad_data_and_calls_raise_clear_errors():
    lm = NGramLM(order=2)
    with pytest.raises(RuntimeError, match="fit"):
        lm.prob("a", ())
    with pytest.raises(ValueError, match="at least one sentence"):
        lm.fit([])
    with pytest.raises(ValueError, match="at least one sentence"):
        lm.fit(iter(()))
    with pytest.raises(TypeError, match="tokenise"):
        lm.fit(["a raw string"])
    with pytest.raises(ValueError, match="sentence 1"):
        lm.fit([["a"], ["b", EOS]])
    lm.fit(TINY)
    with pytest.raises(ValueError, match="never predicted"):
        lm.prob(BOS, ())
    with pytest.raises(TypeError, match="context"):
        lm.distribution("a")
    with pytest.raises(ValueError, match="at least one sentence"):
        lm.perplexity([])
    with pytest.raises(ValueError, match="max_len"):
        lm.sample(max_len=0)
    with pytest.raises(ValueError, match="temperature"):
        lm.sample(temperature=-1.0)


def test_refitting_replaces_previous_counts():
    lm = NGramLM(order=2, smoothing="add_k").fit([["x", "y"]])
    lm.fit(TINY)
    assert "x" not in lm.vocabulary
    assert lm.prob("x", ()) == lm.prob(UNK, ())


def test_trigram_kneser_ney_beats_unigram_on_shapesworld_captions():
    from crossalign.data import ShapesWorld
    from crossalign.data.vocab import simple_tokenize

    def tokenised(split, size):
        world = ShapesWorld(split, size=size)
        return [
            simple_tokenize(caption)
            for i in range(size)
            for caption in world.captions(i)
        ]

    train, held_out = tokenised("train", 300), tokenised("val", 100)
    trigram = NGramLM(order=3, smoothing="kneser_ney").fit(train)
    unigram = NGramLM(order=1, smoothing="kneser_ney").fit(train)
    trigram_ppl, unigram_ppl = (
        trigram.perplexity(held_out),
        unigram.perplexity(held_out),
    )
    print(
        f"ShapesWorld held-out perplexity: trigram KN {trigram_ppl:.2f}, unigram "
        f"{unigram_ppl:.2f}"
    )
    assert math.isfinite(trigram_ppl) and 1 < trigram_ppl < unigram_ppl < len(
        unigram.vocabulary
    )
    assert all(
        math.isclose(sum(trigram.distribution(c).values()), 1.0, abs_tol=1e-9)
        for c in itertools.islice((tuple(s[:2]) for s in held_out), 50)
    )

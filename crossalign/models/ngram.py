"""Count-based n-gram language models: add-k and interpolated Kneser-Ney smoothing.

An n-gram model of order ``n`` predicts each word from the ``n - 1`` words before it,
``P(w | h)`` with ``h = (w_{i-n+1}, ..., w_{i-1})``, using counts from a training
corpus.

Sentences and vocabulary
    Each training sentence is padded with ``n - 1`` start symbols ``<s>`` and one end
    symbol ``</s>``: for ``n = 3``, ``["a", "dog"]`` becomes ``<s> <s> a dog </s>`` and
    the model is trained to predict ``a``, ``dog`` and ``</s>``. ``<s>`` only ever
    appears as context, so it is not in the prediction vocabulary ``V``, which holds
    every word seen in training plus ``</s>`` and ``<unk>``. Words unseen at fit time
    (in contexts and in predictions) are mapped to ``<unk>``. Rule for ``<unk>``: it has
    no reserved count; its probability is exactly what the smoothing gives a word with
    zero count (``k`` pseudo-counts under add-k, the uniform floor under Kneser-Ney),
    unless the training sentences themselves contain ``<unk>``. A context shorter than
    ``n - 1`` words is the start of a sentence and is left-padded with ``<s>``; a longer
    one is cut to its last ``n - 1`` words.

Add-k (Lidstone) smoothing
    ``P(w | h) = (c(h, w) + k) / (c(h) + k |V|)``, where ``c(h, w)`` counts the n-gram
    ``h w`` and ``c(h) = sum_w c(h, w)``. An unseen context gets the uniform
    distribution ``1 / |V|``. ``k = 1`` is Laplace smoothing; a huge ``k`` tends to the
    uniform distribution.

Interpolated Kneser-Ney (Chen & Goodman, 1998), one absolute discount ``0 < D < 1``
    Highest order (``m = n``), from counts ``c``::

        P_n(w | h) = max(c(h, w) - D, 0) / c(h)  +  D N1+(h .) / c(h) * P_{n-1}(w | h')

    where ``h'`` drops the first word of ``h`` and ``N1+(h .)`` is the number of
    distinct words seen after ``h``. Lower orders (``1 <= m < n``) replace counts by
    *continuation counts* ``N1+(. g) = |{v : c(v g) > 0}|``, the number of distinct
    words seen before the m-gram ``g``::

        P_m(w | h) = max(N1+(. h w) - D, 0) / N1+(. h .)  +  D N1+(h .) / N1+(. h .) *
        P_{m-1}(w | h')

    with ``N1+(. h .) = sum_w N1+(. h w)`` and ``N1+(h .) = |{w : N1+(. h w) > 0}|``.
    The recursion ends at the uniform distribution ``P_0(w) = 1 / |V|``, so every word
    of ``V`` has a positive probability. A context never seen at some level (denominator
    zero) backs off entirely: ``P_m(w | h) = P_{m-1}(w | h')``. Each level sums to one
    because the discounted mass ``D N1+(h .)`` is exactly what the interpolation weight
    hands to the level below. Continuation counts are why "francisco", frequent but only
    ever after "san", gets a low unigram probability: the unigram level asks "how many
    contexts does this word complete?", not "how often does it occur?".

Probabilities are floats; ``logprob`` is the natural logarithm and perplexity is
``exp(-mean log P)`` over every predicted token, ``</s>`` included. ``sample`` draws
words with a temperature (``temperature = 0`` is greedy argmax); top-k and top-p
truncation are left to the neural language models, whose distributions are tensors.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from crossalign.utils import is_integral, is_real

__all__ = ["BOS", "EOS", "NGramLM", "SMOOTHINGS", "UNK"]

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
SMOOTHINGS = ("kneser_ney", "add_k")


class _CountTable:
    """Counts of the words following each context at one n-gram level, with per-context
    totals."""

    def __init__(self, counts: dict[tuple[str, ...], Counter]) -> None:
        self.counts = counts
        self.totals = {
            context: sum(followers.values()) for context, followers in counts.items()
        }


class NGramLM:
    """An n-gram language model over word tokens with add-k or interpolated Kneser-Ney
    smoothing.

    Args:
        order: n, the number of words in an n-gram (1 = unigram, 3 = trigram); at least
        1. smoothing: ``"kneser_ney"`` (interpolated, Chen & Goodman) or ``"add_k"``. k:
        pseudo-count added to every n-gram under add-k; must be > 0 (unused by
        Kneser-Ney). discount: absolute discount ``D`` of Kneser-Ney, in the open
        interval (0, 1)
            (unused by add-k).

    The formulas and the treatment of ``<s>``, ``</s>`` and ``<unk>`` are in the module
    docstring.

    >>> lm = NGramLM(order=2, smoothing="add_k", k=1.0).fit([["a", "b"], ["a"]])
    >>> lm.vocabulary
    ('</s>', '<unk>', 'a', 'b')
    >>> lm.prob("b", ("a",))  # (c(a b) + 1) / (c(a) + 4) = 2 / 6
    0.3333333333333333
    """

    def __init__(
        self,
        order: int = 3,
        smoothing: str = "kneser_ney",
        k: float = 1.0,
        discount: float = 0.75,
    ) -> None:
        if isinstance(order, bool) or not is_integral(order) or order < 1:
            raise ValueError(
                "order must be an integer >= 1 (1 = unigram, 2 = bigram, ...), got "
                f"{order!r}"
            )
        if smoothing not in SMOOTHINGS:
            raise ValueError(
                f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}"
            )
        if isinstance(k, bool) or not is_real(k) or not (math.isfinite(k) and k > 0):
            raise ValueError(
                f"k (the add-k pseudo-count) must be a finite number > 0, got {k!r}"
            )
        if isinstance(discount, bool) or not is_real(discount) or not 0 < discount < 1:
            raise ValueError(
                "discount (Kneser-Ney's D) must lie strictly between 0 and 1, got "
                f"{discount!r}"
            )
        self.order = int(order)
        self.smoothing = smoothing
        self.k = float(k)
        self.discount = float(discount)
        self._vocabulary: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._levels: dict[int, _CountTable] = {}

    def __repr__(self) -> str:
        parameter = (
            f"k={self.k}" if self.smoothing == "add_k" else f"discount={self.discount}"
        )
        return (
            f"NGramLM(order={self.order}, smoothing={self.smoothing!r}, {parameter}, "
            f"|V|={len(self._vocabulary)})"
        )

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The prediction vocabulary, sorted: training words plus ``</s>`` and ``<unk>``
        (never ``<s>``)."""
        self._check_fitted()
        return self._vocabulary

    def fit(self, sentences: Iterable[Sequence[str]]) -> NGramLM:
        """Count the n-grams of tokenised ``sentences`` (lists of words) and return
        ``self``.

        Fitting again replaces what was learnt before.
        """
        padded = [
            self._pad(_check_sentence(sentence, row))
            for row, sentence in enumerate(sentences)
        ]
        if not padded:
            raise ValueError(
                "fit needs at least one sentence; got an empty iterable of sentences"
            )
        words = {word for sentence in padded for word in sentence[self.order - 1 :]}
        self._vocabulary = tuple(sorted(words | {EOS, UNK}))
        self._index = {word: i for i, word in enumerate(self._vocabulary)}

        n = self.order
        top: dict[tuple[str, ...], Counter] = defaultdict(Counter)
        for sentence in padded:
            for i in range(n - 1, len(sentence)):
                top[tuple(sentence[i - n + 1 : i])][sentence[i]] += 1
        self._levels = {n: _CountTable(dict(top))}
        if self.smoothing == "kneser_ney":
            self._levels.update(_continuation_levels(top, n))
        return self

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(``word`` | ``context``); unseen words are scored as ``<unk>``."""
        self._check_fitted()
        if word == BOS:
            raise ValueError(
                f"{BOS!r} is never predicted (it only pads contexts); ask for a "
                "vocabulary word"
            )
        word = word if word in self._index else UNK
        history = self._history(context)
        if self.smoothing == "add_k":
            table = self._levels[self.order]
            followers = table.counts.get(history)
            count, total = (
                (followers[word], table.totals[history])
                if followers is not None
                else (0, 0)
            )
            return (count + self.k) / (total + self.k * len(self._vocabulary))
        return self._kneser_ney_prob(word, history, self.order)

    def logprob(self, word: str, context: Sequence[str] = ()) -> float:
        """Natural logarithm of :meth:`prob`."""
        return math.log(self.prob(word, context))

    def distribution(self, context: Sequence[str] = ()) -> dict[str, float]:
        """P(w | ``context``) for every w in :attr:`vocabulary` (sums to one)."""
        self._check_fitted()
        return dict(
            zip(
                self._vocabulary,
                self._distribution_array(self._history(context)).tolist(),
            )
        )

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """exp of the mean negative log probability per predicted token (``</s>``
        included)."""
        self._check_fitted()
        total_logprob, tokens = 0.0, 0
        for row, sentence in enumerate(sentences):
            padded = self._pad(_check_sentence(sentence, row))
            for i in range(self.order - 1, len(padded)):
                total_logprob += self.logprob(padded[i], padded[:i])
                tokens += 1
        if tokens == 0:
            raise ValueError(
                "perplexity needs at least one sentence; got an empty iterable of "
                "sentences"
            )
        return math.exp(-total_logprob / tokens)

    def sample(
        self,
        context: Sequence[str] = (),
        max_len: int = 30,
        temperature: float = 1.0,
        rng: np.random.Generator | int | None = None,
    ) -> list[str]:
        """Generate words after ``context`` until ``</s>`` or ``max_len`` words.

        Each word is drawn from ``P(w | h) ** (1 / temperature)``, renormalised: below 1
        sharpens the distribution, above 1 flattens it, and ``temperature = 0`` picks
        the most probable word (the first in :attr:`vocabulary` order on ties). ``rng``
        is a numpy Generator or an integer seed (``None``: fresh entropy). The returned
        list excludes ``context`` and ends with ``</s>`` exactly when the sentence was
        finished within ``max_len`` words.
        """
        self._check_fitted()
        if isinstance(max_len, bool) or not is_integral(max_len) or max_len < 1:
            raise ValueError(f"max_len must be an integer >= 1, got {max_len!r}")
        if (
            isinstance(temperature, bool)
            or not is_real(temperature)
            or not (math.isfinite(temperature) and temperature >= 0)
        ):
            raise ValueError(
                "temperature must be a finite number >= 0 (0 = greedy), got "
                f"{temperature!r}"
            )
        generator = (
            rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        )
        history = list(context)
        generated: list[str] = []
        while len(generated) < max_len:
            probs = self._distribution_array(self._history(history))
            word = self._vocabulary[_draw(probs, float(temperature), generator)]
            generated.append(word)
            history.append(word)
            if word == EOS:
                break
        return generated

    def _check_fitted(self) -> None:
        """Raise a RuntimeError when the model has not been fitted."""
        if not self._levels:
            raise RuntimeError(
                "this NGramLM has not been fitted; call fit(sentences) first"
            )

    def _pad(self, sentence: Sequence[str]) -> list[str]:
        """``<s>`` * (order - 1) + the sentence + ``</s>``."""
        return [BOS] * (self.order - 1) + list(sentence) + [EOS]

    def _history(self, context: Sequence[str]) -> tuple[str, ...]:
        """The last ``order - 1`` words of ``context``, ``<s>``-padded on the left,
        unknowns as ``<unk>``."""
        if isinstance(context, str):
            raise TypeError(
                f"context must be a sequence of words, not a str ({context!r}); "
                "tokenise it first"
            )
        if self.order == 1:
            return ()
        recent = [BOS] * (self.order - 1) + list(context)[-(self.order - 1) :]
        return tuple(
            word if word in self._index or word == BOS else UNK
            for word in recent[-(self.order - 1) :]
        )

    def _kneser_ney_prob(
        self, word: str, history: tuple[str, ...], level: int
    ) -> float:
        """P_level(word | last level-1 words of history), by the recursion in the module
        docstring."""
        if level == 0:
            return 1.0 / len(self._vocabulary)
        context = history[len(history) - level + 1 :]
        table = self._levels[level]
        followers = table.counts.get(context)
        lower = self._kneser_ney_prob(word, history, level - 1)
        if followers is None:
            return lower
        total = table.totals[context]
        return (
            max(followers[word] - self.discount, 0.0) / total
            + self.discount * len(followers) / total * lower
        )

    def _distribution_array(self, history: tuple[str, ...]) -> np.ndarray:
        """P(w | history) for all w, as a float64 array in vocabulary order."""
        size = len(self._vocabulary)
        if self.smoothing == "add_k":
            table = self._levels[self.order]
            counts = self._dense(table.counts.get(history, {}))
            return (counts + self.k) / (table.totals.get(history, 0) + self.k * size)
        probs = np.full(size, 1.0 / size)
        for level in range(1, self.order + 1):
            context = history[len(history) - level + 1 :]
            table = self._levels[level]
            followers = table.counts.get(context)
            if followers is not None:
                total = table.totals[context]
                discounted = (
                    np.maximum(self._dense(followers) - self.discount, 0.0) / total
                )
                probs = discounted + self.discount * len(followers) / total * probs
        return probs

    def _dense(self, followers: dict[str, int]) -> np.ndarray:
        """Counts keyed by word as a float64 array in vocabulary order."""
        dense = np.zeros(len(self._vocabulary))
        for word, count in followers.items():
            dense[self._index[word]] = count
        return dense


def _check_sentence(sentence: Sequence[str], row: int) -> Sequence[str]:
    """Return ``sentence`` if it is a sequence of word strings without boundary symbols,
    else raise."""
    if isinstance(sentence, str) or not isinstance(sentence, Sequence):
        raise TypeError(
            f"sentence {row} must be a list of words, got {type(sentence).__name__}; "
            "tokenise text first (e.g. crossalign.data.simple_tokenize)"
        )
    for word in sentence:
        if not isinstance(word, str):
            raise TypeError(
                f"sentence {row} holds a {type(word).__name__} ({word!r}); words must "
                "be str"
            )
        if word in (BOS, EOS):
            raise ValueError(
                f"sentence {row} contains {word!r}; boundary symbols are added by the "
                "model, remove them"
            )
    return sentence


def _continuation_levels(
    top: dict[tuple[str, ...], Counter], order: int
) -> dict[int, _CountTable]:
    """Kneser-Ney continuation counts N1+(. h w) for every level below ``order``.

    Every lower-order n-gram ending on a predicted word is the suffix of an observed
    full n-gram (the ``<s>`` padding guarantees a left neighbour), so the distinct
    (m+1)-grams are the (m+1)-word suffixes of the distinct n-grams.
    """
    types = {
        context + (word,) for context, followers in top.items() for word in followers
    }
    levels: dict[int, _CountTable] = {}
    for level in range(order - 1, 0, -1):
        continuation: dict[tuple[str, ...], Counter] = defaultdict(Counter)
        for gram in types:
            continuation[gram[-level:-1]][gram[-1]] += 1
        levels[level] = _CountTable(dict(continuation))
        types = {gram[-level:] for gram in types}
    return levels


def _draw(probs: np.ndarray, temperature: float, generator: np.random.Generator) -> int:
    """Index drawn from ``probs ** (1 / temperature)`` renormalised; argmax when
    temperature is 0."""
    if temperature == 0:
        return int(np.argmax(probs))
    logits = np.log(probs) / temperature
    weights = np.exp(logits - logits.max())
    cumulative = np.cumsum(weights)
    return int(
        min(
            np.searchsorted(
                cumulative, generator.random() * cumulative[-1], side="right"
            ),
            len(probs) - 1,
        )
    )

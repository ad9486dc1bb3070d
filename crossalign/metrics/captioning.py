"""Caption metrics that give pycocoevalcap's numbers: BLEU-1..4, ROUGE-L and CIDEr-D, in
pure Python.

The COCO caption evaluation (the ``pycocoevalcap`` package) is the reference every
captioning paper reports against. It runs in two steps, and so does this module:

1. Tokenise every caption: Stanford's PTB tokeniser (Java) lower-cases and splits off
   punctuation and clitics, then a fixed list of punctuation tokens is dropped.
   :func:`tokenize_caption` does the same in pure Python (see its docstring for the few
   differences). Join its tokens with single spaces:
   ``" ".join(tokenize_caption(text))``.
2. Score the tokenised captions. The metrics here take those space-joined token strings,
   exactly what pycocoevalcap's scorers take, and give the same numbers up to float
   rounding (far within 1e-6; the tests compare the two on many corpora).

Captions come either as two dicts keyed by image id (``{id: "a dog runs"}`` and
``{id: ["a dog is running", "a brown dog runs", ...]}``; pycocoevalcap's
``{id: ["a dog runs"]}`` form is accepted for the candidates too) or as two lists in the
same order (``["a dog runs", ...]`` and ``[["a dog is running", ...], ...]``). Each
image has one candidate, which may be empty (a model can generate nothing), and one or
more non-empty references; their number may vary from image to image.

All metrics are *corpus* metrics, and BLEU is not the mean of per-image BLEU: it pools
the n-gram counts of the whole corpus first (see :func:`corpus_bleu`). CIDEr-D takes its
document frequencies from the references of the evaluated set itself, so the same
caption scores differently in different corpora, and a corpus of a single image always
scores 0.

METEOR needs Java (pycocoevalcap runs the METEOR 1.5 jar); :func:`meteor` calls it when
Java and pycocoevalcap are installed and says so clearly when they are not. SPICE is not
offered.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "tokenize_caption",
    "corpus_bleu",
    "rouge_l",
    "cider_d",
    "caption_metrics",
    "meteor",
]

Candidates = Mapping[Hashable, str | Sequence[str]] | Sequence[str]
References = Mapping[Hashable, Sequence[str]] | Sequence[Sequence[str]]

# --------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------

# Abbreviations whose final period the PTB tokeniser keeps ("mr.", "st."), a subset of
# its list.
_ABBREVIATIONS = (
    "mrs",
    "mr",
    "ms",
    "dr",
    "prof",
    "st",
    "mt",
    "ave",
    "jr",
    "sr",
    "vs",
    "etc",
    "inc",
    "co",
    "corp",
    "ltd",
    "no",
    "gen",
    "capt",
    "sgt",
    "rev",
    "ft",
)
# Words the PTB tokeniser splits in two.
_SPLIT_WORDS = {
    "cannot": ["can", "not"],
    "gonna": ["gon", "na"],
    "gotta": ["got", "ta"],
    "wanna": ["wan", "na"],
    "lemme": ["lem", "me"],
    "gimme": ["gim", "me"],
}
# The PTB tokeniser writes brackets as these names. pycocoevalcap means to drop them but
# compares them in upper case after lower-casing, so they stay in its token strings; so
# they do here.
_BRACKETS = {
    "(": "-lrb-",
    ")": "-rrb-",
    "[": "-lsb-",
    "]": "-rsb-",
    "{": "-lcb-",
    "}": "-rcb-",
}
_CLITIC_SUFFIX = re.compile(r"(.+)('(?:s|re|ve|ll|d|m))")
_TOKEN = re.compile(
    # "mr." or "u.s." or "p.m.": the final period stays (not when a letter or digit
    # follows).
    rf"(?P<abbreviation>(?:{'|'.join(_ABBREVIATIONS)})\.(?![^\W_])|(?:[^\W\d_]\.)+(?![^\W_]))"
    # A clitic written apart from its word ("it 's") stays a token of its own.
    r"|(?P<clitic>'(?:s|re|ve|ll|d|m)(?![^\W_]))"
    # Letters and digits, joined by inner hyphens, slashes, apostrophes and periods
    # ("t-shirt", "1/2", "dog's", "3.5"), and by commas or colons between digits
    # ("1,000", "10:30").
    r"|(?P<word>[^\W_]+(?:(?:[-/'.]|(?<=\d)[,:](?=\d))[^\W_]+)*)"
    # Punctuation that pycocoevalcap drops after PTB tokenisation: quotes, periods (also
    # "..."), commas, colons, semicolons, hyphens and dashes, and a single "!" or "?".
    r"|(?P<dropped>[-.,;:\"'`]+|[!?](?![!?]))"
    # Anything else is kept as a token: "!!", "?!", "$", "%", "&", "#", brackets...
    r"|(?P<symbol>[!?]+|\S)"
)
_TYPOGRAPHIC = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'}
)


def _split_clitics(word: str) -> list[str]:
    """Split a word the PTB way: ``"dog's"`` -> ``dog 's``, ``"isn't"`` -> ``is n't``,
    ``"cannot"`` -> ``can not``."""
    if word in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[word])
    if word.endswith("n't") and len(word) > 3:
        return [word[:-3], "n't"]
    clitic = _CLITIC_SUFFIX.fullmatch(word)
    if clitic:
        return [clitic.group(1), clitic.group(2)]
    return [word]


def tokenize_caption(text: str) -> list[str]:
    """Tokenise a caption as the COCO caption evaluation does: lower case, punctuation
    dropped.

    A pure-Python stand-in for pycocoevalcap's ``PTBTokenizer`` (Stanford's PTB
    tokeniser run with ``-lowerCase``, then removal of the tokens ``'' ' ``
    ` . ? ! , : - -- ... ;``):

    - lower-case; typographic quotes and apostrophes count as ASCII ones;
    - punctuation is split off and dropped: periods, commas, colons, semicolons, quotes,
      hyphens and dashes standing alone, ``...``, and a single ``!`` or ``?``;
    - clitics become tokens of their own: ``"dog's"`` -> ``dog 's``, ``"isn't"`` ->
      ``is n't``, ``"can't"`` -> ``ca n't``, ``"they're"`` -> ``they 're``; ``cannot``,
      ``gonna``, ``gotta``, ``wanna``, ``lemme`` and ``gimme`` are split in two
      (``can not``);
    - a word keeps its inner hyphens, slashes, apostrophes and periods (``t-shirt``,
      ``black-and-white``, ``3-year-old``, ``face/hand``, ``o'clock``, ``3.5``) and a
      number its inner commas and colons (``1,000``, ``10:30``); abbreviations keep
      their final period (``u.s.``, ``p.m.``, ``mr.``, ``st.``);
    - other symbols are kept as tokens (``$ 5``, ``20 %``, ``&``, ``!!``, ``?!``), and
      brackets become ``-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-``: pycocoevalcap means to
      drop them but misses them after lower-casing, and that is what its scores are
      computed on.

    Known differences from the Java tokeniser, all rare in captions: the list of
    abbreviations that keep their period is shorter; ``"12:30pm"`` stays one token (PTB:
    ``12:30 pm``); ``".5"`` loses its period; ``rock'n'roll``, ``'tis``, ``'em``,
    ``y'all``, e-mail and web addresses, ``@names`` and SGML-like ``<tags>`` are not
    given PTB's special treatment.

    Why not :func:`crossalign.data.vocab.simple_tokenize`: it splits ``t-shirt`` and
    ``3.5`` in two and keeps ``dog's`` whole, where the COCO pipeline gives ``t-shirt``,
    ``3.5`` and ``dog 's``; such words are common in captions and would change BLEU and
    CIDEr n-gram counts.

    >>> tokenize_caption("A dog's t-shirt, isn't it?")
    ['a', 'dog', "'s", 't-shirt', 'is', "n't", 'it']
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize_caption expects a str, got {type(text).__name__}")
    tokens: list[str] = []
    for match in _TOKEN.finditer(text.lower().translate(_TYPOGRAPHIC)):
        kind, token = match.lastgroup, match.group()
        if kind == "word":
            tokens.extend(_split_clitics(token))
        elif kind == "symbol":
            tokens.append(_BRACKETS.get(token, token))
        elif kind != "dropped":
            tokens.append(token)
    return tokens


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _candidate_text(where: str, candidate: object) -> str:
    """Return the candidate string, unwrapping pycocoevalcap's one-element list
    ``["a dog"]``."""
    if isinstance(candidate, (list, tuple)) and len(candidate) == 1:
        candidate = candidate[0]
    if not isinstance(candidate, str):
        raise TypeError(
            f"the candidate {where} must be one caption string (space-joined tokens), "
            f"got {candidate!r}"
        )
    return candidate


def _reference_texts(where: str, references: object) -> list[str]:
    """Return the references as a list of non-empty strings, or raise naming the image
    at fault."""
    if isinstance(references, str):
        raise TypeError(
            f"the references {where} must be a list of caption strings, got one str; "
            "wrap it in a list"
        )
    if not isinstance(references, (list, tuple)):
        raise TypeError(
            f"the references {where} must be a list of caption strings, got "
            f"{type(references).__name__}"
        )
    if len(references) == 0:
        raise ValueError(
            f"the references {where} are an empty list; every image needs at least one "
            "reference"
        )
    for position, reference in enumerate(references):
        if not isinstance(reference, str):
            raise TypeError(
                f"reference {position} {where} must be a str, got "
                f"{type(reference).__name__}"
            )
        if not reference.split():
            raise ValueError(
                f"reference {position} {where} is empty ({reference!r}); drop it, "
                "every reference needs a word"
            )
    return list(references)


def _paired_corpus(
    candidates: Candidates, references: References
) -> list[tuple[str, list[str]]]:
    """Check both inputs and return ``(candidate, references)`` per image, in the
    references' order."""
    if isinstance(candidates, str) or isinstance(references, str):
        raise TypeError(
            "candidates and references must be collections of captions, not a single "
            "str"
        )
    if isinstance(candidates, Mapping) and isinstance(references, Mapping):
        no_references = [
            image_id for image_id in candidates if image_id not in references
        ]
        no_candidate = [
            image_id for image_id in references if image_id not in candidates
        ]
        if no_references or no_candidate:
            raise ValueError(
                "candidates and references must have the same image ids; "
                f"ids with no references: {no_references[:5]}, ids with no candidate: "
                f"{no_candidate[:5]}"
            )
        items = [
            (f"of image {image_id!r}", candidates[image_id], refs)
            for image_id, refs in references.items()
        ]
    elif isinstance(candidates, Mapping) or isinstance(references, Mapping):
        raise TypeError(
            "pass candidates and references in the same form: "
            "both dicts keyed by image id, or both lists in the same order "
            f"(got {type(candidates).__name__} and {type(references).__name__})"
        )
    else:
        if len(candidates) != len(references):
            raise ValueError(
                f"got {len(candidates)} candidates but {len(references)} reference "
                "lists; "
                "give one list of references per candidate, in the same order"
            )
        items = [
            (f"at index {index}", c, r)
            for index, (c, r) in enumerate(zip(candidates, references))
        ]
    if not items:
        raise ValueError("the corpus is empty; caption metrics need at least one image")
    return [
        (_candidate_text(where, c), _reference_texts(where, r)) for where, c, r in items
    ]


# --------------------------------------------------------------------------------------
# N-gram counts, shared by BLEU and CIDEr-D
# --------------------------------------------------------------------------------------

_MAX_ORDER = (
    4  # both metrics use 1- to 4-grams (pycocoevalcap counts no longer n-grams)
)


class _Caption:
    """A caption's word count and n-gram counts, computed once for BLEU and CIDEr-D.

    Tokens are the whitespace-separated words of the string; ``ngrams[k]`` counts its
    (k+1)-grams, each written as its words joined by single spaces (a string caches its
    hash, which makes the many dictionary look-ups faster than with tuples of words).
    """

    __slots__ = ("length", "ngrams")

    def __init__(self, text: str) -> None:
        tokens = text.split()
        self.length = len(tokens)
        self.ngrams = [Counter(tokens)] + [
            Counter(map(" ".join, zip(*(tokens[start:] for start in range(n)))))
            for n in range(2, _MAX_ORDER + 1)
        ]


_CountedImage = tuple[_Caption, list[_Caption]]


def _counted(pairs: Sequence[tuple[str, list[str]]]) -> list[_CountedImage]:
    """Count the n-grams of every candidate and reference of checked
    ``(candidate, references)`` pairs."""
    return list(_counting(pairs))


def _counting(pairs: Sequence[tuple[str, list[str]]]) -> Iterator[_CountedImage]:
    """Count the n-grams of one image at a time, so that a metric that needs each image
    once keeps none."""
    for candidate, references in pairs:
        yield _Caption(candidate), [_Caption(ref) for ref in references]


# --------------------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------------------

# pycocoevalcap's smoothing: (matches + TINY) / (possible + SMALL) keeps a zero count
# finite.
_TINY = 1e-15
_SMALL = 1e-9


def _closest_length(candidate_length: int, reference_lengths: Sequence[int]) -> int:
    """The reference length closest to the candidate's; on a tie, the shorter one."""
    return min(
        reference_lengths, key=lambda length: (abs(length - candidate_length), length)
    )


def _clipped_matches(
    candidate_counts: Counter, reference_counts: Sequence[Counter]
) -> int:
    """Candidate n-grams that match, each at most as often as in the reference holding
    it most often."""
    in_some_reference = candidate_counts.keys() & set().union(*reference_counts)
    return sum(
        min(candidate_counts[ngram], max(counts[ngram] for counts in reference_counts))
        for ngram in in_some_reference
    )


def _bleu(images: Iterable[_CountedImage], max_n: int) -> list[float]:
    """Corpus BLEU-1..``max_n`` of counted images."""
    matches = [0] * max_n
    possible = [0] * max_n
    candidate_total = reference_total = 0
    for candidate, references in images:
        candidate_total += candidate.length
        reference_total += _closest_length(
            candidate.length, [ref.length for ref in references]
        )
        for order in range(max_n):
            possible[order] += max(0, candidate.length - order)
            matches[order] += _clipped_matches(
                candidate.ngrams[order], [ref.ngrams[order] for ref in references]
            )
    scores = []
    precision_product = 1.0
    for order in range(max_n):
        precision_product *= (matches[order] + _TINY) / (possible[order] + _SMALL)
        scores.append(precision_product ** (1.0 / (order + 1)))
    length_ratio = (candidate_total + _TINY) / (reference_total + _SMALL)
    if length_ratio < 1:
        brevity_penalty = math.exp(1 - 1 / length_ratio)
        scores = [score * brevity_penalty for score in scores]
    return scores


def corpus_bleu(
    candidates: Candidates, references: References, max_n: int = 4
) -> list[float]:
    """Corpus BLEU-1..``max_n`` (``max_n`` <= 4), equal to pycocoevalcap's
    ``Bleu(max_n)``.

    BLEU-n is the geometric mean of the modified n-gram precisions p_1..p_n times a
    brevity penalty, all computed on counts pooled over the corpus (not a mean of
    per-image BLEU):

    - p_k = (clipped k-gram matches + 1e-15) / (candidate k-grams + 1e-9), where a
      candidate k-gram matches at most as often as it occurs in the one reference
      holding it most often. The constants are pycocoevalcap's: a zero count gives a
      tiny precision, not 0, so a corpus without a single 4-gram match gets a tiny
      positive BLEU-4 (around 1e-5), not 0;
    - the reference length of an image is that of its reference closest in length to the
      candidate (the shorter one on a tie); with c and r the corpus totals of candidate
      and reference lengths, the penalty is exp(1 - r/c) when c < r (computed with the
      same constants), else 1. A corpus of empty candidates scores 0.

    Tokens are the whitespace-separated words of each string. Returns
    ``[BLEU-1, ..., BLEU-max_n]``.
    """
    if (
        isinstance(max_n, bool)
        or not isinstance(max_n, int)
        or not 1 <= max_n <= _MAX_ORDER
    ):
        raise ValueError(
            f"max_n must be an integer from 1 to {_MAX_ORDER} (as in pycocoevalcap), "
            f"got {max_n!r}"
        )
    return _bleu(_counting(_paired_corpus(candidates, references)), max_n)


# --------------------------------------------------------------------------------------
# ROUGE-L
# --------------------------------------------------------------------------------------

_ROUGE_BETA = 1.2


def _lcs_length(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel dynamic programming (Allison and Dix 1986; Hyyrö 2004): bit j of
    ``row`` is 0 where the LCS row steps up at column j of ``second``, so one pass over
    ``first`` with a few integer operations per token replaces the O(len(first) *
    len(second)) table, and the LCS length is the number of zero bits.
    """
    if len(first) < len(second):
        first, second = second, first
    positions: dict[str, int] = {}
    for column, token in enumerate(second):
        positions[token] = positions.get(token, 0) | (1 << column)
    all_columns = (1 << len(second)) - 1
    row = all_columns
    for token in first:
        matches = positions.get(token, 0)
        if matches:
            kept = row & matches
            row = ((row + kept) | (row - kept)) & all_columns
    return len(second) - row.bit_count()


def _sentence_rouge_l(candidate: str, references: Sequence[str]) -> float:
    """ROUGE-L F-score of one candidate, with pycocoevalcap's best precision and best
    recall."""
    # Split on single spaces like the reference implementation: on well-formed token
    # strings this is str.split(), and an empty candidate is one empty token, so it
    # scores 0.
    candidate_tokens = candidate.split(" ")
    best_precision = best_recall = 0.0
    for reference in references:
        reference_tokens = reference.split(" ")
        common = _lcs_length(candidate_tokens, reference_tokens)
        best_precision = max(best_precision, common / len(candidate_tokens))
        best_recall = max(best_recall, common / len(reference_tokens))
    if best_precision == 0 or best_recall == 0:
        return 0.0
    beta_squared = _ROUGE_BETA**2
    return (
        (1 + beta_squared)
        * best_precision
        * best_recall
        / (best_recall + beta_squared * best_precision)
    )


def _rouge_l(pairs: Sequence[tuple[str, list[str]]]) -> float:
    """Mean ROUGE-L of checked ``(candidate, references)`` pairs."""
    return math.fsum(
        _sentence_rouge_l(candidate, references) for candidate, references in pairs
    ) / len(pairs)


def rouge_l(candidates: Candidates, references: References) -> float:
    """Corpus ROUGE-L, equal to pycocoevalcap's ``Rouge``: the mean over images of a
    sentence F-score.

    For one image, with LCS the longest common subsequence of tokens: precision P = max
    over references of LCS / len(candidate), recall R = max over references of LCS /
    len(reference), each maximised on its own (they may come from different references),
    and F = (1 + beta^2) P R / (R + beta^2 P) with beta = 1.2, or 0 when P or R is 0.
    Tokens are split on single spaces, as pycocoevalcap does.
    """
    return _rouge_l(_paired_corpus(candidates, references))


# --------------------------------------------------------------------------------------
# CIDEr-D
# --------------------------------------------------------------------------------------

_CIDER_SCALE = 10.0


def _tfidf_norms(
    caption: _Caption, squared_idf: dict[str, float], unseen: float
) -> list[float]:
    """Norms of a caption's tf-idf vectors, one per n-gram order (``unseen``: squared
    idf of other n-grams)."""
    return [
        math.sqrt(
            sum(
                count * count * squared_idf.get(ngram, unseen)
                for ngram, count in counts.items()
            )
        )
        for counts in caption.ngrams
    ]


def _image_cider_d(
    candidate: _Caption,
    references: Sequence[_Caption],
    squared_idf: dict[str, float],
    unseen: float,
    sigma: float,
) -> float:
    """CIDEr-D of one image: 10 x the mean over references and n-gram orders of the
    penalised similarity.

    With weights w = count x idf (idf >= 0), min(w_c, w_r) x w_r = min(count_c, count_r)
    x count_r x idf^2, and only n-grams in both captions contribute, so the sums run
    over the shared n-grams.
    """
    candidate_norms = _tfidf_norms(candidate, squared_idf, unseen)
    # pycocoevalcap's length for the penalty is the number of bigrams: words - 1, and 0
    # for no words.
    candidate_length = max(0, candidate.length - 1)
    total = 0.0
    for reference in references:
        reference_norms = _tfidf_norms(reference, squared_idf, unseen)
        length_penalty = math.exp(
            -((candidate_length - max(0, reference.length - 1)) ** 2) / (2 * sigma**2)
        )
        for candidate_counts, reference_counts, candidate_norm, reference_norm in zip(
            candidate.ngrams, reference.ngrams, candidate_norms, reference_norms
        ):
            similarity = sum(
                min(candidate_counts[ngram], reference_counts[ngram])
                * reference_counts[ngram]
                * squared_idf[ngram]
                for ngram in candidate_counts.keys() & reference_counts.keys()
            )
            if candidate_norm != 0 and reference_norm != 0:
                similarity /= candidate_norm * reference_norm
            total += similarity * length_penalty
    return _CIDER_SCALE * total / _MAX_ORDER / len(references)


def _cider_d(images: Sequence[_CountedImage], sigma: float) -> float:
    """Corpus CIDEr-D of counted images."""
    document_frequency: Counter = Counter()
    for _, references in images:
        document_frequency.update(
            set().union(*(counts.keys() for ref in references for counts in ref.ngrams))
        )
    log_images = math.log(len(images))
    squared_idf_of_df = [
        (log_images - math.log(max(1, df))) ** 2 for df in range(len(images) + 1)
    ]
    squared_idf = {
        ngram: squared_idf_of_df[df] for ngram, df in document_frequency.items()
    }
    # An n-gram in no reference has df = 0, which pycocoevalcap counts as 1.
    unseen = squared_idf_of_df[1]
    scores = [
        _image_cider_d(candidate, references, squared_idf, unseen, sigma)
        for candidate, references in images
    ]
    return math.fsum(scores) / len(scores)


def cider_d(
    candidates: Candidates, references: References, sigma: float = 6.0
) -> float:
    """Corpus CIDEr-D, equal to pycocoevalcap's ``Cider`` (which, despite its name, is
    CIDEr-D).

    CIDEr (Vedantam et al. 2015) compares tf-idf weighted n-gram vectors; its "-D"
    variant, which the COCO evaluation implements under the plain name, adds the
    clipping and the length penalty below. For each image and each order n = 1..4:

    - weight of an n-gram = its count in the caption x log(N / df), with N the number of
      images and df the number of images whose references contain it (df counted as 1
      when no reference does): document frequencies come from the evaluated set's own
      references;
    - similarity to one reference = sum over the candidate's n-grams of min(candidate
      weight, reference weight) x reference weight (the clipping), divided by both
      vectors' norms (when neither is 0), times the length penalty exp(-(l_c - l_r)^2 /
      (2 sigma^2)), where pycocoevalcap's length l is the number of bigrams, i.e. the
      word count minus 1 (0 for an empty caption);
    - the image's score is 10 x the mean of these similarities over orders and
      references.

    The corpus score is the mean over images. With a single image log(N / df) is 0 for
    every reference n-gram, so a one-image corpus always scores 0.
    """
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, (int, float))
        or not sigma > 0
        or math.isinf(sigma)
    ):
        raise ValueError(
            "sigma must be a positive finite number (pycocoevalcap uses 6.0), got "
            f"{sigma!r}"
        )
    return _cider_d(_counted(_paired_corpus(candidates, references)), float(sigma))


# --------------------------------------------------------------------------------------
# All together, and METEOR
# --------------------------------------------------------------------------------------


def caption_metrics(candidates: Candidates, references: References) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of a corpus, each equal to pycocoevalcap's.

    Inputs are space-joined token strings, e.g. ``" ".join(tokenize_caption(text))``.
    Returns ``{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}``
    (pycocoevalcap names them Bleu_1..Bleu_4, ROUGE_L and CIDEr). BLEU and ROUGE-L lie
    in [0, 1], CIDEr-D in [0, 10] (it is scaled by 10, so good captioners score above
    1).
    """
    pairs = _paired_corpus(candidates, references)
    images = _counted(pairs)
    metrics = {
        f"BLEU-{order}": score
        for order, score in enumerate(_bleu(images, _MAX_ORDER), start=1)
    }
    metrics["ROUGE-L"] = _rouge_l(pairs)
    metrics["CIDEr-D"] = _cider_d(images, sigma=6.0)
    return metrics


def meteor(candidates: Candidates, references: References) -> float:
    """Corpus METEOR from pycocoevalcap's Java scorer (METEOR 1.5); needs Java and
    pycocoevalcap.

    There is no pure-Python METEOR here: its synonym and paraphrase matching lives in
    the jar. Raises RuntimeError, saying what is missing, when ``java`` is not on the
    PATH or pycocoevalcap is not installed.
    """
    pairs = _paired_corpus(candidates, references)
    if shutil.which("java") is None:
        raise RuntimeError(
            "METEOR needs Java: pycocoevalcap runs the METEOR 1.5 jar, and no 'java' "
            "executable is on the "
            "PATH. Install a Java runtime (e.g. OpenJDK 11 or later) or leave METEOR "
            "out; BLEU, ROUGE-L and "
            "CIDEr-D (caption_metrics) need no Java"
        )
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError as err:
        raise RuntimeError(
            "METEOR needs the pycocoevalcap package (pip install pycocoevalcap), which "
            "is not installed"
        ) from err
    image_ids = range(len(pairs))
    score, _ = Meteor().compute_score(
        {i: references for i, (_, references) in zip(image_ids, pairs)},
        {i: [candidate] for i, (candidate, _) in zip(image_ids, pairs)},
    )
    return float(score)

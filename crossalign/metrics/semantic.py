"""Semantic caption accuracy on ShapesWorld: parse a caption with the grammar, check it
against the scene.

BLEU and CIDEr count shared n-grams, so "a small red circle left of a big blue square"
and "a small red circle right of a big blue square" score almost the same although one
is false. ShapesWorld captions come from a regular grammar (see
:mod:`crossalign.data.shapes`), so a generated caption can be *parsed back* into what it
claims, and the claim checked against the image's scene graph:

- every object is mentioned exactly once, with the right size, colour and shape
  (synonyms allowed: "little" = "small", "disc" = "circle", ...);
- every stated relation holds between the objects named ("left of", "above", ...); in a
  three-object caption, "the <object>" of the last clause refers back to one of the
  first two;
- a lone object is placed in the right region ("at the top left", "in the middle", ...).

A caption that does not parse, names the wrong number of objects, or states anything
false does not match. Words are compared after
:func:`crossalign.data.vocab.simple_tokenize`, which drops punctuation, so "there is a
red ..., and" and a decoder's "there is a red ... and" read the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from crossalign.data.shapes import (
    COLOUR_WORDS,
    REGION_WORDS,
    RELATION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    SceneGraph,
)
from crossalign.data.vocab import simple_tokenize

__all__ = [
    "ObjectMention",
    "ParsedCaption",
    "caption_matches_scene",
    "parse_caption",
    "semantic_accuracy",
    "semantic_report",
]


@dataclass(frozen=True)
class ObjectMention:
    """An object as a caption names it: canonical size, colour and shape."""

    size: str
    colour: str
    shape: str


@dataclass(frozen=True)
class ParsedCaption:
    """What a caption claims: the objects it introduces and the facts it states about
    them.

    ``relations`` holds ``(subject, relation, object)`` with indices into ``objects``; a
    caption whose last clause names "the X" where both first objects look like X is
    ambiguous, and ``alternatives`` then lists every reading (the first reading is
    ``relations``). ``region`` is ``(vertical, horizontal)`` for a one-object caption,
    else ``None``.
    """

    objects: tuple[ObjectMention, ...]
    relations: tuple[tuple[int, str, int], ...]
    region: tuple[str, str] | None
    alternatives: tuple[tuple[tuple[int, str, int], ...], ...] = ()


def _phrase_table() -> dict[tuple[str, ...], tuple[str, object]]:
    """Every multi-word or synonym phrase of the grammar -> (kind, canonical value)."""
    table: dict[tuple[str, ...], tuple[str, object]] = {}
    for kind, words in (
        ("size", SIZE_WORDS),
        ("colour", COLOUR_WORDS),
        ("shape", SHAPE_WORDS),
        ("relation", RELATION_WORDS),
        ("region", REGION_WORDS),
    ):
        for value, phrases in words.items():
            for phrase in phrases:
                table[tuple(phrase.split())] = (kind, value)
    return table


_PHRASES = _phrase_table()
_LONGEST = max(len(phrase) for phrase in _PHRASES)
_NOUN = "NOUN"  # an article followed by size, colour and shape
# Templates as sequences of literal words and symbols; "NOUN", "relation" and "region"
# are slots.
_ONE_OBJECT = (
    (_NOUN, "region"),
    ("there", "is", _NOUN, "region"),
    (_NOUN, "is", "region"),
    ("a", "picture", "of", _NOUN, "region"),
    ("region", "there", "is", _NOUN),
)
_TWO_OBJECTS = (
    (_NOUN, "relation", _NOUN),
    (_NOUN, "is", "relation", _NOUN),
    ("there", "is", _NOUN, "relation", _NOUN),
    ("a", "picture", "of", _NOUN, "relation", _NOUN),
    ("in", "this", "image", _NOUN, "is", "relation", _NOUN),
)
_THIRD_CLAUSE = ("and", _NOUN, "is", "relation", _NOUN)


def _symbols(words: Sequence[str]) -> list[tuple[str, object]]:
    """Group words into grammar symbols by longest match: ("size", "small"), ("word",
    "is"), ..."""
    symbols: list[tuple[str, object]] = []
    position = 0
    while position < len(words):
        for length in range(min(_LONGEST, len(words) - position), 0, -1):
            phrase = tuple(words[position : position + length])
            if phrase in _PHRASES:
                symbols.append(_PHRASES[phrase])
                position += length
                break
        else:
            symbols.append(("word", words[position]))
            position += 1
    return symbols


def _word(symbol: tuple[str, object]) -> str:
    """The canonical word of a size, colour or shape symbol."""
    kind, value = symbol
    if not isinstance(value, str):
        raise TypeError(f"a {kind} symbol holds one word, got {value!r}")
    return value


def _match(
    template: Sequence[str], symbols: Sequence[tuple[str, object]]
) -> list | None:
    """Match ``symbols`` against a template exactly; return the slot values in order, or
    None.

    A noun slot yields ``(article, ObjectMention)``.
    """
    values: list = []
    position = 0
    for part in template:
        if part == _NOUN:
            piece = symbols[position : position + 4]
            kinds = [kind for kind, _ in piece]
            if kinds != ["word", "size", "colour", "shape"] or piece[0][1] not in (
                "a",
                "the",
            ):
                return None
            size, colour, shape = (_word(symbol) for symbol in piece[1:])
            values.append((piece[0][1], ObjectMention(size, colour, shape)))
            position += 4
        elif part in ("relation", "region"):
            if position >= len(symbols) or symbols[position][0] != part:
                return None
            values.append(symbols[position][1])
            position += 1
        else:
            if position >= len(symbols) or symbols[position] != ("word", part):
                return None
            position += 1
    return values if position == len(symbols) else None


def _first_match(
    templates: Sequence[Sequence[str]], symbols: Sequence[tuple[str, object]]
) -> list | None:
    for template in templates:
        values = _match(template, symbols)
        if values is not None:
            return values
    return None


def parse_caption(caption: str) -> ParsedCaption | None:
    """Parse a ShapesWorld caption into the objects and facts it states; ``None`` if it
    is not grammatical.

    New objects must be introduced with "a"; the last clause of a three-object caption
    refers back with "the" to one of the first two objects.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    symbols = _symbols(simple_tokenize(caption))
    values = _first_match(_ONE_OBJECT, symbols)
    if values is not None:
        article, mention = next(
            value for value in values if isinstance(value[1], ObjectMention)
        )
        region = next(
            value for value in values if not isinstance(value[1], ObjectMention)
        )
        return ParsedCaption((mention,), (), region) if article == "a" else None
    split = next(
        (i for i, symbol in enumerate(symbols) if symbol == ("word", "and")),
        len(symbols),
    )
    values = _first_match(_TWO_OBJECTS, symbols[:split])
    if values is None:
        return None
    (article_a, first), relation, (article_b, second) = values
    if article_a != "a" or article_b != "a":
        return None
    if split == len(symbols):
        return ParsedCaption((first, second), ((0, relation, 1),), None)
    extra = _match(_THIRD_CLAUSE, symbols[split:])
    if extra is None:
        return None
    (article_c, third), extra_relation, (article_target, target) = extra
    if article_c != "a" or article_target != "the":
        return None
    readings = tuple(
        ((0, relation, 1), (2, extra_relation, index))
        for index, mention in enumerate((first, second))
        if mention == target
    )
    if not readings:
        return None
    return ParsedCaption((first, second, third), readings[0], None, readings)


def _attributes_match(
    mentions: Sequence[ObjectMention], scene: SceneGraph, assignment: Sequence[int]
) -> bool:
    return all(
        (m.size, m.colour, m.shape)
        == (scene.objects[k].size, scene.objects[k].colour, scene.objects[k].shape)
        for m, k in zip(mentions, assignment)
    )


def _facts_hold(
    parsed: ParsedCaption, scene: SceneGraph, assignment: Sequence[int]
) -> bool:
    if (
        parsed.region is not None
        and scene.objects[assignment[0]].region() != parsed.region
    ):
        return False
    readings = parsed.alternatives or (parsed.relations,)
    return any(
        all(scene.holds(assignment[s], r, assignment[o]) for s, r, o in reading)
        for reading in readings
    )


def _assignments(parsed: ParsedCaption, scene: SceneGraph) -> list[tuple[int, ...]]:
    """Every one-to-one mapping of mentioned objects onto the scene's objects with
    matching attributes."""
    if len(parsed.objects) != len(scene.objects):
        return []
    return [
        assignment
        for assignment in itertools.permutations(range(len(scene.objects)))
        if _attributes_match(parsed.objects, scene, assignment)
    ]


def caption_matches_scene(caption: str, scene: SceneGraph) -> bool:
    """Whether ``caption`` parses and everything it says is true of ``scene`` (all
    objects, attributes, relation)."""
    parsed = parse_caption(caption)
    if parsed is None:
        return False
    return any(
        _facts_hold(parsed, scene, assignment)
        for assignment in _assignments(parsed, scene)
    )


def _check_pairs(captions: Sequence[str], scenes: Sequence[SceneGraph]) -> None:
    if isinstance(captions, str):
        raise TypeError(
            "captions must be a sequence of captions, not a single str; wrap it in a "
            "list"
        )
    if len(captions) != len(scenes):
        raise ValueError(
            f"got {len(captions)} captions for {len(scenes)} scenes; pass one caption "
            "per scene"
        )
    if not captions:
        raise ValueError("captions is empty: there is nothing to score")


def semantic_accuracy(captions: Sequence[str], scenes: Sequence[SceneGraph]) -> float:
    """Fraction of captions that match their scene exactly (see
    :func:`caption_matches_scene`)."""
    _check_pairs(captions, scenes)
    return sum(caption_matches_scene(c, s) for c, s in zip(captions, scenes)) / len(
        captions
    )


def semantic_report(
    captions: Sequence[str], scenes: Sequence[SceneGraph]
) -> dict[str, float]:
    """Where captions go wrong: the fraction that pass each check, each check including
    the previous.

    Keys: ``grammatical`` (parses), ``object_count`` (names as many objects as the scene
    has), ``attributes`` (sizes, colours and shapes all right), ``exact`` (also every
    relation or region right; equal to :func:`semantic_accuracy`).
    """
    _check_pairs(captions, scenes)
    counts = {"grammatical": 0, "object_count": 0, "attributes": 0, "exact": 0}
    for caption, scene in zip(captions, scenes):
        parsed = parse_caption(caption)
        if parsed is None:
            continue
        counts["grammatical"] += 1
        if len(parsed.objects) != len(scene.objects):
            continue
        counts["object_count"] += 1
        assignments = _assignments(parsed, scene)
        if not assignments:
            continue
        counts["attributes"] += 1
        counts["exact"] += any(_facts_hold(parsed, scene, a) for a in assignments)
    return {key: value / len(captions) for key, value in counts.items()}

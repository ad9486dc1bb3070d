"""Every chapter carries the same reading aids (issue: readers of the seed's language):
glossary links, seed errata quoted in Chinese in one admonition style, and a bilingual
key-points box at the end."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from prose_numbers import chapter_files, markdown_units

CHAPTERS = [path for path in chapter_files() if not path.name.startswith("00_")]
CJK = re.compile(r"[\u4e00-\u9fff]")
ADMONITION = re.compile(r"^(:{3,})\{admonition\} ([^\n]*)\n(.*?)^\1\s*$", re.S | re.M)


def admonitions(path: Path) -> list[tuple[str, str]]:
    """(title, body) of every admonition in a chapter's markdown."""
    return [
        (match.group(2).strip(), match.group(3))
        for _, markdown in markdown_units(path)
        for match in ADMONITION.finditer(markdown)
    ]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_ends_with_bilingual_key_points(chapter):
    _, last = markdown_units(chapter)[-1]
    boxes = [b for t, b in admonitions(chapter) if t == "Key points / 要点"]
    assert len(boxes) == 1, "one Key points / 要点 box per chapter"
    assert ":class: key-points" in boxes[0]
    assert "Key points / 要点" in last, "the key points close the chapter"
    points = re.findall(r"^- (.*?)(?=^- |\Z)", boxes[0], re.S | re.M)
    assert 3 <= len(points) <= 6
    for point in points:
        english, chinese = point.split("\n", 1) if "\n" in point else (point, "")
        assert re.search(r"[A-Za-z]{3}", english), point
        assert CJK.search(chinese), f"point without its Chinese line: {point!r}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_seed_errata_use_one_style_and_quote_the_seed(chapter):
    for title, body in admonitions(chapter):
        if "erratum" in title.lower() or "correction" in title.lower():
            assert title == "Seed erratum / 原文勘误", title
            assert ":class: seed-erratum" in body
            assert "原文" in body and CJK.search(body.split("原文", 1)[1]), body[:200]
    text = "".join(markdown for _, markdown in markdown_units(chapter))
    assert not re.search(r"\{note\}[^\n]*[Cc]orrections? to the seed", text)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_links_glossary_terms(chapter):
    text = "".join(markdown for _, markdown in markdown_units(chapter))
    terms = re.findall(r"\{term\}`([^`]+)`", text)
    assert len(terms) >= 3, "glossary terms link at their first use"
    glossary = (chapter.parent / "A_glossary.md").read_text(encoding="utf-8")
    names = {
        line.strip().lower()
        for line in glossary.splitlines()
        if line and not line.startswith(" ")
    }
    for term in terms:
        target = re.search(r"<([^>]+)>$", term)
        name = " ".join((target.group(1) if target else term).split()).lower()
        assert name in names, f"{term!r} is not a glossary term"

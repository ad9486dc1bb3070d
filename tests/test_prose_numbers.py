"""The book's prose holds no typed result: every decimal or percentage a cell computes
is a glue reference (tools/prose_numbers.py, DESIGN.md 4.6)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import prose_numbers


def numbers(markdown: str) -> list[str]:
    return [number for number, _ in prose_numbers.typed_numbers(markdown)]


def test_typed_results_are_found_with_their_sentence():
    text = "The model reached 0.82 exact. Attributes were right in 93% of captions."
    found = prose_numbers.typed_numbers(text)
    assert [n for n, _ in found] == ["0.82", "93%"]
    assert found[1][1] == "Attributes were right in 93% of captions."


@pytest.mark.parametrize(
    "text",
    [
        "It reached {glue:text}`exact:.3f` exact.",
        "The loss is $\\tau = 0.07$ at the start.",
        "Run `lr=2e-3, dropout=0.5` for longer.",
        "```python\nx = 0.5\n```",
        "CLIP starts at 0.07 {cite:p}`radford2021clip`.",
        "## 9.9 Running on Flickr8k",
        "As section 5.2 showed, and §11.2–11.4 measure.",
        "Install Python 3.11 and PyTorch 2.1 or later.",
        "See [the notes](https://example.org/v1.2/page.html).",
        "$$\nL = 0.5 \\cdot x\n$$",
    ],
)
def test_exempt_numbers_are_not_reported(text):
    assert numbers(text) == []


def test_every_number_of_a_table_row_is_reported():
    assert numbers("| row | 0.630 | 0.932 |\n|---|---|---|\n| b | 1.5 | 2 |") == [
        "0.630",
        "0.932",
        "1.5",
    ]


def test_myst_pages_keep_fenced_blocks_whole(tmp_path):
    page = tmp_path / "99_page.md"
    page.write_text(
        "Text 0.5 here.\n\n```python\na = 1.5\n\nb = 2.5\n```\n\nEnd 0.25.\n"
    )
    found = prose_numbers.rejections(page)
    assert [(r.cell, r.number) for r in found] == [
        ("line 1", "0.5"),
        ("line 9", "0.25"),
    ]


@pytest.mark.parametrize(
    "chapter", prose_numbers.chapter_files(), ids=lambda path: path.stem
)
def test_chapter_prose_has_no_typed_results(chapter):
    found = prose_numbers.rejections(chapter)
    assert not found, f"{len(found)} typed numbers:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize(
    "chapter", prose_numbers.chapter_files(), ids=lambda path: path.stem
)
def test_chapter_glue_references_resolve(chapter):
    missing = prose_numbers.unresolved_glue(chapter)
    assert not missing, "\n".join(missing)


def test_glue_references_are_checked_against_saved_outputs(tmp_path):
    cell = {
        "cell_type": "code",
        "source": [],
        "metadata": {},
        "outputs": [
            {
                "output_type": "display_data",
                "data": {"application/papermill.record/text/plain": "0.5"},
                "metadata": {"scrapbook": {"name": "acc", "mime_prefix": ""}},
            }
        ],
    }
    text = "Held {glue:text}`acc:.2f`, lost {glue:text}`gone:.2f`."
    notebook = tmp_path / "01_x.ipynb"
    markdown = {"cell_type": "markdown", "source": [text], "metadata": {}}
    notebook.write_text(json.dumps({"cells": [markdown, cell]}))
    page = tmp_path / "12_y.md"
    page.write_text(
        "See {glue:text}`01_x.ipynb::acc:.1f`, {glue}`01_x.ipynb::b:s` and "
        "{glue:text}`01_x.ipynb::acc`.\n"
    )
    assert prose_numbers.unresolved_glue(notebook) == [
        "01_x cell 0: 'gone:.2f' (not glued)"
    ]
    assert prose_numbers.unresolved_glue(page) == [
        "12_y line 1: '01_x.ipynb::b:s' (not glued)",
        "12_y line 1: '01_x.ipynb::acc' (no format)",
    ]

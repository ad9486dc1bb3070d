"""Find numbers typed into the book's prose that should come from a run.

    python tools/prose_numbers.py            # every chapter, each rejection, a count
    python tools/prose_numbers.py book/05*   # some chapters

The book promises that every number on its pages was produced by the code above it
(DESIGN.md 4.6): a number a cell computes is inserted into the text with MyST-NB's
``{glue:text}`` role, so re-executing a chapter updates its prose. This script reads the
markdown of every chapter (notebook markdown cells and MyST pages) and reports each
decimal number or percentage that is none of:

- a glue reference (``{glue:text}`key:.3f```), or inside math (``$...$``, ``$$...$$``,
  ``{math}``) or code (``...`` spans, fenced code);
- in a sentence that carries a citation (``{cite:p}``, ``{cite:t}``): a number from the
  literature;
- matched by one of the commented patterns of ``ALLOWED`` below (section numbers,
  software versions, settings the reader chooses).

``tests/test_prose_numbers.py`` runs it in ``make test``; each rejection names the
chapter, the cell (or line) and the sentence. The same test checks the other direction
with :func:`unresolved_glue`: every glue reference names a value that the saved
notebook it points to holds (a renamed key would otherwise show as a build warning
only after a full build).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"

# Numbers that are not results, and why each kind may be typed. Keep this list short:
# anything a cell computes belongs in a glue reference instead.
ALLOWED: list[tuple[str, re.Pattern[str]]] = [
    # Section numbers: in headings ("## 9.9 Running on Flickr8k") and cross-references
    # ("section 9.9", "§11.2–11.4", the seed's "11.1 list").
    ("section heading", re.compile(r"^#+ \d+(\.\d+)+")),
    (
        "section number",
        re.compile(
            r"(§\s?|\b[Ss]ections? |\bseed's |\b[Cc]hapter )\d+(\.\d+)+"
            r"([–-]\d+(\.\d+)+)?"
        ),
    ),
    # Software versions name what the book was built with; they are not measured.
    (
        "software version",
        re.compile(
            r"\b(Python|PyTorch|torch|CUDA|cuDNN|Jupyter Book|Sphinx|NumPy|numpy|"
            r"transformers|torchvision|MyST-NB|nbval|Colab|v)\s?[<>=~]*\s?\d+(\.\d+)+"
        ),
    ),
    # Hardware generations ("A100 ... compute capability 8.0").
    ("compute capability", re.compile(r"compute capability \d+\.\d+")),
]

DECIMAL_OR_PERCENT = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.]*\d)|\d+(\.\d+)?\s?%")
CITATION = re.compile(r"\{cite(:[a-z]+)?\}")

# Regions that are not prose, removed before numbers are looked for.
_FENCED_CODE = re.compile(r"^(`{3,}|~{3,})(?!\{)[^\n]*\n.*?^\1\s*$", re.S | re.M)
_MATH_DIRECTIVE = re.compile(
    r"^(`{3,}|:{3,})\{math\}[^\n]*\n.*?^\1\s*$|^(`{3,}|:{3,})\{(code-cell|code-block|"
    r"code|mermaid|glossary)\}[^\n]*\n.*?^\3\s*$",
    re.S | re.M,
)
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<!\\)\$[^$\n]+?(?<!\\)\$")
_ROLE_WITH_TARGET = re.compile(
    r"\{(glue|glue:[a-z]+|math|doc|ref|numref|eq|term)\}`[^`]*`"
)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_DIRECTIVE_OPTION = re.compile(r"^\s*:[a-z-]+:.*$", re.M)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_SENTENCE_END = re.compile(
    r"(?<=[.!?:;。！？])\s+(?=[A-Z(*_\"“\u4e00-\u9fff])|\n\s*\n|\n(?=\s*[|#>*-]|\s*\d+\.\s)"
)


@dataclass(frozen=True)
class Rejection:
    """A typed number: where it is and the sentence that holds it."""

    chapter: str
    cell: str
    number: str
    sentence: str

    def __str__(self) -> str:
        return f"{self.chapter} {self.cell}: {self.number!r} in: {self.sentence}"


def prose_of(markdown: str) -> str:
    """The text of a markdown source with math, code, link targets, glue references
    and directive options blanked out (each replaced by a space)."""
    text = markdown
    for pattern in (
        _HTML_COMMENT,
        _MATH_DIRECTIVE,
        _FENCED_CODE,
        _DISPLAY_MATH,
        _ROLE_WITH_TARGET,
        _CODE_SPAN,
        _INLINE_MATH,
        _LINK_TARGET,
        _DIRECTIVE_OPTION,
    ):
        text = pattern.sub(" ", text)
    return text


def typed_numbers(markdown: str) -> list[tuple[str, str]]:
    """(number, sentence) for every decimal or percentage in ``markdown``'s prose that
    no exemption covers."""
    found = []
    for sentence in _SENTENCE_END.split(prose_of(markdown)):
        if not sentence or not sentence.strip() or CITATION.search(sentence):
            continue
        allowed_spans = [m.span() for _, p in ALLOWED for m in p.finditer(sentence)]
        for match in DECIMAL_OR_PERCENT.finditer(sentence):
            start, end = match.span()
            if any(a <= start and end <= b for a, b in allowed_spans):
                continue
            found.append((match.group(0), " ".join(sentence.split())))
    return found


def markdown_units(path: Path) -> list[tuple[str, str]]:
    """(label, markdown) for each markdown cell of a notebook, or each page of a MyST
    file (labelled by cell number or line number)."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return [
            (f"cell {i}", "".join(cell["source"]))
            for i, cell in enumerate(cells)
            if cell["cell_type"] == "markdown"
        ]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    units, start = [], 0
    for i, line in enumerate(lines + ["\n"]):
        if not line.strip() or i == len(lines):
            if "".join(lines[start:i]).strip():
                units.append((f"line {start + 1}", "".join(lines[start:i])))
            start = i + 1
    return _join_open_blocks(units)


def _join_open_blocks(units: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Paragraphs of a MyST page, with fenced blocks (code, math) kept whole even when
    they hold blank lines."""
    joined: list[tuple[str, str]] = []
    open_fence: str | None = None
    for label, text in units:
        if open_fence is not None:
            joined[-1] = (joined[-1][0], joined[-1][1] + "\n" + text)
        else:
            joined.append((label, text))
        for line in text.splitlines():
            fence = re.match(r"^\s*(`{3,}|:{3,}|\$\$)", line)
            if not fence:
                continue
            if open_fence is None:
                if not (
                    fence.group(1) == "$$"
                    and line.strip().endswith("$$")
                    and len(line.strip()) > 2
                ):
                    open_fence = fence.group(1)
            elif fence.group(1) == open_fence and line.strip() == open_fence:
                open_fence = None
    return joined


def chapter_files() -> list[Path]:
    """The book's chapters: numbered notebooks and MyST pages."""
    return sorted(
        p for p in BOOK.iterdir() if re.match(r"\d\d_.*\.(ipynb|md)$", p.name)
    )


def rejections(path: Path) -> list[Rejection]:
    """Every typed number of one chapter."""
    return [
        Rejection(path.stem, label, number, sentence)
        for label, markdown in markdown_units(path)
        for number, sentence in typed_numbers(markdown)
    ]


_GLUE_REFERENCE = re.compile(r"\{glue(?::[a-z]*)?\}`([^`]+)`")


def glued_names(notebook: Path) -> set[str]:
    """The names a saved notebook's outputs hold values under (``crossalign.book.glue``
    or ``myst_nb.glue``)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return {
        output["metadata"]["scrapbook"]["name"]
        for cell in cells
        for output in cell.get("outputs", [])
        if "scrapbook" in output.get("metadata", {})
    }


def unresolved_glue(path: Path) -> list[str]:
    """Glue references of one chapter (``key``, ``key:.3f``, ``other.ipynb::key:.3f``)
    whose value no saved notebook holds."""
    missing = []
    names: dict[Path, set[str]] = {}
    for label, markdown in markdown_units(path):
        for reference in _GLUE_REFERENCE.findall(markdown):
            document, _, key = reference.rpartition("::")
            if document and ":" not in key:
                # MyST-NB splits a format off at the last colon: without one, the
                # "::" itself would be read as the format.
                missing.append(f"{path.stem} {label}: {reference!r} (no format)")
                continue
            key = key.split(":", 1)[0]
            notebook = path.parent / document if document else path
            if notebook.suffix != ".ipynb" or not notebook.exists():
                missing.append(f"{path.stem} {label}: {reference!r} (no notebook)")
                continue
            if notebook not in names:
                names[notebook] = glued_names(notebook)
            if key not in names[notebook]:
                missing.append(f"{path.stem} {label}: {reference!r} (not glued)")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="default: every chapter")
    args = parser.parse_args(argv)
    total = 0
    for path in args.chapters or chapter_files():
        found = rejections(path)
        for rejection in found:
            print(rejection)
        print(f"== {path.name}: {len(found)} typed numbers")
        total += len(found)
    print(f"== total: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

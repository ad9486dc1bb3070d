"""Write the Colab setup cell, built from the repository URL in ``_config.yml``, into
every chapter.

    python tools/sync_setup_cell.py              # update book/*.ipynb in place python
    tools/sync_setup_cell.py --check      # exit 1 and name each notebook that differs
    python tools/sync_setup_cell.py book/04_alignment_pipeline.ipynb   # only these
    notebooks

The cell installs the companion package when a notebook runs in Google Colab and does
nothing anywhere else. Every chapter carries the same cell, as the second cell (right
after the title cell), tagged ``nbval-skip`` so notebook validation never runs it. The
repository is named in one place, ``repository.url`` in ``_config.yml``, which also
drives the launch buttons.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "_config.yml"
BOOK_DIR = ROOT / "book"
SETUP_CELL_INDEX = 1
SETUP_CELL_TAG = "nbval-skip"
SETUP_CELL_ID = "colab-setup"
FIRST_LINE = "# Colab only: install the companion package (does nothing anywhere else)."
# How every version of the setup cell begins, so that rewording FIRST_LINE updates old
# copies instead of adding a second cell.
SETUP_CELL_PREFIX = "# Colab only:"


def repository_url(config_path: Path = CONFIG_PATH) -> str:
    """Return ``repository.url`` from the Jupyter Book configuration at
    ``config_path``."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    url = (config.get("repository") or {}).get("url")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError(
            f"{config_path}: repository.url must be an https:// URL of the book's "
            f"repository, got {url!r}"
        )
    return url.rstrip("/")


def setup_cell_source(url: str) -> str:
    """The source of the setup cell that installs ``crossalign`` from the repository at
    ``url``."""
    return (
        f"{FIRST_LINE}\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install --quiet "crossalign @ git+{url}"'
    )


def is_setup_cell(cell: nbformat.NotebookNode) -> bool:
    """Whether ``cell`` is a (possibly outdated) copy of the setup cell."""
    return cell.cell_type == "code" and cell.source.lstrip().startswith(
        SETUP_CELL_PREFIX
    )


def _has_expected_form(cell: nbformat.NotebookNode, source: str) -> bool:
    """Whether ``cell`` is the setup cell with exactly ``source`` and the skip tag."""
    return (
        is_setup_cell(cell)
        and cell.source == source
        and SETUP_CELL_TAG in cell.metadata.get("tags", [])
    )


def notebook_is_synced(notebook: nbformat.NotebookNode, source: str) -> bool:
    """Whether ``notebook`` has the setup cell at its place and no other copy of it."""
    copies = [index for index, cell in enumerate(notebook.cells) if is_setup_cell(cell)]
    return (
        copies == [SETUP_CELL_INDEX]
        and len(notebook.cells) > SETUP_CELL_INDEX
        and _has_expected_form(notebook.cells[SETUP_CELL_INDEX], source)
    )


def sync_notebook(notebook: nbformat.NotebookNode, source: str) -> bool:
    """Put the setup cell with ``source`` at its place in ``notebook``; return whether
    it changed.

    An existing copy keeps its cell id and outputs when only its source or tags were
    stale; any copy elsewhere in the notebook is moved to the right place, and
    duplicates are removed.
    """
    if notebook_is_synced(notebook, source):
        return False
    if not notebook.cells:
        raise ValueError(
            "the notebook has no cells: the setup cell goes right after a title cell"
        )
    copies = [cell for cell in notebook.cells if is_setup_cell(cell)]
    notebook.cells = [cell for cell in notebook.cells if not is_setup_cell(cell)]
    if copies:
        cell = copies[0]
        cell.source = source
    else:
        cell = nbformat.v4.new_code_cell(source)
        if "id" in notebook.cells[0]:
            taken = {other.get("id") for other in notebook.cells}
            cell.id = (
                SETUP_CELL_ID
                if SETUP_CELL_ID not in taken
                else f"{SETUP_CELL_ID}-{len(taken)}"
            )
        else:
            cell.pop("id", None)  # notebooks in format 4.0-4.4 have no cell ids
    tags = list(cell.metadata.get("tags", []))
    if SETUP_CELL_TAG not in tags:
        tags.append(SETUP_CELL_TAG)
    cell.metadata["tags"] = tags
    notebook.cells.insert(SETUP_CELL_INDEX, cell)
    return True


def chapter_notebooks(book_dir: Path = BOOK_DIR) -> list[Path]:
    """The chapter notebooks of the book, in file-name order."""
    return sorted(book_dir.glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help="notebooks to update (default: book/*.ipynb)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if a notebook differs",
    )
    parser.add_argument(
        "--config", type=Path, default=CONFIG_PATH, help="the Jupyter Book _config.yml"
    )
    args = parser.parse_args(argv)
    source = setup_cell_source(repository_url(args.config))
    paths = args.notebooks or chapter_notebooks()
    stale = []
    for path in paths:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        notebook = nbformat.read(path, as_version=4)
        if args.check:
            if not notebook_is_synced(notebook, source):
                stale.append(path)
        elif sync_notebook(notebook, source):
            nbformat.write(notebook, path)
            print(f"updated {path}")
    if stale:
        for path in stale:
            print(
                f"{path}: setup cell missing, misplaced or outdated (run python "
                "tools/sync_setup_cell.py)",
                file=sys.stderr,
            )
        return 1
    print(
        f"{len(paths)} notebook(s) checked"
        if args.check
        else f"{len(paths)} notebook(s) in sync"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

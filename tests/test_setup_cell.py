"""The Colab setup cell: one source (tools/sync_setup_cell.py, from _config.yml), in
every chapter."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import sync_setup_cell as tool  # noqa: E402

# The cell as the book's authors wrote it by hand, for the repository configured today.
HAND_WRITTEN_CELL = """\
# Colab only: install the companion package (does nothing anywhere else).
import sys

if "google.colab" in sys.modules:
    %pip install --quiet "crossalign @ git+https://github.com/crossalign/crossalign-book\""""

NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def configured_url() -> str:
    """``repository.url`` read straight from _config.yml (not through the tool)."""
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))[
        "repository"
    ]["url"]


def make_notebook(*sources: str) -> nbformat.NotebookNode:
    """A notebook whose first cell is a title and whose other cells are code with
    ``sources``."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# 9. A chapter")]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    return notebook


def test_generated_cell_equals_the_hand_written_one_for_the_configured_repository():
    assert (
        tool.setup_cell_source("https://github.com/crossalign/crossalign-book")
        == HAND_WRITTEN_CELL
    )


def test_repository_url_comes_from_config(tmp_path):
    assert tool.repository_url() == configured_url()
    other = tmp_path / "_config.yml"
    other.write_text(
        "repository:\n  url: https://github.com/someone/fork/\n", encoding="utf-8"
    )
    assert tool.repository_url(other) == "https://github.com/someone/fork"


def test_repository_url_missing_names_the_file(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("title: no repository here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="_config.yml: repository.url"):
        tool.repository_url(config)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_every_chapter_has_the_generated_setup_cell(path):
    notebook = nbformat.read(path, as_version=4)
    cell = notebook.cells[tool.SETUP_CELL_INDEX]
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[
        0
    ].source.startswith("# ")
    assert cell.source == tool.setup_cell_source(configured_url())
    assert f'git+{configured_url()}"' in cell.source
    assert "nbval-skip" in cell.metadata.get("tags", [])
    assert cell.get("outputs") == []  # outside Colab it prints nothing
    assert sum(tool.is_setup_cell(other) for other in notebook.cells) == 1


def test_sync_inserts_missing_cell_after_title_with_skip_tag():
    notebook = make_notebook("import os")
    assert tool.sync_notebook(notebook, HAND_WRITTEN_CELL)
    assert [cell.cell_type for cell in notebook.cells] == ["markdown", "code", "code"]
    assert notebook.cells[1].source == HAND_WRITTEN_CELL
    assert notebook.cells[1].metadata["tags"] == ["nbval-skip"]
    assert notebook.cells[2].source == "import os"
    nbformat.validate(notebook)


def test_sync_replaces_stale_copy_in_place_keeping_id_and_other_tags():
    stale = HAND_WRITTEN_CELL.replace("crossalign-book", "old-name")
    notebook = make_notebook(stale, "import os")
    notebook.cells[1].metadata["tags"] = ["hide-input"]
    cell_id = notebook.cells[1].id
    assert tool.sync_notebook(notebook, HAND_WRITTEN_CELL)
    assert len(notebook.cells) == 3
    assert notebook.cells[1].id == cell_id
    assert notebook.cells[1].source == HAND_WRITTEN_CELL
    assert notebook.cells[1].metadata["tags"] == ["hide-input", "nbval-skip"]


def test_sync_rewrites_a_copy_whose_first_line_was_worded_differently():
    reworded = HAND_WRITTEN_CELL.replace(
        tool.FIRST_LINE, "# Colab only: an older wording of the first line."
    )
    notebook = make_notebook(reworded, "import os")
    cell_id = notebook.cells[1].id
    assert tool.sync_notebook(notebook, HAND_WRITTEN_CELL)
    assert [cell.source for cell in notebook.cells[1:]] == [
        HAND_WRITTEN_CELL,
        "import os",
    ]
    assert notebook.cells[1].id == cell_id


def test_sync_moves_misplaced_copy_and_drops_duplicates():
    notebook = make_notebook("import os", HAND_WRITTEN_CELL, "x = 1", HAND_WRITTEN_CELL)
    assert tool.sync_notebook(notebook, HAND_WRITTEN_CELL)
    assert [cell.source for cell in notebook.cells[1:]] == [
        HAND_WRITTEN_CELL,
        "import os",
        "x = 1",
    ]


def test_sync_is_idempotent():
    notebook = make_notebook("import os")
    tool.sync_notebook(notebook, HAND_WRITTEN_CELL)
    synced = copy.deepcopy(notebook)
    assert not tool.sync_notebook(notebook, HAND_WRITTEN_CELL)
    assert notebook == synced


def test_sync_refuses_an_empty_notebook():
    with pytest.raises(ValueError, match="no cells"):
        tool.sync_notebook(nbformat.v4.new_notebook(), HAND_WRITTEN_CELL)


def test_command_line_check_then_write_with_another_repository(tmp_path, capsys):
    config = tmp_path / "_config.yml"
    config.write_text(
        "repository:\n  url: https://github.com/someone/fork\n", encoding="utf-8"
    )
    path = tmp_path / "99_chapter.ipynb"
    nbformat.write(make_notebook(HAND_WRITTEN_CELL, "import os"), path)

    assert tool.main(["--check", "--config", str(config), str(path)]) == 1
    assert "99_chapter.ipynb" in capsys.readouterr().err
    # --check wrote nothing
    assert nbformat.read(path, as_version=4).cells[1].source == HAND_WRITTEN_CELL

    assert tool.main(["--config", str(config), str(path)]) == 0
    written = nbformat.read(path, as_version=4)
    assert written.cells[1].source == HAND_WRITTEN_CELL.replace(
        "github.com/crossalign/crossalign-book", "github.com/someone/fork"
    )
    assert tool.main(["--check", "--config", str(config), str(path)]) == 0

"""tools/run_notebooks.py: stderr leaves only the cells nbval does not check."""

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from run_notebooks import drop_ignored_stderr


def _cell(tags, outputs):
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.metadata["tags"] = tags
    cell.outputs = [
        nbformat.v4.new_output("stream", name=name, text=text) for name, text in outputs
    ]
    return cell


def test_stderr_is_dropped_only_from_ignored_cells():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        _cell(
            ["nbval-ignore-output"],
            [
                ("stdout", "loss 0.1\n"),
                ("stderr", "/some/path: Warning\n"),
                ("stderr", "50%|##|\n"),
            ],
        ),
        _cell([], [("stdout", "shape (2, 3)\n"), ("stderr", "checked warning\n")]),
        nbformat.v4.new_markdown_cell("text"),
    ]
    assert drop_ignored_stderr(notebook) == 2
    assert [(o.name, o.text) for o in notebook.cells[0].outputs] == [
        ("stdout", "loss 0.1\n")
    ]
    assert [(o.name, o.text) for o in notebook.cells[1].outputs] == [
        ("stdout", "shape (2, 3)\n"),
        ("stderr", "checked warning\n"),
    ]
    assert drop_ignored_stderr(notebook) == 0

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


def test_cells_that_end_in_checks_are_recognised():
    from run_notebooks import ends_in_checks

    assert ends_in_checks("assert x > 1")
    assert ends_in_checks('if DATA == "shapes":\n    # a comment\n    assert x > 1, x')
    assert ends_in_checks("y = f(x)\nprint(y)\nassert y > 1\nfor z in y:\n    assert z")
    assert ends_in_checks('assert x > 1\nprint("x is large: OK")')  # only a message
    assert not ends_in_checks("assert x > 1\ny = f(x)")  # f would be skipped
    assert not ends_in_checks('if DATA == "shapes":\n    print(x)\n    assert x')
    assert not ends_in_checks("with torch.no_grad():\n    assert f(x)")
    assert not ends_in_checks("y = f(x)")
    assert not ends_in_checks("%pip install x")
    assert not ends_in_checks("")


def test_failed_checks_split_tolerable_asserts_from_other_errors():
    from run_notebooks import failed_checks

    notebook = nbformat.v4.new_notebook()
    cells = [
        ("assert loss < 1", "AssertionError"),
        ("with torch.no_grad():\n    assert torch.equal(a, b)", "AssertionError"),
        ("assert f(x)", "NameError"),
    ]
    for source, ename in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [
            nbformat.v4.new_output("error", ename=ename, evalue="", traceback=[])
        ]
        notebook.cells.append(cell)
    notebook.cells[2].metadata["tags"] = ["raises-exception"]  # shown on purpose
    notebook.cells.append(nbformat.v4.new_code_cell("f(x)"))
    notebook.cells[3].outputs = [
        nbformat.v4.new_output("error", ename="NameError", evalue="", traceback=[])
    ]
    tolerated, fatal = failed_checks(notebook)
    assert tolerated == ["cell 0: AssertionError:"]
    assert fatal == ["cell 1: AssertionError:", "cell 3: NameError:"]

"""crossalign.book (numbers glued into the prose) and crossalign.results (benchmark
result files)."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from crossalign import results
from crossalign.book import glue, glue_seconds, plain_value


@pytest.fixture
def shell():
    return InteractiveShell.instance()


def displayed(shell, call):
    with capture_output() as captured:
        call()
    return [(output.data, output.metadata) for output in captured.outputs]


def test_glue_stores_what_myst_nb_stores(shell):
    myst_nb = pytest.importorskip("myst_nb")
    ours = displayed(shell, lambda: glue("acc", 0.8125))
    theirs = displayed(shell, lambda: myst_nb.glue("acc", 0.8125, display=False))
    assert ours == theirs


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (np.float64(0.123456789), 0.1235),
        (torch.tensor(0.5), 0.5),
        (np.int64(7), 7),
        (3, 3),
        ("fast", "fast"),
    ],
)
def test_plain_value_gives_python_numbers(value, stored):
    result = plain_value(value)
    assert result == stored and type(result) is type(stored)


def test_plain_value_rejects_what_prose_cannot_show():
    with pytest.raises(TypeError, match="bool"):
        plain_value(True)
    with pytest.raises(TypeError, match="list"):
        plain_value([1, 2])


def test_glue_at_the_end_of_a_cell_shows_no_result(shell):
    # A value returned by the cell's last call would appear on the page as its result.
    with capture_output() as captured:
        result = shell.run_cell(
            "from crossalign.book import glue, glue_seconds\n"
            "glue('a', 0.5)\n"
            "glue_seconds('b', 12.0)",
            store_history=True,
        )
    assert result.success and result.result is None
    assert "Out[" not in captured.stdout
    assert len(captured.outputs) == 2  # the two hidden records, nothing else


def test_glued_text_reads_back_with_literal_eval(shell):
    from ast import literal_eval

    [(data, _)] = displayed(shell, lambda: glue("x", np.float32(0.25)))
    assert literal_eval(data["application/papermill.record/text/plain"]) == 0.25
    [(data, meta)] = displayed(shell, lambda: glue_seconds("t", 93.4))
    assert data["application/papermill.record/text/plain"] == "'93 s'"
    assert meta["scrapbook"]["name"] == "t"


def test_result_file_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/demo.py", "--steps", "3"])
    columns = ["row", "exact"]
    rows = [{"row": "a", "exact": 0.5}, {"row": "b", "exact": 0.75}]
    path = results.save_result(
        "demo", columns, rows, noise={"exact": 0.02}, root=tmp_path
    )
    assert path == tmp_path / "benchmarks" / "results" / "demo.json"
    loaded = results.load_result("demo", root=tmp_path)
    assert loaded.rows == rows and loaded.noise == {"exact": 0.02}
    assert loaded.command.endswith("demo.py --steps 3")
    assert loaded.row("b")["exact"] == 0.75
    with pytest.raises(KeyError, match="'c'"):
        loaded.row("c")
    assert loaded.date in loaded.measured() and "cores" in loaded.machine
    assert loaded.library_versions["numpy"] == np.__version__
    assert f"numpy {np.__version__}" in loaded.measured()
    table = results.markdown_table(loaded, {"exact": ".2f"})
    assert table.splitlines() == [
        "| row | exact |",
        "|---|---:|",
        "| a | 0.50 |",
        "| b | 0.75 |",
    ]


def test_markdown_table_escapes_pipes_and_measured_names_the_notes():
    result = results.BenchmarkResult(
        name="demo",
        columns=["row", "relations | attributes"],
        rows=[{"row": "a | b", "relations | attributes": 0.5}],
        notes="busy machine",
    )
    header, _, row = results.markdown_table(result).splitlines()
    assert header == "| row | relations \\| attributes |"
    assert row == "| a \\| b | 0.5 |"
    assert [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] == [
        "a \\| b",
        "0.5",
    ]
    assert result.measured().endswith("Notes: busy machine.")


def test_result_rows_must_hold_every_column(tmp_path):
    with pytest.raises(ValueError, match=r"row 1 lacks columns \['exact'\]"):
        results.save_result(
            "bad",
            ["row", "exact"],
            [{"row": "a", "exact": 1}, {"row": "b"}],
            root=tmp_path,
        )


def test_bad_result_files_name_themselves(tmp_path):
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        results.load_result("missing", root=tmp_path)
    (folder / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not a result file"):
        results.load_result("broken", root=tmp_path)
    (folder / "odd.json").write_text(
        json.dumps({"name": "odd", "columns": [], "rows": [], "x": 1})
    )
    with pytest.raises(ValueError, match=r"odd.json: unknown fields \['x'\]"):
        results.load_result("odd", root=tmp_path)


def test_outside_a_checkout_the_committed_file_is_fetched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROSSALIGN_CACHE", str(tmp_path / "cache"))
    fetched = []

    def fake_download(url, dest, **kwargs):
        fetched.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps({"name": "demo", "columns": ["row"], "rows": []}))
        return dest

    monkeypatch.setattr("crossalign.data.download.download_file", fake_download)
    assert results.load_result("demo").name == "demo"
    assert fetched == [f"{results.REPOSITORY_RAW_URL}/benchmarks/results/demo.json"]


def test_committed_result_files_load():
    root = results.repository_root()
    assert root is not None
    for path in sorted((root / results.RESULTS_FOLDER).glob("*.json")):
        result = results.load_result(path.stem, root=root)
        assert result.rows and result.command.startswith(
            f"python benchmarks/{path.stem}.py"
        )

"""Re-execute chapter notebooks in clean kernels, save them with fresh outputs, report
times.

    python tools/run_notebooks.py book/01_overview.ipynb [...]
    CROSSALIGN_DATA=flickr8k python tools/run_notebooks.py --output-dir out book/01*

Used by ``make notebooks``. Each notebook runs in a new kernel with ``book/`` as the
working directory (as in the book build); the first failing cell stops with its error
and the notebook on disk is left untouched. With ``--output-dir`` the executed
notebooks are written there instead and the chapters keep their saved outputs: that is
how the tests run a chapter on another path (Flickr8k, full size) than the one the book
shows. ``--allow-failed-checks`` (for the full-size smoke run, whose budgets are cut
so far that no result can hold) lets a failed ``assert`` pass in a cell that ends in
checks (nothing but checks after its first assert); such cells are listed, and every
other error still stops the run.
The kernel inherits this process's environment, so ``CROSSALIGN_DATA``,
``CROSSALIGN_FAST`` and the other switches of a chapter's settings cell apply.

Stderr is dropped from cells tagged ``nbval-ignore-output`` before saving: it holds
library warnings and progress bars that name this machine's paths and differ between
machines, and nbval does not compare those cells anyway. Stderr of checked cells is
kept, so nbval still catches a warning that appears or disappears there.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def drop_ignored_stderr(notebook: nbformat.NotebookNode) -> int:
    """Remove stderr stream outputs from cells tagged ``nbval-ignore-output``; return
    how many."""
    removed = 0
    for cell in notebook.cells:
        if cell.cell_type != "code" or "nbval-ignore-output" not in cell.metadata.get(
            "tags", []
        ):
            continue
        kept = [
            out
            for out in cell.outputs
            if not (out.output_type == "stream" and out.name == "stderr")
        ]
        removed += len(cell.outputs) - len(kept)
        cell.outputs = kept
    return removed


def ends_in_checks(source: str) -> bool:
    """Whether a cell ends in checks and does nothing after its first one: from its
    first top-level check on, every statement is an ``assert``, an ``if`` or ``for``
    that holds only checks (``if DATA == "shapes": assert ...``), or a ``print`` (the
    chapters confirm checks with one). A failed assert there skips nothing but other
    checks and messages. IPython syntax (``%pip``) makes a cell do something
    else."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False

    def is_check(statement: ast.stmt) -> bool:
        if isinstance(statement, ast.Assert):
            return True
        if isinstance(statement, ast.If):
            return all(map(is_check, statement.body + statement.orelse))
        if isinstance(statement, ast.For):
            return not statement.orelse and all(map(is_check, statement.body))
        return False

    def is_print(statement: ast.stmt) -> bool:
        return (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Call)
            and isinstance(statement.value.func, ast.Name)
            and statement.value.func.id == "print"
        )

    first = next((i for i, statement in enumerate(body) if is_check(statement)), None)
    return first is not None and all(
        is_check(statement) or is_print(statement) for statement in body[first:]
    )


def failed_checks(notebook: nbformat.NotebookNode) -> tuple[list[str], list[str]]:
    """The errors of an executed notebook, split into failed asserts of cells that end
    in checks (tolerable in a smoke run) and everything else; each as ``cell N: error``.
    Cells tagged ``raises-exception`` show an error on purpose and are skipped."""
    tolerated, fatal = [], []
    for index, cell in enumerate(notebook.cells):
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue  # the chapter shows this error on purpose
        for out in cell.get("outputs", []):
            if out.output_type != "error":
                continue
            line = f"cell {index}: {out.ename}: {out.evalue}".strip()
            if out.ename == "AssertionError" and ends_in_checks(cell.source):
                tolerated.append(line)
            else:
                fatal.append(line)
    return tolerated, fatal


def run_notebook(
    path: Path,
    timeout: int,
    output: Path | None = None,
    allow_failed_checks: bool = False,
) -> float:
    """Execute ``path`` and save it with its new outputs at ``output`` (default: in
    place); return the seconds it took.

    With ``allow_failed_checks`` every cell runs, a failed assert of a cell that ends in
    checks is reported and allowed, and any other error raises ``RuntimeError`` (after
    the notebook is saved)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=allow_failed_checks,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError:
        if output is not None:  # keep what ran, for the reader of the failure
            nbformat.write(notebook, output)
        raise
    seconds = time.perf_counter() - started
    drop_ignored_stderr(notebook)
    nbformat.write(notebook, output or path)
    if allow_failed_checks:
        tolerated, fatal = failed_checks(notebook)
        for line in tolerated:
            print(f"{path.name}: allowed, a check at a cut budget: {line}", flush=True)
        if fatal:
            raise RuntimeError(f"{path.name} failed:\n" + "\n".join(fatal))
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument(
        "--timeout", type=int, default=1200, help="seconds allowed per cell"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="write the executed notebooks here instead of over the chapters",
    )
    parser.add_argument(
        "--allow-failed-checks",
        action="store_true",
        help="let failed asserts of cells that end in checks pass (smoke runs)",
    )
    args = parser.parse_args()
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for path in args.notebooks:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        output = args.output_dir / path.name if args.output_dir is not None else None
        seconds = run_notebook(path, args.timeout, output, args.allow_failed_checks)
        total += seconds
        print(f"{path.name:<40} {seconds:7.1f} s", flush=True)
    print(f"{'total':<40} {total:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

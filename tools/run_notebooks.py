"""Re-execute chapter notebooks in clean kernels, save them with fresh outputs, report
times.

    python tools/run_notebooks.py book/01_overview.ipynb [...]
    CROSSALIGN_DATA=flickr8k python tools/run_notebooks.py --output-dir out book/01*

Used by ``make notebooks``. Each notebook runs in a new kernel with ``book/`` as the
working directory (as in the book build); the first failing cell stops with its error
and the notebook on disk is left untouched. With ``--output-dir`` the executed
notebooks are written there instead and the chapters keep their saved outputs: that is
how the tests run a chapter on another path (Flickr8k, full size) than the one the book
shows. The kernel inherits this process's environment, so ``CROSSALIGN_DATA``,
``CROSSALIGN_FAST`` and the other switches of a chapter's settings cell apply.

Stderr is dropped from cells tagged ``nbval-ignore-output`` before saving: it holds
library warnings and progress bars that name this machine's paths and differ between
machines, and nbval does not compare those cells anyway. Stderr of checked cells is
kept, so nbval still catches a warning that appears or disappears there.
"""

from __future__ import annotations

import argparse
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


def run_notebook(path: Path, timeout: int, output: Path | None = None) -> float:
    """Execute ``path`` and save it with its new outputs at ``output`` (default: in
    place); return the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
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
    args = parser.parse_args()
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for path in args.notebooks:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        output = args.output_dir / path.name if args.output_dir is not None else None
        seconds = run_notebook(path, args.timeout, output)
        total += seconds
        print(f"{path.name:<40} {seconds:7.1f} s", flush=True)
    print(f"{'total':<40} {total:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

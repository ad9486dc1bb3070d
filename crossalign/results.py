"""Benchmark result files: what a script measured, where and when, as JSON.

A benchmark script in ``benchmarks/`` ends with :func:`save_result`; a chapter that
shows its table calls :func:`load_result` and :func:`markdown_table` instead of typing
the numbers, so the page and the measurement cannot drift apart (DESIGN.md 4.6). A
file records the command that produced it, the date, the machine (platform, processor
count, torch threads, device), the package and torch versions, the column names and
every row, and the versions of Python and the numerical libraries beside torch
(floating-point results change in their last bits between versions, and a long
training run grows that into a different model, so a rerun that disagrees by more than
the noise may differ in them); ``noise`` holds what the script says separates two runs
that should agree (for example the standard error of an accuracy on the test split),
which a chapter uses when it checks its own run against a row.

The files live in ``benchmarks/results/`` of the repository. A notebook opened outside
a checkout (Colab installs only the package) fetches the committed file from the
repository instead.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from crossalign.utils import atomic_path, default_cache_dir

REPOSITORY_RAW_URL = "https://raw.githubusercontent.com/crossalign/crossalign-book/main"
RESULTS_FOLDER = Path("benchmarks") / "results"


@dataclass
class BenchmarkResult:
    """One run of a benchmark script: its rows and the circumstances."""

    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    command: str = ""
    date: str = ""
    machine: str = ""
    package_version: str = ""
    torch_version: str = ""
    library_versions: dict[str, str] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    def row(self, label: str) -> dict[str, Any]:
        """The row whose first column is ``label``."""
        key = self.columns[0]
        for row in self.rows:
            if row[key] == label:
                return row
        labels = ", ".join(repr(row[key]) for row in self.rows)
        raise KeyError(f"{self.name}: no row {label!r} (rows: {labels})")

    def measured(self) -> str:
        """One sentence saying when, where and how the numbers were measured."""
        sentence = (
            f"Measured on {self.date} on {self.machine} with crossalign "
            f"{self.package_version} and torch {self.torch_version}: `{self.command}`."
        )
        if self.library_versions:
            libraries = ", ".join(
                f"{name} {version}" for name, version in self.library_versions.items()
            )
            sentence = f"{sentence} Libraries: {libraries}."
        return f"{sentence} Notes: {self.notes}." if self.notes else sentence


def library_versions() -> dict[str, str]:
    """The versions of Python and of the installed numerical libraries besides torch
    (those that are not installed are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "pillow", "torchvision"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def machine_description() -> str:
    """The machine in a few words: processor count, threads torch uses, device, and
    the load average when the result was saved (other jobs on the machine slow every
    time measured; a load above the core count says the seconds are not an idle
    machine's)."""
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.machine()})"
    )
    load = (
        f", load average {os.getloadavg()[1]:.1f}" if hasattr(os, "getloadavg") else ""
    )
    return (
        f"{platform.system()} {device}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads{load}"
    )


def repository_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) that
    holds ``benchmarks/results``; ``None`` outside a checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / RESULTS_FOLDER).is_dir():
            return folder
    return None


def save_result(
    name: str,
    columns: list[str],
    rows: list[dict[str, Any]],
    *,
    noise: dict[str, float] | None = None,
    notes: str = "",
    root: Path | None = None,
) -> Path:
    """Write ``benchmarks/results/<name>.json`` (atomically) with the rows, the
    command line that is running and the machine; return its path.

    Every row must hold every column: a missing value is a bug in the script, caught
    here rather than on the page.
    """
    for index, row in enumerate(rows):
        missing = [column for column in columns if column not in row]
        if missing:
            raise ValueError(f"{name}: row {index} lacks columns {missing}")
    from crossalign import __version__

    result = BenchmarkResult(
        name=name,
        columns=list(columns),
        rows=rows,
        command=" ".join(
            ["python", *map(shlex.quote, [_script_path(sys.argv[0]), *sys.argv[1:]])]
        ),
        date=_dt.date.today().isoformat(),
        machine=machine_description(),
        package_version=__version__,
        torch_version=torch.__version__.split("+")[0],
        library_versions=library_versions(),
        noise=dict(noise or {}),
        notes=notes,
    )
    folder = (root or repository_root() or Path.cwd()) / RESULTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(
            json.dumps(asdict(result), indent=1) + "\n", encoding="utf-8"
        )
    return path


def _script_path(argv0: str) -> str:
    """The script as run from the repository root (``benchmarks/x.py``)."""
    path = Path(argv0).resolve()
    root = repository_root(path.parent)
    return str(path.relative_to(root)) if root else path.name


def load_result(name: str, root: Path | None = None) -> BenchmarkResult:
    """Read ``benchmarks/results/<name>.json`` from the checkout above the working
    directory (or ``root``); outside a checkout, fetch the committed file from the
    repository into the cache folder."""
    checkout = root or repository_root()
    if checkout is not None:
        path = checkout / RESULTS_FOLDER / f"{name}.json"
    else:
        from crossalign.data.download import download_file

        path = default_cache_dir() / "benchmark_results" / f"{name}.json"
        if not path.exists():
            download_file(
                f"{REPOSITORY_RAW_URL}/{RESULTS_FOLDER.as_posix()}/{name}.json",
                path,
                progress=False,
            )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no result file; run the benchmark script benchmarks/{name}.py"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a result file ({error})") from None
    unknown = set(data) - set(BenchmarkResult.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
    return BenchmarkResult(**data)


def markdown_table(
    result: BenchmarkResult, formats: dict[str, str] | None = None
) -> str:
    """The rows as a Markdown table; ``formats`` maps a column to a format spec
    (``".3f"``), other columns are printed as they are. A ``|`` inside a name or a
    value is escaped, so it cannot split a cell."""
    formats = formats or {}

    def escaped(text: str) -> str:
        return text.replace("|", "\\|")

    def cell(column: str, value: Any) -> str:
        if column in formats and value is not None:
            return escaped(format(value, formats[column]))
        return escaped(str(value))

    lines = [
        "| " + " | ".join(map(escaped, result.columns)) + " |",
        "|"
        + "|".join("---" if i == 0 else "---:" for i in range(len(result.columns)))
        + "|",
    ]
    lines += [
        "| " + " | ".join(cell(c, row[c]) for c in result.columns) + " |"
        for row in result.rows
    ]
    return "\n".join(lines)

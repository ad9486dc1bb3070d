"""Small helpers every part of the package shares.

Seeding, device choice, atomic writes, and number checks that type checkers can follow.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def is_integral(value: object) -> bool:
    """Whether ``value`` is an integer of any kind (a ``numbers.Integral``).

    Python and NumPy integers count, and so does ``bool`` (callers that refuse it test
    it first). A function rather than an inline ``isinstance``: type checkers take
    ``int`` and ``numbers.Integral`` for unrelated types, so an inline test on an
    argument annotated ``int`` would look always false to them, and they would skip
    the code after it.
    """
    return isinstance(value, numbers.Integral)


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number of any kind (a ``numbers.Real``).

    Python and NumPy integers and floats count, and so does ``bool`` (callers that
    refuse it test it first); a function for the reason given in :func:`is_integral`.
    """
    return isinstance(value, numbers.Real)


def seed_everything(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated.

    With ``deterministic=True`` PyTorch is also asked for deterministic kernels, which
    makes GPU runs repeatable at some cost in speed (CPU runs are repeatable anyway).
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the device to run on: ``"auto"`` picks CUDA, then Apple MPS, then CPU.

    An explicit device that is not available raises a ``ValueError`` that says which
    devices are, instead of failing later inside a kernel.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if (
            getattr(torch.backends, "mps", None) is not None
            and torch.backends.mps.is_available()
        ):
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for, but CUDA is not available here; use "
            "'cpu' or 'auto'"
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(
            f"device={device!r} was asked for, but Apple MPS is not available here; "
            "use 'cpu' or 'auto'"
        )
    return dev


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    A crash or an exception inside the block leaves ``path`` as it was (no half-written
    file), because the rename is the only step that touches it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def default_cache_dir() -> Path:
    """Where data sets and cached features go: ``$CROSSALIGN_CACHE`` or
    ``~/.cache/crossalign``."""
    return Path(
        os.environ.get("CROSSALIGN_CACHE", Path.home() / ".cache" / "crossalign")
    ).expanduser()


SMOKE_DIVISOR = 40
_smoke_announced = False


def full(n: int) -> int:
    """A full-size budget (steps, epochs, data-set size) as a chapter writes it:
    ``n``, unless ``CROSSALIGN_SMOKE=1``.

    The chapters' ``FAST = False`` settings are sized for a GPU and take hours on a CPU,
    so CI cannot run them as they are; yet a path that no test runs is broken until
    shown otherwise. Under ``CROSSALIGN_SMOKE=1`` (set only by the tests) every budget
    written ``full(n)`` becomes ``max(1, n // 40)``: the full-size code runs line by
    line, with models and settings as written, in seconds. The first such call says so
    on stdout, because numbers from such a run mean nothing.
    """
    global _smoke_announced
    if not is_integral(n) or n < 1:
        raise ValueError(f"full(n) takes a positive integer budget, got {n!r}")
    if os.environ.get("CROSSALIGN_SMOKE") != "1":
        return int(n)
    if not _smoke_announced:
        print(
            f"CROSSALIGN_SMOKE=1: full-size budgets are cut {SMOKE_DIVISOR}-fold; "
            "this run checks that the code runs, its numbers mean nothing"
        )
        _smoke_announced = True
    return max(1, int(n) // SMOKE_DIVISOR)


_in_training_step = False


@contextlib.contextmanager
def training_step() -> Iterator[None]:
    """Marks the code inside as the training engine's hot loop (see
    :func:`values_hold`)."""
    global _in_training_step
    outer, _in_training_step = _in_training_step, True
    try:
        yield
    finally:
        _in_training_step = outer


def values_hold(condition: torch.Tensor) -> bool:
    """Whether every element of the boolean tensor ``condition`` is true: the one way
    the models check their inputs' values (masks, token ranges).

    Reading a value from an accelerator makes the CPU wait for all queued work, so
    inside the training engine's step (:func:`training_step`) a check on a tensor that
    is not on the CPU is skipped and answers True; on the CPU, and outside training,
    it always runs. The data the training loops feed the models comes from the
    package's own collators, which build masks and token ids that pass these checks.
    """
    if _in_training_step and condition.device.type != "cpu":
        return True
    return bool(condition.all())

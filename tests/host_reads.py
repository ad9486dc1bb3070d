"""Counting the values a piece of code reads back from tensors to the host.

On a GPU every such read (``loss.item()``, ``if torch.isfinite(loss)``, ``float(x)``,
``x.tolist()``) makes the CPU wait until the GPU has finished all queued work, so a
training loop that reads a value every step cannot queue the next step while this one
runs. On the CPU the same reads cost nothing, but they can be counted:
:func:`count_host_reads` patches the reading methods of ``torch.Tensor`` and counts the
reads of floating-point and boolean tensors, which is where losses, norms, scales and
finiteness checks live. Not counted: integer tensors (the batchers' seeded index draws
on the host, which never touch the device), reads made inside ``torch.optim`` (a
non-capturable optimiser keeps its step counter on the host by design) and the models'
input checks through ``crossalign.utils.values_hold``, which read only CPU tensors
inside a training step (``tests/test_engine.py`` shows they skip other devices).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch

_READERS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


class HostReads:
    """The reads seen so far: ``count`` and, per read, the method and the caller."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @property
    def count(self) -> int:
        return len(self.calls)


def _exempt() -> bool:
    """Whether the read comes from inside ``torch.optim`` or ``values_hold``."""
    frame = sys._getframe(2)
    while frame is not None:
        where = frame.f_code.co_filename.replace("\\", "/")
        if "torch/optim/" in where or (
            frame.f_code.co_name == "values_hold"
            and where.endswith("crossalign/utils.py")
        ):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


@contextlib.contextmanager
def count_host_reads() -> Iterator[HostReads]:
    """Count reads of floating-point and boolean tensors inside the ``with`` block."""
    reads = HostReads()
    originals = {name: getattr(torch.Tensor, name) for name in _READERS}

    def patched(name: str):
        original = originals[name]

        def read(self, *args, **kwargs):
            if (
                (self.is_floating_point() or self.dtype == torch.bool)
                and not torch.compiler.is_compiling()
                and not _exempt()
            ):
                caller = sys._getframe(1)
                reads.calls.append(
                    (name, f"{caller.f_code.co_filename}:{caller.f_lineno}")
                )
            return original(self, *args, **kwargs)

        return read

    try:
        for name in _READERS:
            setattr(torch.Tensor, name, patched(name))
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)

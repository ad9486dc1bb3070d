"""Where training time goes: an operator profile of any callable, and timings of
variants side by side.

Timings on a shared machine are noisy, so the book never compares two numbers measured
at different moments. :func:`time_side_by_side` runs the variants in alternation (A, B,
C, A, B, C, ...), so that a change in machine load hits all of them alike, and reports
each variant's median together with its speed-up over a baseline.
:func:`profile_callable` wraps ``torch.profiler`` and returns the top operators as data
(for asserts) and as the familiar table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile


@dataclass(frozen=True)
class OpStat:
    """One operator's totals in a profile (times in milliseconds)."""

    name: str
    calls: int
    self_ms: float
    total_ms: float


@dataclass(frozen=True)
class ProfileSummary:
    """The top operators of a profile, sorted by self time, and torch's table of
    them."""

    ops: list[OpStat]
    table: str
    device_time: bool

    def names(self) -> list[str]:
        """The operator names, most expensive first."""
        return [op.name for op in self.ops]


def profile_callable(
    fn: Callable[[], object],
    row_limit: int = 10,
    warmup: int = 1,
    device_time: bool | None = None,
) -> ProfileSummary:
    """Run ``fn`` ``warmup`` times unprofiled, then once under ``torch.profiler``;
    return the top ops.

    Operators are ranked by *self* time (time spent in the operator itself, not in
    operators it calls), on the GPU when ``device_time`` is true (default: when CUDA is
    available, since CPU time of an asynchronous GPU launch says little), else on the
    CPU.
    """
    if row_limit < 1:
        raise ValueError(f"row_limit={row_limit} must be >= 1")
    if warmup < 0:
        raise ValueError(f"warmup={warmup} must be >= 0")
    device_time = torch.cuda.is_available() if device_time is None else device_time
    if device_time and not torch.cuda.is_available():
        raise ValueError("device_time=True needs CUDA, which is not available here")
    for _ in range(warmup):
        fn()
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if device_time else []
    )
    with profile(activities=activities) as prof:
        fn()
        if device_time:
            torch.cuda.synchronize()
    events = prof.key_averages()
    self_key = "self_device_time_total" if device_time else "self_cpu_time_total"
    total_key = "device_time_total" if device_time else "cpu_time_total"
    ranked = sorted(events, key=lambda e: getattr(e, self_key), reverse=True)[
        :row_limit
    ]
    ops = [
        OpStat(
            e.key, int(e.count), getattr(e, self_key) / 1e3, getattr(e, total_key) / 1e3
        )
        for e in ranked
    ]
    return ProfileSummary(
        ops=ops,
        table=events.table(sort_by=self_key, row_limit=row_limit),
        device_time=device_time,
    )


@dataclass(frozen=True)
class VariantTiming:
    """Seconds of each repetition of one variant, their median, and the speed-up over
    the baseline."""

    name: str
    seconds: tuple[float, ...]
    median: float
    speedup: float


def time_side_by_side(
    variants: Mapping[str, Callable[[], object]],
    repeats: int = 3,
    warmup: int = 1,
    baseline: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[VariantTiming]:
    """Time each variant ``repeats`` times in alternation; speed-up = baseline median /
    own median.

    Every variant first runs ``warmup`` untimed times (caches, lazy initialisation,
    autotuning). Then round ``r`` runs all variants once, starting at a different one
    each round, so that neither position in a round nor a slow drift of the machine
    favours a variant. ``baseline`` defaults to the first variant. On a GPU, make each
    callable synchronise before it returns.
    """
    if not variants:
        raise ValueError("variants is empty: pass at least one name -> callable")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    names = list(variants)
    baseline = names[0] if baseline is None else baseline
    if baseline not in variants:
        raise ValueError(f"baseline={baseline!r} is not one of the variants {names}")
    for name in names:
        for _ in range(warmup):
            variants[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            variants[name]()
            seconds[name].append(clock() - start)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    if medians[baseline] <= 0:
        raise ValueError(
            f"the baseline {baseline!r} took no measurable time; give it more work"
        )
    return [
        VariantTiming(
            name,
            tuple(seconds[name]),
            medians[name],
            medians[baseline] / medians[name] if medians[name] > 0 else float("inf"),
        )
        for name in names
    ]


def format_timings(rows: list[VariantTiming], unit: str = "ms") -> str:
    """A small aligned table: variant, median time, speed-up over the baseline."""
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}
    if unit not in scale:
        raise ValueError(f"unit={unit!r} is not known; use one of {sorted(scale)}")
    width = max(len("variant"), *(len(row.name) for row in rows))
    lines = [f"{'variant':<{width}}  {'median ' + unit:>12}  {'speed-up':>8}"]
    lines += [
        f"{row.name:<{width}}  {row.median * scale[unit]:12.2f}  {row.speedup:7.2f}x"
        for row in rows
    ]
    return "\n".join(lines)

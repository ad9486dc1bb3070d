"""Side-by-side timing with a scripted clock, and operator profiles of known work."""

from __future__ import annotations

import pytest
import torch

from crossalign.profiling import (
    VariantTiming,
    format_timings,
    profile_callable,
    time_side_by_side,
)


class ScriptedClock:
    """A clock that only moves when a variant 'works': each call advances it by a set
    cost."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def variant(self, name: str, cost: float):
        """A callable that records its name and takes ``cost`` seconds of scripted
        time."""

        def run() -> None:
            self.calls.append(name)
            self.now += cost

        return run


def test_medians_and_speedups_are_exact_with_a_scripted_clock():
    clock = ScriptedClock()
    variants = {
        "slow": clock.variant("slow", 4.0),
        "fast": clock.variant("fast", 1.0),
        "mid": clock.variant("mid", 2.0),
    }
    rows = time_side_by_side(variants, repeats=3, warmup=0, clock=clock)
    assert rows == [
        VariantTiming("slow", (4.0, 4.0, 4.0), 4.0, 1.0),
        VariantTiming("fast", (1.0, 1.0, 1.0), 1.0, 4.0),
        VariantTiming("mid", (2.0, 2.0, 2.0), 2.0, 2.0),
    ]
    rows = time_side_by_side(variants, repeats=1, warmup=0, baseline="mid", clock=clock)
    assert [row.speedup for row in rows] == [0.5, 2.0, 1.0]


def test_rounds_rotate_the_starting_variant_and_warmup_is_untimed():
    clock = ScriptedClock()
    variants = {name: clock.variant(name, 1.0) for name in "abc"}
    time_side_by_side(variants, repeats=4, warmup=2, clock=clock)
    assert clock.calls == list("aabbcc") + list("abcbcacababc")


def test_median_ignores_one_outlier():
    clock = ScriptedClock()
    # warm-up, then a disturbed first timed call
    costs = iter([1.0, 100.0, 1.0, 1.0, 1.0, 1.0])

    def noisy() -> None:
        clock.now += next(costs)

    rows = time_side_by_side({"only": noisy}, repeats=5, warmup=1, clock=clock)
    assert rows[0].seconds == (100.0, 1.0, 1.0, 1.0, 1.0) and rows[0].median == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variants": {}}, "empty"),
        ({"repeats": 0}, "repeats"),
        ({"baseline": "nope"}, "baseline"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"variants": {"a": lambda: None}, **kwargs}
    with pytest.raises(ValueError, match=message):
        time_side_by_side(**arguments)


def test_format_timings_table():
    rows = [
        VariantTiming("plain", (0.004,), 0.004, 1.0),
        VariantTiming("fast one", (0.001,), 0.001, 4.0),
    ]
    assert format_timings(rows).splitlines() == [
        "variant      median ms  speed-up",
        "plain             4.00     1.00x",
        "fast one          1.00     4.00x",
    ]
    with pytest.raises(ValueError, match="unit"):
        format_timings(rows, unit="hours")


def test_profile_counts_the_operators_that_ran():
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def work() -> None:
        for _ in range(3):
            torch.mm(a, b)
        torch.relu(a)

    summary = profile_callable(work, row_limit=50, device_time=False)
    calls = {op.name: op.calls for op in summary.ops}
    assert calls["aten::mm"] == 3 and calls["aten::relu"] == 1
    # Which operator took longest is a timing, and timings depend on the machine's load:
    # only the order of the table (by self time) is checked, not who comes first.
    mm = next(op for op in summary.ops if op.name == "aten::mm")
    assert 0 < mm.self_ms <= mm.total_ms
    assert "aten::mm" in summary.table and not summary.device_time
    assert [op.self_ms for op in summary.ops] == sorted(
        (op.self_ms for op in summary.ops), reverse=True
    )


def test_profile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="row_limit"):
        profile_callable(lambda: None, row_limit=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            profile_callable(lambda: None, device_time=True)

"""Benchmark ShapesWorld rendering: the vectorised batch path against the per-sample
path.

Both paths are measured side by side in one run, alternating repetitions so that a
change in machine load hits both alike; each reported rate is the median over the
repetitions. The result is a report, not a test: it prints PASS/FAIL against the targets
and always exits 0.

    python benchmarks/bench_shapes.py                      # 32, 64 and 128 px, batches
    of 512 python benchmarks/bench_shapes.py --image-size 64 --seconds 2 --repeats 7

On a machine shared with other busy processes, torch's intra-op threads can make small
tensor operations far slower; ``--threads 1`` shows how much of a slowdown comes from
that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field

import torch

from crossalign.data.shapes import ShapesWorld

TARGET_IMAGE_SIZE = 64
TARGET_IMAGES_PER_SECOND = 20_000
TARGET_RATIO = 10.0
# large enough that every measurement renders images never drawn before
WORLD_SIZE = 2**40


@dataclass
class IndexStream:
    """Hands out consecutive, never repeated image indices."""

    next_index: int = 0

    def take(self, n: int) -> list[int]:
        """The next ``n`` indices."""
        start = self.next_index
        self.next_index += n
        return list(range(start, start + n))


def vectorised_rate(
    world: ShapesWorld, indices: IndexStream, batch_size: int, seconds: float
) -> float:
    """Images per second of ``world.render`` on whole batches, run for about
    ``seconds``."""
    images = 0
    start = time.perf_counter()
    while True:
        world.render(indices.take(batch_size))
        images += batch_size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return images / elapsed


def per_sample_rate(world: ShapesWorld, indices: IndexStream, seconds: float) -> float:
    """Images per second of ``world.render_one`` called image by image, run for about
    ``seconds``."""
    images = 0
    start = time.perf_counter()
    while True:
        world.render_one(indices.take(1)[0])
        images += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return images / elapsed


@dataclass
class SizeResult:
    """The rates measured at one image size (one entry per repetition)."""

    image_size: int
    vectorised: list[float] = field(default_factory=list)
    per_sample: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median vectorised rate over median per-sample rate."""
        return statistics.median(self.vectorised) / statistics.median(self.per_sample)


def measure(
    image_size: int, batch_size: int, seconds: float, repeats: int
) -> SizeResult:
    """Warm both paths up, then alternate them ``repeats`` times (order flipped every
    repetition)."""
    world = ShapesWorld("train", size=WORLD_SIZE, image_size=image_size)
    indices = IndexStream()
    world.render(indices.take(batch_size))
    for _ in range(8):
        world.render_one(indices.take(1)[0])
    result = SizeResult(image_size)
    for repetition in range(repeats):
        vectorised_first = repetition % 2 == 0
        if vectorised_first:
            result.vectorised.append(
                vectorised_rate(world, indices, batch_size, seconds)
            )
        result.per_sample.append(per_sample_rate(world, indices, seconds))
        if not vectorised_first:
            result.vectorised.append(
                vectorised_rate(world, indices, batch_size, seconds)
            )
    return result


def spread(rates: list[float]) -> str:
    """The range of rates over the repetitions, as text."""
    return f"{min(rates):,.0f}-{max(rates):,.0f}"


def report(results: list[SizeResult]) -> None:
    """Print the table of medians (with the range over repetitions) and the verdict on
    the targets."""
    print(
        f"{'size':>5} {'vectorised img/s':>17} {'(range)':>17} "
        f"{'per-sample img/s':>17} {'(range)':>15} {'ratio':>7}"
    )
    for r in results:
        print(
            f"{r.image_size:>5} {statistics.median(r.vectorised):>17,.0f} "
            f"{spread(r.vectorised):>17} "
            f"{statistics.median(r.per_sample):>17,.0f} {spread(r.per_sample):>15} "
            f"{r.ratio:>6.1f}x"
        )
    target = next((r for r in results if r.image_size == TARGET_IMAGE_SIZE), None)
    print()
    if target is None:
        print(
            f"targets not checked: they are set at {TARGET_IMAGE_SIZE} px, which was "
            "not measured"
        )
        return
    rate = statistics.median(target.vectorised)
    print(f"target at {TARGET_IMAGE_SIZE}x{TARGET_IMAGE_SIZE} (set for 2 CPU cores):")
    fast_enough = "PASS" if rate >= TARGET_IMAGES_PER_SECOND else "FAIL"
    ratio_reached = "PASS" if target.ratio >= TARGET_RATIO else "FAIL"
    print(
        f"  vectorised >= {TARGET_IMAGES_PER_SECOND:,} img/s: {fast_enough} "
        f"({rate:,.0f} img/s)"
    )
    print(
        f"  vectorised >= {TARGET_RATIO:.0f}x per-sample: {ratio_reached} "
        f"({target.ratio:.1f}x)"
    )


def parse_args() -> argparse.Namespace:
    """Read the command line (image sizes, batch size, seconds, repetitions,
    threads)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=[32, 64, 128],
        help="image sides in pixels to measure (default: 32 64 128)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=512,
        help="images per render() call (default: 512)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="seconds per measurement of one path (default: 1.0)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="alternating repetitions per size (default: 5)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: leave torch's own default untouched)",
    )
    args = parser.parse_args()
    if args.batch_size < 1 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be >= 1 and --seconds > 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main() -> None:
    """Measure every requested image size and print the report."""
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("ShapesWorld rendering: vectorised render() vs per-sample render_one()")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} CPUs, "
        f"1-min load average {load:.2f} at start"
    )
    print(
        f"batch {args.batch_size}, {args.repeats} alternating repetitions of "
        f"~{args.seconds:g} s per path; "
        "medians over repetitions\n"
    )
    results = [
        measure(size, args.batch_size, args.seconds, args.repeats)
        for size in args.image_size
    ]
    report(results)


if __name__ == "__main__":
    main()

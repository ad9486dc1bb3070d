"""Benchmark the caption metrics of ``crossalign`` against pycocoevalcap on the same
corpus.

Both implementations score one synthetic corpus (by default 1000 images with 5
references each, like a Flickr8k or COCO test split) side by side in one run,
alternating repetitions so that a change in machine load hits both alike; each reported
time is the median over the repetitions. The same run checks that every score agrees to
1e-6 and exits with status 1 if one does not; timings are a report, not a test.

    python benchmarks/bench_caption_metrics.py
    python benchmarks/bench_caption_metrics.py --images 5000 --references 5 --repeats 5

Rows: each metric computed on its own (``corpus_bleu``, ``rouge_l``, ``cider_d`` against
pycocoevalcap's ``Bleu(4)``, ``Rouge()``, ``Cider()``), then all of them at once
(``caption_metrics``, which counts each caption's n-grams once for BLEU and CIDEr-D,
against the three pycocoevalcap scorers one after the other).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from crossalign.metrics.captioning import caption_metrics, cider_d, corpus_bleu, rouge_l

TOLERANCE = 1e-6
METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D")
# row -> (crossalign seconds, pycocoevalcap seconds)
Timings = dict[str, tuple[list[float], list[float]]]


def synthetic_corpus(
    n_images: int, n_references: int, vocab_size: int, seed: int
) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Tokenised captions with caption-like statistics: Zipf-distributed words, shared
    per image.

    Each image has a small "scene" vocabulary its references mostly draw from; its
    candidate is one reference with about a third of the words replaced by any word and
    a tenth dropped, so n-gram matches of every order occur, about as often as for a
    trained captioner.
    """
    rng = random.Random(seed)
    words = [f"w{rank}" for rank in range(vocab_size)]
    frequencies = [1.0 / (rank + 1) for rank in range(vocab_size)]
    candidates: dict[int, str] = {}
    references: dict[int, list[str]] = {}
    for image in range(n_images):
        scene = rng.choices(words, frequencies, k=12)
        refs = []
        for _ in range(n_references):
            length = rng.randint(8, 16)
            refs.append(
                " ".join(
                    rng.choice(scene)
                    if rng.random() < 0.7
                    else rng.choices(words, frequencies)[0]
                    for _ in range(length)
                )
            )
        edited = [
            rng.choices(words, frequencies)[0] if rng.random() < 0.35 else word
            for word in rng.choice(refs).split()
            if rng.random() > 0.1
        ]
        candidates[image] = " ".join(edited)
        references[image] = refs
    return candidates, references


def pycocoevalcap_scores(
    candidates: dict[int, str], references: dict[int, list[str]]
) -> dict[str, float]:
    """All six scores from pycocoevalcap's scorers, fed the ``{id: [caption]}`` form
    they expect."""
    results = {image: [caption] for image, caption in candidates.items()}
    bleu, _ = Bleu(4).compute_score(references, results, verbose=0)
    rouge, _ = Rouge().compute_score(references, results)
    cider, _ = Cider().compute_score(references, results)
    return dict(zip(METRIC_NAMES, [*bleu, float(rouge), float(cider)]))


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(
    candidates: dict[int, str], references: dict[int, list[str]], repeats: int
) -> Timings:
    """Time every row ``repeats`` times, alternating which implementation goes first."""
    results = {image: [caption] for image, caption in candidates.items()}
    rows: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "BLEU-1..4": (
            lambda: corpus_bleu(candidates, references),
            lambda: Bleu(4).compute_score(references, results, verbose=0),
        ),
        "ROUGE-L": (
            lambda: rouge_l(candidates, references),
            lambda: Rouge().compute_score(references, results),
        ),
        "CIDEr-D": (
            lambda: cider_d(candidates, references),
            lambda: Cider().compute_score(references, results),
        ),
        "all six": (
            lambda: caption_metrics(candidates, references),
            lambda: pycocoevalcap_scores(candidates, references),
        ),
    }
    times: Timings = {row: ([], []) for row in rows}
    for repetition in range(repeats):
        for row, (ours, reference) in rows.items():
            ours_times, reference_times = times[row]
            if repetition % 2 == 0:
                ours_times.append(timed(ours))
                reference_times.append(timed(reference))
            else:
                reference_times.append(timed(reference))
                ours_times.append(timed(ours))
    return times


def check_equal(candidates: dict[int, str], references: dict[int, list[str]]) -> bool:
    """Print both implementations' scores and their difference; True when all agree to
    TOLERANCE."""
    ours = caption_metrics(candidates, references)
    theirs = pycocoevalcap_scores(candidates, references)
    print(
        f"{'metric':>8} {'crossalign':>14} {'pycocoevalcap':>14} {'|difference|':>13}"
    )
    for name in METRIC_NAMES:
        print(
            f"{name:>8} {ours[name]:>14.10f} {theirs[name]:>14.10f} "
            f"{abs(ours[name] - theirs[name]):>13.2e}"
        )
    worst = max(abs(ours[name] - theirs[name]) for name in METRIC_NAMES)
    equal = worst <= TOLERANCE
    print(
        f"equal to {TOLERANCE:g}: {'PASS' if equal else 'FAIL'} (largest difference "
        f"{worst:.2e})\n"
    )
    return equal


def report(times: Timings) -> None:
    """Print median times (with the range over repetitions) and the speed-up of
    crossalign."""
    header = (
        f"{'metrics':>10} {'crossalign s':>13} {'(range)':>13} "
        f"{'pycocoevalcap s':>16} {'(range)':>13}"
    )
    print(f"{header} {'speed-up':>9}")
    for row, (ours, theirs) in times.items():
        ratio = statistics.median(theirs) / statistics.median(ours)
        print(
            f"{row:>10} {statistics.median(ours):>13.3f} "
            f"{min(ours):>6.3f}-{max(ours):<6.3f} "
            f"{statistics.median(theirs):>16.3f} "
            f"{min(theirs):>6.3f}-{max(theirs):<6.3f} {ratio:>8.1f}x"
        )


def parse_args() -> argparse.Namespace:
    """Read the command line (corpus size, repetitions, seed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=1000, help="images in the corpus (default: 1000)"
    )
    parser.add_argument(
        "--references", type=int, default=5, help="references per image (default: 5)"
    )
    parser.add_argument(
        "--vocab-size", type=int, default=2000, help="distinct words (default: 2000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating repetitions (default: 3)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic corpus (default: 0)"
    )
    args = parser.parse_args()
    if min(args.images, args.references, args.vocab_size, args.repeats) < 1:
        parser.error("--images, --references, --vocab-size and --repeats must be >= 1")
    return args


def main() -> None:
    """Build the corpus, check that both implementations agree, then time them side by
    side."""
    args = parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        "Caption metrics: crossalign.metrics.captioning vs pycocoevalcap (pure-Python "
        "scorers)"
    )
    print(
        f"{args.images} images x {args.references} references, {args.vocab_size} "
        f"words, seed {args.seed}; "
        f"{os.cpu_count()} CPUs, 1-min load average {load:.2f} at start\n"
    )
    candidates, references = synthetic_corpus(
        args.images, args.references, args.vocab_size, args.seed
    )
    equal = check_equal(candidates, references)
    print(f"{args.repeats} alternating repetitions; medians over repetitions")
    report(measure(candidates, references, args.repeats))
    if not equal:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Benchmark the two savings in the default captioner's training step, each against
doing the work.

1. **Cached frozen regions** (``train.cache_frozen_regions``): the default config
   freezes its pretrained CNN, so :func:`~crossalign.train.captioning.train_captioner`
   encodes the training images once and trains the decoder on their regions. Timed here:
   the same short run of ``train_captioner`` with the cache and without it (an encoder
   pass on freshly rendered images at every step). The two runs differ only in rounding
   (the encoder sees batches of another size), so their first 100 losses must agree to
   1e-4, or the run exits with status 1; later the rounding differences grow, as between
   any two such runs.
2. **Skipping padded positions**: Show, Attend and Tell's teacher forcing runs its
   recurrence only on the captions that have not ended. Timed here: forward and backward
   on a real batch of 64 training captions, against the same batch with every padding
   token replaced by a word, which makes the model run every position (the work a
   recurrence that ignores lengths does).

Training seconds are medians over ``--repeats`` alternating runs (default: one run each,
with the default config's steps and training images); padding timings over
``5 x --repeats``.

    python benchmarks/bench_caption_training.py --threads 2 python
    benchmarks/bench_caption_training.py --steps 200 --train-size 2000   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from crossalign.data.build import (
    build_caption_dataset,
    build_vocabulary,
)
from crossalign.data.collate import batch_inputs
from crossalign.train.captioning import (
    build_captioner_for,
    default_caption_config_path,
    load_caption_config,
    train_captioner,
)


def time_training(
    config, repeats: int
) -> tuple[float, float, list[float], list[float]]:
    """Median seconds of ``train_captioner`` with and without the region cache, and the
    two loss curves."""
    seconds: dict[bool, list[float]] = {True: [], False: []}
    losses: dict[bool, list[float]] = {}
    for _ in range(repeats):
        for cache in (True, False):
            run = train_captioner(
                config.override([f"train.cache_frozen_regions={str(cache).lower()}"])
            )
            seconds[cache].append(run.seconds)
            losses[cache] = [h["loss"] for h in run.history]
    return (
        statistics.median(seconds[True]),
        statistics.median(seconds[False]),
        losses[True],
        losses[False],
    )


def time_padding(
    config, repeats: int, batch_size: int = 64
) -> tuple[float, float, float]:
    """Median seconds of one forward-backward on real captions and on the same captions
    with no padding left."""
    dataset = build_caption_dataset(config, "train", size=batch_size)
    tokenizer = build_vocabulary(dataset)
    model = build_captioner_for(config, tokenizer, dataset).train()
    items = [dataset[i] for i in range(batch_size)]
    with torch.no_grad():
        regions = model.regions(batch_inputs(items))
    ids, _ = tokenizer.encode_batch(
        [item["captions"][0] for item in items], max_len=config.data.max_len
    )
    filled = ids.clone()
    filled[ids == tokenizer.pad_id] = tokenizer.token_to_id("a")
    real_share = float((ids[:, 1:] != tokenizer.pad_id).float().mean())

    def once(input_ids: torch.Tensor) -> float:
        started = time.perf_counter()
        model.loss(regions, input_ids)[0].backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    once(ids), once(filled)  # warm-up
    timings: dict[str, list[float]] = {"real": [], "filled": []}
    for _ in range(repeats):
        timings["real"].append(once(ids))
        timings["filled"].append(once(filled))
    return (
        statistics.median(timings["real"]),
        statistics.median(timings["filled"]),
        real_share,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="captioning steps per timed run (default: the config's)",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="training images, all encoded once when cached (default: the config's)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: leave torch's default)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_caption_config(default_caption_config_path())
    config = config.override(
        [
            "train.progress=false",
            f"train.steps={args.steps or config.train.steps}",
            f"data.train_size={args.train_size or config.data.train_size}",
            # Pretraining is the same with or without the cache; it is not timed here.
            "train.encoder_pretrain_steps=0",
        ]
    )
    cached, uncached, with_cache, without_cache = time_training(config, args.repeats)
    gap = max(abs(a - b) for a, b in zip(with_cache[:100], without_cache[:100]))
    print(
        f"training, {config.train.steps} steps of {config.train.batch_size} captions, "
        f"{config.data.train_size} "
        f"training images (threads: {torch.get_num_threads()}):"
    )
    print(
        f"  {'regions cached (default)':<28}{cached:>8.1f} s  (encoding the training "
        "images once included)"
    )
    print(f"  {'encoder pass every step':<28}{uncached:>8.1f} s")
    print(
        f"  speed-up {uncached / cached:.2f}x; largest gap between the first 100 "
        f"losses {gap:.1e}, "
        f"final losses {with_cache[-1]:.4f} and {without_cache[-1]:.4f}"
    )
    real, filled, share = time_padding(config, max(5, args.repeats * 5))
    print(
        f"one forward-backward of 64 training captions (real targets: {share:.0%} of "
        "the positions):"
    )
    print(f"  {'padded positions skipped':<28}{real * 1000:>8.1f} ms")
    print(f"  {'every position run':<28}{filled * 1000:>8.1f} ms")
    print(f"  speed-up {filled / real:.2f}x")
    return 0 if gap < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())

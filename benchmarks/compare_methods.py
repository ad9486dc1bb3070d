"""Alignment methods compared under one budget: retrieval, swap accuracies, geometry,
time.

    python benchmarks/compare_methods.py [--fast | --full] [--methods
    infonce,hard_negatives] [--threads 1]
                                         [--lit] [--device auto]

Every method trains the book's default dual encoder with the same data, batches, steps,
learning rate and seed (``crossalign.experiments.compare``); only the loss differs.
``--fast`` (the default on a CPU) is the setting of chapter 5; ``--full`` is the default
recipe's size, meant for a GPU. ``--lit`` also trains the LiT model (image tower into
the frozen MiniLM space) and prints its R@1 next to both towers trained. The last line
gives the process's CPU seconds: with ``--threads 1`` they approximate the wall time on
a quiet two-core machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from crossalign.experiments.compare import (
    CompareConfig,
    compare_methods,
    format_table,
    prepare_data,
)
from crossalign.experiments.lit import compare_lit, format_lit_table
from crossalign.experiments.methods import method_names
from crossalign.utils import select_device


def main() -> int:
    """Parse the options, run the comparison and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--fast", action="store_true", help="the CPU setting (default without a GPU)"
    )
    size.add_argument(
        "--full",
        action="store_true",
        help="the default recipe's size (default with a GPU)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(method_names()),
        help="comma-separated method names",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: leave torch's default)",
    )
    parser.add_argument(
        "--lit",
        action="store_true",
        help="also run the LiT experiment (frozen MiniLM text tower)",
    )
    parser.add_argument(
        "--lit-captions",
        type=int,
        default=2,
        help="captions per training image LiT embeds with MiniLM",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    fast = args.fast or (not args.full and device.type == "cpu")
    config = (
        CompareConfig.fast(device=str(device))
        if fast
        else CompareConfig(device=str(device), progress=False)
    )
    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    print(
        f"torch {torch.__version__}, device {device}, threads "
        f"{torch.get_num_threads()}, "
        f"{'fast' if fast else 'full'} setting: {config.train_size} images of "
        f"{config.image_size} px, "
        f"{config.steps} steps x {config.batch_size}, lr {config.lr}, seed "
        f"{config.seed}"
    )
    started = time.process_time()
    data = prepare_data(config)
    results = compare_methods(names, config, data)
    print(format_table(results), flush=True)
    if args.lit:
        infonce = next((result for result in results if result.name == "infonce"), None)
        lit = compare_lit(
            config, data, captions_per_image=args.lit_captions, both_towers=infonce
        )
        print()
        print(format_lit_table(lit))
    print(f"\nCPU time of the process: {time.process_time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Command line and base config shared by the captioning benchmarks (not a benchmark
itself)."""

from __future__ import annotations

import argparse

import torch

from crossalign.train.captioning import (
    CaptionExperimentConfig,
    default_caption_config_path,
    load_caption_config,
)


def caption_benchmark_setup(
    description: str,
) -> tuple[argparse.Namespace, CaptionExperimentConfig]:
    """Parse ``--steps``, ``--test-size`` and ``--threads``; return them with the
    default config they adjust."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="captioning steps (default: the config's)",
    )
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: leave torch's default)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_caption_config(default_caption_config_path()).override(
        ["train.progress=false"]
    )
    if args.steps:
        base = base.override([f"train.steps={args.steps}"])
    return args, base

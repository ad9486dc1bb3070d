"""Which tower limits relation-swap accuracy? Each image tower with each text tower,
same budget.

    python benchmarks/relation_swap_towers.py [--steps N] [--train-size N] [--threads 2]

Trains the hard-negative method in the fast comparison setting (``CompareConfig.fast``,
chapter 5) four times: the image tower is either the default CNN on pixels or
``SceneGraphEncoder``, which is *given* every object's shape, colour, size and centre
(``crossalign.experiments.scene_oracle``); the text tower is either the default recipe's
GRU (``text_tower="recipe"``) or the comparison's word convolution with max pooling
(``text_tower="conv"``, ``ConvTextEncoder``). A last row trains plain InfoNCE with the
oracle and the convolution. Data, batches, steps and seed are the same in every row.

How to read it: the oracle row of a text tower is the best that text tower reaches with
perfect vision; the gap between a text tower's two rows is what the CNN loses; the
InfoNCE row shows that without swapped captions in the loss even perfect towers ignore
relations.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from crossalign.experiments.compare import (
    CompareConfig,
    format_table,
    prepare_data,
    train_method,
)
from crossalign.experiments.scene_oracle import train_with_scene_oracle


def main() -> int:
    """Train the five rows and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps (default: the fast setting's)",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="training images (default: the fast setting's)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: leave torch's default)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        key: value
        for key, value in (("steps", args.steps), ("train_size", args.train_size))
        if value
    }
    config = CompareConfig.fast(**overrides)
    print(
        f"fast setting: {config.train_size} images of {config.image_size} px, "
        f"{config.steps} steps x "
        f"{config.batch_size}, seed {config.seed}"
    )
    data = prepare_data(config)
    rows = []
    for tower, label in (("recipe", "GRU"), ("conv", "conv")):
        tower_config = dataclasses.replace(config, text_tower=tower)
        rows.append(train_method("hard_negatives", tower_config, data))
        rows[-1].name = f"hn, CNN, {label}"
        rows.append(train_with_scene_oracle("hard_negatives", tower_config, data))
        rows[-1].name = f"hn, oracle, {label}"
    rows.append(train_with_scene_oracle("infonce", config, data))
    rows[-1].name = "infonce, oracle, conv"
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

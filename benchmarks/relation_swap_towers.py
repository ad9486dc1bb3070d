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

The table is also written to ``benchmarks/results/relation_swap_towers.json`` (chapter 5
shows it from there), with the standard error of a swap accuracy on the test split as
the noise a rerun should stay within.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch

from crossalign.experiments.compare import (
    CompareConfig,
    format_table,
    prepare_data,
    train_method,
)
from crossalign.experiments.scene_oracle import train_with_scene_oracle
from crossalign.results import save_result


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
    labels = []
    for tower, label in (("recipe", "GRU (recipe)"), ("conv", "convolution")):
        tower_config = dataclasses.replace(config, text_tower=tower)
        rows.append(train_method("hard_negatives", tower_config, data))
        labels.append(("hard negatives", "CNN", label))
        rows.append(train_with_scene_oracle("hard_negatives", tower_config, data))
        labels.append(("hard negatives", "oracle", label))
    rows.append(train_with_scene_oracle("infonce", config, data))
    labels.append(("InfoNCE", "oracle", "convolution"))
    for row, label in zip(rows, labels, strict=True):
        row.name = ", ".join(label)
    print(format_table(rows))
    columns = [
        "loss, image tower, text tower",
        "relation swap",
        "attribute swap",
        "i2t R@1",
        "train s",
    ]
    save_result(
        "relation_swap_towers",
        columns,
        [
            dict(
                zip(
                    columns,
                    [
                        row.name,
                        row.relation_swap,
                        row.attribute_swap,
                        row.retrieval["i2t_r1"],
                        round(row.seconds),
                    ],
                    strict=True,
                )
            )
            for row in rows
        ],
        noise={"accuracy": 0.5 / math.sqrt(config.test_size)},
        notes=f"{config.train_size} training images of {config.image_size} px, "
        f"{config.steps} steps x {config.batch_size}, seed {config.seed}, "
        f"{config.test_size} test images",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

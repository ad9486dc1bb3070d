"""What the default captioner's encoder and attention choices buy: one table, the same
budget for every row.

    python benchmarks/caption_encoder_ablation.py [--steps 3000] [--test-size 500]
    [--threads 2]

Each row trains the default ShapesWorld Show-Attend-and-Tell config
(``crossalign/configs/shapes_caption.yaml``) with some of its choices undone, then
decodes the test split with beam size 3 and prints BLEU-4, CIDEr-D, the semantic report
(captions that parse, name the right number of objects, get every attribute right, get
everything right), how often a lone object's shape and region words are right, and the
training seconds (pretraining included):

- ``strided, scratch``: the CNN downsamples with strided convolutions and learns from
  the caption loss alone (no pretraining, encoder trained, no region positions), and the
  attention is queried by the LSTM state alone, as in Xu et al.;
- ``max-pool, scratch``: the same with max-pooling;
- ``+ pretrain, frozen``: max-pooling, pretraining on the attribute labels (which
  shapes, colours, sizes occur), then frozen;
- ``+ region positions``: also a learnt position embedding per region;
- ``+ pair, region labels``: pretraining also on colour-shape/size-shape pairs and on
  which ninths of the image hold an object;
- ``default``: also attention that reads the word just written
  (``model.attend_with_word``; the shipped config).

Rows whose encoder is frozen train on regions encoded once
(``train.cache_frozen_regions``); the scratch rows run their encoder at every step, so
their seconds are higher.

The table is also written to ``benchmarks/results/caption_encoder_ablation.json``
(chapter 9 shows it from there), with the standard error of an accuracy on the test
split as the noise a rerun should stay within.
"""

from __future__ import annotations

import math

from caption_setup import caption_benchmark_setup

from crossalign.data.build import build_caption_dataset
from crossalign.data.shapes import ShapesWorld
from crossalign.evaluation import evaluate_captioner
from crossalign.metrics.semantic import parse_caption
from crossalign.results import save_result
from crossalign.train.captioning import train_captioner

H_ONLY = "model.attend_with_word=false"
VARIANTS: dict[str, list[str]] = {
    "strided, scratch": [
        "model.image_kwargs={widths: [16, 32, 64, 128], downsample: stride}",
        "model.freeze_encoder=false",
        "train.encoder_pretrain_steps=0",
        "model.region_positions=false",
        H_ONLY,
    ],
    "max-pool, scratch": [
        "model.freeze_encoder=false",
        "train.encoder_pretrain_steps=0",
        "model.region_positions=false",
        H_ONLY,
    ],
    "+ pretrain, frozen": [
        "model.region_positions=false",
        "train.encoder_pretrain_labels=[attributes]",
        H_ONLY,
    ],
    "+ region positions": ["train.encoder_pretrain_labels=[attributes]", H_ONLY],
    "+ pair, region labels": [H_ONLY],
    "default": [],
}


def lone_object_accuracy(captions: list[str], test: ShapesWorld) -> tuple[float, float]:
    """Among one-object test images whose caption parses as one object: how often the
    shape, and the region, is right."""
    shape = region = total = 0
    for index, caption in enumerate(captions):
        scene, parsed = test.scene(index), parse_caption(caption)
        if len(scene.objects) == 1 and parsed is not None and len(parsed.objects) == 1:
            total += 1
            shape += parsed.objects[0].shape == scene.objects[0].shape
            region += parsed.region == scene.objects[0].region()
    return shape / max(total, 1), region / max(total, 1)


def main() -> int:
    """Train every variant, evaluate it and print the table."""
    args, base = caption_benchmark_setup(__doc__.splitlines()[0])
    header = (
        f"{'variant':<22}{'BLEU-4':>8}{'CIDEr-D':>9}{'parses':>8}{'count':>7}{'attrs':>7}{'exact':>7}"
        f"{'1-obj shape':>12}{'1-obj region':>13}{'train s':>9}"
    )
    print(header)
    print("-" * len(header))
    columns = [
        "variant",
        "BLEU-4",
        "CIDEr-D",
        "parses",
        "object count",
        "attributes",
        "exact",
        "1-object shape",
        "1-object region",
        "train s",
    ]
    rows: list[dict[str, object]] = []
    for name, overrides in VARIANTS.items():
        config = base.override(overrides)
        run = train_captioner(config)
        test = build_caption_dataset(config, "test", size=args.test_size)
        result = evaluate_captioner(
            run.model,
            test,
            run.tokenizer,
            beam_size=config.eval.beam_size,
            max_len=config.data.decode_len,
        )
        m = result.metrics
        lone_shape, lone_region = lone_object_accuracy(result.captions, test)
        seconds = run.seconds + run.pretrain_seconds
        print(
            f"{name:<22}{m['BLEU-4']:>8.3f}{m['CIDEr-D']:>9.3f}{m['semantic/grammatical']:>8.3f}"
            f"{m['semantic/object_count']:>7.3f}{m['semantic/attributes']:>7.3f}{m['semantic']:>7.3f}"
            f"{lone_shape:>12.3f}{lone_region:>13.3f}{seconds:>9.0f}",
            flush=True,
        )
        values = [
            m["BLEU-4"],
            m["CIDEr-D"],
            m["semantic/grammatical"],
            m["semantic/object_count"],
            m["semantic/attributes"],
            m["semantic"],
            lone_shape,
            lone_region,
            round(seconds),
        ]
        rows.append(dict(zip(columns, [name, *values], strict=True)))
        save_result(
            "caption_encoder_ablation",
            columns,
            rows,
            noise={"accuracy": 0.5 / math.sqrt(len(test))},
            notes=f"{len(test)} test images, beam size {base.eval.beam_size}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

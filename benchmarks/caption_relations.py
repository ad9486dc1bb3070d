"""Why captions state false relations, and what fixed them: the CNN, the penalty, or
when the attention looks?

    python benchmarks/caption_relations.py [--steps 3000] [--test-size 500] [--threads
    2]

Trains the default ShapesWorld captioning config
(``crossalign/configs/shapes_caption.yaml``) six ways, the same captions, steps and seed
in every row:

- ``SAT, images``: the default (frozen pretrained CNN, attention that reads the word
  just written, no attention penalty);
- ``SAT, penalty 1``: with Xu et al.'s doubly stochastic attention penalty at weight 1.
  It asks every region for about one unit of attention over the caption; a ShapesWorld
  caption has more words than the image has regions (16, or 3 object slots), so it pulls
  attention towards uniform, away from the one object a word is about;
- ``SAT, h-only attention``: attention queried by the LSTM state alone, as in Xu et al.
  (``model.attend_with_word=false``): the state has not read the word just written, so
  the attention cannot look at the object the caption has just named until a step later;
- ``SAT, scene graph`` and ``graph, h-only``: the first and third rows on the scene
  graphs themselves (``crossalign.experiments.scene_oracle``: one region per object,
  holding its shape, colour, size and exact centre), i.e. with perfect vision;
- ``Transformer, images``: the Transformer captioner on the same regions.

Every row decodes the test split with beam size 3 and prints BLEU-4; the semantic report
(captions with every attribute right, and with everything right); ``rel | attrs``, how
often the relations are true when the attributes are right (about 0.5 for a decoder that
picks relations blindly: two of the four relations usually hold between two objects);
exact accuracy by object count; ``top rel``, the share of the most frequent relation
among the relations the captions state (the references spread theirs over four, about
0.25 each); and the training seconds (encoder pretraining included).

If a scene-graph row is no better at relations than its image row, the CNN is not what
limits them: the decoder has not learnt to compare two objects' positions.

The table is also written to ``benchmarks/results/caption_relations.json`` (chapter 9
shows it from there), with the standard error of an accuracy on the test split as the
noise a rerun should stay within.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from caption_setup import caption_benchmark_setup

from crossalign.data.build import build_caption_dataset
from crossalign.data.shapes import ShapesWorld
from crossalign.evaluation import evaluate_captioner
from crossalign.experiments.scene_oracle import (
    oracle_caption_dataset,
    train_captioner_with_scene_oracle,
)
from crossalign.metrics.semantic import caption_matches_scene, parse_caption
from crossalign.results import save_result
from crossalign.train.captioning import (
    CaptionExperimentConfig,
    CaptionTrainResult,
    train_captioner,
)

Trainer = Callable[[CaptionExperimentConfig], CaptionTrainResult]
TestSet = Callable[[CaptionExperimentConfig, str, int], ShapesWorld]

H_ONLY = ["model.attend_with_word=false"]
ROWS: dict[str, tuple[list[str], Trainer, TestSet]] = {
    "SAT, images": ([], train_captioner, build_caption_dataset),
    "SAT, penalty 1": (
        ["model.attention_penalty=1"],
        train_captioner,
        build_caption_dataset,
    ),
    "SAT, h-only attention": (H_ONLY, train_captioner, build_caption_dataset),
    "SAT, scene graph": ([], train_captioner_with_scene_oracle, oracle_caption_dataset),
    "SAT, graph, h-only": (
        H_ONLY,
        train_captioner_with_scene_oracle,
        oracle_caption_dataset,
    ),
    "Transformer, images": (
        ["model.kind=transformer"],
        train_captioner,
        build_caption_dataset,
    ),
}


def top_relation_share(captions: list[str]) -> float:
    """Share of the most frequent relation among every relation the parsable
    ``captions`` state."""
    counts = Counter(
        relation
        for caption in captions
        if (parsed := parse_caption(caption))
        for _, relation, _ in parsed.relations
    )
    return max(counts.values()) / sum(counts.values()) if counts else 0.0


def exact_by_count(captions: list[str], test: ShapesWorld) -> dict[int, float]:
    """Exact semantic accuracy among test images with 1, 2 and 3 objects."""
    right, total = Counter(), Counter()
    for index, caption in enumerate(captions):
        scene = test.scene(index)
        total[len(scene.objects)] += 1
        right[len(scene.objects)] += caption_matches_scene(caption, scene)
    return {count: right[count] / total[count] for count in sorted(total)}


def main() -> int:
    """Train every row, evaluate it and print the table."""
    args, base = caption_benchmark_setup(__doc__.splitlines()[0])
    references = build_caption_dataset(base, "test", size=args.test_size)
    reference_share = top_relation_share(
        [references.captions(i)[0] for i in range(len(references))]
    )
    print(f"references: top rel {reference_share:.3f}")
    header = (
        f"{'row':<26}{'BLEU-4':>8}{'attrs':>7}{'exact':>7}{'rel | attrs':>12}"
        f"{'1 obj':>7}{'2 obj':>7}{'3 obj':>7}{'top rel':>9}{'train s':>9}"
    )
    print(header)
    print("-" * len(header))
    columns = [
        "row",
        "BLEU-4",
        "attributes",
        "exact",
        "relations | attributes",
        "exact, 1 object",
        "exact, 2 objects",
        "exact, 3 objects",
        "top relation",
        "train s",
    ]
    rows: list[dict[str, object]] = []
    for name, (overrides, train, test_set) in ROWS.items():
        config = base.override(overrides)
        run = train(config)
        test = test_set(config, "test", args.test_size)
        result = evaluate_captioner(
            run.model,
            test,
            run.tokenizer,
            beam_size=config.eval.beam_size,
            max_len=config.data.decode_len,
        )
        m = result.metrics
        by_count = exact_by_count(result.captions, test)
        seconds = run.seconds + run.pretrain_seconds
        exact = [by_count.get(count, 0.0) for count in (1, 2, 3)]
        print(
            f"{name:<26}{m['BLEU-4']:>8.3f}{m['semantic/attributes']:>7.3f}{m['semantic']:>7.3f}"
            f"{m['semantic'] / max(m['semantic/attributes'], 1e-9):>12.3f}"
            f"{exact[0]:>7.3f}{exact[1]:>7.3f}{exact[2]:>7.3f}"
            f"{top_relation_share(result.captions):>9.3f}{seconds:>9.0f}",
            flush=True,
        )
        values = [
            m["BLEU-4"],
            m["semantic/attributes"],
            m["semantic"],
            m["semantic"] / max(m["semantic/attributes"], 1e-9),
            *exact,
            top_relation_share(result.captions),
            round(seconds),
        ]
        rows.append(dict(zip(columns, [name, *values], strict=True)))
        save_result(
            "caption_relations",
            columns,
            rows,
            noise={"accuracy": 0.5 / math.sqrt(len(test))},
            notes=f"references: top relation {reference_share:.3f}; "
            f"{len(test)} test images, beam size {base.eval.beam_size}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

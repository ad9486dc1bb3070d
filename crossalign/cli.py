"""The ``crossalign`` command line: train, evaluate and query dual encoders; train and
run captioners.

    crossalign train [--config FILE] [--set train.steps=100 ...] [--output-dir DIR]
    [--resume CKPT] crossalign evaluate CHECKPOINT [--split test] [--size N] crossalign
    retrieve CHECKPOINT --query "a red circle left of a blue square" [--top-k 5] [--save
    FIG] crossalign caption train [--config FILE] [--set train.steps=100 ...]
    [--output-dir DIR] crossalign caption evaluate CHECKPOINT [--split test] [--size N]
    [--beam-size 3] [--show 5]

Every subcommand prints what it did; bad arguments or files end with a one-line message
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossalign", description="Train and use cross-modal dual encoders."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a dual encoder from a YAML config")
    train.add_argument(
        "--config",
        type=Path,
        default=None,
        help="experiment YAML (default: the packaged ShapesWorld CLIP config)",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set train.steps=100 (repeatable)",
    )
    train.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where checkpoints and history go (default: runs/<config name>)",
    )
    train.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="checkpoint (or run folder) to continue from",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = sub.add_parser(
        "evaluate", help="retrieval metrics of a checkpoint on a data split"
    )
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument(
        "--split",
        default="test",
        help="data split (ShapesWorld also has 'compositional')",
    )
    evaluate.add_argument(
        "--size", type=int, default=None, help="number of images (ShapesWorld only)"
    )
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the metrics to this JSON file",
    )

    retrieve = sub.add_parser(
        "retrieve", help="find the images that best match a sentence"
    )
    retrieve.add_argument("checkpoint", type=Path)
    retrieve.add_argument("--query", required=True, help="the sentence to search with")
    retrieve.add_argument("--top-k", type=int, default=5)
    retrieve.add_argument("--split", default="test")
    retrieve.add_argument(
        "--size",
        type=int,
        default=None,
        help="number of images searched (ShapesWorld only)",
    )
    retrieve.add_argument("--device", default="auto")
    retrieve.add_argument(
        "--save",
        type=Path,
        default=None,
        help="save a figure of the query and its top-k images",
    )

    caption = sub.add_parser(
        "caption", help="train a captioner, or caption a data split with one"
    )
    caption_sub = caption.add_subparsers(dest="caption_command", required=True)
    caption_train = caption_sub.add_parser(
        "train",
        help="train a captioner from a YAML config, then score it on the test split",
    )
    caption_train.add_argument(
        "--config",
        type=Path,
        default=None,
        help="captioning YAML (default: the packaged ShapesWorld captioning config)",
    )
    caption_train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set train.steps=100 (repeatable)",
    )
    caption_train.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the checkpoint goes (default: runs/<config name>)",
    )
    caption_train.add_argument("--quiet", action="store_true", help="no progress bar")
    caption_eval = caption_sub.add_parser(
        "evaluate",
        help="caption a split with a trained captioner and score the captions",
    )
    caption_eval.add_argument("checkpoint", type=Path)
    caption_eval.add_argument(
        "--split",
        default="test",
        help="data split (ShapesWorld also has 'compositional')",
    )
    caption_eval.add_argument(
        "--size", type=int, default=None, help="number of images (ShapesWorld only)"
    )
    caption_eval.add_argument(
        "--beam-size",
        type=int,
        default=None,
        help="1 = greedy (default: the config's eval.beam_size)",
    )
    caption_eval.add_argument(
        "--show",
        type=int,
        default=5,
        help="print this many captions beside their first reference",
    )
    caption_eval.add_argument("--device", default="auto")
    caption_eval.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the metrics to this JSON file",
    )
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from crossalign.data.build import build_dataset
    from crossalign.distributed import get_rank
    from crossalign.evaluation import evaluate_retrieval
    from crossalign.metrics import format_retrieval
    from crossalign.train.config import default_config_path, load_config, save_config
    from crossalign.train.trainer import train
    from crossalign.utils import atomic_write_text

    config_path = args.config or default_config_path()
    config = load_config(config_path).override(args.overrides)
    output_dir = args.output_dir or Path(
        config.train.output_dir or Path("runs") / config_path.stem
    )
    config.train.output_dir = str(output_dir)
    if args.quiet:
        config.train.progress = False
    result = train(config, resume_from=args.resume)
    if get_rank() != 0:  # under torchrun, rank 0 alone reports and writes files
        return 0
    save_config(config, output_dir / "config.yaml")
    atomic_write_text(output_dir / "history.json", json.dumps(result.history, indent=1))
    print(
        f"trained to step {config.train.steps} in {result.seconds:.1f} s "
        f"({result.samples_per_second:.0f} samples/s); checkpoint: {result.checkpoint}"
    )
    test = build_dataset(config.data, "test", seed=config.seed)
    metrics = evaluate_retrieval(
        result.model,
        test,
        result.tokenizer,
        device=next(result.model.parameters()).device,
        max_len=config.data.max_len,
    )
    print(f"test split ({len(test)} images):")
    print(format_retrieval(metrics))
    return 0


def _load(args: argparse.Namespace):
    from crossalign.data.build import build_dataset
    from crossalign.train.checkpoint import load_dual_encoder
    from crossalign.utils import select_device

    device = select_device(args.device)
    model, tokenizer, config = load_dual_encoder(args.checkpoint, device=device)
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size {args.size} must be >= 1")
    dataset = build_dataset(config.data, args.split, seed=config.seed, size=args.size)
    return model, tokenizer, config, dataset, device


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from crossalign.evaluation import evaluate_retrieval
    from crossalign.metrics import format_retrieval
    from crossalign.utils import atomic_write_text

    model, tokenizer, config, dataset, device = _load(args)
    metrics = evaluate_retrieval(
        model, dataset, tokenizer, device=device, max_len=config.data.max_len
    )
    print(f"{args.split} split ({len(dataset)} images):")
    print(format_retrieval(metrics))
    if args.json:
        atomic_write_text(args.json, json.dumps(metrics, indent=2))
    return 0


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from crossalign.evaluation import embed_images, embed_texts

    if not args.query.strip():
        raise ValueError("--query is empty; give a sentence to search with")
    model, tokenizer, config, dataset, device = _load(args)
    if not 1 <= args.top_k <= len(dataset):
        raise ValueError(
            f"--top-k {args.top_k} must be between 1 and the number of images "
            f"({len(dataset)})"
        )
    image_emb = embed_images(model, dataset, device=device)
    query_emb = embed_texts(
        model, [args.query], tokenizer, device=device, max_len=config.data.max_len
    )
    scores, indices = (query_emb @ image_emb.T)[0].topk(args.top_k)
    print(f'query: "{args.query}"')
    for rank, (score, index) in enumerate(
        zip(scores.tolist(), indices.tolist()), start=1
    ):
        caption = dataset[index]["captions"][0]
        print(f"{rank:>2}. image {index:<6} score {score:+.3f}  ({caption})")
    if args.save:
        from crossalign.viz import retrieval_grid

        images = torch.stack([dataset[i]["image"] for i in indices.tolist()])
        retrieval_grid(args.query, images, scores.tolist(), save_path=args.save)
        print(f"figure saved to {args.save}")
    return 0


def _print_caption_metrics(metrics: dict[str, float]) -> None:
    for name, value in metrics.items():
        print(f"  {name:<24}{value:.4f}")


def _cmd_caption_train(args: argparse.Namespace) -> int:
    from crossalign.data.build import build_caption_dataset
    from crossalign.evaluation import evaluate_captioner
    from crossalign.train.captioning import (
        default_caption_config_path,
        load_caption_config,
        save_caption_config,
        train_captioner,
    )

    config_path = args.config or default_caption_config_path()
    config = load_caption_config(config_path).override(args.overrides)
    output_dir = args.output_dir or Path(
        config.train.output_dir or Path("runs") / config_path.stem
    )
    config.train.output_dir = str(output_dir)
    if args.quiet:
        config.train.progress = False
    result = train_captioner(config)
    save_caption_config(config, output_dir / "config.yaml")
    print(
        f"trained to step {config.train.steps} in {result.seconds:.1f} s; checkpoint: "
        f"{result.checkpoint}"
    )
    test = build_caption_dataset(config, "test")
    evaluation = evaluate_captioner(
        result.model,
        test,
        result.tokenizer,
        beam_size=config.eval.beam_size,
        max_len=config.data.decode_len,
        length_penalty=config.eval.length_penalty,
        batch_size=config.eval.batch_size,
    )
    print(f"test split ({len(test)} images, beam size {config.eval.beam_size}):")
    _print_caption_metrics(evaluation.metrics)
    return 0


def _cmd_caption_evaluate(args: argparse.Namespace) -> int:
    from crossalign.data.build import build_caption_dataset
    from crossalign.evaluation import evaluate_captioner
    from crossalign.train.captioning import load_captioner
    from crossalign.utils import atomic_write_text, select_device

    device = select_device(args.device)
    model, tokenizer, config = load_captioner(args.checkpoint, device=device)
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size {args.size} must be >= 1")
    beam_size = config.eval.beam_size if args.beam_size is None else args.beam_size
    if beam_size < 1:
        raise ValueError(f"--beam-size {beam_size} must be >= 1")
    if args.show < 0:
        raise ValueError(f"--show {args.show} must be >= 0")
    dataset = build_caption_dataset(config, args.split, size=args.size)
    evaluation = evaluate_captioner(
        model,
        dataset,
        tokenizer,
        beam_size=beam_size,
        max_len=config.data.decode_len,
        length_penalty=config.eval.length_penalty,
        batch_size=config.eval.batch_size,
        device=device,
    )
    for index in range(min(args.show, len(dataset))):
        print(f"{index:>4}: {evaluation.captions[index]}")
        print(f"      (reference: {evaluation.references[index][0]})")
    print(f"{args.split} split ({len(dataset)} images, beam size {beam_size}):")
    _print_caption_metrics(evaluation.metrics)
    if args.json:
        atomic_write_text(args.json, json.dumps(evaluation.metrics, indent=2))
    return 0


def _cmd_caption(args: argparse.Namespace) -> int:
    return {"train": _cmd_caption_train, "evaluate": _cmd_caption_evaluate}[
        args.caption_command
    ](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on bad input)."""
    args = _parser().parse_args(argv)
    commands = {
        "train": _cmd_train,
        "evaluate": _cmd_evaluate,
        "retrieve": _cmd_retrieve,
        "caption": _cmd_caption,
    }
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, IndexError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"crossalign {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

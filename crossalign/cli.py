"""The ``crossalign`` command line: train, evaluate and query dual encoders.

    crossalign train [--config FILE] [--set train.steps=100 ...] [--output-dir DIR] [--resume CKPT]
    crossalign evaluate CHECKPOINT [--split test] [--size N]
    crossalign retrieve CHECKPOINT --query "a red circle left of a blue square" [--top-k 5] [--save FIG]

Every subcommand prints what it did; bad arguments or files end with a one-line message on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossalign", description="Train and use cross-modal dual encoders.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a dual encoder from a YAML config")
    train.add_argument("--config", type=Path, default=None, help="experiment YAML (default: the packaged ShapesWorld CLIP config)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config value, e.g. --set train.steps=100 (repeatable)")
    train.add_argument("--output-dir", type=Path, default=None, help="where checkpoints and history go (default: runs/<config name>)")
    train.add_argument("--resume", type=Path, default=None, help="checkpoint (or run folder) to continue from")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = sub.add_parser("evaluate", help="retrieval metrics of a checkpoint on a data split")
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument("--split", default="test", help="data split (ShapesWorld also has 'compositional')")
    evaluate.add_argument("--size", type=int, default=None, help="number of images (ShapesWorld only)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")

    retrieve = sub.add_parser("retrieve", help="find the images that best match a sentence")
    retrieve.add_argument("checkpoint", type=Path)
    retrieve.add_argument("--query", required=True, help="the sentence to search with")
    retrieve.add_argument("--top-k", type=int, default=5)
    retrieve.add_argument("--split", default="test")
    retrieve.add_argument("--size", type=int, default=None, help="number of images searched (ShapesWorld only)")
    retrieve.add_argument("--device", default="auto")
    retrieve.add_argument("--save", type=Path, default=None, help="save a figure of the query and its top-k images")
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
    output_dir = args.output_dir or Path(config.train.output_dir or Path("runs") / config_path.stem)
    config.train.output_dir = str(output_dir)
    if args.quiet:
        config.train.progress = False
    result = train(config, resume_from=args.resume)
    if get_rank() != 0:  # under torchrun, rank 0 alone reports and writes files
        return 0
    save_config(config, output_dir / "config.yaml")
    atomic_write_text(output_dir / "history.json", json.dumps(result.history, indent=1))
    print(f"trained to step {config.train.steps} in {result.seconds:.1f} s "
          f"({result.samples_per_second:.0f} samples/s); checkpoint: {result.checkpoint}")
    test = build_dataset(config.data, "test", seed=config.seed)
    metrics = evaluate_retrieval(result.model, test, result.tokenizer, device=next(result.model.parameters()).device,
                                 max_len=config.data.max_len)
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
    metrics = evaluate_retrieval(model, dataset, tokenizer, device=device, max_len=config.data.max_len)
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
        raise ValueError(f"--top-k {args.top_k} must be between 1 and the number of images ({len(dataset)})")
    image_emb = embed_images(model, dataset, device=device)
    query_emb = embed_texts(model, [args.query], tokenizer, device=device, max_len=config.data.max_len)
    scores, indices = (query_emb @ image_emb.T)[0].topk(args.top_k)
    print(f'query: "{args.query}"')
    for rank, (score, index) in enumerate(zip(scores.tolist(), indices.tolist()), start=1):
        caption = dataset[index]["captions"][0]
        print(f"{rank:>2}. image {index:<6} score {score:+.3f}  ({caption})")
    if args.save:
        from crossalign.viz import retrieval_grid

        images = torch.stack([dataset[i]["image"] for i in indices.tolist()])
        retrieval_grid(args.query, images, scores.tolist(), save_path=args.save)
        print(f"figure saved to {args.save}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on bad input)."""
    args = _parser().parse_args(argv)
    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "retrieve": _cmd_retrieve}
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, IndexError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"crossalign {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

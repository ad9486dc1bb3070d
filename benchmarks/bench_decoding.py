"""Benchmark batched beam search against the per-image reference search on one toy GRU
captioner.

Both searches decode the same batch of images with the same randomly initialised
attentive GRU decoder (vocabulary 1000, hidden size 256 by default), alternating which
goes first in each repetition; each reported time is the median over the repetitions.
The run checks that both return the same captions and scores (to 1e-5 relative: a score
is a float32 sum of about 20 log-probabilities, which each search computes in batches of
other shapes) and exits with status 1 if they do not; timings are a report, not a test.

    python benchmarks/bench_decoding.py
    python benchmarks/bench_decoding.py --batch-size 256 --beam-size 5 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from crossalign.decoding import DecodeResult, beam_search, beam_search_reference
from crossalign.utils import seed_everything, select_device

BOS, EOS = 1, 2
TOLERANCE = 1e-5  # relative, on scores of about -50


class ToyCaptioner(nn.Module):
    """An attentive GRU decoder over random image-region features (Show-Attend-and-Tell
    shaped)."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.cell = nn.GRUCell(2 * hidden, hidden)
        self.out = nn.Linear(hidden, vocab_size)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """Next-token log-probabilities, new ``(hidden, regions)`` state and attention
        over regions."""
        hidden, regions = state
        attention = (regions @ hidden.unsqueeze(2)).squeeze(2).softmax(dim=1)
        context = (attention.unsqueeze(2) * regions).sum(dim=1)
        hidden = self.cell(
            torch.cat([self.embed(tokens[:, -1]), context], dim=1), hidden
        )
        logits = self.out(hidden) * 3.0
        # like real captions: ending grows likelier after ~10 words
        logits[:, EOS] += tokens.shape[1] - 10.0
        return logits.log_softmax(dim=1), (hidden, regions), attention


def timed(
    function: Callable[[], DecodeResult], device: torch.device
) -> tuple[float, DecodeResult]:
    """Seconds one call of ``function`` takes (synchronising the GPU), and what it
    returned."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def same_outputs(batched: DecodeResult, reference: DecodeResult) -> bool:
    """True when both searches chose the same captions with scores equal to a relative
    TOLERANCE."""
    return (
        torch.equal(batched.tokens.cpu(), reference.tokens.cpu())
        and torch.equal(batched.lengths.cpu(), reference.lengths.cpu())
        and bool(
            torch.allclose(
                batched.scores.cpu(), reference.scores.cpu(), rtol=TOLERANCE, atol=0
            )
        )
    )


def parse_args() -> argparse.Namespace:
    """Read the command line (batch, beam, model size, device, repetitions)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="images decoded together (default: 64)",
    )
    parser.add_argument(
        "--beam-size", type=int, default=5, help="beam width (default: 5)"
    )
    parser.add_argument(
        "--vocab-size", type=int, default=1000, help="vocabulary size (default: 1000)"
    )
    parser.add_argument(
        "--hidden", type=int, default=256, help="GRU hidden size (default: 256)"
    )
    parser.add_argument(
        "--regions",
        type=int,
        default=49,
        help="image regions attended over (default: 49)",
    )
    parser.add_argument(
        "--max-len", type=int, default=20, help="longest caption (default: 20)"
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=0.0,
        help="length penalty alpha (default: 0)",
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating repetitions (default: 3)"
    )
    args = parser.parse_args()
    if (
        min(
            args.batch_size,
            args.beam_size,
            args.vocab_size,
            args.hidden,
            args.regions,
            args.max_len,
            args.repeats,
        )
        < 1
    ):
        parser.error("sizes, --max-len and --repeats must be >= 1")
    return args


def main() -> int:
    """Run both searches side by side, check they agree, print times and the
    speed-up."""
    args = parse_args()
    seed_everything(0)
    device = select_device(args.device)
    model = ToyCaptioner(args.vocab_size, args.hidden).to(device).eval()
    regions = torch.randn(args.batch_size, args.regions, args.hidden, device=device)
    state = (regions.mean(dim=1).tanh(), regions)
    arguments = dict(
        batch_size=args.batch_size,
        bos_id=BOS,
        eos_id=EOS,
        beam_size=args.beam_size,
        max_len=args.max_len,
        length_penalty=args.length_penalty,
    )
    searches = {
        "batched": lambda: beam_search(model.step, state, **arguments),
        "per-image": lambda: beam_search_reference(model.step, state, **arguments),
    }
    # warm-up: first-call allocations and kernel selection
    timed(searches["batched"], device)
    times: dict[str, list[float]] = {name: [] for name in searches}
    results: dict[str, DecodeResult] = {}
    for repetition in range(args.repeats):
        names = list(searches) if repetition % 2 == 0 else list(reversed(searches))
        for name in names:
            seconds, results[name] = timed(searches[name], device)
            times[name].append(seconds)
    equal = same_outputs(results["batched"], results["per-image"])
    print(
        f"device {device}, batch {args.batch_size}, beam {args.beam_size}, vocab "
        f"{args.vocab_size}, "
        f"hidden {args.hidden}, max_len {args.max_len}, repeats {args.repeats}"
    )
    print(f"mean caption length {results['batched'].lengths.float().mean():.1f} tokens")
    print(
        f"same captions and scores (to {TOLERANCE:g} relative): "
        f"{'PASS' if equal else 'FAIL'}"
    )
    print(f"{'search':>10} {'median s':>9} {'captions/s':>11}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:>10} {median:>9.3f} {args.batch_size / median:>11.1f}")
    ratio = statistics.median(times["per-image"]) / statistics.median(times["batched"])
    print(f"speed-up of batched over per-image: {ratio:.1f}x")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: the optimised path against a plain fp32 eager loop, side by
side.

    python benchmarks/bench_train.py [--steps 20] [--repeats 3] [--batch-size 128]
    [--compile] [--device auto]

Both paths run the package's real training loop (``crossalign.train.train``) on the same
model, data and batch size; only the speed settings differ:

- plain:     fp32, contiguous (NCHW) images, the for-each AdamW, eager mode;
- optimised: bf16 autocast where the device supports it (fp16 with a grad scaler
  otherwise on
             CUDA), channels-last images, the fused AdamW kernel, and torch.compile with
             --compile.

The two are measured alternately (plain, optimised, plain, ...) and the median samples/s
of each is reported with their ratio, so machine noise hits both alike. Absolute numbers
only mean something on a quiet GPU; on a CPU, bf16 autocast is often slower than fp32
(no bf16 matrix units), which this benchmark shows rather than hides.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from crossalign.train import default_config_path, load_config, train
from crossalign.utils import select_device


def run(config, steps: int) -> float:
    """Samples per second of one short training run of ``steps`` steps."""
    short = config.override([f"train.steps={steps}"])
    short.train.progress = False
    return train(short).samples_per_second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--compile", action="store_true", help="also torch.compile the optimised path"
    )
    args = parser.parse_args()
    device = select_device(args.device)
    bf16 = device.type == "cpu" or (
        device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    base = load_config(default_config_path()).override(
        [
            f"train.batch_size={args.batch_size}",
            f"train.device={device}",
            "train.warmup_steps=1",
        ]
    )
    plain = base.override(
        [
            "train.precision=fp32",
            "train.channels_last=false",
            "train.fused_optimizer=false",
            "train.compile=false",
        ]
    )
    optimised = base.override(
        [
            f"train.precision={'bf16' if bf16 else 'fp16'}",
            "train.channels_last=true",
            "train.fused_optimizer=true",
            f"train.compile={str(args.compile).lower()}",
        ]
    )
    print(
        f"torch {torch.__version__}, device {device}, threads "
        f"{torch.get_num_threads()}, "
        f"batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats"
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print("GPU:", torch.cuda.get_device_name(device))
    rates: dict[str, list[float]] = {"plain": [], "optimised": []}
    run(optimised, 2)  # compile / autotune once before timing
    for _ in range(args.repeats):
        rates["plain"].append(run(plain, args.steps))
        rates["optimised"].append(run(optimised, args.steps))
    plain_rate, fast_rate = (
        statistics.median(rates["plain"]),
        statistics.median(rates["optimised"]),
    )
    print(
        f"plain fp32 eager loop : {plain_rate:10.1f} samples/s  (runs: "
        f"{', '.join(f'{r:.0f}' for r in rates['plain'])})"
    )
    print(
        f"optimised path        : {fast_rate:10.1f} samples/s  (runs: "
        f"{', '.join(f'{r:.0f}' for r in rates['optimised'])})"
    )
    print(
        f"ratio optimised/plain : {fast_rate / plain_rate:10.2f}x  (GPU target: >= 2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

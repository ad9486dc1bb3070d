"""Training throughput of crossalign's DualEncoder against open_clip's CLIP at the same
size.

    python benchmarks/bench_vs_open_clip.py [--size small|vit-b-32] [--device auto]
    [--batch-size 128] [--steps 5] [--warmup 2] [--repeats 3] [--threads 2]
    [--precision auto|fp32|bf16] [--compile] [--peak-tflops 989]

Needs open_clip (``pip install -e ".[bench]"``, or ``pip install open_clip_torch``).

Both models are a ViT image tower and a Transformer text tower with the same image
size, patch size, widths, depths, heads, MLP ratio (4), context length, vocabulary and
embedding size:

- ``small`` (the default): 64-pixel images, patch 8, ViT width 192, depth 4, 3 heads;
  text width 256, depth 2, 4 heads; context length, vocabulary and embedding size from
  the package's default experiment (``shapes_clip.yaml``: ``data.max_len`` 40, the
  ShapesWorld word vocabulary of 54 tokens, ``model.embed_dim`` 128);
- ``vit-b-32``: CLIP ViT-B/32, 224-pixel images, patch 32, width 768, depth 12, 12
  heads; text width 512, depth 12, 8 heads, context 77, vocabulary 49408, embedding
  512.

The parameter counts differ by one width's worth, open_clip having more: its ViT
normalises the patch tokens before the first block (``ln_pre``, 2 x width parameters),
which crossalign's does not, and its patch embedding has no bias (crossalign's has, 1 x
width). Everything else matches tensor for tensor (192 parameters of 3.49M at
``small``, 768 of 151.3M at ``vit-b-32``). The towers also differ in ways that
cost compute but no parameters: crossalign standardises the images inside the model,
and its text tower attends with a padding mask and averages the tokens, while
open_clip's applies a causal mask and pools the end-of-text token.

Where crossalign is faster, the ViT computes the same function with less work (the
models' outputs and gradients equal what ``nn.TransformerEncoder`` computes from the
same weights: ``tests/test_encoders.py``): its last block runs for the CLS token alone,
the only token the pooled output reads (fewer FLOPs per sample in the table), and
every block views the packed query/key/value projection as heads directly instead of
reordering it to sequence-first and back
(:func:`crossalign.models.image_encoders.pre_norm_block`).

Each step is forward, loss, backward and optimiser step on random data that is already
on the device. Texts fill the whole context (no padding). The settings are the same for
both models:

- optimiser: the dual-encoder trainer's (``crossalign.train.optim.optimizer_for``)
  with the package's default ``TrainConfig``: AdamW, lr 2e-3, betas (0.9, 0.98), weight
  decay 0.05, fused into one kernel where this PyTorch build allows it. open_clip's CLIP
  gets this same optimiser. Its decay rule goes by shape and name (matrices decay,
  parameters named ``*embedding*`` do not), so open_clip's embedding tables are not
  decayed and crossalign's (``token_embed``, ``pos_embed``) are, at the same cost. The
  trainer's gradient clipping and learning-rate schedule are left out for both;
- loss: each library's own symmetric InfoNCE (``crossalign.losses.ClipLoss``,
  ``open_clip.loss.ClipLoss``), which compute the same value. Both take the embeddings
  in fp32, as the crossalign trainer passes them;
- precision: fp32 or bf16 autocast for both (``--precision auto`` picks bf16 on CUDA
  and fp32 elsewhere), with TF32 products on CUDA as the trainer's ``train.tf32``
  allows; ``--compile`` wraps both models in ``torch.compile``.

One setting applies to crossalign only, because its trainer uses it by default:
channels-last images and image tower (``train.channels_last``). open_clip's training
script does not use it.

The runs alternate (crossalign, open_clip, crossalign, ...). Each run does ``--warmup``
untimed steps, then ``--steps`` timed ones. The table gives the median samples/s of
each model and their ratio. The FLOPs per sample come from
``torch.utils.flop_counter.FlopCounterMode`` over one forward, loss and backward. On
CUDA the table also gives the model FLOPs utilisation (MFU): FLOPs per sample x
samples/s / ``--peak-tflops``. The default of 989 is the dense bf16 peak of an H100 or
H200 SXM; the MFU figure is meant for ``--size vit-b-32``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crossalign.losses import ClipLoss
from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig
from crossalign.utils import select_device

MODELS = ("crossalign", "open_clip")


@dataclass(frozen=True)
class Size:
    """The shape both models are built at."""

    image_size: int
    patch_size: int
    vision_width: int
    vision_depth: int
    vision_heads: int
    text_width: int
    text_depth: int
    text_heads: int
    context_length: int
    vocab_size: int
    embed_dim: int
    mlp_ratio: float = 4.0


def small_size() -> Size:
    """The ``small`` size, with the context length, vocabulary and embedding size of
    the package's default experiment."""
    from crossalign.data.shapes import caption_words
    from crossalign.data.vocab import Vocabulary
    from crossalign.train import default_config_path, load_config

    config = load_config(default_config_path())
    # what crossalign.data.build.build_tokenizer builds for ShapesWorld
    vocab = Vocabulary.build(caption_words(), min_freq=1)
    return Size(
        image_size=config.data.image_size,
        patch_size=8,
        vision_width=192,
        vision_depth=4,
        vision_heads=3,
        text_width=256,
        text_depth=2,
        text_heads=4,
        context_length=config.data.max_len,
        vocab_size=len(vocab),
        embed_dim=config.model.embed_dim,
    )


VIT_B_32 = Size(
    image_size=224,
    patch_size=32,
    vision_width=768,
    vision_depth=12,
    vision_heads=12,
    text_width=512,
    text_depth=12,
    text_heads=8,
    context_length=77,
    vocab_size=49408,
    embed_dim=512,
)


def get_size(name: str) -> Size:
    """The :class:`Size` called ``name`` (``"small"`` or ``"vit-b-32"``)."""
    if name == "small":
        return small_size()
    if name == "vit-b-32":
        return VIT_B_32
    raise ValueError(f"size={name!r} is not known; use 'small' or 'vit-b-32'")


def build_crossalign(size: Size) -> DualEncoder:
    """crossalign's dual encoder: a ``vit`` image tower and a ``transformer`` text tower
    (CLS pooling for images, mean pooling for texts), linear projections, CLIP's initial
    temperature."""
    config = DualEncoderConfig(
        image_encoder="vit",
        image_kwargs=dict(
            image_size=size.image_size,
            patch_size=size.patch_size,
            dim=size.vision_width,
            depth=size.vision_depth,
            heads=size.vision_heads,
            mlp_ratio=size.mlp_ratio,
        ),
        text_encoder="transformer",
        text_kwargs=dict(
            vocab_size=size.vocab_size,
            dim=size.text_width,
            depth=size.text_depth,
            heads=size.text_heads,
            max_len=size.context_length,
            mlp_ratio=size.mlp_ratio,
        ),
        embed_dim=size.embed_dim,
        projection="linear",
        init_temperature=0.07,
    )
    return DualEncoder(config)


def build_open_clip(size: Size) -> nn.Module:
    """open_clip's ``CLIP`` with its own ViT and text Transformer at ``size`` (GELU,
    fp32 weights)."""
    from open_clip.model import CLIP

    if size.vision_width % size.vision_heads:
        raise ValueError(
            f"vision width {size.vision_width} is not a multiple of its heads "
            f"{size.vision_heads}"
        )
    vision_cfg = dict(
        image_size=size.image_size,
        patch_size=size.patch_size,
        width=size.vision_width,
        layers=size.vision_depth,
        # open_clip derives the head count from the width of a head
        head_width=size.vision_width // size.vision_heads,
        mlp_ratio=size.mlp_ratio,
    )
    text_cfg = dict(
        context_length=size.context_length,
        vocab_size=size.vocab_size,
        width=size.text_width,
        heads=size.text_heads,
        layers=size.text_depth,
        mlp_ratio=size.mlp_ratio,
    )
    return CLIP(size.embed_dim, vision_cfg, text_cfg, quick_gelu=False)


def build_model(name: str, size: Size) -> nn.Module:
    """``build_crossalign`` or ``build_open_clip``, by name."""
    if name == "crossalign":
        return build_crossalign(size)
    if name == "open_clip":
        return build_open_clip(size)
    raise ValueError(f"model {name!r} is not known; use one of {MODELS}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def random_batch(
    size: Size, batch_size: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random images in [0, 1] and full-length texts of non-padding ids, on
    ``device``."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, size.image_size, size.image_size, generator=gen)
    ids = torch.randint(
        1, size.vocab_size, (batch_size, size.context_length), generator=gen
    )
    return {
        "images": images.to(device),
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids, dtype=torch.bool).to(device),
    }


def build_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The dual-encoder trainer's optimiser for ``model``, with the default
    ``TrainConfig``."""
    from crossalign.train import TrainConfig
    from crossalign.train.optim import optimizer_for

    return optimizer_for(model, TrainConfig())


def autocast(precision: str, device: torch.device) -> Any:
    """The trainer's autocast context (a no-op for fp32)."""
    from crossalign.train.precision import autocast as trainer_autocast

    return trainer_autocast(precision, device)


def loss_function(name: str) -> Callable[..., torch.Tensor]:
    """Forward and loss of model ``name`` on a batch: ``fn(model, batch) -> loss``."""
    if name == "crossalign":
        crossalign_loss = ClipLoss()

        def crossalign_step(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            image, text, scale = model(
                batch["images"], batch["input_ids"], batch["attention_mask"]
            )
            return crossalign_loss(image.float(), text.float(), scale.float())

        return crossalign_step
    if name == "open_clip":
        from open_clip.loss import ClipLoss as OpenClipLoss

        open_clip_loss = OpenClipLoss()

        def open_clip_step(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            image, text, scale = model(batch["images"], batch["input_ids"])
            return open_clip_loss(image.float(), text.float(), scale.float())

        return open_clip_step
    raise ValueError(f"model {name!r} is not known; use one of {MODELS}")


class Trainee:
    """One model with its optimiser, batch and training step, ready to time."""

    def __init__(
        self,
        name: str,
        size: Size,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
        compile: bool = False,
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        self.name = name
        self.device = device
        self.precision = precision
        self.model = build_model(name, size).to(device)
        self.model.train()
        self.batch = random_batch(size, batch_size, device, seed=seed)
        if name == "crossalign":  # train.channels_last, on by default in the trainer
            self.model.image_encoder.to(memory_format=torch.channels_last)
            self.batch["images"] = self.batch["images"].contiguous(
                memory_format=torch.channels_last
            )
        self.optimizer = build_optimizer(self.model)
        self.forward: Any = torch.compile(self.model) if compile else self.model
        self.loss_fn = loss_function(name)

    @property
    def batch_size(self) -> int:
        return int(self.batch["images"].shape[0])

    def forward_backward(self) -> torch.Tensor:
        """Forward, loss and backward; returns the loss (detached)."""
        with autocast(self.precision, self.device):
            loss = self.loss_fn(self.forward, self.batch)
        loss.backward()
        return loss.detach()

    def step(self) -> torch.Tensor:
        """One training step; returns its loss (detached)."""
        loss = self.forward_backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def flops_per_sample(self) -> float:
        """FLOPs of one forward, loss and backward (eager), divided by the batch
        size."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter, autocast(self.precision, self.device):
            loss = self.loss_fn(self.model, self.batch)
        with counter:
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops() / self.batch_size

    def samples_per_second(self, steps: int, warmup: int) -> float:
        """Samples/s over ``steps`` timed steps, after ``warmup`` untimed ones."""
        for _ in range(warmup):
            self.step()
        synchronize(self.device)
        started = time.perf_counter()
        for _ in range(steps):
            loss = self.step()
        synchronize(self.device)
        seconds = time.perf_counter() - started
        if not math.isfinite(float(loss)):
            raise RuntimeError(f"{self.name}: the loss became {float(loss)}")
        return steps * self.batch_size / seconds


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--size", choices=("small", "vit-b-32"), default="small")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each model")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="autocast precision; auto: bf16 on CUDA, fp32 elsewhere",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile both models"
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="peak dense bf16 TFLOP/s of the GPU, for the MFU (989: H100/H200 SXM)",
    )
    args = parser.parse_args(argv)
    for flag in ("batch_size", "steps", "repeats", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import open_clip
    except ImportError:
        print(
            "open_clip is not installed: pip install -e '.[bench]' (or "
            "pip install open_clip_torch)",
            file=sys.stderr,
        )
        return 1
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if device.type == "cuda":  # train.tf32: fp32 products on TF32 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    size = get_size(args.size)
    trainees = {
        name: Trainee(name, size, args.batch_size, device, precision, args.compile)
        for name in MODELS
    }
    fused = {
        name: bool(t.optimizer.defaults.get("fused")) for name, t in trainees.items()
    }
    print(
        f"torch {torch.__version__}, open_clip {open_clip.__version__}, device "
        f"{device}, threads {torch.get_num_threads()}, precision {precision}, "
        f"compile {args.compile}"
    )
    print(
        f"size {args.size}: {size}\nbatch {args.batch_size}, {args.warmup} warm-up + "
        f"{args.steps} timed steps per run, {args.repeats} runs of each (interleaved); "
        f"AdamW fused: {fused}"
    )
    flops = {name: t.flops_per_sample() for name, t in trainees.items()}
    rates: dict[str, list[float]] = {name: [] for name in MODELS}
    for repeat in range(args.repeats):
        for name in MODELS:
            rate = trainees[name].samples_per_second(args.steps, args.warmup)
            rates[name].append(rate)
            print(
                f"  run {repeat + 1}/{args.repeats} {name:>10}: {rate:8.1f} samples/s"
            )

    params = {name: count_parameters(t.model) for name, t in trainees.items()}
    median = {name: statistics.median(rates[name]) for name in MODELS}
    header = f"{'model':<11} {'parameters':>12} {'GFLOP/sample':>13} {'samples/s':>10}"
    if device.type == "cuda":
        header += f" {'MFU':>7}"
    print("\n" + header)
    for name in MODELS:
        row = (
            f"{name:<11} {params[name]:>12,} {flops[name] / 1e9:>13.3f} "
            f"{median[name]:>10.1f}"
        )
        if device.type == "cuda":
            mfu = flops[name] * median[name] / (args.peak_tflops * 1e12)
            row += f" {mfu:>7.1%}"
        print(row)
    difference = params["crossalign"] - params["open_clip"]
    print(
        f"parameters: crossalign - open_clip = {difference:+,} "
        f"({difference / params['open_clip']:+.3%}): open_clip's ViT has ln_pre "
        f"(+2 x {size.vision_width}), crossalign's a patch-embedding bias "
        f"(+{size.vision_width})"
    )
    print(
        f"crossalign / open_clip samples/s: "
        f"{median['crossalign'] / median['open_clip']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training loop for the dual encoder, from one CPU core to several GPUs under
torchrun.

One function, :func:`train`, reads top to bottom: build data, tokenizer and model; set
up precision, optimiser and schedule; then hand the training engine
(:class:`~crossalign.train.engine.Engine`, which owns autocast, scaled backward with
accumulation, clipping, the optimiser and scheduler steps and the history) a function
that builds each micro-batch's contrastive loss, and evaluate and checkpoint between
steps as configured.

Batches are drawn by step, not by iterator state: micro-step ``m`` of epoch ``e`` always
holds the same images (a permutation seeded by ``(seed, e)``) and the same caption
choices, so a resumed run continues bit for bit where an uninterrupted one would be.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from crossalign.data.batches import StepBatchSampler
from crossalign.data.build import build_dataset, build_tokenizer, fetch_items
from crossalign.data.collate import CaptionCollator
from crossalign.data.feature_cache import CachedFeatures
from crossalign.distributed import DistInfo, all_reduce_mean, init_distributed
from crossalign.evaluation import evaluate_retrieval
from crossalign.losses import ClipLoss
from crossalign.models.dual_encoder import DualEncoder
from crossalign.train.checkpoint import (
    load_train_state,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from crossalign.train.config import ExperimentConfig
from crossalign.train.engine import Engine
from crossalign.train.optim import optimizer_for
from crossalign.train.precision import check_precision
from crossalign.train.schedule import warmup_cosine_scheduler
from crossalign.utils import seed_everything, select_device

if TYPE_CHECKING:
    from crossalign.data.flickr8k import Flickr8k
    from crossalign.data.shapes import ShapesWorld


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and everything needed to judge
    it."""

    model: DualEncoder
    tokenizer: Any
    config: ExperimentConfig
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0
    samples_per_second: float = 0.0


class _EpochTagged(Dataset):
    """Wraps a data set so that items fetched by ``(epoch, index)`` carry their
    epoch."""

    def __init__(self, dataset: ShapesWorld | Flickr8k | CachedFeatures):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[dict]:
        items = fetch_items(self.dataset, [index for _, index in keys])
        return [{**item, "epoch": epoch} for item, (epoch, _) in zip(items, keys)]


def build_model(
    config: ExperimentConfig, tokenizer: Any, train_set: Any = None
) -> DualEncoder:
    """The dual encoder of ``config``, with a word-level text tower sized to
    ``tokenizer`` and, for ``model.image_encoder: features``, an image tower as wide as
    the cached features of ``train_set``.

    The model keeps the completed config (``model.config``), so a checkpoint can rebuild
    it.
    """
    model_cfg = copy.deepcopy(config.model)
    if model_cfg.image_encoder == "features":
        if not isinstance(train_set, CachedFeatures):
            raise ValueError(
                "model.image_encoder='features' trains on cached features: set "
                "data.feature_cache (Flickr8k)"
            )
        model_cfg.image_kwargs = {"dim": int(train_set.features.shape[1])}
    elif isinstance(train_set, CachedFeatures):
        raise ValueError(
            "data.feature_cache gives cached features, which only "
            "model.image_encoder='features' reads"
        )
    if model_cfg.text_encoder != "hf":
        model_cfg.text_kwargs = {
            **model_cfg.text_kwargs,
            "vocab_size": len(tokenizer),
            "pad_id": tokenizer.pad_id,
        }
    return DualEncoder(model_cfg)


def _checkpoint_config(
    config: ExperimentConfig, model: DualEncoder, tokenizer: Any
) -> dict[str, Any]:
    """What a checkpoint's config.json holds: the experiment with the model's completed
    config."""
    experiment = config.to_dict()
    experiment["model"] = model.config.to_dict()
    return {"experiment": experiment, "tokenizer": tokenizer.to_dict()}


def train(
    config: ExperimentConfig,
    resume_from: str | Path | None = None,
    stop_after: int | None = None,
    dist: DistInfo | None = None,
) -> TrainResult:
    """Train a dual encoder as ``config`` says; return the model, tokenizer and history.

    Args:
        config: the experiment (data, model, train sections).
        resume_from: a checkpoint folder (or run folder with ``checkpoints/latest``) to
            continue from; the run then continues exactly as if it had never stopped.
        stop_after: stop after this many optimiser steps in total (the schedule still
            spans ``config.train.steps``); used to interrupt a run on purpose.
        dist: distributed context; by default read from torchrun's environment
        variables.

    Raises:
        NonFiniteLossError: the loss became NaN/inf; the last good checkpoint is kept.
    """
    cfg = config.train
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise ValueError(
            "train.steps, train.batch_size and train.grad_accum must all be >= 1"
        )
    dist = dist or init_distributed()
    device = dist.device if dist.world_size > 1 else select_device(cfg.device)
    check_precision(cfg.precision, device)
    seed_everything(config.seed + dist.rank)

    def split(name: str, size: int | None = None) -> Any:
        return build_dataset(
            config.data,
            name,
            seed=config.seed,
            size=size,
            device=str(device),
            progress=cfg.progress and dist.is_main,
        )

    train_set = split("train")
    val_set = split("val", size=cfg.eval_size) if cfg.eval_every else None
    tokenizer = build_tokenizer(config.data, train_set)
    seed_everything(config.seed)
    model = build_model(config, tokenizer, train_set).to(device)
    if cfg.channels_last:
        model.image_encoder.to(memory_format=torch.channels_last)
    optimizer = optimizer_for(model, cfg)
    scheduler = warmup_cosine_scheduler(
        optimizer, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio
    )
    history: list[dict[str, float]] = []
    start_step = 0
    scaler_state = None
    if resume_from is not None:
        resumed = resolve_checkpoint(resume_from)
        load_weights(model, resumed, device=device)
        state = load_train_state(resumed)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler_state = state["scaler"]
        torch.set_rng_state(state["rng_cpu"])
        start_step, history = int(state["step"]), list(state["history"])

    train_model: Callable[..., Any] = model
    ddp_model = None
    if dist.world_size > 1:
        train_model = ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        train_model = torch.compile(train_model)
    loss_fn = ClipLoss()
    collator = CaptionCollator(
        tokenizer, caption="random", seed=config.seed, max_len=config.data.max_len
    )
    final_step = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    sampler = StepBatchSampler(
        len(train_set),
        cfg.batch_size,
        config.seed,
        start_step * cfg.grad_accum,
        final_step * cfg.grad_accum,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    loader = DataLoader(
        _EpochTagged(train_set),
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=config.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.data.num_workers > 0,
    )
    out_dir = Path(cfg.output_dir) if cfg.output_dir else None
    ckpt_dir = out_dir / "checkpoints" if out_dir else None
    last_checkpoint: Path | None = (
        resolve_checkpoint(resume_from) if resume_from is not None else None
    )
    saved_step = start_step if resume_from is not None else None

    def hint() -> str:
        where = (
            f"last good checkpoint: {last_checkpoint}"
            if last_checkpoint
            else "no checkpoint was written"
        )
        return (
            f"{where}; try a lower train.lr, train.precision='fp32' or a smaller init "
            "temperature"
        )

    engine = Engine(
        optimizer,
        scheduler,
        device=device,
        precision=cfg.precision,
        tf32=cfg.tf32,
        grad_accum=cfg.grad_accum,
        clip_grad_norm=cfg.clip_grad_norm,
        clip_parameters=model.parameters(),
        log_every=max(1, cfg.log_every),
        ddp_model=ddp_model,
        reduce=all_reduce_mean if dist.world_size > 1 else None,
        hint=hint,
        observe=lambda: {"temperature": model.logit_scale},
        record=lambda entry: {**entry, "temperature": 1.0 / entry["temperature"]},
        history=history,
        desc="train",
        total_steps=final_step,
        start_step=start_step,
        progress=cfg.progress and dist.is_main,
    )
    if scaler_state is not None:
        engine.scaler.load_state_dict(scaler_state)

    def checkpoint(step: int) -> Path | None:
        engine.flush()  # checks the steps since the last log: no NaN is saved
        if ckpt_dir is None or not dist.is_main:
            return None
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": engine.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "step": step,
            "history": history,
        }
        return save_checkpoint(
            ckpt_dir, step, model, _checkpoint_config(config, model, tokenizer), state
        )

    batches = iter(loader)
    samples = 0

    def loss_at(micro: int) -> torch.Tensor:
        nonlocal samples
        batch = next(batches)
        images = batch["images"].to(device, non_blocking=True)
        if cfg.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        ids = batch["input_ids"].to(device, non_blocking=True)
        mask = batch["attention_mask"].to(device, non_blocking=True)
        image_emb, text_emb, scale = train_model(images, ids, mask)
        samples += images.shape[0] * dist.world_size
        return loss_fn(image_emb.float(), text_emb.float(), scale.float())

    def after_step(step: int) -> None:
        nonlocal last_checkpoint, saved_step
        if val_set is not None and step % cfg.eval_every == 0:
            engine.flush()  # the step records come before the evaluation's
            if dist.is_main:
                metrics = evaluate_retrieval(
                    model,
                    val_set,
                    tokenizer,
                    device=device,
                    max_len=config.data.max_len,
                )
                history.append(
                    {"step": step, **{f"val/{k}": v for k, v in metrics.items()}}
                )
                model.train()
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            last_checkpoint, saved_step = checkpoint(step) or last_checkpoint, step

    model.train()
    started = time.perf_counter()
    engine.run(loss_at, final_step, after_step)
    step = engine.step_count
    seconds = time.perf_counter() - started
    if saved_step != step:
        last_checkpoint = checkpoint(step) or last_checkpoint
    model.eval()
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        config=config,
        history=history,
        checkpoint=last_checkpoint,
        seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else math.nan,
    )

"""Training captioners: the experiment config, the teacher-forced loop and reloading a
trained captioner.

One experiment config (YAML/JSON, like the dual encoder's) names the data, the captioner
(:class:`~crossalign.models.captioners.CaptionerConfig`), the optimisation and the
decoding used for evaluation. :func:`train_captioner` reads top to bottom: data and
vocabulary (:func:`~crossalign.data.build.build_caption_dataset`,
:func:`~crossalign.data.build.build_vocabulary`), model, optimiser and schedule, then a
loop of teacher-forced steps. Decoding a split and scoring its captions is
:func:`crossalign.evaluation.evaluate_captioner`, beside retrieval evaluation.

Flickr8k with a frozen ResNet-50 goes through a feature cache:
:func:`~crossalign.data.feature_cache.cache_flickr8k_features` runs the CNN once per
split and stores its
``[2048, 7, 7]`` grids in fp16, and training then reads the cache instead of the images
(``data.feature_cache`` in the config).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import yaml
from torch.utils.data import Dataset

from crossalign.data.batches import StepBatchSampler
from crossalign.data.build import (
    build_caption_dataset,
    build_vocabulary,
    dataset_size,
    fetch_items,
)
from crossalign.data.collate import CaptionCollator, batch_inputs
from crossalign.data.encode import encode_dataset
from crossalign.data.feature_cache import CachedFeatures
from crossalign.data.shapes import ShapesWorld
from crossalign.data.vocab import Vocabulary, tokenizer_from_dict
from crossalign.models.captioners import Captioner, CaptionerConfig, build_captioner
from crossalign.train.checkpoint import (
    load_weights,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
)
from crossalign.train.config import SectionedConfig, read_config_file
from crossalign.train.encoder_pretraining import (
    pretrain_on_scene_labels,
    scene_label_names,
)
from crossalign.train.engine import Engine
from crossalign.train.optim import optimizer_for
from crossalign.train.precision import check_precision
from crossalign.train.schedule import warmup_cosine_scheduler
from crossalign.utils import atomic_write_text, seed_everything, select_device

if TYPE_CHECKING:
    pass


@dataclass
class CaptionDataConfig:
    """Which data to caption and how to read it.

    ``name="shapes"`` generates ShapesWorld; ``name="flickr8k"`` reads Flickr8k from
    ``root``. With ``feature_cache`` set (Flickr8k), a frozen ``feature_encoder`` is run
    once per split and its feature grids are cached in that folder; the captioner then
    trains on the cache and must have ``model.image_encoder: null``.

    ``max_len`` is the experiment's one caption length, in tokens counting ``<bos>``
    and ``<eos>``: training captions are cut to it, the Transformer decoder's position
    table has that many rows, and decoding writes at most ``decode_len = max_len - 1``
    tokens (``<bos>`` is given, not written).
    """

    name: str = "shapes"
    root: str | None = None
    image_size: int = 64
    train_size: int = 20000
    val_size: int = 1000
    test_size: int = 1000
    noise: float = 0.0
    max_len: int = 32
    min_freq: int = 1
    feature_cache: str | None = None
    feature_encoder: str = "resnet50"
    pretrained_encoder: bool = True

    @property
    def decode_len(self) -> int:
        """The most tokens a decoded caption may have (its ``<eos>`` included): the
        caption length less the ``<bos>`` that decoding starts from."""
        return self.max_len - 1


@dataclass
class CaptionTrainConfig:
    """How to optimise: steps, batch, AdamW, warm-up + cosine schedule, clipping,
    precision, output.

    ``batch_size`` counts images; each image contributes ``captions_per_image``
    different captions to the step (a random one when 1), so a step sees
    ``batch_size * captions_per_image`` captions for the price of ``batch_size``
    image-encoder passes.

    ``encoder_pretrain_steps > 0`` (ShapesWorld only) first trains the image encoder for
    that many steps to recognise what an image holds
    (:func:`~crossalign.train.encoder_pretraining.pretrain_on_scene_labels`), as Show,
    Attend and Tell starts from an ImageNet-trained CNN; with ``model.freeze_encoder``
    it then stays fixed while the decoder learns to caption. ``encoder_pretrain_labels``
    picks the label groups: ``attributes`` (shapes, colours, sizes), ``pairs``
    (colour-shape and size-shape) and ``regions`` (which ninths of the image hold an
    object).

    ``cache_frozen_regions`` (with ``model.freeze_encoder``): a frozen encoder gives
    every image the same regions at every epoch, so they are computed once, after any
    pretraining, and the decoder trains on them
    (:func:`~crossalign.data.encode.encode_dataset`): the same
    inputs (the losses agree to float rounding) without an encoder pass per step; the
    cache holds ``N x regions x channels`` floats (about 400 MB for 50,000 ShapesWorld
    images and a 4 x 4 grid of 128 channels).

    ``tf32`` lets fp32 matrix products on CUDA use TF32 tensor cores; ``log_every`` is
    also how often the loss is read back from the device.
    """

    steps: int = 1000
    encoder_pretrain_steps: int = 0
    encoder_pretrain_labels: list[str] = field(default_factory=lambda: ["attributes"])
    batch_size: int = 64
    captions_per_image: int = 1
    cache_frozen_regions: bool = True
    lr: float = 2e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    clip_grad_norm: float | None = 1.0
    precision: str = "fp32"
    tf32: bool = True
    fused_optimizer: bool = True
    device: str = "auto"
    log_every: int = 25
    output_dir: str | None = None
    progress: bool = True


@dataclass
class CaptionEvalConfig:
    """How captions are decoded for evaluation (their length is ``data.max_len``'s:
    :attr:`CaptionDataConfig.decode_len`)."""

    beam_size: int = 3
    length_penalty: float = 0.0
    batch_size: int = 100


@dataclass
class CaptionExperimentConfig(SectionedConfig):
    """A captioning experiment: seed, data, model (a CaptionerConfig), train and eval
    settings."""

    SECTIONS: ClassVar[dict[str, type]] = {
        "data": CaptionDataConfig,
        "model": CaptionerConfig,
        "train": CaptionTrainConfig,
        "eval": CaptionEvalConfig,
    }

    seed: int = 0
    data: CaptionDataConfig = field(default_factory=CaptionDataConfig)
    model: CaptionerConfig = field(default_factory=CaptionerConfig)
    train: CaptionTrainConfig = field(default_factory=CaptionTrainConfig)
    eval: CaptionEvalConfig = field(default_factory=CaptionEvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, without the model keys that are derived
        (:data:`DERIVED_MODEL_KEYS`)."""
        data = super().to_dict()
        for key in DERIVED_MODEL_KEYS:
            data["model"].pop(key, None)
        return data

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], source: str = "config"
    ) -> CaptionExperimentConfig:
        """Build from nested dicts; refuses a derived model key
        (:data:`DERIVED_MODEL_KEYS`) with where its value comes from."""
        model = data.get("model") if isinstance(data, dict) else None
        derived = sorted(set(model) & set(DERIVED_MODEL_KEYS)) if model else []
        if derived:
            raise ValueError(
                f"{source}: model.{derived[0]} is not set in a captioning experiment: "
                f"{DERIVED_MODEL_KEYS[derived[0]]}"
            )
        evaluation = data.get("eval") if isinstance(data, dict) else None
        if isinstance(evaluation, dict) and "max_len" in evaluation:
            raise ValueError(
                f"{source}: eval.max_len is not a setting: decoding writes at most "
                "data.max_len - 1 tokens (data.max_len is the one caption length)"
            )
        return super().from_dict(data, source)


DERIVED_MODEL_KEYS = {
    "vocab_size": "the vocabulary built from the training captions sets it",
    "pad_id": "the vocabulary built from the training captions sets it",
    "bos_id": "the vocabulary built from the training captions sets it",
    "eos_id": "the vocabulary built from the training captions sets it",
    "max_len": "data.max_len sets it (the experiment's one caption length)",
}
"""Captioner settings an experiment derives rather than reads: the vocabulary's size
and special ids, and the position table's length (``data.max_len``)."""


def load_caption_config(path: str | Path) -> CaptionExperimentConfig:
    """Read a captioning config from a YAML or JSON file, naming the file in any
    error."""
    return CaptionExperimentConfig.from_dict(read_config_file(path), source=str(path))


def save_caption_config(config: CaptionExperimentConfig, path: str | Path) -> None:
    """Write a captioning config as YAML."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def default_caption_config_path() -> Path:
    """The ShapesWorld captioning config that ships with the package."""
    return Path(__file__).resolve().parent.parent / "configs" / "shapes_caption.yaml"


# --------------------------------------------------------------------------------------
# data


def _caption_items(dataset: Dataset, indices: Sequence[int]) -> list[dict]:
    """Items holding only ``"captions"`` and ``"index"``: what a step on cached regions
    needs (no image is rendered)."""
    if isinstance(dataset, ShapesWorld):
        return [{"captions": dataset.captions(i), "index": i} for i in indices]
    return [
        {"captions": item["captions"], "index": item["index"]}
        for item in fetch_items(dataset, indices)
    ]


def build_captioner_for(
    config: CaptionExperimentConfig, tokenizer: Vocabulary, dataset: Dataset
) -> Captioner:
    """The configured captioner, sized to ``tokenizer`` and, for cached features, to
    their width."""
    model_cfg = copy.deepcopy(config.model)
    model_cfg.vocab_size, model_cfg.pad_id = len(tokenizer), tokenizer.pad_id
    model_cfg.bos_id, model_cfg.eos_id = tokenizer.bos_id, tokenizer.eos_id
    model_cfg.max_len = config.data.max_len
    if isinstance(dataset, CachedFeatures):
        if model_cfg.image_encoder is not None:
            raise ValueError(
                "training from a feature cache needs model.image_encoder: null (the "
                "cache holds the features)"
            )
        model_cfg.feature_dim = int(dataset.features.shape[1])
    return build_captioner(model_cfg)


# ------------------------------------------------------------------------------------
# training


def _step_captions(
    collator: CaptionCollator, items: Sequence[dict], per_image: int
) -> list[str]:
    """The captions a training step uses: the collator's random pick, or ``per_image``
    per image, grouped by image.

    With ``per_image > 1`` each image gives its first ``per_image`` captions (all differ
    on ShapesWorld, whose five captions are independent draws of the grammar).
    """
    if per_image == 1:
        return collator.choose(items)
    captions = []
    for item in items:
        if len(item["captions"]) < per_image:
            raise ValueError(
                f"train.captions_per_image={per_image} but item {item['index']} has "
                f"only {len(item['captions'])} captions"
            )
        captions += item["captions"][:per_image]
    return captions


@dataclass
class CaptionTrainResult:
    """What :func:`train_captioner` returns."""

    model: Captioner
    tokenizer: Vocabulary
    config: CaptionExperimentConfig
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0
    pretrain_history: list[float] = field(default_factory=list)
    pretrain_seconds: float = 0.0


def train_captioner(
    config: CaptionExperimentConfig, train_set: Dataset | None = None
) -> CaptionTrainResult:
    """Train the configured captioner with teacher forcing; return it (in eval mode)
    with its history.

    ``train_set`` replaces the training split that ``config.data`` describes (its items
    must carry ``"image"`` or ``"features"`` and ``"captions"``), e.g. scene graphs
    instead of images in
    :func:`crossalign.experiments.scene_oracle.train_captioner_with_scene_oracle`.
    ``seconds`` is the wall time of the captioning loop (including the encoding of the
    training images under ``train.cache_frozen_regions``); ``pretrain_seconds`` that of
    the encoder pretraining before it (``train.encoder_pretrain_steps``), if any.
    """
    cfg = config.train
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.captions_per_image < 1:
        raise ValueError(
            "train.steps, train.batch_size and train.captions_per_image must all be >= "
            "1"
        )
    if cfg.encoder_pretrain_steps < 0:
        raise ValueError(
            f"train.encoder_pretrain_steps={cfg.encoder_pretrain_steps} must be >= 0"
        )
    try:
        scene_label_names(cfg.encoder_pretrain_labels)
    except ValueError as err:
        raise ValueError(f"train.encoder_pretrain_labels: {err}") from None
    device = select_device(cfg.device)
    check_precision(cfg.precision, device)
    seed_everything(config.seed)
    if train_set is None:
        train_set = build_caption_dataset(config, "train")
    tokenizer = build_vocabulary(train_set, config.data.min_freq)
    model = build_captioner_for(config, tokenizer, train_set).to(device)
    pretrain = None
    if cfg.encoder_pretrain_steps:
        if model.encoder is None or not isinstance(train_set, ShapesWorld):
            raise ValueError(
                "train.encoder_pretrain_steps needs ShapesWorld images and a "
                "model.image_encoder "
                "(it trains the encoder on scene-graph labels); set it to 0 for this "
                "data"
            )
        pretrain = pretrain_on_scene_labels(
            model.encoder,
            train_set,
            cfg.encoder_pretrain_steps,
            cfg.batch_size,
            seed=config.seed,
            device=device,
            progress=cfg.progress,
            label_groups=cfg.encoder_pretrain_labels,
        )
    optimizer = optimizer_for(model, cfg)
    scheduler = warmup_cosine_scheduler(
        optimizer, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio
    )
    sampler = iter(
        StepBatchSampler(
            dataset_size(train_set), cfg.batch_size, config.seed, 0, cfg.steps
        )
    )
    collator = CaptionCollator(
        tokenizer, caption="random", seed=config.seed, max_len=config.data.max_len
    )
    started = time.perf_counter()
    cached = None
    if (
        cfg.cache_frozen_regions
        and model.encoder is not None
        and config.model.freeze_encoder
    ):
        cached = encode_dataset(
            model.regions,
            train_set,
            batch_size=max(256, cfg.batch_size),
            device=device,
            modules=[model],
            keep_on=device,
            dtype=None,
            progress=cfg.progress,
            desc="encode regions",
        )

    def loss_at(step: int) -> torch.Tensor:
        batch = next(sampler)
        epoch = batch[0][0]
        indices = [index for _, index in batch]
        if cached is not None:
            items, inputs = _caption_items(train_set, indices), cached[indices]
        else:
            items = fetch_items(train_set, indices)
            inputs = batch_inputs(items).to(device)
        # a caption per (epoch, image), whatever the batch order
        collator.set_epoch(epoch)
        input_ids, _ = tokenizer.encode_batch(
            _step_captions(collator, items, cfg.captions_per_image),
            max_len=config.data.max_len,
        )
        return model.loss(inputs, input_ids.to(device))[0]

    engine = Engine(
        optimizer,
        scheduler,
        device=device,
        precision=cfg.precision,
        tf32=cfg.tf32,
        clip_grad_norm=cfg.clip_grad_norm,
        clip_parameters=model.parameters(),
        log_every=max(1, cfg.log_every),
        hint="try a lower train.lr or fp32",
        desc="train captioner",
        total_steps=cfg.steps,
        progress=cfg.progress,
    )
    model.train()
    history = engine.run(loss_at, cfg.steps)
    seconds = time.perf_counter() - started
    model.eval()
    checkpoint = None
    if cfg.output_dir:
        saved = {
            "experiment": config.to_dict(),
            "captioner": model.config.to_dict(),
            "tokenizer": tokenizer.to_dict(),
        }
        checkpoint = save_checkpoint(
            Path(cfg.output_dir) / "checkpoints", cfg.steps, model, saved
        )
    return CaptionTrainResult(
        model,
        tokenizer,
        config,
        history,
        checkpoint,
        seconds,
        pretrain.history if pretrain else [],
        pretrain.seconds if pretrain else 0.0,
    )


def load_captioner(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[Captioner, Vocabulary, CaptionExperimentConfig]:
    """Rebuild a trained captioner from a checkpoint: returns (model in eval mode,
    tokenizer, config)."""
    saved = read_config(checkpoint)
    where = resolve_checkpoint(checkpoint)
    if not all(key in saved for key in ("experiment", "captioner", "tokenizer")):
        raise ValueError(
            f"{where}: not a captioner checkpoint (expected 'experiment', 'captioner' "
            "and 'tokenizer' entries)"
        )
    experiment = copy.deepcopy(saved["experiment"])
    if isinstance(experiment, dict) and isinstance(experiment.get("model"), dict):
        # written by an earlier version, which kept the derived keys; the
        # "captioner" entry holds the values the model was built with
        for key in DERIVED_MODEL_KEYS:
            experiment["model"].pop(key, None)
    config = CaptionExperimentConfig.from_dict(experiment, source=str(where))
    tokenizer = tokenizer_from_dict(saved["tokenizer"])
    if not isinstance(tokenizer, Vocabulary):
        raise ValueError(
            f"{where}: a captioner's tokenizer is a word Vocabulary, "
            f"got {type(tokenizer).__name__}"
        )
    model = build_captioner(CaptionerConfig.from_dict(saved["captioner"]))
    load_weights(model, where, device=device)
    return model.to(device).eval(), tokenizer, config

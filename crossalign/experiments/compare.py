"""Train several alignment methods with one budget and one seed, and tabulate what each
achieves.

The runner renders the ShapesWorld training images and tokenises their captions once
(:func:`prepare_data`), then every method gets the same model, the same batches,
optimiser, schedule and number of steps; only the loss differs
(:mod:`crossalign.experiments.methods`). The model is the book's default dual encoder
(``crossalign/configs/shapes_clip.yaml``) with one change, the text tower:
:data:`COMPARISON_TEXT_TOWER`, a word convolution with max pooling
(:class:`~crossalign.models.text_encoders.ConvTextEncoder`) instead of the recipe's GRU.
Both retrieve well, but only the convolution learns *which* object a caption puts on
which side of a relation within the comparison's budget, so only with it can the
relation-swap column show what the losses do (``text_tower="recipe"`` restores the GRU;
``benchmarks/relation_swap_towers.py`` compares the two). Each trained model is scored
on the test split for

- retrieval: R@1/5/10 image->text and text->image (many-to-many, five captions per
  image);
- relation-swap accuracy: how often an image scores its true caption above the same
  caption with the relation reversed ("left of" <-> "right of"), over every test image
  and caption that has a relation; 0.5 is chance. Attribute-swap accuracy likewise
  (colours exchanged);
- geometry: modality gap, alignment and uniformity (Wang & Isola 2020, Liang et al.
  2022);
- training time (wall seconds of the optimisation loop).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import torch
from torch import nn

from crossalign.data.batches import EpochBatches
from crossalign.data.build import build_tokenizer
from crossalign.data.encode import encode_in_batches
from crossalign.data.shapes import ShapesWorld
from crossalign.data.vocab import HFTokenizerAdapter, Vocabulary
from crossalign.evaluation import embed_texts
from crossalign.experiments.methods import (
    AlignmentBatch,
    AlignmentMethod,
    get_method,
    method_names,
)
from crossalign.metrics import retrieval_metrics
from crossalign.metrics.geometry import geometry_report
from crossalign.models.dual_encoder import DualEncoder
from crossalign.train.config import (
    ExperimentConfig,
    TrainConfig,
    default_config_path,
    load_config,
)
from crossalign.train.engine import Engine
from crossalign.train.optim import optimizer_for
from crossalign.train.schedule import warmup_cosine_scheduler
from crossalign.train.trainer import build_model
from crossalign.utils import seed_everything, select_device

__all__ = [
    "COMPARISON_TEXT_TOWER",
    "TEXT_TOWERS",
    "CompareConfig",
    "ComparisonData",
    "MethodResult",
    "MethodScores",
    "SwapPairs",
    "batch_indices",
    "compare_methods",
    "evaluate_method",
    "format_table",
    "make_batch",
    "optimise",
    "prepare_data",
    "swap_accuracy",
    "train_method",
]


#: The comparison's text tower: dilated word convolutions (a 15-word window) with max
# pooling.
COMPARISON_TEXT_TOWER: dict[str, object] = {
    "name": "conv",
    "embed_dim": 64,
    "width": 128,
    "kernel_size": 3,
    "dilations": [1, 2, 4],
    "pool": "max",
}
#: Values of ``CompareConfig.text_tower``.
TEXT_TOWERS = ("conv", "recipe")


@dataclass
class CompareConfig:
    """The shared budget of a comparison: data sizes, model sizes and optimisation
    settings.

    The defaults are the full setting (the default recipe's image size and batch, meant
    for a GPU; its 2,000 steps at lr 3e-3 scale the fast setting's schedule to twice the
    batch and have not been measured on a GPU); :meth:`fast` is the CPU setting used by
    the book and the benchmark. ``text_tower``: ``"conv"`` (default) builds
    :data:`COMPARISON_TEXT_TOWER`, ``"recipe"`` keeps the default recipe's GRU.
    ``precision`` is the autocast precision of training (``"fp32"``, ``"bf16"``,
    ``"fp16"``); ``log_every`` how often the losses are read back from the device.
    """

    seed: int = 0
    image_size: int = 64
    train_size: int = 20000
    test_size: int = 1000
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    min_lr_ratio: float = 0.05
    clip_grad_norm: float = 1.0
    max_len: int = 40
    text_tower: str = "conv"
    precision: str = "fp32"
    log_every: int = 25
    device: str = "auto"
    progress: bool = True

    @classmethod
    def fast(cls, **overrides) -> CompareConfig:
        """The CPU setting: 48-pixel images, 8,000 training images, 1,200 steps of 128
        pairs (~50 s a method).

        Sized for relations: the hard-negative method needs about this many steps and
        images, at this learning rate, to learn which object a caption puts on which
        side (the earlier setting, 400 steps on 2,000 images at lr 4e-3 with all ten
        swaps as negatives, left its relation-swap accuracy at 0.86 with the convolution
        text tower and 0.61 with the GRU).
        """
        settings = dict(
            image_size=48,
            train_size=8000,
            test_size=500,
            steps=1200,
            batch_size=128,
            lr=1.5e-3,
            warmup_steps=20,
            progress=False,
        )
        return cls(**{**settings, **overrides})

    def experiment(self) -> ExperimentConfig:
        """The model and optimiser settings as an :class:`ExperimentConfig`: the default
        recipe, resized and with the comparison's text tower."""
        self.check()
        config = load_config(default_config_path())
        config.seed = self.seed
        config.data.image_size = self.image_size
        config.data.train_size = self.train_size
        config.data.test_size = self.test_size
        config.data.max_len = self.max_len
        if self.text_tower == "conv":
            tower = dict(COMPARISON_TEXT_TOWER)
            config.model.text_encoder = str(tower.pop("name"))
            config.model.text_kwargs = tower
        config.train = TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            min_lr_ratio=self.min_lr_ratio,
            clip_grad_norm=self.clip_grad_norm,
            precision=self.precision,
            log_every=self.log_every,
            device=self.device,
            progress=self.progress,
            channels_last=False,
        )
        return config

    def check(self) -> None:
        """Raise a ``ValueError`` naming the first setting that cannot work."""
        for name in ("train_size", "test_size", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"CompareConfig.{name}={getattr(self, name)} must be >= 1"
                )
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(
                f"CompareConfig.text_tower={self.text_tower!r} must be one of "
                f"{TEXT_TOWERS}"
            )
        if self.batch_size > self.train_size:
            raise ValueError(
                f"CompareConfig.batch_size={self.batch_size} exceeds "
                f"train_size={self.train_size}"
            )
        if self.test_size < 2:
            raise ValueError(
                f"CompareConfig.test_size={self.test_size} must be >= 2 (geometry "
                "needs two images)"
            )


@dataclass
class SwapPairs:
    """Test triples for a swap accuracy: image index, true caption, its swapped twin."""

    images: torch.Tensor
    true_captions: list[str]
    swapped_captions: list[str]


@dataclass
class ComparisonData:
    """Everything the methods share, prepared once: tensors for training, texts for
    evaluation."""

    tokenizer: Vocabulary | HFTokenizerAdapter
    train_images: torch.Tensor
    train_captions: list[list[str]]
    train_ids: torch.Tensor
    train_attention: torch.Tensor
    test_images: torch.Tensor
    test_texts: list[str]
    test_owner: torch.Tensor
    relation_pairs: SwapPairs
    attribute_pairs: SwapPairs
    train_set: ShapesWorld
    negatives: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def hard_negatives(
        self, max_len: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids [N, C, 2, L], masks and validity [N, C, 2] of the
        relation/attribute swaps of every caption.

        Computed on first use (it walks every scene graph of the training set) and kept.
        """
        if self.negatives is None:
            n, captions = self.train_ids.shape[:2]
            texts, valid = [], []
            for index in range(n):
                for caption in range(captions):
                    for swap in (
                        self.train_set.relation_swap,
                        self.train_set.attribute_swap,
                    ):
                        text = swap(index, caption)
                        texts.append(text or "")
                        valid.append(text is not None)
            ids, attention = self.tokenizer.encode_batch(texts, max_len=max_len)
            self.negatives = (
                ids.reshape(n, captions, 2, -1),
                attention.reshape(n, captions, 2, -1),
                torch.tensor(valid).reshape(n, captions, 2),
            )
        return self.negatives

    def to(self, device: torch.device | str) -> ComparisonData:
        """This data with the training tensors (and the hard negatives, once computed)
        on ``device``: they fit on any accelerator, so a training step copies nothing
        from the host but its batch indices."""
        negatives = self.negatives
        return dataclasses.replace(
            self,
            train_images=self.train_images.to(device),
            train_ids=self.train_ids.to(device),
            train_attention=self.train_attention.to(device),
            negatives=None
            if negatives is None
            else (
                negatives[0].to(device),
                negatives[1].to(device),
                negatives[2].to(device),
            ),
        )


def _swap_pairs(
    dataset: ShapesWorld, swap: Callable[[int, int], str | None]
) -> SwapPairs:
    images, true_captions, swapped = [], [], []
    for index in range(len(dataset)):
        captions = dataset.captions(index)
        for caption, text in enumerate(captions):
            twin = swap(index, caption)
            if twin is not None:
                images.append(index)
                true_captions.append(text)
                swapped.append(twin)
    return SwapPairs(torch.tensor(images, dtype=torch.long), true_captions, swapped)


_RENDER_CHUNK = 2048


def prepare_data(config: CompareConfig) -> ComparisonData:
    """Render the training and test images, tokenise every caption and collect the swap
    test pairs."""
    config.check()
    experiment = config.experiment()
    train_set = ShapesWorld(
        "train", size=config.train_size, image_size=config.image_size, seed=config.seed
    )
    test_set = ShapesWorld(
        "test", size=config.test_size, image_size=config.image_size, seed=config.seed
    )
    tokenizer = build_tokenizer(experiment.data, train_set)
    images: list[torch.Tensor] = []
    captions: list[list[str]] = []
    for start in range(0, len(train_set), _RENDER_CHUNK):
        items = train_set.__getitems__(
            range(start, min(start + _RENDER_CHUNK, len(train_set)))
        )
        images.append(torch.stack([item["image"] for item in items]))
        captions.extend(list(item["captions"]) for item in items)
    ids, attention = tokenizer.encode_batch(
        [text for texts in captions for text in texts], max_len=config.max_len
    )
    per_image = train_set.captions_per_image
    test_texts, test_owner = test_set.caption_image_index()
    return ComparisonData(
        tokenizer=tokenizer,
        train_images=torch.cat(images),
        train_captions=captions,
        train_ids=ids.reshape(len(train_set), per_image, -1),
        train_attention=attention.reshape(len(train_set), per_image, -1),
        test_images=test_set.render(range(len(test_set))),
        test_texts=test_texts,
        test_owner=test_owner,
        relation_pairs=_swap_pairs(test_set, test_set.relation_swap),
        attribute_pairs=_swap_pairs(test_set, test_set.attribute_swap),
        train_set=train_set,
    )


@dataclass
class MethodResult:
    """One row of the comparison: the trained model and its scores on the test split."""

    name: str
    retrieval: dict[str, float]
    relation_swap: float
    attribute_swap: float
    geometry: dict[str, float]
    seconds: float
    losses: list[float] = field(default_factory=list)
    model: DualEncoder | None = field(default=None, repr=False)


def swap_accuracy(
    image_emb: torch.Tensor, true_emb: torch.Tensor, swapped_emb: torch.Tensor
) -> float:
    """Fraction of rows where the image is more similar to its true caption than to the
    swapped one.

    Row ``i`` of the three [N, D] inputs is one test: an image, its caption and the
    caption's swapped twin. A tie counts as a failure (a model that cannot tell them
    apart earns nothing), so a model that ignores the difference scores 0, and a random
    one about 0.5.
    """
    if (
        not (image_emb.shape == true_emb.shape == swapped_emb.shape)
        or image_emb.dim() != 2
    ):
        raise ValueError(
            "image_emb, true_emb and swapped_emb must all be [N, D] with the same "
            "shape, got "
            f"{tuple(image_emb.shape)}, {tuple(true_emb.shape)}, "
            f"{tuple(swapped_emb.shape)}"
        )
    if image_emb.shape[0] == 0:
        raise ValueError(
            "swap_accuracy needs at least one (image, caption, swapped caption) row"
        )
    true_score = (image_emb * true_emb).sum(dim=1)
    swapped_score = (image_emb * swapped_emb).sum(dim=1)
    return float((true_score > swapped_score).double().mean())


def optimise(
    module: nn.Module,
    loss_at: Callable[[int], torch.Tensor],
    train: TrainConfig,
    device: torch.device,
    desc: str = "train",
) -> list[float]:
    """Minimise ``loss_at(step)`` for ``train.steps`` steps over ``module``'s trainable
    parameters.

    AdamW (:func:`~crossalign.train.optim.optimizer_for`: no decay on biases and
    norms), linear warm-up then cosine decay (``warmup_cosine``), gradient clipping and
    ``train.precision``, stepped by :class:`~crossalign.train.engine.Engine`; what
    every method of the comparison, the LiT experiment, the few-shot learners and the
    adversarial fine-tuning run. Returns the loss of every step; raises
    :class:`~crossalign.train.engine.NonFiniteLossError` on NaN/inf (at the next log
    interval, ``train.log_every``). ``train.compile``, ``grad_accum > 1`` and
    ``channels_last`` are rejected with a ``ValueError``: ``loss_at(step)`` builds
    the batch of a whole step from the images it holds.
    """
    if train.compile or train.grad_accum != 1 or train.channels_last:
        raise ValueError(
            f"{desc}: the comparison runner trains eagerly, one batch per step, on the "
            "images its loss function builds; set train.compile=false, "
            "train.grad_accum=1 and train.channels_last=false (got "
            f"compile={train.compile}, grad_accum={train.grad_accum}, "
            f"channels_last={train.channels_last})"
        )
    optimizer = optimizer_for(module, train)
    scheduler = warmup_cosine_scheduler(
        optimizer, train.steps, train.warmup_steps, train.min_lr_ratio
    )
    engine = Engine(
        optimizer,
        scheduler,
        device=device,
        precision=train.precision,
        clip_grad_norm=train.clip_grad_norm,
        clip_parameters=module.parameters(),
        log_every=max(1, train.log_every),
        desc=desc,
        total_steps=train.steps,
        progress=train.progress,
    )
    module.train()
    engine.run(loss_at, train.steps)
    losses = engine.losses
    module.eval()
    return losses


def batch_indices(
    num_images: int, batch_size: int, captions_per_image: int, seed: int, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image indices and caption choices of ``step``, as
    :class:`~crossalign.data.batches.EpochBatches` draws them (a training loop holds
    one ``EpochBatches``; this is the one-off lookup).

    Depends only on its arguments, so every method sees exactly the same batches.
    """
    batches = EpochBatches(num_images, batch_size, seed, hint="lower batch_size")
    return batches(step), batches.choices(step, captions_per_image)


def make_batch(
    data: ComparisonData,
    images: torch.Tensor,
    captions: torch.Tensor,
    device: torch.device,
    negatives: str | None,
    max_len: int,
) -> AlignmentBatch:
    """The :class:`AlignmentBatch` of the given image indices and caption choices.

    ``negatives``: ``None``, ``"chosen"`` (the two swaps of each chosen caption) or
    ``"all"`` (the swaps of all captions of each image).
    """
    # non-blocking: a copy from the host that does not wait for the device
    images = images.to(data.train_images.device, non_blocking=True)
    captions = captions.to(data.train_images.device, non_blocking=True)
    batch = AlignmentBatch(
        images=data.train_images[images].to(device),
        input_ids=data.train_ids[images, captions].to(device),
        attention_mask=data.train_attention[images, captions].to(device),
    )
    if negatives is None:
        return batch
    if negatives not in ("chosen", "all"):
        raise ValueError(
            f"negatives must be None, 'chosen' or 'all', got {negatives!r}"
        )
    ids, attention, valid = data.hard_negatives(max_len)
    if negatives == "chosen":
        ids, attention, valid = (
            ids[images, captions],
            attention[images, captions],
            valid[images, captions],
        )
    else:
        ids, attention, valid = (
            ids[images].flatten(1, 2),
            attention[images].flatten(1, 2),
            valid[images].flatten(1),
        )
    batch.negative_ids, batch.negative_attention, batch.negative_valid = (
        ids.to(device),
        attention.to(device),
        valid.to(device),
    )
    return batch


class MethodScores(TypedDict):
    """What :func:`evaluate_method` measures (the scores of a :class:`MethodResult`)."""

    retrieval: dict[str, float]
    relation_swap: float
    attribute_swap: float
    geometry: dict[str, float]


@torch.inference_mode()
def evaluate_method(
    model: DualEncoder, data: ComparisonData, device: torch.device, max_len: int
) -> MethodScores:
    """Retrieval, swap accuracies and geometry of ``model`` on the prepared test
    split."""
    model.eval()
    image_emb = encode_in_batches(
        model.encode_image,
        ((chunk.to(device),) for chunk in data.test_images.split(256)),
        len(data.test_images),
        desc="embed images",
    )
    text_emb = embed_texts(
        model, data.test_texts, data.tokenizer, device=device, max_len=max_len
    )

    def swap(pairs: SwapPairs) -> float:
        true_emb = embed_texts(
            model, pairs.true_captions, data.tokenizer, device=device, max_len=max_len
        )
        swapped_emb = embed_texts(
            model,
            pairs.swapped_captions,
            data.tokenizer,
            device=device,
            max_len=max_len,
        )
        return swap_accuracy(image_emb[pairs.images], true_emb, swapped_emb)

    return MethodScores(
        retrieval=retrieval_metrics(image_emb, text_emb, data.test_owner),
        relation_swap=swap(data.relation_pairs),
        attribute_swap=swap(data.attribute_pairs),
        geometry=geometry_report(image_emb, text_emb, data.test_owner),
    )


def train_method(
    name: str | AlignmentMethod,
    config: CompareConfig,
    data: ComparisonData | None = None,
    teacher: DualEncoder | None = None,
    image_encoder: nn.Module | None = None,
) -> MethodResult:
    """Train the default dual encoder with method ``name`` under ``config``'s budget,
    and score it.

    ``data`` (from :func:`prepare_data`) is shared between calls to save the rendering;
    ``teacher`` is the trained model that ``distillation`` learns from (by default an
    ``infonce`` model trained first with the same budget). ``image_encoder`` replaces
    the default image tower (it reads ``data``'s images and must have the default
    tower's ``out_dim``); :mod:`crossalign.experiments.scene_oracle` uses it.
    """
    data = data or prepare_data(config)
    if isinstance(name, AlignmentMethod):
        method = name
    elif name == "distillation":
        if teacher is None:
            teacher = train_method("infonce", config, data).model
        method = get_method(name, teacher=teacher)
    else:
        method = get_method(name)
    experiment = config.experiment()
    device = select_device(config.device)
    seed_everything(config.seed)
    model = build_model(experiment, data.tokenizer)
    if image_encoder is not None:
        expected = model.image_encoder.out_dim
        if getattr(image_encoder, "out_dim", None) != expected:
            raise ValueError(
                f"image_encoder.out_dim={getattr(image_encoder, 'out_dim', None)} must "
                "equal the default image "
                f"tower's out_dim ({expected}), which the image projection reads"
            )
        model.image_encoder = image_encoder
    model = model.to(device)
    auxiliary = method.auxiliary(model.config.embed_dim)
    trainable = nn.ModuleDict(
        {"model": model, **({"auxiliary": auxiliary} if auxiliary is not None else {})}
    ).to(device)
    num_images, captions_per_image = data.train_ids.shape[:2]
    if method.hard_negatives:
        data.hard_negatives(config.max_len)
    resident = data.to(device)

    batches = EpochBatches(
        num_images,
        config.batch_size,
        config.seed,
        hint="lower CompareConfig.batch_size",
    )

    def loss_at(step: int) -> torch.Tensor:
        images = batches(step)
        captions = batches.choices(step, captions_per_image)
        batch = make_batch(
            resident, images, captions, device, method.hard_negatives, config.max_len
        )
        return method.loss(model, batch, auxiliary)

    started = time.perf_counter()
    losses = optimise(trainable, loss_at, experiment.train, device, desc=method.name)
    seconds = time.perf_counter() - started
    scores = evaluate_method(model, data, device, config.max_len)
    return MethodResult(
        name=method.name, **scores, seconds=seconds, losses=losses, model=model
    )


def compare_methods(
    names: Sequence[str] | None = None,
    config: CompareConfig | None = None,
    data: ComparisonData | None = None,
) -> list[MethodResult]:
    """Train every method of ``names`` (default: all) with the same budget and seed; one
    result each.

    The data are prepared once (or passed in, from :func:`prepare_data` with the same
    config); ``distillation`` learns from the ``infonce`` model of the same run when
    that is in ``names`` (and from its own InfoNCE teacher otherwise).
    """
    names = list(names) if names is not None else method_names()
    unknown = [name for name in names if name not in method_names()]
    if unknown:
        raise ValueError(
            f"unknown alignment methods {unknown}; valid names: "
            f"{', '.join(method_names())}"
        )
    config = config or CompareConfig.fast()
    data = data or prepare_data(config)
    results: list[MethodResult] = []
    teacher = None
    for name in names:
        result = train_method(name, config, data, teacher=teacher)
        if name == "infonce":
            teacher = copy.deepcopy(result.model)
        results.append(result)
    return results


_COLUMNS = (
    ("method", 16, None),
    ("i2t R@1", 7, lambda r: r.retrieval["i2t_r1"]),
    ("R@5", 5, lambda r: r.retrieval["i2t_r5"]),
    ("R@10", 5, lambda r: r.retrieval["i2t_r10"]),
    ("t2i R@1", 7, lambda r: r.retrieval["t2i_r1"]),
    ("R@5", 5, lambda r: r.retrieval["t2i_r5"]),
    ("R@10", 5, lambda r: r.retrieval["t2i_r10"]),
    ("rel-swap", 8, lambda r: r.relation_swap),
    ("attr-swap", 9, lambda r: r.attribute_swap),
    ("gap", 5, lambda r: r.geometry["modality_gap"]),
    ("align", 5, lambda r: r.geometry["alignment"]),
    (
        "unif",
        6,
        lambda r: (r.geometry["uniformity_image"] + r.geometry["uniformity_text"]) / 2,
    ),
    ("time s", 6, lambda r: r.seconds),
)


def format_table(results: Sequence[MethodResult]) -> str:
    """The comparison as a plain-text table, one row per method.

    Columns: R@1/5/10 image->text and text->image, relation- and attribute-swap accuracy
    (0.5 = chance), modality gap, alignment (lower = pairs closer), uniformity (the mean
    of the image and text values; lower = more spread) and training seconds. The first
    column is as wide as the longest name.
    """
    if not results:
        raise ValueError("format_table needs at least one MethodResult")
    name_width = max(_COLUMNS[0][1], *(len(result.name) for result in results))
    columns = [
        (title, name_width if get is None else width, get)
        for title, width, get in _COLUMNS
    ]
    header = "  ".join(
        f"{title:<{width}}" if get is None else f"{title:>{width}}"
        for title, width, get in columns
    )
    lines = [header, "-" * len(header)]
    for result in results:
        cells = []
        for title, width, get in columns:
            if get is None:
                cells.append(f"{result.name:<{width}}")
            else:
                digits = 1 if title == "time s" else 2
                cells.append(f"{get(result):>{width}.{digits}f}")
        lines.append("  ".join(cells))
    return "\n".join(lines)

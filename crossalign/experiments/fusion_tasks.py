"""Fusion on tasks that need it: frozen aligned encoders, one fusion module, a linear
head, one decision per pair.

Retrieval compares two separately computed embeddings; the ShapesWorld tasks of
:mod:`crossalign.data.shapes_tasks` ask for one decision about an (image, text) *pair*,
which is what a fusion module makes. This module compares the fusion modules of
:mod:`crossalign.models.fusion` on those tasks with one recipe, "align, then fuse":

1. :func:`pretrain_backbone` trains a small CLIP-style dual encoder (SmallCNN + GRU,
   symmetric InfoNCE) on ShapesWorld captions, once. Its two towers are then frozen.
2. :class:`FusionClassifier` reads the frozen towers' *tokens* (a 4 x 4 grid of image
   patch features, one GRU state per word), fuses them with the module under test, and
   applies a single linear head::

       image -> frozen SmallCNN patch tokens --+
                                               +--> fusion module -> linear head ->
                                               logits
       text  -> frozen GRU token states -------+

3. :func:`train_fusion` trains the fusion module and the head only, on tokens computed
   once (:func:`encode_tokens`), with the same data, steps and seed for every module.

Tasks (:data:`FUSION_TASKS`):

* ``"matching"`` (:class:`~crossalign.data.shapes_tasks.ShapesMatching`): two classes (0
  = the caption is false, 1 = true); items are grouped as ``"positive"`` or by negative
  kind (``"random"``, ``"attribute"``: colours swapped, ``"relation"``: relation
  reversed).
* ``"qa"`` (:class:`~crossalign.data.shapes_tasks.ShapesQA`): one class per entry of
  :data:`~crossalign.data.shapes_tasks.ANSWERS`; items are grouped by question type.

The head is one linear layer on purpose: whatever the model knows about how the
modalities interact must come from the fusion module. With ``mean`` or ``weighted``
fusion the logits are an image-only score plus a text-only score (late fusion), which
cannot express "this caption fits this image".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.data.batches import EpochBatches
from crossalign.data.encode import encode_in_batches
from crossalign.data.shapes import ShapesWorld, caption_words
from crossalign.data.shapes_tasks import (
    ANSWERS,
    NEGATIVE_KINDS,
    QUESTION_TYPES,
    ShapesMatching,
    ShapesQA,
)
from crossalign.data.vocab import Vocabulary, simple_tokenize
from crossalign.losses import clip_loss
from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig
from crossalign.models.fusion import FUSION_NAMES, build_fusion
from crossalign.models.image_encoders import ImageEncoder
from crossalign.models.text_encoders import TextEncoder
from crossalign.train.engine import Engine
from crossalign.train.optim import build_optimizer
from crossalign.train.schedule import warmup_cosine_scheduler
from crossalign.utils import seed_everything, select_device

__all__ = [
    "FUSION_TASKS",
    "TASK_CLASSES",
    "TASK_GROUPS",
    "Backbone",
    "FusionClassifier",
    "FusionResult",
    "FusionTaskConfig",
    "TaskData",
    "TaskSplit",
    "TokenFeatures",
    "accuracy_by_group",
    "backbone_vocabulary",
    "build_task_data",
    "compare_fusion",
    "encode_tokens",
    "format_fusion_table",
    "predict",
    "pretrain_backbone",
    "train_fusion",
]

#: The tasks :func:`build_task_data` knows.
FUSION_TASKS: tuple[str, ...] = ("matching", "qa")
#: The groups each task is scored by, in the order tables show them.
TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "matching": ("positive", *reversed(NEGATIVE_KINDS)),
    "qa": QUESTION_TYPES,
}
#: The class names of each task (the position of a name is its target id).
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "matching": ("false", "true"),
    "qa": ANSWERS,
}


@dataclass
class FusionTaskConfig:
    """Data sizes, model widths and training budgets of one fusion experiment (CPU-sized
    defaults).

    Attributes:
        image_size: side of the ShapesWorld images in pixels (32 to 224). train_size,
        test_size: images of the task's training and test worlds (one item each).
        world_seed: seed of the images and of the task's choices (negatives, questions).
        seed: seed of the initial weights and of the batch order. image_widths: SmallCNN
        stage widths; each stage halves the grid, the last width is the
            size of an image token (three stages on 32-pixel images give a 4 x 4 grid).
        text_dim: GRU embedding and hidden size per direction (text tokens have
        ``2 * text_dim``). pretrain_size, pretrain_steps, pretrain_batch_size,
        pretrain_lr: the contrastive run of
            :func:`pretrain_backbone` (its images come from the train split, seed
            ``world_seed + 1``).
        embed_dim: size of the dual encoder's shared embedding space.
        fusion_dim: output size of every fusion module (the head's input).
        fusion_options: extra keyword arguments per fusion name for
            :func:`~crossalign.models.fusion.build_fusion`.
        steps, batch_size, lr, weight_decay, warmup_steps, clip_grad_norm: the AdamW
            run of each fusion module (linear warm-up, then cosine decay).
        eval_batch_size: batch size when encoding and predicting.
        log_every: read the training losses back from the device every this many steps.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``, ...
    """

    image_size: int = 32
    train_size: int = 4000
    test_size: int = 1000
    world_seed: int = 0
    seed: int = 0
    image_widths: tuple[int, ...] = (16, 32, 32)
    text_dim: int = 32
    pretrain_size: int = 4000
    pretrain_steps: int = 300
    pretrain_batch_size: int = 128
    pretrain_lr: float = 4e-3
    embed_dim: int = 64
    fusion_dim: int = 64
    fusion_options: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "concat": {"hidden_dim": 128},
            "cross_attention": {"num_heads": 4, "hidden_dim": 128},
        }
    )
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    clip_grad_norm: float = 1.0
    eval_batch_size: int = 500
    log_every: int = 50
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = (
            "train_size",
            "test_size",
            "text_dim",
            "pretrain_size",
            "pretrain_steps",
            "pretrain_batch_size",
            "embed_dim",
            "fusion_dim",
            "steps",
            "batch_size",
            "eval_batch_size",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"FusionTaskConfig.{name} must be a positive integer, got {value!r}"
                )
        for name, size in (
            ("batch_size", "train_size"),
            ("pretrain_batch_size", "pretrain_size"),
        ):
            if getattr(self, name) > getattr(self, size):
                raise ValueError(
                    f"FusionTaskConfig.{name} ({getattr(self, name)}) is larger than "
                    f"{size} ({getattr(self, size)})"
                )
        if not (
            self.lr > 0
            and self.pretrain_lr > 0
            and self.weight_decay >= 0
            and self.clip_grad_norm > 0
        ):
            raise ValueError(
                "FusionTaskConfig needs lr > 0, pretrain_lr > 0, weight_decay >= 0 and "
                "clip_grad_norm > 0, got "
                f"{self.lr}, {self.pretrain_lr}, {self.weight_decay}, "
                f"{self.clip_grad_norm}"
            )
        if self.warmup_steps < 0:
            raise ValueError(
                f"FusionTaskConfig.warmup_steps must be >= 0, got {self.warmup_steps}"
            )
        self.image_widths = tuple(int(width) for width in self.image_widths)
        unknown = sorted(set(self.fusion_options) - set(FUSION_NAMES))
        if unknown:
            raise ValueError(
                f"FusionTaskConfig.fusion_options names unknown fusion(s) {unknown}; "
                f"valid: {', '.join(FUSION_NAMES)}"
            )


# --- data
# ------------------------------------------------------------------------------------


@dataclass
class TaskSplit:
    """One split of a task, rendered once: images, texts, class targets and the group of
    each item."""

    images: torch.Tensor
    texts: tuple[str, ...]
    targets: torch.Tensor
    groups: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass
class TaskData:
    """A task's training and test split (different ShapesWorld images)."""

    task: str
    train: TaskSplit
    test: TaskSplit

    @property
    def class_names(self) -> tuple[str, ...]:
        """The name of each class id."""
        return TASK_CLASSES[self.task]

    @property
    def group_names(self) -> tuple[str, ...]:
        """The groups this task is scored by, in table order."""
        return TASK_GROUPS[self.task]


def _check_task(task: str) -> None:
    """Raise a ValueError unless ``task`` is one of :data:`FUSION_TASKS`."""
    if task not in FUSION_TASKS:
        raise ValueError(
            f"unknown task {task!r}; valid tasks: {', '.join(FUSION_TASKS)}"
        )


def _split(task: str, world: ShapesWorld, seed: int) -> TaskSplit:
    """Every item of ``task`` on ``world`` (images rendered in one vectorised call)."""
    if task == "matching":
        items = ShapesMatching(world, seed=seed).__getitems__(range(len(world)))
        text_key, target_key, group_key = "caption", "label", "kind"
    else:
        items = ShapesQA(world, seed=seed).__getitems__(range(len(world)))
        text_key, target_key, group_key = "question", "answer_id", "type"
    return TaskSplit(
        images=torch.stack([item["image"] for item in items]),
        texts=tuple(item[text_key] for item in items),
        targets=torch.tensor([item[target_key] for item in items], dtype=torch.long),
        groups=tuple(item[group_key] for item in items),
    )


def build_task_data(task: str, config: FusionTaskConfig | None = None) -> TaskData:
    """Render the training and test items of ``task`` (``"matching"`` or ``"qa"``).

    The items come from ShapesWorld's ``train`` and ``test`` splits
    (``config.train_size`` and ``config.test_size`` images of ``config.image_size``
    pixels, seed ``config.world_seed``).
    """
    _check_task(task)
    config = FusionTaskConfig() if config is None else config
    splits = {
        split: _split(
            task,
            ShapesWorld(
                split, size=size, image_size=config.image_size, seed=config.world_seed
            ),
            config.world_seed,
        )
        for split, size in (("train", config.train_size), ("test", config.test_size))
    }
    return TaskData(task=task, train=splits["train"], test=splits["test"])


# --- the frozen, aligned towers
# --------------------------------------------------------------


@dataclass
class Backbone:
    """The frozen towers every fusion module reads: a dual encoder trained with InfoNCE,
    and its tokenizer.

    ``losses`` is the contrastive loss of every pretraining step.
    """

    dual_encoder: DualEncoder
    tokenizer: Vocabulary
    losses: list[float] = field(default_factory=list)

    @property
    def image_encoder(self) -> ImageEncoder:
        """The image tower (its ``forward_tokens`` gives the patch tokens)."""
        encoder = self.dual_encoder.image_encoder
        if not isinstance(encoder, ImageEncoder):
            raise TypeError(
                "the fusion modules read patch tokens, which only an ImageEncoder "
                f"gives; this dual encoder's image tower is a {type(encoder).__name__}"
            )
        return encoder

    @property
    def text_encoder(self) -> TextEncoder:
        """The text tower (its ``forward_tokens`` gives one state per token)."""
        return self.dual_encoder.text_encoder


def _optimise(
    parameters: list[nn.Parameter],
    loss_at: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    config: FusionTaskConfig,
) -> list[float]:
    """Minimise ``loss_at(step)`` with AdamW for ``steps`` steps (warm-up + cosine,
    clipping) on the training engine; return the losses."""
    optimizer = build_optimizer(parameters, lr=lr, weight_decay=config.weight_decay)
    engine = Engine(
        optimizer,
        warmup_cosine_scheduler(optimizer, steps, config.warmup_steps),
        device=select_device(config.device),
        clip_grad_norm=config.clip_grad_norm,
        log_every=config.log_every,
        desc="fusion",
    )
    engine.run(loss_at, steps)
    losses = engine.losses
    return losses


def backbone_vocabulary(extra_texts: Sequence[str] = ()) -> Vocabulary:
    """Every ShapesWorld caption word plus the words of ``extra_texts`` (e.g. the QA
    questions)."""
    words = [
        *caption_words(),
        *(word for text in extra_texts for word in simple_tokenize(text)),
    ]
    return Vocabulary.build(words)


def pretrain_backbone(
    config: FusionTaskConfig | None = None, extra_texts: Sequence[str] = ()
) -> Backbone:
    """Train a small dual encoder with symmetric InfoNCE on ShapesWorld captions; return
    it frozen.

    Images: ``config.pretrain_size`` training-split images (world seed
    ``config.world_seed + 1``, so not the task's images); each step pairs every image of
    the batch with one of its five captions. The vocabulary holds every caption word and
    the words of ``extra_texts`` (words the captions never use keep their random
    embeddings; the towers are frozen after).
    """
    config = FusionTaskConfig() if config is None else config
    device = select_device(config.device)
    tokenizer = backbone_vocabulary(extra_texts)
    world = ShapesWorld(
        "train",
        size=config.pretrain_size,
        image_size=config.image_size,
        seed=config.world_seed + 1,
    )
    items = world.__getitems__(range(len(world)))
    images = torch.stack([item["image"] for item in items])
    captions = [caption for item in items for caption in item["captions"]]
    ids, mask = tokenizer.encode_batch(captions)
    per_image = world.captions_per_image
    ids, mask = (
        ids.view(len(world), per_image, -1),
        mask.view(len(world), per_image, -1),
    )
    seed_everything(config.seed)
    model = DualEncoder(
        DualEncoderConfig(
            image_encoder="small_cnn",
            image_kwargs={
                "widths": list(config.image_widths),
                "out_dim": config.embed_dim,
                "pool": "flatten",
            },
            text_encoder="gru",
            text_kwargs={
                "vocab_size": len(tokenizer),
                "embed_dim": config.text_dim,
                "hidden_dim": config.text_dim,
            },
            embed_dim=config.embed_dim,
        )
    ).to(device)
    batches = EpochBatches(
        len(world),
        config.pretrain_batch_size,
        config.seed,
        hint="lower FusionTaskConfig.pretrain_batch_size",
    )
    # the data stays on the device; the caption lengths that size a batch stay on the
    # CPU, so no step waits for the device
    lengths = mask.sum(dim=2)
    images, ids, mask = images.to(device), ids.to(device), mask.to(device)

    def loss_at(step: int) -> torch.Tensor:
        batch, choice = batches(step), batches.choices(step, per_image)
        length = int(lengths[batch, choice].max())
        on_device = (
            batch.to(device, non_blocking=True),
            choice.to(device, non_blocking=True),
        )
        image_emb, text_emb, scale = model(
            images[on_device[0]],
            ids[on_device][:, :length],
            mask[on_device][:, :length],
        )
        return clip_loss(image_emb, text_emb, scale)

    model.train()
    losses = _optimise(
        list(model.parameters()),
        loss_at,
        config.pretrain_steps,
        config.pretrain_lr,
        config,
    )
    model.eval().requires_grad_(False)
    return Backbone(model, tokenizer, losses)


# --- the model
# -------------------------------------------------------------------------------


@dataclass
class TokenFeatures:
    """The frozen towers' tokens for every item of a split, computed once (what fusion
    training reads).

    ``image_tokens`` ``[N, P, Ci]``, ``text_tokens`` ``[N, L, Ct]`` (zero at padding)
    and ``text_mask`` ``[N, L]`` (True on real tokens), plus the split's targets and
    groups.
    """

    image_tokens: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    targets: torch.Tensor
    groups: tuple[str, ...]
    text_lengths: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # on the CPU wherever the tokens are: a batch's length is read from here,
        # without waiting for the device
        self.text_lengths = self.text_mask.sum(dim=1).cpu()

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: torch.device | str) -> TokenFeatures:
        """These features with their tensors on ``device`` (where they fit, training
        then copies nothing per step)."""
        return TokenFeatures(
            self.image_tokens.to(device),
            self.text_tokens.to(device),
            self.text_mask.to(device),
            self.targets.to(device),
            self.groups,
        )

    def batch(
        self, indices: torch.Tensor, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, ...]:
        """``(image_tokens, text_tokens, text_mask, targets)`` of ``indices`` on
        ``device``.

        Text columns that are padding in every selected item are dropped.
        """
        rows = indices.to(self.targets.device, non_blocking=True)
        length = int(self.text_lengths[indices.cpu()].max())
        return (
            self.image_tokens[rows].to(device),
            self.text_tokens[rows, :length].to(device),
            self.text_mask[rows, :length].to(device),
            self.targets[rows].to(device),
        )


class FusionClassifier(nn.Module):
    """Frozen image and text towers + one trainable fusion module + a trainable linear
    head.

    Args:
        backbone: the frozen towers and their tokenizer (:func:`pretrain_backbone`).
        fusion: a name from :data:`~crossalign.models.fusion.FUSION_NAMES`.
        num_classes: number of output classes (2 for matching, ``len(ANSWERS)`` for QA).
        fusion_dim: output size of the fusion module.
        fusion_options: keyword arguments of the fusion module.

    The towers stay frozen and in eval mode whatever ``train()`` says; only ``fusion``
    and ``head`` have trainable parameters.
    """

    def __init__(
        self,
        backbone: Backbone,
        fusion: str,
        num_classes: int,
        fusion_dim: int = 64,
        fusion_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if fusion not in FUSION_NAMES:
            raise ValueError(
                f"unknown fusion {fusion!r}; valid names: {', '.join(FUSION_NAMES)}"
            )
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int)
            or num_classes < 2
        ):
            raise ValueError(
                f"num_classes must be an integer >= 2, got {num_classes!r}"
            )
        self.image_encoder = backbone.image_encoder
        self.text_encoder = backbone.text_encoder
        self.image_encoder.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        self.fusion = build_fusion(
            fusion,
            self.image_encoder.grid_dim,
            self.text_encoder.out_dim,
            fusion_dim,
            **(fusion_options or {}),
        )
        self.head = nn.Linear(fusion_dim, num_classes)
        self.fusion_name = fusion
        self.train()

    def train(self, mode: bool = True) -> FusionClassifier:
        """Set the fusion module and head to training mode; the frozen towers stay in
        eval mode."""
        super().train(mode)
        self.image_encoder.eval()
        self.text_encoder.eval()
        return self

    @torch.no_grad()
    def encode(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frozen towers' tokens:
        ``(image_tokens [B, P, Ci], text_tokens [B, L, Ct], text_mask [B, L])``."""
        mask = attention_mask.bool()
        return (
            self.image_encoder.forward_tokens(images),
            self.text_encoder.forward_tokens(input_ids, mask),
            mask,
        )

    def classify(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Class logits ``[B, num_classes]`` from tokens:
        ``head(fusion(image_tokens, text_tokens))``."""
        return self.head(self.fusion(image_tokens, text_tokens, None, text_mask))

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Class logits ``[B, num_classes]`` for images ``[B, 3, H, W]`` and token ids
        ``[B, L]`` with their mask.

        With ``mean`` or ``weighted`` fusion the logits are ``a(image) + b(text)``: an
        image-only and a text-only score added, so the two modalities never interact.
        """
        return self.classify(*self.encode(images, input_ids, attention_mask))


def encode_tokens(
    backbone: Backbone, split: TaskSplit, batch_size: int = 500
) -> TokenFeatures:
    """Run the frozen towers over every item of ``split`` once (the texts tokenised with
    ``backbone.tokenizer``, all padded to the longest)."""
    device = next(backbone.dual_encoder.parameters()).device
    ids, mask = backbone.tokenizer.encode_batch(list(split.texts))
    chunks = [
        slice(start, start + batch_size) for start in range(0, len(split), batch_size)
    ]
    image_tokens = encode_in_batches(
        backbone.image_encoder.forward_tokens,
        ((split.images[chunk].to(device),) for chunk in chunks),
        len(split),
        modules=[backbone.dual_encoder],
        dtype=None,
        desc="image tokens",
    )
    text_tokens = encode_in_batches(
        backbone.text_encoder.forward_tokens,
        ((ids[chunk].to(device), mask[chunk].to(device)) for chunk in chunks),
        len(split),
        modules=[backbone.dual_encoder],
        dtype=None,
        desc="text tokens",
    )
    return TokenFeatures(image_tokens, text_tokens, mask, split.targets, split.groups)


# --- training and scoring
# --------------------------------------------------------------------


@dataclass
class FusionResult:
    """One fusion module trained on one task: test accuracy per group, the loss curve
    and the model.

    ``accuracy`` maps ``"overall"`` and every group of the test items to a fraction in
    [0, 1]; ``counts`` holds how many test items each entry is computed on; ``seconds``
    is the wall time of the training loop.
    """

    name: str
    task: str
    accuracy: dict[str, float]
    counts: dict[str, int]
    losses: list[float]
    fusion_parameters: int
    seconds: float
    model: FusionClassifier = field(repr=False)


def accuracy_by_group(
    predictions: torch.Tensor | Sequence[int],
    targets: torch.Tensor | Sequence[int],
    groups: Sequence[str],
) -> tuple[dict[str, float], dict[str, int]]:
    """Accuracy overall and within each group:
    ``({"overall": acc, group: acc, ...}, {same keys: item count})``.

    Groups are listed in the order of their first item.
    """
    predictions = torch.as_tensor(predictions).reshape(-1)
    targets = torch.as_tensor(targets).reshape(-1)
    if isinstance(groups, str):
        raise TypeError("groups must hold one group name per item, not be a single str")
    if not len(predictions) == len(targets) == len(groups):
        raise ValueError(
            "predictions, targets and groups need one entry per item, got "
            f"{len(predictions)}, "
            f"{len(targets)} and {len(groups)}"
        )
    if len(targets) == 0:
        raise ValueError("cannot compute an accuracy on zero items")
    correct = (predictions == targets).tolist()
    accuracy, counts = (
        {"overall": sum(correct) / len(correct)},
        {"overall": len(correct)},
    )
    for group in dict.fromkeys(groups):
        hits = [hit for hit, g in zip(correct, groups) if g == group]
        accuracy[group], counts[group] = sum(hits) / len(hits), len(hits)
    return accuracy, counts


@torch.no_grad()
def predict(
    model: FusionClassifier, features: TokenFeatures, batch_size: int = 500
) -> torch.Tensor:
    """The predicted class of every item: LongTensor ``[N]`` (computed in eval mode)."""
    device = next(model.head.parameters()).device
    features = features.to(device)
    was_training = model.training
    model.eval()
    predictions = []
    for start in range(0, len(features), batch_size):
        image, text, mask, _ = features.batch(
            torch.arange(start, min(start + batch_size, len(features))), device
        )
        predictions.append(model.classify(image, text, mask).argmax(dim=1).cpu())
    model.train(was_training)
    return torch.cat(predictions)


def train_fusion(
    name: str,
    task: str,
    config: FusionTaskConfig | None = None,
    data: TaskData | None = None,
    backbone: Backbone | None = None,
    features: tuple[TokenFeatures, TokenFeatures] | None = None,
) -> FusionResult:
    """Train fusion ``name`` (and the head) on ``task`` over frozen towers; score it on
    the test split.

    Whatever is not given is built from ``config``: ``data`` (:func:`build_task_data`),
    ``backbone`` (:func:`pretrain_backbone`) and ``features``, the ``(train, test)``
    tokens (:func:`encode_tokens`). Pass them to share one rendering and one pretraining
    between runs.
    """
    _check_task(task)
    config = FusionTaskConfig() if config is None else config
    if features is None:
        data = build_task_data(task, config) if data is None else data
        if data.task != task:
            raise ValueError(
                f"data holds the {data.task!r} task but task={task!r} was asked for"
            )
        backbone = (
            pretrain_backbone(config, data.train.texts)
            if backbone is None
            else backbone
        )
        features = (
            encode_tokens(backbone, data.train, config.eval_batch_size),
            encode_tokens(backbone, data.test, config.eval_batch_size),
        )
    elif backbone is None:
        raise ValueError(
            "train_fusion got features but no backbone; pass the backbone the features "
            "came from"
        )
    train_features, test_features = features
    batches = EpochBatches(
        len(train_features),
        config.batch_size,
        config.seed,
        hint="lower FusionTaskConfig.batch_size",
    )
    device = select_device(config.device)
    seed_everything(config.seed)
    model = FusionClassifier(
        backbone,
        name,
        len(TASK_CLASSES[task]),
        config.fusion_dim,
        config.fusion_options.get(name),
    ).to(device)
    train_features = train_features.to(device)

    def loss_at(step: int) -> torch.Tensor:
        image, text, mask, targets = train_features.batch(batches(step), device)
        return F.cross_entropy(model.classify(image, text, mask), targets)

    trainable = [p for p in model.parameters() if p.requires_grad]
    started = time.perf_counter()
    model.train()
    losses = _optimise(trainable, loss_at, config.steps, config.lr, config)
    seconds = time.perf_counter() - started
    model.eval()
    accuracy, counts = accuracy_by_group(
        predict(model, test_features, config.eval_batch_size),
        test_features.targets,
        test_features.groups,
    )
    return FusionResult(
        name=name,
        task=task,
        accuracy=accuracy,
        counts=counts,
        losses=losses,
        fusion_parameters=sum(p.numel() for p in model.fusion.parameters()),
        seconds=seconds,
        model=model,
    )


def compare_fusion(
    names: Sequence[str] = FUSION_NAMES,
    task: str = "matching",
    config: FusionTaskConfig | None = None,
    data: TaskData | None = None,
    backbone: Backbone | None = None,
) -> list[FusionResult]:
    """Train one model per fusion name on ``task`` with the same data, frozen towers,
    budget and seed.

    The data, the backbone and the towers' tokens are built once (from ``config`` unless
    given) and shared; results come in ``names`` order.
    """
    _check_task(task)
    if isinstance(names, str):
        raise TypeError(
            "names must be a list of fusion names, not a single str; wrap it in a list"
        )
    unknown = [name for name in names if name not in FUSION_NAMES]
    if not names or unknown:
        raise ValueError(
            f"names must be a non-empty list from {', '.join(FUSION_NAMES)}; unknown: "
            f"{unknown}"
        )
    config = FusionTaskConfig() if config is None else config
    data = build_task_data(task, config) if data is None else data
    if data.task != task:
        raise ValueError(
            f"data holds the {data.task!r} task but task={task!r} was asked for"
        )
    backbone = (
        pretrain_backbone(config, data.train.texts) if backbone is None else backbone
    )
    features = (
        encode_tokens(backbone, data.train, config.eval_batch_size),
        encode_tokens(backbone, data.test, config.eval_batch_size),
    )
    return [
        train_fusion(name, task, config, backbone=backbone, features=features)
        for name in names
    ]


def format_fusion_table(
    results: Sequence[FusionResult], groups: Sequence[str] | None = None
) -> str:
    """A plain-text table: one row per result, test accuracy (%) overall and per group,
    parameters, seconds.

    ``groups`` defaults to the task's groups (:data:`TASK_GROUPS`) that occur in the
    results.
    """
    if not results:
        raise ValueError("format_fusion_table needs at least one result")
    tasks = sorted({result.task for result in results})
    if len(tasks) > 1:
        raise ValueError(f"all results must come from one task, got {tasks}")
    if groups is None:
        groups = [
            g for g in TASK_GROUPS[tasks[0]] if any(g in r.accuracy for r in results)
        ]
    name_width = max(len("fusion"), *(len(r.name) for r in results))
    columns = ["overall", *groups]
    widths = [max(7, len(c)) for c in columns]
    header = f"{'fusion':<{name_width}}  " + "  ".join(
        f"{c:>{w}}" for c, w in zip(columns, widths)
    )
    header += f"  {'fusion params':>13}  {'seconds':>7}"
    lines = [header, "-" * len(header)]
    for r in results:
        cells = [
            f"{100 * r.accuracy[c]:.1f}" if c in r.accuracy else "-" for c in columns
        ]
        row = f"{r.name:<{name_width}}  " + "  ".join(
            f"{cell:>{w}}" for cell, w in zip(cells, widths)
        )
        lines.append(row + f"  {r.fusion_parameters:>13,}  {r.seconds:>7.1f}")
    return "\n".join(lines)

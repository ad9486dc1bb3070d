"""Few-shot adaptation of a trained dual encoder: from a handful of labelled images
per class to a classifier.

Zero-shot prompting (:mod:`crossalign.zero_shot`) needs no labelled images at all; with
``k`` of them per class there are three classic ways to do better, each training a few
parameters on top of the *frozen* dual encoder:

- a **linear probe**: logistic regression on the image embeddings (Radford et al.
  2021 report it as CLIP's few-shot baseline);
- **prompt tuning** (CoOp, Zhou et al. 2022): the words of the prompt template are
  replaced by learned vectors in the text tower's token-embedding input, the class name
  tokens are kept, and the class embeddings the text tower makes from these prompts
  classify the images;
- a **residual adapter** (CLIP-Adapter, Gao et al. 2021): a small bottleneck MLP on the
  image embedding, mixed with the embedding itself, classified against the zero-shot
  class embeddings.

Every method reads image embeddings computed once, and trains with
:func:`crossalign.experiments.compare.optimise`, the book's one optimisation loop.
:func:`few_shot_curve` runs them for several ``k`` and seeds on a
:class:`FewShotTask`: the colour or the shape of single-object ShapesWorld images, or
the colour-shape *pair* ("composition"), whose 40 classes include the five pairs that
never occur in training (``HELD_OUT_PAIRS``; their images come from the
``compositional`` split).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.data.shapes import (
    COLOUR_WORDS,
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPE_WORDS,
    SHAPES,
    ShapeObject,
    ShapesWorld,
)
from crossalign.experiments.compare import optimise
from crossalign.train.config import TrainConfig
from crossalign.zero_shot import (
    ATTRIBUTE_CLASSES,
    ATTRIBUTE_SYNONYMS,
    COLOUR_TEMPLATES,
    SHAPE_TEMPLATES,
    class_embeddings,
)

__all__ = [
    "DEFAULT_METHODS",
    "PAIR_CLASSES",
    "PAIR_TEMPLATES",
    "TASKS",
    "Adapter",
    "CoOp",
    "CosineClassifier",
    "FewShotMethod",
    "FewShotProblem",
    "FewShotTask",
    "FitResult",
    "LinearProbe",
    "PromptLearner",
    "ResidualAdapter",
    "ZeroShot",
    "encode_images",
    "few_shot_curve",
    "format_curve",
    "get_few_shot_method",
    "make_task",
    "prompt_tokens",
    "sample_support",
    "single_object_images",
    "summarise_curve",
    "token_embedding",
]

#: Templates for colour-shape pairs ("{}" is e.g. "red triangle"), in the captions'
# grammar.
PAIR_TEMPLATES: tuple[str, ...] = (
    "a small {}",
    "a large {}",
    "there is a big {}",
    "a picture of a tiny {}",
    "a little {} in the middle",
    "a large {} at the top",
    "there is a small {} on the left",
    "a big {} at the bottom right",
)
#: Every colour-shape pair, colour first ("red circle", ...): the composition classes.
PAIR_CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
#: Task names :func:`make_task` knows.
TASKS: tuple[str, ...] = ("colour", "shape", "composition")
#: The methods :func:`few_shot_curve` runs by default.
DEFAULT_METHODS: tuple[str, ...] = ("zero_shot", "linear_probe", "coop", "adapter")

# ShapesWorld draws samples on demand, so a "world" this large costs nothing: it only
# bounds how far :func:`single_object_images` may scan for rare classes.
_WORLD_SIZE = 100_000
_SCAN_CHUNK = 1024


# ---------------------------------------------------------------------------- data
def _pair_synonyms() -> dict[str, tuple[str, ...]]:
    """Every wording of every pair ("purple diamond" -> "violet rhombus", ...)."""
    return {
        f"{c} {s}": tuple(
            f"{cw} {sw}" for cw in COLOUR_WORDS[c] for sw in SHAPE_WORDS[s]
        )
        for c in COLOURS
        for s in SHAPES
    }


def _label_of(task: str) -> Callable[[ShapeObject], str]:
    if task == "composition":
        return lambda obj: f"{obj.colour} {obj.shape}"
    if task == "colour":
        return lambda obj: obj.colour
    return lambda obj: obj.shape


def single_object_images(
    split: str,
    class_names: Sequence[str],
    label: Callable[[ShapeObject], str],
    per_class: int,
    seed: int = 0,
    image_size: int = 48,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``per_class`` single-object images of every class, in world order.

    Draws the same world as :func:`crossalign.zero_shot.attribute_images` (one object
    per image; image ``i`` of a split and seed is always the same picture) but scans it
    until every class of ``class_names`` has ``per_class`` images, with ``label(obj)``
    naming the class of an image's object; images of other classes are skipped. Only
    the chosen images are rendered. This is what the compositional split needs: its
    single-object images are exactly the held-out pairs, which no attribute label alone
    names.

    Returns ``(images [N, 3, H, W], class indices [N], world indices [N])`` with ``N =
    per_class * len(class_names)``, sorted by world index.
    """
    if per_class < 1:
        raise ValueError(f"per_class={per_class} must be >= 1")
    if not class_names:
        raise ValueError("class_names must not be empty")
    world = ShapesWorld(
        split,
        size=_WORLD_SIZE,
        seed=seed,
        image_size=image_size,
        min_objects=1,
        max_objects=1,
    )
    position = {name: row for row, name in enumerate(class_names)}
    found: dict[int, list[int]] = {row: [] for row in range(len(class_names))}
    start = 0
    while any(len(ids) < per_class for ids in found.values()):
        if start >= _WORLD_SIZE:
            short = [class_names[r] for r, ids in found.items() if len(ids) < per_class]
            raise ValueError(
                f"the {split!r} split has fewer than {per_class} single-object images "
                f"of {short}; are these classes possible in that split?"
            )
        chunk = range(start, min(start + _SCAN_CHUNK, _WORLD_SIZE))
        for index, scene in zip(chunk, world.scenes(chunk)):
            row = position.get(label(scene.objects[0]))
            if row is not None and len(found[row]) < per_class:
                found[row].append(index)
        start += _SCAN_CHUNK
    pairs = sorted((index, row) for row, ids in found.items() for index in ids)
    indices = torch.tensor([index for index, _ in pairs], dtype=torch.long)
    labels = torch.tensor([row for _, row in pairs], dtype=torch.long)
    return world.render(indices.numpy()), labels, indices


@dataclass
class FewShotTask:
    """A few-shot classification task: classes, prompts, a support pool and a test set.

    ``support_*`` is the pool the support sets are drawn from (:func:`sample_support`);
    ``test_*`` is fixed and made of other images (disjoint world indices). ``templates``
    and ``synonyms`` give the zero-shot class embeddings (``templates[0]`` is also the
    prompt CoOp starts from); ``unseen`` lists the classes that never occur in the
    training data (the held-out pairs of the composition task).
    """

    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]] | None
    support_images: torch.Tensor
    support_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    unseen: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _split_first(
    images: torch.Tensor, labels: torch.Tensor, first: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split per class: its first ``first`` images, and the rest."""
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    head = rank < first
    return (images[head], labels[head]), (images[~head], labels[~head])


def make_task(
    name: str,
    test_per_class: int = 25,
    pool_per_class: int = 32,
    split: str = "test",
    seed: int = 0,
    image_size: int = 48,
) -> FewShotTask:
    """Build the ``"colour"``, ``"shape"`` or ``"composition"`` task on single-object
    images.

    Per class, the first ``test_per_class`` images of the world become the fixed test
    set and the next ``pool_per_class`` the support pool (so ``k`` can be at most
    ``pool_per_class``; a pool larger than the largest ``k`` lets support sets differ
    between seeds). Images come from ``split`` (default ``"test"``, never trained on);
    for ``"composition"`` the five held-out pairs come from the ``compositional``
    split, the only one that draws them. ``image_size`` must be the size the model was
    trained at (48 in the comparison's fast setting).
    """
    if name not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {name!r}")
    for arg, value in (
        ("test_per_class", test_per_class),
        ("pool_per_class", pool_per_class),
    ):
        if value < 1:
            raise ValueError(f"{arg}={value} must be >= 1")
    if split == "compositional":
        raise ValueError(
            "split='compositional' holds only the held-out pairs; pass a split of seen "
            "pairs ('train', 'val' or 'test') and the composition task adds them"
        )
    per_class = test_per_class + pool_per_class
    label = _label_of(name)
    if name == "composition":
        classes = PAIR_CLASSES
        unseen_names = [f"{c} {s}" for c, s in HELD_OUT_PAIRS]
        seen_names = [n for n in classes if n not in unseen_names]
        parts = []
        for part_split, names in ((split, seen_names), ("compositional", unseen_names)):
            images, rows, _ = single_object_images(
                part_split, names, label, per_class, seed, image_size
            )
            lookup = torch.tensor([classes.index(n) for n in names])
            parts.append((images, lookup[rows]))
        images = torch.cat([p[0] for p in parts])
        labels = torch.cat([p[1] for p in parts])
        templates, synonyms = PAIR_TEMPLATES, _pair_synonyms()
        unseen = tuple(classes.index(n) for n in unseen_names)
    else:
        classes = ATTRIBUTE_CLASSES[name]
        images, labels, _ = single_object_images(
            split, classes, label, per_class, seed, image_size
        )
        templates = COLOUR_TEMPLATES if name == "colour" else SHAPE_TEMPLATES
        synonyms = {k: tuple(v) for k, v in ATTRIBUTE_SYNONYMS[name].items()}
        unseen = ()
    (test_images, test_labels), (pool_images, pool_labels) = _split_first(
        images, labels, test_per_class
    )
    return FewShotTask(
        name=name,
        class_names=tuple(classes),
        templates=tuple(templates),
        synonyms=synonyms,
        support_images=pool_images,
        support_labels=pool_labels,
        test_images=test_images,
        test_labels=test_labels,
        unseen=unseen,
    )


def sample_support(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Indices of a support set: ``k`` examples of every class in ``labels``.

    Each class ``c`` orders its examples by a permutation seeded with ``(seed, c)`` and
    keeps the first ``k``: the same seed always gives the same set, and the set for
    ``k`` is contained in the set for any larger ``k`` (a curve over ``k`` adds
    examples rather than redrawing them). Returned class by class.
    """
    if k < 1:
        raise ValueError(f"k={k} must be >= 1 (k = 0 is zero-shot: no support set)")
    chosen = []
    for c in labels.unique().tolist():
        where = (labels == c).nonzero().flatten()
        if len(where) < k:
            raise ValueError(
                f"class {c} has only {len(where)} examples in the pool, fewer than "
                f"k={k}"
            )
        generator = torch.Generator().manual_seed(seed * 1_000_003 + int(c))
        chosen.append(where[torch.randperm(len(where), generator=generator)[:k]])
    return torch.cat(chosen)


@torch.no_grad()
def encode_images(
    model: Any, images: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Unit image embeddings ``[N, E]`` on the model's device, computed once for every
    method.

    Plain ``no_grad`` (not inference mode), so the features can feed a layer that is
    being trained.
    """
    model.eval()
    device = _device_of(model)
    return torch.cat(
        [
            model.encode_image(chunk.to(device)).float()
            for chunk in images.split(batch_size)
        ]
    )


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------- classifiers
class CosineClassifier(nn.Module):
    """Logits ``scale * features @ classes.T`` against fixed unit class embeddings.

    With the zero-shot class embeddings this is zero-shot classification on
    precomputed (unit) image embeddings: the same arg-max as
    :func:`crossalign.zero_shot.zero_shot_predict`.
    """

    classes: torch.Tensor

    def __init__(self, classes: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("classes", classes.detach().clone().float())
        self.scale = float(scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * features @ self.classes.T


class ResidualAdapter(nn.Module):
    """CLIP-Adapter (Gao et al. 2021): ``f' = alpha * A(f) + (1 - alpha) * f``, then
    cosine logits.

    ``A`` is a bottleneck MLP (``dim -> dim // reduction -> dim``, ReLU after both
    layers, no biases, as in the paper) on the frozen image embedding ``f``; the mixed
    vector is renormalised and compared with the fixed zero-shot class embeddings,
    times the model's logit scale. The residual keeps the zero-shot knowledge: with
    ``alpha = 0`` this *is* the zero-shot classifier, and a small ``alpha`` lets a few
    examples nudge it without overwriting it.
    """

    classes: torch.Tensor

    def __init__(
        self,
        classes: torch.Tensor,
        scale: float,
        alpha: float = 0.2,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must be in [0, 1]")
        dim = classes.shape[1]
        if not 1 <= reduction <= dim:
            raise ValueError(f"reduction={reduction} must be between 1 and {dim}")
        self.alpha = float(alpha)
        self.scale = float(scale)
        self.register_buffer("classes", classes.detach().clone().float())
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(dim // reduction, dim, bias=False),
            nn.ReLU(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mixed = self.alpha * self.mlp(features) + (1.0 - self.alpha) * features
        return self.scale * F.normalize(mixed, dim=-1) @ self.classes.T


# ---------------------------------------------------------------------- prompt tuning
def token_embedding(text_encoder: nn.Module) -> nn.Embedding:
    """The token-embedding table of a text encoder (the input that CoOp replaces).

    ``embed`` (GRU, word convolution), ``embedding`` or ``token_embed`` (Transformer),
    or a Hugging Face model's input embeddings; any other encoder is a ``ValueError``.
    """
    for name in ("embed", "embedding", "token_embed"):
        table = getattr(text_encoder, name, None)
        if isinstance(table, nn.Embedding):
            return table
    inner = getattr(text_encoder, "model", None)
    getter = getattr(inner, "get_input_embeddings", None)
    if callable(getter) and isinstance(getter(), nn.Embedding):
        return getter()
    raise ValueError(
        f"prompt tuning needs a text encoder with a token-embedding table (an "
        f"nn.Embedding attribute 'embed', 'embedding' or 'token_embed'); "
        f"{type(text_encoder).__name__} has none"
    )


def prompt_tokens(
    tokenizer: Any, class_names: Sequence[str], template: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Tokenise ``template`` filled with each class name, marking the template's words.

    Returns ``(ids [C, L], mask [C, L], slots [C, L], context_ids)``: ``ids`` and
    ``mask`` are exactly what ``tokenizer.encode_batch`` gives (so the text tower sees
    the very prompts :func:`~crossalign.zero_shot.class_embeddings` embeds); ``slots``
    is ``j`` where a row holds the ``j``-th template token and -1 elsewhere (class name,
    special tokens, padding); ``context_ids`` are the template tokens' ids, in order.
    """
    if template.count("{}") != 1:
        raise ValueError(
            f"template={template!r} needs exactly one '{{}}' for the class name"
        )
    prefix, suffix = template.split("{}")
    before = list(tokenizer.encode(prefix, add_special=False)) if prefix.strip() else []
    after = list(tokenizer.encode(suffix, add_special=False)) if suffix.strip() else []
    if not before and not after:
        raise ValueError(
            f"template={template!r} has no words around '{{}}': there is no context to "
            "learn"
        )
    ids, mask = tokenizer.encode_batch([template.format(n) for n in class_names])
    slots = torch.full_like(ids, -1)
    for row, name in enumerate(class_names):
        body = before + list(tokenizer.encode(name, add_special=False)) + after
        tokens = ids[row, mask[row]].tolist()
        starts = [
            s
            for s in range(len(tokens) - len(body) + 1)
            if tokens[s : s + len(body)] == body
        ]
        if not starts:
            raise ValueError(
                f"the prompt {template.format(name)!r} does not tokenise as its "
                "template words around the class name; CoOp cannot find the template "
                "tokens to replace"
            )
        start = starts[0]
        slots[row, start : start + len(before)] = torch.arange(len(before))
        end = start + len(body)
        slots[row, end - len(after) : end] = torch.arange(len(after)) + len(before)
    return ids, mask, slots, before + after


@contextmanager
def _spliced_embeddings(
    table: nn.Embedding, context: torch.Tensor, slots: torch.Tensor
) -> Iterator[None]:
    """While active, the output of ``table`` holds ``context[j]`` wherever ``slots`` is
    ``j``.

    A forward hook on the embedding layer, so the text encoder runs its own forward
    pass unchanged from there on (dropout, masking, packing, positions): the only input
    that differs from the token path is the embedding of the template words.
    """

    def hook(
        module: nn.Module, args: tuple[Any, ...], output: torch.Tensor
    ) -> torch.Tensor:
        if output.shape[:2] != slots.shape:
            raise RuntimeError(
                f"the token embedding returned {tuple(output.shape)}, but the prompts "
                f"are {tuple(slots.shape)}"
            )
        spliced = context[slots.clamp(min=0)].to(output.dtype)
        return torch.where((slots >= 0).unsqueeze(-1), spliced, output)

    handle = table.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter of ``module``; restore it after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


class PromptLearner(nn.Module):
    """CoOp's learned prompt (Zhou et al. 2022): M context vectors shared by all
    classes.

    Each class's prompt is ``template`` with the class name in it, tokenised as usual;
    the ``M`` tokens of the template words are replaced, in the text tower's
    token-embedding output, by the learned vectors ``context [M, D]``. The class name
    tokens (and special tokens) keep their own embeddings, and the text tower is not
    changed, so :meth:`forward` is a class embedding made by the frozen text tower from
    a "sentence" partly written in vectors no word has.

    ``init="template"`` starts from the template words' own embeddings (then the class
    embeddings equal the zero-shot ones of that template); ``init="random"`` draws them
    from a normal distribution with the embedding table's standard deviation.

    The dual encoder is a submodule, held in eval mode even under ``.train()`` (it is
    frozen); :meth:`CoOp.fit` also turns its gradients off while training.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    slots: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        class_names: Sequence[str],
        template: str,
        init: str = "template",
    ) -> None:
        super().__init__()
        if init not in ("template", "random"):
            raise ValueError(f"init must be 'template' or 'random', got {init!r}")
        self.model = model.eval()
        table = token_embedding(model.text_encoder)  # type: ignore[arg-type]
        ids, mask, slots, context_ids = prompt_tokens(tokenizer, class_names, template)
        weight = table.weight.detach()
        if init == "template":
            context = weight[torch.tensor(context_ids, device=weight.device)].clone()
        else:
            context = (
                torch.randn(len(context_ids), weight.shape[1], device=weight.device)
                * weight.std().item()
            )
        self.context = nn.Parameter(context.float())
        device = weight.device
        self.register_buffer("ids", ids.to(device))
        self.register_buffer("mask", mask.to(device))
        self.register_buffer("slots", slots.to(device))

    def train(self, mode: bool = True) -> PromptLearner:
        """Set training mode for the prompt; the frozen dual encoder stays in eval
        mode."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self) -> torch.Tensor:
        """Unit class embeddings ``[C, E]`` of the prompts with the learned context."""
        table = token_embedding(self.model.text_encoder)  # type: ignore[arg-type]
        with _spliced_embeddings(table, self.context, self.slots):
            return self.model.encode_text(self.ids, self.mask)  # type: ignore[operator]


# ----------------------------------------------------------------------------- methods
@dataclass
class FewShotProblem:
    """What a method may use: the frozen model, its tokenizer and the task's prompts.

    ``classes`` are the zero-shot class embeddings ``[C, E]`` (prompt ensembles of
    ``templates``); ``scale`` is the model's logit scale.
    """

    model: Any
    tokenizer: Any
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    classes: torch.Tensor
    scale: float

    @classmethod
    def from_task(cls, model: Any, tokenizer: Any, task: FewShotTask) -> FewShotProblem:
        """The problem of ``task``: zero-shot class embeddings by
        :func:`~crossalign.zero_shot.class_embeddings`."""
        classes = class_embeddings(
            model,
            tokenizer,
            task.class_names,
            task.templates,
            task.synonyms,
            device=_device_of(model),
        )
        return cls(
            model=model,
            tokenizer=tokenizer,
            class_names=task.class_names,
            templates=task.templates,
            classes=classes.clone().to(_device_of(model)),
            scale=float(model.logit_scale.detach()),
        )


@dataclass
class FitResult:
    """A fitted method: ``classifier(features [N, E]) -> logits [N, C]``, and the loss
    of every optimisation step (empty for zero-shot)."""

    classifier: nn.Module
    losses: list[float] = field(default_factory=list)


class FewShotMethod(Protocol):
    """A few-shot method: ``fit`` turns a support set (features and labels; empty for
    ``k = 0``) into a classifier of image features."""

    name: ClassVar[str]
    uses_support: ClassVar[bool]

    def fit(
        self,
        problem: FewShotProblem,
        features: torch.Tensor,
        labels: torch.Tensor,
        seed: int,
    ) -> FitResult: ...


def _train_config(steps: int, lr: float, weight_decay: float) -> TrainConfig:
    """The optimiser settings of a few-shot fit: full-batch AdamW, 10 % warm-up."""
    for arg, value in (("steps", steps), ("lr", lr)):
        if not value > 0:
            raise ValueError(f"{arg}={value} must be > 0")
    return TrainConfig(
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=max(1, steps // 10),
        min_lr_ratio=0.05,
        clip_grad_norm=1.0,
        channels_last=False,
        fused_optimizer=False,
        progress=False,
    )


def _check_support(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features must be [N, E] and labels [N], got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise ValueError("this method needs a non-empty support set (k >= 1)")


@dataclass
class ZeroShot:
    """Zero-shot prompting (the reference, ``k = 0``): cosine logits against the
    prompt-ensemble class embeddings; the support set is not used."""

    name: ClassVar[str] = "zero_shot"
    uses_support: ClassVar[bool] = False

    def fit(
        self,
        problem: FewShotProblem,
        features: torch.Tensor,
        labels: torch.Tensor,
        seed: int,
    ) -> FitResult:
        return FitResult(CosineClassifier(problem.classes, problem.scale))


@dataclass
class LinearProbe:
    """Multinomial logistic regression on the frozen image embeddings.

    A linear layer (zero-initialised) trained full-batch with cross-entropy plus
    ``l2 / 2 * ||W||^2`` on the weights (not the bias). The penalty sits in the loss,
    not in AdamW's decoupled decay, so the objective is the textbook regularised
    logistic regression (scikit-learn's with ``C = 1 / (l2 * N)``): strongly convex,
    with one minimiser that any good optimiser reaches.
    """

    steps: int = 100
    lr: float = 0.2
    l2: float = 1e-4
    name: ClassVar[str] = "linear_probe"
    uses_support: ClassVar[bool] = True

    def fit_features(
        self, features: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> FitResult:
        """Fit on any features ``[N, D]`` and integer labels in
        ``[0, num_classes)``."""
        _check_support(features, labels)
        if self.l2 < 0:
            raise ValueError(f"l2={self.l2} must be >= 0")
        probe = nn.Linear(features.shape[1], num_classes).to(features.device)
        nn.init.zeros_(probe.weight)
        nn.init.zeros_(probe.bias)
        labels = labels.to(features.device)

        def loss_at(step: int) -> torch.Tensor:
            penalty = 0.5 * self.l2 * probe.weight.pow(2).sum()
            return F.cross_entropy(probe(features), labels) + penalty

        train = _train_config(self.steps, self.lr, weight_decay=0.0)
        losses = optimise(probe, loss_at, train, features.device, desc=self.name)
        return FitResult(probe, losses)

    def fit(
        self,
        problem: FewShotProblem,
        features: torch.Tensor,
        labels: torch.Tensor,
        seed: int,
    ) -> FitResult:
        return self.fit_features(features, labels, len(problem.class_names))


@dataclass
class CoOp:
    """Prompt-embedding tuning (Zhou et al. 2022) with a :class:`PromptLearner`.

    The context vectors of ``template`` (default: the task's first template) are
    trained with cross-entropy on ``scale * features @ class_embeddings.T``; every step
    runs the frozen text tower on the ``C`` prompts. Returns a
    :class:`CosineClassifier` over the tuned class embeddings.
    """

    steps: int = 80
    lr: float = 0.05
    init: str = "template"
    template: str | None = None
    name: ClassVar[str] = "coop"
    uses_support: ClassVar[bool] = True

    def learner(self, problem: FewShotProblem) -> PromptLearner:
        """The untrained prompt of ``problem`` (context initialised by ``init``)."""
        return PromptLearner(
            problem.model,
            problem.tokenizer,
            problem.class_names,
            self.template or problem.templates[0],
            init=self.init,
        )

    def fit(
        self,
        problem: FewShotProblem,
        features: torch.Tensor,
        labels: torch.Tensor,
        seed: int,
    ) -> FitResult:
        _check_support(features, labels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            learner = self.learner(problem)
        labels = labels.to(features.device)

        def loss_at(step: int) -> torch.Tensor:
            logits = problem.scale * features @ learner().T
            return F.cross_entropy(logits, labels)

        train = _train_config(self.steps, self.lr, weight_decay=0.0)
        with _frozen(problem.model):
            losses = optimise(learner, loss_at, train, features.device, self.name)
            with torch.no_grad():
                tuned = learner()
        return FitResult(CosineClassifier(tuned, problem.scale), losses)


@dataclass
class Adapter:
    """CLIP-Adapter (Gao et al. 2021): a :class:`ResidualAdapter` trained with
    cross-entropy on the support set (AdamW with ``weight_decay``)."""

    steps: int = 100
    lr: float = 0.02
    alpha: float = 0.2
    reduction: int = 4
    weight_decay: float = 0.01
    name: ClassVar[str] = "adapter"
    uses_support: ClassVar[bool] = True

    def fit(
        self,
        problem: FewShotProblem,
        features: torch.Tensor,
        labels: torch.Tensor,
        seed: int,
    ) -> FitResult:
        _check_support(features, labels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapter = ResidualAdapter(
                problem.classes, problem.scale, self.alpha, self.reduction
            ).to(features.device)
        labels = labels.to(features.device)

        def loss_at(step: int) -> torch.Tensor:
            return F.cross_entropy(adapter(features), labels)

        train = _train_config(self.steps, self.lr, self.weight_decay)
        losses = optimise(adapter, loss_at, train, features.device, desc=self.name)
        return FitResult(adapter, losses)


_METHODS: dict[str, Callable[[], FewShotMethod]] = {
    "zero_shot": ZeroShot,
    "linear_probe": LinearProbe,
    "coop": CoOp,
    "adapter": Adapter,
}


def get_few_shot_method(name: str) -> FewShotMethod:
    """A method with its default settings, by name (see :data:`DEFAULT_METHODS`)."""
    if name not in _METHODS:
        raise ValueError(
            f"unknown few-shot method {name!r}; valid names: {', '.join(_METHODS)}"
        )
    return _METHODS[name]()


# ------------------------------------------------------------------------------ curve
def _accuracy(correct: torch.Tensor) -> float:
    return float(correct.float().mean()) if len(correct) else math.nan


def few_shot_curve(
    model: Any,
    tokenizer: Any,
    task: str | FewShotTask,
    shots: Sequence[int] = (1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str | FewShotMethod] = DEFAULT_METHODS,
) -> list[dict[str, Any]]:
    """Test accuracy of each method for each number of shots ``k`` and seed: one row
    each.

    ``task`` is a :class:`FewShotTask` or a name for :func:`make_task` (defaults: 25
    test and 32 pool images per class at 48 pixels). The image embeddings of the pool
    and the test set are computed once; for every seed and ``k`` a support set of ``k``
    images per class is drawn (:func:`sample_support`) and every method is fitted on
    it. Methods that use no support set (zero-shot) give one row per seed with
    ``k = 0``.

    Each row: ``task, method, k, seed, accuracy`` (on the whole test set),
    ``seen_accuracy`` / ``unseen_accuracy`` (test images of classes that do / do not
    occur in training; ``nan`` when there are none) and ``final_loss`` (the last
    training loss; ``nan`` for zero-shot). :func:`summarise_curve` gives mean and
    standard deviation over seeds.
    """
    if not shots or any(int(k) < 1 for k in shots):
        raise ValueError(f"shots={tuple(shots)} must be one or more integers >= 1")
    if not seeds:
        raise ValueError("seeds must not be empty")
    task = make_task(task) if isinstance(task, str) else task
    chosen = [get_few_shot_method(m) if isinstance(m, str) else m for m in methods]
    if not chosen:
        raise ValueError("methods must not be empty")
    problem = FewShotProblem.from_task(model, tokenizer, task)
    device = _device_of(model)
    pool = encode_images(model, task.support_images)
    test = encode_images(model, task.test_images)
    test_labels = task.test_labels.to(device)
    unseen = torch.isin(task.test_labels, torch.tensor(task.unseen, dtype=torch.long))
    unseen = unseen.to(device)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for method in chosen:
            for k in shots if method.uses_support else (0,):
                index = (
                    sample_support(task.support_labels, int(k), seed)
                    if k
                    else torch.zeros(0, dtype=torch.long)
                )
                fit = method.fit(problem, pool[index], task.support_labels[index], seed)
                with torch.no_grad():
                    correct = fit.classifier(test).argmax(dim=1) == test_labels
                rows.append(
                    {
                        "task": task.name,
                        "method": method.name,
                        "k": int(k),
                        "seed": int(seed),
                        "accuracy": _accuracy(correct),
                        "seen_accuracy": _accuracy(correct[~unseen]),
                        "unseen_accuracy": _accuracy(correct[unseen]),
                        "final_loss": fit.losses[-1] if fit.losses else math.nan,
                    }
                )
    return rows


def summarise_curve(
    rows: Sequence[Mapping[str, Any]], key: str = "accuracy"
) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of ``key`` for every (task, method, k).

    The standard deviation is the sample one (``n - 1``), 0 for a single seed. Rows
    keep the order in which each (task, method, k) first appears.
    """
    groups: dict[tuple[Any, Any, Any], list[float]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"], row["k"]), []).append(
            float(row[key])
        )
    return [
        {
            "task": task,
            "method": method,
            "k": k,
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values),
        }
        for (task, method, k), values in groups.items()
    ]


def format_curve(rows: Sequence[Mapping[str, Any]], key: str = "accuracy") -> str:
    """A plain-text table of :func:`summarise_curve`: one line per (task, method),
    ``mean±std`` per ``k``."""
    summary = summarise_curve(rows, key)
    if not summary:
        raise ValueError("format_curve needs at least one row")
    shots = sorted({s["k"] for s in summary})
    cells = {(s["task"], s["method"], s["k"]): s for s in summary}
    lines_of = list(dict.fromkeys((s["task"], s["method"]) for s in summary))
    width = max(len(f"{t} {m}") for t, m in lines_of)
    header = f"{'task method':<{width}}" + "".join(f"{f'k={k}':>13}" for k in shots)
    lines = [header, "-" * len(header)]
    for task, method in lines_of:
        line = f"{f'{task} {method}':<{width}}"
        for k in shots:
            cell = cells.get((task, method, k))
            text = "" if cell is None else f"{cell['mean']:.3f}±{cell['std']:.3f}"
            line += f"{text:>13}"
        lines.append(line)
    return "\n".join(lines)

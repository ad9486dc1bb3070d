"""Adversarial robustness of a dual encoder's image tower: attacks, evaluation, a
defence.

An *adversarial example* is an input changed by an amount too small to matter to a
person that still changes what the model says (Szegedy et al. 2014). Here the change is
bounded in the L-infinity norm: no pixel moves by more than ``epsilon``. Two attacks
look for the change that most increases a loss:

* **FGSM** (Goodfellow et al. 2015) takes one step of size ``epsilon`` in the direction
  of the sign of the loss's gradient with respect to the pixels: the exact maximiser of
  the loss's first-order (linear) approximation inside the epsilon-ball.
* **PGD** (Madry et al. 2018) takes many smaller signed steps, from a random point of
  the ball, and projects back onto the ball (and the valid pixel range) after each one.

**Pixel range.** ShapesWorld renders images as floats in ``[0, 1]``
(:meth:`crossalign.data.shapes.ShapesWorld.render`) and the data sets hand them to the
model unchanged: the normalisation to ``[-1, 1]`` happens *inside* the image tower
(:meth:`crossalign.models.image_encoders.ImageEncoder.normalize`). The attacks act on
what the model receives, so the valid range is ``clamp=(0.0, 1.0)`` and ``epsilon`` is
in pixel units: ``1/255`` is one step of an 8-bit image. (A pipeline that normalised
the images before the model would need the normalised range, ``((0 - mean) / std, (1 -
mean) / std)`` per channel, and an epsilon divided by ``std``.) The attacks check that
the clean images lie in ``clamp``, which catches a wrong range early.

The losses that the attacks maximise are built by small functions that return a
closure ``loss_fn(images) -> scalar``: :func:`retrieval_loss` (push each image away from
its own captions among candidate caption embeddings), :func:`zero_shot_loss` (the
cross-entropy of the zero-shot logits against the true class,
:mod:`crossalign.zero_shot`) and :func:`clip_attack_loss` (the CLIP loss of a training
batch).
:func:`zero_shot_robustness`, :func:`retrieval_robustness` and the chapter-facing
:func:`robustness_curve` measure accuracy and R@1 on perturbed images for a list of
budgets. The defence is adversarial training (Madry et al. 2018):
:class:`AdversarialTrainingMethod` is an alignment method whose loss is the CLIP loss on
attacked images, so :func:`crossalign.experiments.compare.train_method` trains with it,
and :func:`adversarial_finetune` fine-tunes an already trained model's image tower with
it through the shared loop :func:`crossalign.experiments.compare.optimise`.

The attacks never leave a trace on the model: gradients are taken with
``torch.autograd.grad`` with respect to the images only (no parameter's ``.grad`` is
touched), and the functions that take a model run it in eval mode and restore every
submodule's train/eval flag afterwards (:func:`eval_mode`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.data.batches import EpochBatches
from crossalign.evaluation import embed_texts
from crossalign.experiments.compare import (
    CompareConfig,
    ComparisonData,
    MethodResult,
    evaluate_method,
    make_batch,
    optimise,
)
from crossalign.experiments.methods import AlignmentBatch, AlignmentMethod
from crossalign.losses import clip_loss
from crossalign.metrics import retrieval_metrics
from crossalign.models.dual_encoder import DualEncoder
from crossalign.utils import seed_everything, select_device
from crossalign.zero_shot import (
    ATTRIBUTE_CLASSES,
    ATTRIBUTE_SYNONYMS,
    COLOUR_TEMPLATES,
    SHAPE_TEMPLATES,
    attribute_images,
    class_embeddings,
    zero_shot_predict,
)

__all__ = [
    "ATTACKS",
    "EPSILONS",
    "PIXEL_RANGE",
    "AdversarialTrainingMethod",
    "LossFn",
    "adversarial_finetune",
    "attack_images",
    "clip_attack_loss",
    "default_step_size",
    "eval_mode",
    "fgsm",
    "format_robustness",
    "pgd",
    "retrieval_loss",
    "retrieval_robustness",
    "robustness_curve",
    "zero_shot_loss",
    "zero_shot_robustness",
]

#: A loss to maximise: images ``[B, C, H, W]`` -> a scalar tensor.
LossFn = Callable[[torch.Tensor], torch.Tensor]
#: The attacks :func:`attack_images` knows.
ATTACKS = ("fgsm", "pgd")
#: The range of ShapesWorld pixels as the model receives them (normalisation happens
#: inside the image tower).
PIXEL_RANGE: tuple[float, float] = (0.0, 1.0)
#: Default budgets, in pixel units: 0 (clean) and 1, 2, 4 and 8 levels of an 8-bit
#: image.
EPSILONS: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)


# ---------------------------------------------------------------- argument checks
def _check_number(name: str, value: float, minimum: float, strict: bool) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` unless it is a finite
    number ``>= minimum`` (``> minimum`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    too_small = value <= minimum if strict else value < minimum
    if not math.isfinite(value) or too_small:
        bound = ">" if strict else ">="
        raise ValueError(f"{name}={value} must be finite and {bound} {minimum}")
    return value


def _check_count(name: str, value: int) -> int:
    """``value``, or a ``ValueError`` naming ``name`` unless it is an int ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1")
    return value


def _check_attack(attack: str) -> None:
    if attack not in ATTACKS:
        raise ValueError(f"attack={attack!r} must be one of {ATTACKS}")


def _check_images(
    images: torch.Tensor, clamp: tuple[float, float] | None
) -> torch.Tensor:
    """The clean images, detached; a ``ValueError`` if they are not a floating tensor
    inside ``clamp`` (a clean image outside the range means the range is wrong)."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(
            f"images must be a floating-point tensor, got {type(images).__name__}"
            + (f" of {images.dtype}" if isinstance(images, torch.Tensor) else "")
        )
    if images.numel() == 0:
        raise ValueError("images is empty; give at least one image")
    if clamp is None:
        return images.detach()
    if (
        len(clamp) != 2
        or not all(math.isfinite(float(bound)) for bound in clamp)
        or not clamp[0] < clamp[1]
    ):
        raise ValueError(f"clamp={clamp!r} must be (low, high) with low < high")
    low, high = float(images.min()), float(images.max())
    if low < clamp[0] or high > clamp[1]:
        raise ValueError(
            f"images lie in [{low:.4g}, {high:.4g}], outside clamp={tuple(clamp)}: the "
            "clamp must be the range of the images the model receives (ShapesWorld: "
            "(0, 1))"
        )
    return images.detach()


# ---------------------------------------------------------------- the attacks
def _input_gradient(loss_fn: LossFn, images: torch.Tensor) -> torch.Tensor:
    """The gradient of ``loss_fn`` at ``images`` with respect to the images only.

    ``torch.autograd.grad`` returns the gradient instead of accumulating it, so no
    parameter's ``.grad`` changes. Works inside ``torch.no_grad`` or inference mode too.
    A loss that does not depend on the images has a zero gradient.
    """
    with torch.inference_mode(False), torch.enable_grad():
        point = images.detach().clone().requires_grad_(True)
        loss = loss_fn(point)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else loss
            raise ValueError(
                f"loss_fn must return a scalar tensor, got {shape!r}; reduce it (mean) "
                "over the batch"
            )
        if not loss.requires_grad:
            return torch.zeros_like(point)
        (grad,) = torch.autograd.grad(loss, point, allow_unused=True)
    return torch.zeros_like(point) if grad is None else grad.detach()


def _project(
    images: torch.Tensor,
    clean: torch.Tensor,
    epsilon: float,
    clamp: tuple[float, float] | None,
) -> torch.Tensor:
    """Bring ``images`` back into the epsilon-ball around ``clean`` and into ``clamp``.

    Clean images lie in ``clamp``, so clamping after the ball keeps them in both.
    """
    images = torch.maximum(torch.minimum(images, clean + epsilon), clean - epsilon)
    return images if clamp is None else images.clamp(clamp[0], clamp[1])


def fgsm(
    loss_fn: LossFn,
    images: torch.Tensor,
    epsilon: float,
    clamp: tuple[float, float] | None = PIXEL_RANGE,
) -> torch.Tensor:
    """The fast gradient sign method (Goodfellow et al. 2015): ``clip(x + epsilon *
    sign(grad_x loss))``.

    Maximises ``loss_fn(images)`` to first order inside the L-infinity ball of radius
    ``epsilon``: a linear loss ``w . x`` is maximised exactly by moving every pixel by
    ``epsilon * sign(w)``. Pixels are then clamped to ``clamp``, the range of the images
    the model receives: ``(0, 1)`` for ShapesWorld, whose normalisation happens inside
    the image tower (see the module docstring); ``None`` leaves them unclamped. A pixel
    whose gradient is exactly zero does not move. Returns new, detached images.
    """
    epsilon = _check_number("epsilon", epsilon, 0.0, strict=False)
    clean = _check_images(images, clamp)
    if epsilon == 0:
        return clean.clone()
    moved = clean + epsilon * _input_gradient(loss_fn, clean).sign()
    return moved if clamp is None else moved.clamp(clamp[0], clamp[1])


def pgd(
    loss_fn: LossFn,
    images: torch.Tensor,
    epsilon: float,
    steps: int,
    step_size: float,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    clamp: tuple[float, float] | None = PIXEL_RANGE,
) -> torch.Tensor:
    """Projected gradient descent on the negative loss (Madry et al. 2018), in the
    L-infinity ball.

    Starts at the clean images, or with ``random_start`` at a uniformly random point of
    the ball (drawn from ``generator``, the global torch RNG when ``None``), then
    ``steps`` times: move every pixel by ``step_size * sign(grad)``, project onto the
    ball of radius ``epsilon`` around the clean images, clamp to ``clamp`` (the range of
    the images the model receives: ``(0, 1)`` for ShapesWorld, see :func:`fgsm`).
    Returns the last iterate, detached. One step of size ``epsilon`` without a random
    start is exactly :func:`fgsm`.
    """
    epsilon = _check_number("epsilon", epsilon, 0.0, strict=False)
    steps = _check_count("steps", steps)
    step_size = _check_number("step_size", step_size, 0.0, strict=True)
    clean = _check_images(images, clamp)
    if epsilon == 0:
        return clean.clone()
    if random_start:
        noise = torch.rand(
            clean.shape, generator=generator, device=clean.device, dtype=clean.dtype
        )
        adversarial = _project(clean + (2 * noise - 1) * epsilon, clean, epsilon, clamp)
    else:
        adversarial = clean.clone()
    for _ in range(steps):
        step = step_size * _input_gradient(loss_fn, adversarial).sign()
        adversarial = _project(adversarial + step, clean, epsilon, clamp)
    return adversarial


def default_step_size(epsilon: float, steps: int) -> float:
    """The step size of a ``steps``-step attack of radius ``epsilon``.

    ``2.5 * epsilon / steps`` (Madry et al. 2018: enough to reach the ball's surface
    from any start and move along it); one step from a random start uses ``1.25 *
    epsilon`` (the "fast" FGSM of Wong et al. 2020).
    """
    epsilon = _check_number("epsilon", epsilon, 0.0, strict=False)
    steps = _check_count("steps", steps)
    return 1.25 * epsilon if steps == 1 else 2.5 * epsilon / steps


# ---------------------------------------------------------------- losses to attack
def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _scale(model: DualEncoder, logit_scale: float | None) -> float:
    """The model's learnt logit scale (detached), unless one is given."""
    if logit_scale is None:
        return float(model.logit_scale.detach())
    return _check_number("logit_scale", logit_scale, 0.0, strict=True)


def _embeddings(name: str, embeddings: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """A plain copy of ``[N, D]`` embeddings on the model's device (embeddings made in
    inference mode cannot be saved for backward; a copy can)."""
    if embeddings.dim() != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            f"{name} must be [N, D] with N >= 1, got shape {tuple(embeddings.shape)}"
        )
    with torch.inference_mode(False):
        return embeddings.detach().to(_device(model)).float().clone()


def _check_rows(images: torch.Tensor, rows: int, what: str) -> None:
    if images.shape[0] != rows:
        raise ValueError(
            f"the loss was built for {rows} images ({what}), got {images.shape[0]}"
        )


def retrieval_loss(
    model: DualEncoder,
    text_emb: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: float | None = None,
) -> LossFn:
    """The image->text InfoNCE loss over candidate captions, as a function of the
    images.

    ``text_emb`` ``[T, D]`` are the candidate caption embeddings, ``positives`` ``[B,
    T]`` (bool) marks each image's own captions. With logits ``l = s * <image, text>``
    (``s`` the model's logit scale unless given) the loss of image ``i`` is
    ``logsumexp_j l_ij - logsumexp_{j in P(i)} l_ij``: minus the log of the softmax
    probability of its own captions. With one positive per image it is the
    cross-entropy against the true index. Maximising it pushes each image away from
    its captions and towards the others.
    """
    if positives.dtype != torch.bool or positives.dim() != 2:
        raise ValueError(
            f"positives must be a bool [B, T] mask, got {positives.dtype} of shape "
            f"{tuple(positives.shape)}"
        )
    if positives.shape[1] != text_emb.shape[0]:
        raise ValueError(
            f"positives has {positives.shape[1]} columns but text_emb has "
            f"{text_emb.shape[0]} rows; one column per candidate caption"
        )
    if not bool(positives.any(dim=1).all()):
        raise ValueError("positives: every image needs at least one positive caption")
    texts = _embeddings("text_emb", text_emb, model)
    mask = positives.to(texts.device)
    scale = _scale(model, logit_scale)

    def loss_fn(images: torch.Tensor) -> torch.Tensor:
        _check_rows(images, mask.shape[0], "rows of positives")
        logits = scale * model.encode_image(images).float() @ texts.T
        own = logits.masked_fill(~mask, float("-inf")).logsumexp(dim=1)
        return (logits.logsumexp(dim=1) - own).mean()

    return loss_fn


def zero_shot_loss(
    model: DualEncoder,
    classes: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float | None = None,
) -> LossFn:
    """Cross-entropy of the zero-shot logits ``s * <image, class>`` against the true
    classes.

    ``classes`` ``[C, D]`` from :func:`crossalign.zero_shot.class_embeddings`,
    ``labels`` ``[B]`` the true class indices; ``s`` is the model's logit scale unless
    given (the argmax, hence the accuracy, does not depend on it; the gradient's
    direction does, a little).
    """
    if labels.dim() != 1 or labels.dtype != torch.long:
        raise ValueError(
            f"labels must be a LongTensor [B], got {labels.dtype} of shape "
            f"{tuple(labels.shape)}"
        )
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(
        classes
    ):
        raise ValueError(f"labels must lie in [0, {len(classes) - 1}]")
    prototypes = _embeddings("classes", classes, model)
    targets = labels.to(prototypes.device)
    scale = _scale(model, logit_scale)

    def loss_fn(images: torch.Tensor) -> torch.Tensor:
        _check_rows(images, targets.shape[0], "labels")
        logits = scale * model.encode_image(images).float() @ prototypes.T
        return F.cross_entropy(logits, targets)

    return loss_fn


def clip_attack_loss(model: DualEncoder, text_emb: torch.Tensor) -> LossFn:
    """The symmetric CLIP loss of a batch of matching pairs, as a function of the
    images.

    ``text_emb`` ``[B, D]``: the embeddings of the batch's captions (row ``i`` matches
    image ``i``), held fixed; the model's logit scale, detached. The loss that
    adversarial training attacks.
    """
    texts = _embeddings("text_emb", text_emb, model)
    scale = _scale(model, None)

    def loss_fn(images: torch.Tensor) -> torch.Tensor:
        _check_rows(images, texts.shape[0], "rows of text_emb")
        return clip_loss(model.encode_image(images), texts, scale)

    return loss_fn


# ---------------------------------------------------------------- evaluation
@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore every submodule's own
    train/eval flag.

    Attacks run the model in eval mode: batch norm then uses its running statistics
    (the function that is evaluated) and its forward passes do not update them.
    """
    modes = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for child, training in modes:
            child.training = training


def attack_images(
    model: nn.Module,
    images: torch.Tensor,
    loss_for: Callable[[int, int], LossFn],
    epsilon: float,
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    seed: int = 0,
    batch_size: int = 128,
    clamp: tuple[float, float] | None = PIXEL_RANGE,
) -> torch.Tensor:
    """Adversarial copies of ``images`` (on their own device), ``batch_size`` at a time,
    with ``model`` in eval mode.

    ``loss_for(start, stop)`` builds the loss of images ``start:stop`` (their labels or
    positives). ``attack="fgsm"`` ignores ``steps``, ``step_size`` and
    ``random_start``; PGD's ``step_size`` defaults to :func:`default_step_size` and
    its random starts come from a generator seeded with ``seed``. The images' batch
    rows do not interact (eval mode), so chunking does not change the result.
    """
    _check_attack(attack)
    epsilon = _check_number("epsilon", epsilon, 0.0, strict=False)
    steps = _check_count("steps", steps)
    batch_size = _check_count("batch_size", batch_size)
    clean = _check_images(images, clamp)
    if epsilon == 0:
        return clean.clone()
    step = default_step_size(epsilon, steps) if step_size is None else step_size
    device = _device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    with eval_mode(model):
        for start in range(0, clean.shape[0], batch_size):
            stop = min(start + batch_size, clean.shape[0])
            chunk = clean[start:stop].to(device)
            loss_fn = loss_for(start, stop)
            if attack == "fgsm":
                moved = fgsm(loss_fn, chunk, epsilon, clamp)
            else:
                moved = pgd(
                    loss_fn, chunk, epsilon, steps, step, random_start, generator, clamp
                )
            chunks.append(moved.to(clean.device))
    return torch.cat(chunks)


def _epsilons(epsilons: Sequence[float]) -> list[float]:
    values = [
        _check_number(f"epsilons[{i}]", e, 0.0, strict=False)
        for i, e in enumerate(epsilons)
    ]
    if not values:
        raise ValueError("epsilons is empty; give at least one budget, e.g. (0, 4/255)")
    return values


def zero_shot_robustness(
    model: DualEncoder,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: torch.Tensor,
    epsilons: Sequence[float] = EPSILONS,
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    seed: int = 0,
    batch_size: int = 128,
) -> list[float]:
    """Zero-shot accuracy on images attacked with each budget of ``epsilons``.

    ``images``/``labels`` from :func:`crossalign.zero_shot.attribute_images`,
    ``classes`` from :func:`crossalign.zero_shot.class_embeddings`; the attack
    maximises :func:`zero_shot_loss`. Budget 0 gives the clean accuracy. The model's
    train/eval mode is left as it was.
    """
    values = _epsilons(epsilons)
    accuracies = []
    with eval_mode(model):
        for epsilon in values:
            attacked = attack_images(
                model,
                images,
                lambda start, stop: zero_shot_loss(model, classes, labels[start:stop]),
                epsilon,
                attack,
                steps,
                step_size,
                seed=seed,
                batch_size=batch_size,
            )
            predicted = zero_shot_predict(model, attacked, classes)
            accuracies.append(float((predicted == labels.cpu()).double().mean()))
    return accuracies


@torch.inference_mode()
def _image_embeddings(model: DualEncoder, images: torch.Tensor) -> torch.Tensor:
    device = _device(model)
    return torch.cat(
        [
            model.encode_image(chunk.to(device)).float().cpu()
            for chunk in images.split(256)
        ]
    )


def retrieval_robustness(
    model: DualEncoder,
    images: torch.Tensor,
    text_emb: torch.Tensor,
    text_owner: torch.Tensor,
    epsilons: Sequence[float] = EPSILONS,
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    seed: int = 0,
    batch_size: int = 128,
) -> list[dict[str, float]]:
    """Retrieval metrics (:func:`crossalign.metrics.retrieval_metrics`) of attacked
    images against clean captions, one dict per budget (with its ``"epsilon"``).

    ``images`` ``[N, 3, H, W]``, ``text_emb`` ``[T, D]`` every caption's embedding and
    ``text_owner[j]`` the image of caption ``j`` (``ComparisonData.test_images``,
    embedded ``test_texts``, ``test_owner``). The attack maximises
    :func:`retrieval_loss` over all ``T`` captions with each image's own captions as
    positives, so ``i2t_r1`` is the number to read; ``t2i`` shows what the same
    images do to caption queries.
    """
    values = _epsilons(epsilons)
    owner = torch.as_tensor(text_owner, dtype=torch.long).cpu()
    if owner.dim() != 1 or owner.shape[0] != text_emb.shape[0]:
        raise ValueError(
            f"text_owner must hold one image index per caption ({text_emb.shape[0]}), "
            f"got shape {tuple(owner.shape)}"
        )

    def loss_for(start: int, stop: int) -> LossFn:
        positives = owner[None, :] == torch.arange(start, stop)[:, None]
        return retrieval_loss(model, text_emb, positives)

    rows = []
    with eval_mode(model):
        for epsilon in values:
            attacked = attack_images(
                model,
                images,
                loss_for,
                epsilon,
                attack,
                steps,
                step_size,
                seed=seed,
                batch_size=batch_size,
            )
            metrics = retrieval_metrics(
                _image_embeddings(model, attacked), text_emb.float().cpu(), owner
            )
            rows.append({"epsilon": epsilon, **metrics})
    return rows


def robustness_curve(
    model: DualEncoder,
    data: ComparisonData,
    epsilons: Sequence[float] = EPSILONS,
    attack: str = "pgd",
    steps: int = 5,
    step_size: float | None = None,
    zero_shot_size: int = 100,
    max_len: int | None = None,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Zero-shot colour and shape accuracy and image->text R@1 under attack, one row per
    budget.

    Rows: ``{"epsilon", "colour", "shape", "i2t_r1"}``. Zero-shot: ``zero_shot_size``
    single-object test images per attribute (:func:`attribute_images`, at the size of
    ``data``'s images), classes from the prompt ensembles of
    :mod:`crossalign.zero_shot`. Retrieval: ``data``'s test split, every caption a
    candidate. ``max_len`` is the caption length the model was trained with
    (``CompareConfig.max_len``). Each attack targets its own task's loss.

    The cost is (number of non-zero budgets) x ``steps`` x (``2 * zero_shot_size`` +
    test images) image gradients, each about one training step's image pass; the
    defaults (5 PGD steps, 100 images per attribute) are sized for a CPU chapter, and
    FGSM costs what one PGD step does.
    """
    zero_shot_size = _check_count("zero_shot_size", zero_shot_size)
    device = _device(model)
    image_size = data.test_images.shape[-1]
    rows: list[dict[str, float]] = [{"epsilon": e} for e in _epsilons(epsilons)]
    templates = {"colour": COLOUR_TEMPLATES, "shape": SHAPE_TEMPLATES}
    with eval_mode(model):
        for attribute, names in ATTRIBUTE_CLASSES.items():
            images, labels = attribute_images(
                attribute, size=zero_shot_size, seed=seed, image_size=image_size
            )
            classes = class_embeddings(
                model,
                data.tokenizer,
                names,
                templates[attribute],
                ATTRIBUTE_SYNONYMS[attribute],
                device=device,
            )
            accuracies = zero_shot_robustness(
                model, images, labels, classes, epsilons, attack, steps, step_size, seed
            )
            for row, accuracy in zip(rows, accuracies):
                row[attribute] = accuracy
        text_emb = embed_texts(
            model, data.test_texts, data.tokenizer, device=device, max_len=max_len
        )
        retrieval = retrieval_robustness(
            model,
            data.test_images,
            text_emb,
            data.test_owner,
            epsilons,
            attack,
            steps,
            step_size,
            seed,
        )
    for row, metrics in zip(rows, retrieval):
        row["i2t_r1"] = metrics["i2t_r1"]
    return rows


def format_robustness(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """Robustness curves as a plain-text table: one line per (name, budget), epsilon in
    8-bit levels (``epsilon * 255``), then colour and shape accuracy and i2t R@1."""
    if not curves:
        raise ValueError("format_robustness needs at least one named curve")
    width = max(5, *(len(name) for name in curves))
    header = f"{'model':<{width}}  eps*255  colour   shape  i2t R@1"
    lines = [header, "-" * len(header)]
    for name, rows in curves.items():
        for row in rows:
            lines.append(
                f"{name:<{width}}  {row['epsilon'] * 255:7.1f}  {row['colour']:6.2f}  "
                f"{row['shape']:6.2f}  {row['i2t_r1']:7.2f}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------- the defence
class AdversarialTrainingMethod(AlignmentMethod):
    """Adversarial training (Madry et al. 2018): the CLIP loss on attacked images.

    Each batch's images are replaced by PGD images that maximise the batch's own CLIP
    loss (:func:`clip_attack_loss`, captions held fixed) within ``epsilon``; the model
    then minimises the CLIP loss on them, which trains both towers to agree on images
    that have been pushed as far from their captions as the budget allows. ``steps=1``
    with a random start and step ``1.25 * epsilon`` (the default,
    :func:`default_step_size`) is the "fast" FGSM training of Wong et al. (2020), one
    extra forward and backward pass per step; more steps are a stronger, slower defence.

    The attack runs with the model in eval mode (and the mode restored): batch norm
    then uses its running statistics, so the attack targets the function that is
    evaluated and its forward passes do not move those statistics (in train mode each
    attack step would update them as if the perturbed batch were extra training data).
    Random starts come from the global torch RNG, which ``train_method`` seeds.
    """

    name = "adversarial_training"
    summary = "InfoNCE on PGD-attacked images (adversarial training)"

    def __init__(
        self,
        epsilon: float = 4 / 255,
        steps: int = 1,
        step_size: float | None = None,
        random_start: bool = True,
    ) -> None:
        self.epsilon = _check_number("epsilon", epsilon, 0.0, strict=False)
        self.steps = _check_count("steps", steps)
        self.step_size = (
            default_step_size(self.epsilon, self.steps)
            if step_size is None
            else _check_number("step_size", step_size, 0.0, strict=True)
        )
        self.random_start = random_start

    def perturb(self, model: DualEncoder, batch: AlignmentBatch) -> torch.Tensor:
        """The batch's images attacked on its CLIP loss (detached; model left in its
        mode)."""
        if self.epsilon == 0:
            return batch.images
        with eval_mode(model):
            with torch.no_grad():
                text_emb = model.encode_text(batch.input_ids, batch.attention_mask)
            return pgd(
                clip_attack_loss(model, text_emb),
                batch.images,
                self.epsilon,
                self.steps,
                self.step_size,
                self.random_start,
            )

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """The CLIP loss of the batch with its images replaced by attacked ones."""
        image_emb, text_emb, scale = model(
            self.perturb(model, batch), batch.input_ids, batch.attention_mask
        )
        return clip_loss(image_emb, text_emb, scale)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(epsilon={self.epsilon:.4g}, steps={self.steps}, "
            f"step_size={self.step_size:.4g})"
        )


def _image_tower(model: DualEncoder) -> nn.ModuleDict:
    return nn.ModuleDict(
        {"encoder": model.image_encoder, "projection": model.image_projection}
    )


def adversarial_finetune(
    model: DualEncoder,
    config: CompareConfig,
    data: ComparisonData,
    epsilon: float = 4 / 255,
    steps: int = 60,
    attack_steps: int = 1,
    lr: float = 5e-4,
    image_tower_only: bool = True,
) -> MethodResult:
    """Fine-tune a copy of a trained ``model`` with :class:`AdversarialTrainingMethod`
    for ``steps`` steps.

    Cheaper than adversarial training from scratch (which needs the full budget, at
    ``attack_steps + 1`` times the cost a step): the copy starts aligned and only learns
    to stay so under attack. With ``image_tower_only`` (default) the text tower and the
    temperature are frozen, so caption and class embeddings do not move and any change
    is the image tower's. Batches, optimiser, warm-up cosine schedule and clipping are
    those of ``config`` (:func:`crossalign.experiments.compare.optimise`), with
    ``steps`` steps at learning rate ``lr``. Returns the tuned copy and its clean test
    scores, like ``train_method``; ``model`` itself is not changed.

    Each step costs ``attack_steps + 1`` forward and backward passes of the image
    tower: the default 60 one-step (fast FGSM) steps at batch 128 take about as long
    as 120 steps of plain training, a fraction of training from scratch.
    """
    steps = _check_count("steps", steps)
    lr = _check_number("lr", lr, 0.0, strict=True)
    method = AdversarialTrainingMethod(epsilon, attack_steps)
    device = select_device(config.device)
    tuned = copy.deepcopy(model).to(device)
    frozen = {
        name: parameter
        for name, parameter in tuned.named_parameters()
        if image_tower_only
        and not name.startswith(("image_encoder.", "image_projection."))
    }
    flags = {name: parameter.requires_grad for name, parameter in frozen.items()}
    for parameter in frozen.values():
        parameter.requires_grad_(False)
    train = dataclasses.replace(
        config.experiment().train,
        steps=steps,
        lr=lr,
        warmup_steps=min(config.warmup_steps, steps // 5),
    )
    num_images, captions_per_image = data.train_ids.shape[:2]
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
        batch = make_batch(resident, images, captions, device, None, config.max_len)
        return method.loss(tuned, batch)

    seed_everything(config.seed)
    trainable = _image_tower(tuned) if image_tower_only else tuned
    started = time.perf_counter()
    try:
        losses = optimise(trainable, loss_at, train, device, desc=method.name)
    finally:
        for name, parameter in frozen.items():
            parameter.requires_grad_(flags[name])
    seconds = time.perf_counter() - started
    tuned.eval()
    scores = evaluate_method(tuned, data, device, config.max_len)
    return MethodResult(
        name=method.name, **scores, seconds=seconds, losses=losses, model=tuned
    )

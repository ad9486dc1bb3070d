"""Choosing which negatives to train on, step by step, with a multi-armed bandit.

Hard negatives help a dual encoder learn what in-batch negatives cannot teach: a
relation-swapped caption ("the circle is right of the square" for "... left of ...")
trains word order, an attribute-swapped one (the two objects' colours exchanged)
trains attribute binding. Which of them is worth its cost changes as training goes:
early on every kind of negative helps, later the model may have mastered one swap and
still fail the other. A *multi-armed bandit*, the simplest reinforcement-learning
setting (one state, a few actions, a reward after each), can make that choice online.

**Arms.** Each arm is one kind of negative for the InfoNCE loss (:data:`ARMS`):

=============  ===============================================================
``random``     plain InfoNCE: the other captions of the batch only
``relation``   InfoNCE + each image's relation-swapped caption
``attribute``  InfoNCE + each image's attribute-swapped caption
``both``       InfoNCE + both swaps (the ``hard_negatives`` method of the runner)
=============  ===============================================================

The batches come from :func:`~crossalign.experiments.compare.make_batch` with
``negatives="chosen"`` (column 0 relation swap, column 1 attribute swap, with a
validity mask); an arm keeps its columns and drops the others before they reach the
text tower, so an arm costs only what it uses.

**Rounds and rewards.** Training is cut into rounds of ``round_steps`` steps; the bandit
picks one arm per round and the arm trains for the whole round, so each reward belongs
to exactly one pull. At the start of every round the method scores the model on a small
held-out validation set (:func:`validation_score`, under ``torch.no_grad`` in eval
mode): a weighted mean of three smooth "soft accuracies" in [0, 1] that track the
comparison's columns,

- retrieval: the mean softmax probability of the right caption among the validation
  captions (and of the right image among the images), at the model's temperature;
- relation / attribute: the mean of ``sigmoid(scale * (s(true) - s(swapped)))`` over
  the validation set's swap pairs, a smooth swap accuracy that moves before the 0/1
  accuracy flips.

The change of that score over the round is the arm's *progress*. Progress shrinks as
training goes, for every arm: the rewards drift. :class:`ProgressReward` therefore
rewards progress *beyond* the recent average (an exponential moving average of past
progress), in units of its recent spread, squashed into [0, 1] (0.5 = as good as the
recent rounds). Because the drift is shared by all arms but an arm's merit may change
too, the default bandit is EXP3 (Auer et al. 2002), whose guarantees hold for any
sequence of rewards, even adversarial ones; :class:`DiscountedUCB` (Garivier & Moulines
2011) forgets old rewards instead. Graves et al. (2017) drive a curriculum the same way
(EXP3.S on rescaled learning progress). The reward is myopic: a skill whose score moves
only after many steps of its own negatives (relations, here) earns little while it is
tried now and then, and the bandit may starve it in favour of one that improves at once.

**Cost.** One evaluation encodes the validation images, one caption per image and both
captions of every swap pair of those captions: for the default 64 images about
64 + 2 x 110 captions, forward only. Measured on a CPU at 32 pairs a step, an
evaluation with the swaps of all five captions of 64 images (about 1,150 captions) cost
as much as ten steps of a fixed strategy; hence the defaults, one caption per image and
an evaluation every 10 steps, which make the bandit about a quarter dearer than a fixed
strategy at 32 pairs a step and well under a tenth at 128 (an evaluation does not grow
with the batch). Each evaluation is also one host synchronisation (the score's
``tolist``); a step adds none. Evaluation uses no random numbers
and leaves the model in the mode it found it in; batches come from
:func:`~crossalign.experiments.compare.batch_indices`, seeded by the step alone, so
every strategy sees exactly the same batches. The fixed strategies (always one arm, or
a uniformly random arm per round) run through the same method class and never evaluate.

:func:`run_adaptive_comparison` trains the bandit and the fixed strategies at equal
steps, by default with the scene-graph oracle as the image tower
(:mod:`crossalign.experiments.scene_oracle`): the image side then knows every object's
colour and position, so the question is what the *text* tower learns from each kind of
negative. The text tower is then nearly all the cost of a step: on a CPU budget, cut
the batch (``CompareConfig.batch_size``) before the steps, so that the bandit still gets
enough rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossalign.data.shapes import ShapesWorld
from crossalign.experiments.compare import (
    CompareConfig,
    ComparisonData,
    MethodResult,
    prepare_data,
    train_method,
)
from crossalign.experiments.methods import AlignmentBatch, AlignmentMethod
from crossalign.experiments.scene_oracle import (
    SceneGraphEncoder,
    scene_features,
    with_scene_inputs,
)
from crossalign.losses import clip_loss, clip_loss_with_hard_negatives

if TYPE_CHECKING:
    from crossalign.models.dual_encoder import DualEncoder

__all__ = [
    "ARMS",
    "BANDITS",
    "FIXED_STRATEGIES",
    "SCORE_PARTS",
    "AdaptiveComparison",
    "AdaptiveNegativesMethod",
    "ArmPolicy",
    "BanditRound",
    "DiscountedUCB",
    "Exp3",
    "FixedArm",
    "ProgressReward",
    "SwapTokens",
    "UniformArm",
    "ValidationSet",
    "arm_shares",
    "exp3_probabilities",
    "exp3_update",
    "make_validation_set",
    "negatives_loss",
    "run_adaptive_comparison",
    "validation_score",
]

#: The arms: which hard-negative columns of a "chosen" batch each one keeps
# (column 0 = relation swap, column 1 = attribute swap).
ARMS: dict[str, slice] = {
    "random": slice(0, 0),
    "relation": slice(0, 1),
    "attribute": slice(1, 2),
    "both": slice(0, 2),
}
#: Bandits :func:`run_adaptive_comparison` can train.
BANDITS = ("exp3", "discounted_ucb")
#: Fixed strategies of the comparison: one arm always, or ``uniform`` (a random arm per
# round).
FIXED_STRATEGIES = ("random", "relation", "attribute", "both", "uniform")


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_unit(name: str, value: float, low_open: bool = True) -> float:
    """``value`` as a float in (0, 1] (or [0, 1] with ``low_open=False``)."""
    value = float(value)
    low_ok = value > 0 if low_open else value >= 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


# --------------------------------------------------------------------------- bandits


def exp3_probabilities(weights: np.ndarray, gamma: float) -> np.ndarray:
    """EXP3's distribution: ``(1 - gamma) * w / sum(w) + gamma / K``.

    The ``gamma / K`` floor keeps exploring every arm, which is what makes the
    importance-weighted reward estimate of :func:`exp3_update` bounded.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or len(weights) == 0 or not np.all(weights >= 0):
        raise ValueError(
            f"weights must be a non-empty 1-D array of non-negative numbers, "
            f"got {weights!r}"
        )
    if not weights.sum() > 0:
        raise ValueError("weights must not all be zero")
    gamma = _check_unit("gamma", gamma)
    return (1 - gamma) * weights / weights.sum() + gamma / len(weights)


def exp3_update(
    weights: np.ndarray,
    arm: int,
    reward: float,
    probabilities: np.ndarray,
    eta: float,
    share: float = 0.0,
) -> np.ndarray:
    """One EXP3 weight update after pulling ``arm`` (drawn with ``probabilities``) and
    seeing ``reward`` in [0, 1].

    The reward of the pulled arm is estimated without bias by ``reward / p_arm`` (the
    other arms' estimates are 0), and ``w_arm *= exp(eta * reward / p_arm)``; Auer et
    al. (2002) take ``eta = gamma / K``. With ``share = alpha > 0`` this is EXP3.S (same
    paper): every weight then also gets ``e * alpha / K * sum(w)`` of the old total, so
    no arm is ever written off and the bandit can follow an arm that becomes the best
    later. The result is rescaled to sum to 1 (the probabilities depend only on ratios),
    which keeps long runs from overflowing.
    """
    weights = np.asarray(weights, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = len(weights)
    arm = _check_int("arm", arm, 0)
    if arm >= k:
        raise ValueError(f"arm must be < the number of arms ({k}), got {arm}")
    if probabilities.shape != weights.shape or not probabilities[arm] > 0:
        raise ValueError(
            f"probabilities must have shape {weights.shape} and a positive entry for "
            f"the pulled arm, got {probabilities!r}"
        )
    reward = _check_unit("reward", reward, low_open=False)
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be a positive number, got {eta}")
    if not (math.isfinite(share) and share >= 0):
        raise ValueError(f"share must be >= 0, got {share}")
    updated = weights.copy()
    updated[arm] *= math.exp(eta * reward / probabilities[arm])
    if share:
        updated += math.e * share / k * weights.sum()
    return updated / updated.sum()


class ArmPolicy:
    """Picks one of ``n_arms`` arms per round and learns from a reward in [0, 1].

    Call :meth:`select` for a round's arm, then :meth:`update` with that round's reward.
    The history lists are parallel, one entry per pick: ``arms`` (the arm drawn),
    ``probabilities`` (the distribution it was drawn from) and ``rewards`` (``None``
    until credited). Picks are drawn from a private generator seeded by ``seed``, so the
    same seed and rewards give the same picks, and the global random streams (dropout,
    initialisation) are never touched. ``learns`` is False for policies that ignore
    rewards (those need no evaluation).
    """

    learns = True

    def __init__(self, n_arms: int, seed: int = 0) -> None:
        self.n_arms = _check_int("n_arms", n_arms, 1)
        self.seed = _check_int("seed", seed, 0)
        self._rng = np.random.default_rng(self.seed)
        self.arms: list[int] = []
        self.probabilities: list[np.ndarray] = []
        self.rewards: list[float | None] = []

    def distribution(self) -> np.ndarray:
        """The probabilities of each arm at the next pick."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement distribution()"
        )

    def _learn(self, arm: int, reward: float, probabilities: np.ndarray) -> None:
        """Update the policy's state after ``arm`` earned ``reward``."""

    @property
    def pending(self) -> bool:
        """True while the last pick has not been credited with a reward."""
        return bool(self.rewards) and self.rewards[-1] is None

    def select(self) -> int:
        """Draw the next arm and record the pick."""
        if self.learns and self.pending:
            raise RuntimeError(
                f"{type(self).__name__}: call update(reward) for arm {self.arms[-1]} "
                "before selecting again"
            )
        probabilities = self.distribution()
        arm = int(self._rng.choice(self.n_arms, p=probabilities))
        self.arms.append(arm)
        self.probabilities.append(probabilities)
        self.rewards.append(None)
        return arm

    def update(self, reward: float) -> None:
        """Credit ``reward`` (in [0, 1]) to the arm of the last :meth:`select`."""
        if not self.pending:
            raise RuntimeError(
                f"{type(self).__name__}: update() needs a pick without a reward; call "
                "select() first"
            )
        reward = _check_unit("reward", reward, low_open=False)
        self.rewards[-1] = reward
        self._learn(self.arms[-1], reward, self.probabilities[-1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_arms={self.n_arms}, picks={len(self.arms)})"


class Exp3(ArmPolicy):
    """EXP3 (Auer et al. 2002): exponential weights on importance-weighted rewards,
    mixed with ``gamma`` of uniform exploration.

    Made for adversarial (here: drifting) rewards. ``eta`` is the learning rate of the
    weights; ``None`` takes Auer et al.'s ``gamma / K``, which learns slowly over a
    short run of a few dozen rounds, where a larger ``eta`` lets the weights move
    (Bubeck & Cesa-Bianchi 2012 treat the two separately). ``share > 0`` gives EXP3.S
    (see :func:`exp3_update`).
    """

    def __init__(
        self,
        n_arms: int,
        gamma: float = 0.1,
        eta: float | None = None,
        share: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(n_arms, seed)
        self.gamma = _check_unit("gamma", gamma)
        self.eta = self.gamma / self.n_arms if eta is None else float(eta)
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"eta must be a positive number, got {eta}")
        self.share = float(share)
        if not (math.isfinite(self.share) and self.share >= 0):
            raise ValueError(f"share must be >= 0, got {share}")
        self.weights = np.full(self.n_arms, 1.0 / self.n_arms)

    def distribution(self) -> np.ndarray:
        """:func:`exp3_probabilities` of the current weights."""
        return exp3_probabilities(self.weights, self.gamma)

    def _learn(self, arm: int, reward: float, probabilities: np.ndarray) -> None:
        self.weights = exp3_update(
            self.weights, arm, reward, probabilities, self.eta, self.share
        )


class DiscountedUCB(ArmPolicy):
    """Discounted UCB (Garivier & Moulines 2011): optimism with fading memory.

    Every round multiplies each arm's pull count ``N_i`` and reward sum ``S_i`` by
    ``discount`` before adding the new pull, so a reward seen ``t`` rounds ago weighs
    ``discount ** t``. The arm with the largest ``S_i / N_i + 2 sqrt(xi log(n) / N_i)``
    (``n = sum N_i``; rewards in [0, 1]) is played; arms never played go first, in
    order. Deterministic given the rewards.
    """

    def __init__(
        self, n_arms: int, discount: float = 0.9, xi: float = 0.6, seed: int = 0
    ) -> None:
        super().__init__(n_arms, seed)
        self.discount = _check_unit("discount", discount)
        self.xi = float(xi)
        if not (math.isfinite(self.xi) and self.xi > 0):
            raise ValueError(f"xi must be a positive number, got {xi}")
        self.counts = np.zeros(self.n_arms)
        self.sums = np.zeros(self.n_arms)

    def indices(self) -> np.ndarray:
        """The upper confidence bound of every arm (``inf`` for arms never played)."""
        played = self.counts > 0
        if not played.any():
            return np.full(self.n_arms, np.inf)
        total = self.counts.sum()
        counts = np.where(played, self.counts, 1.0)
        bonus = 2 * np.sqrt(self.xi * max(math.log(total), 0.0) / counts)
        return np.where(played, self.sums / counts + bonus, np.inf)

    def distribution(self) -> np.ndarray:
        """All mass on the arm with the largest index (the first, on ties)."""
        choice = np.zeros(self.n_arms)
        choice[int(np.argmax(self.indices()))] = 1.0
        return choice

    def _learn(self, arm: int, reward: float, probabilities: np.ndarray) -> None:
        self.counts *= self.discount
        self.sums *= self.discount
        self.counts[arm] += 1
        self.sums[arm] += reward


class FixedArm(ArmPolicy):
    """Always the same arm (a fixed strategy of the comparison); ignores rewards."""

    learns = False

    def __init__(self, arm: int, n_arms: int, seed: int = 0) -> None:
        super().__init__(n_arms, seed)
        self.arm = _check_int("arm", arm, 0)
        if self.arm >= self.n_arms:
            raise ValueError(f"arm must be < n_arms={self.n_arms}, got {arm}")

    def distribution(self) -> np.ndarray:
        """All mass on :attr:`arm`."""
        choice = np.zeros(self.n_arms)
        choice[self.arm] = 1.0
        return choice


class UniformArm(ArmPolicy):
    """A uniformly random arm every round (the fixed 1/K mixture); ignores rewards."""

    learns = False

    def distribution(self) -> np.ndarray:
        """``1 / K`` for every arm."""
        return np.full(self.n_arms, 1.0 / self.n_arms)


class ProgressReward:
    """Turns the change of the validation score over a round into a reward in [0, 1].

    ``reward = clip(0.5 + (delta - baseline) / (2 * spread), 0, 1)``, where
    ``baseline`` is an exponential moving average (factor ``decay``) of the past rounds'
    ``delta`` and ``spread`` one of ``|delta - baseline|``: a round that improved the
    score as much as recent rounds did earns 0.5, one that improved it by a typical
    deviation more earns 1. Subtracting the baseline removes the drift every arm shares
    (progress shrinks as the model learns). The first round has nothing to compare with
    and earns 0.5; it only starts the averages.
    """

    def __init__(self, decay: float = 0.8) -> None:
        decay = float(decay)
        if not (math.isfinite(decay) and 0 <= decay < 1):
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.baseline: float | None = None
        self.spread: float = 0.0

    def __call__(self, delta: float) -> float:
        """The reward of a round whose validation score changed by ``delta``."""
        delta = float(delta)
        if not math.isfinite(delta):
            raise ValueError(f"delta must be finite, got {delta}")
        if self.baseline is None:
            self.baseline, self.spread = delta, abs(delta)
            return 0.5
        advantage = delta - self.baseline
        spread = max(self.spread, 1e-12)
        reward = min(max(0.5 + advantage / (2 * spread), 0.0), 1.0)
        self.baseline += (1 - self.decay) * advantage
        self.spread = self.decay * self.spread + (1 - self.decay) * abs(advantage)
        return reward


# ----------------------------------------------------------------------- validation


@dataclass
class SwapTokens:
    """Tokenised swap pairs: validation image index, true caption, swapped caption."""

    images: torch.Tensor
    true_ids: torch.Tensor
    true_attention: torch.Tensor
    swapped_ids: torch.Tensor
    swapped_attention: torch.Tensor

    def to(self, device: torch.device) -> SwapTokens:
        """The same pairs on ``device``."""
        return SwapTokens(*(getattr(self, f.name).to(device) for f in fields(self)))


@dataclass
class ValidationSet:
    """A small held-out set for the bandit's reward, in the image tower's input space.

    ``images`` [V, ...] (pixels, or scene features for the oracle), one caption per
    image (``input_ids``, ``attention_mask`` [V, L]) and the relation- and
    attribute-swap pairs of all their captions.
    """

    images: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    relation: SwapTokens
    attribute: SwapTokens
    _device_copies: dict[str, ValidationSet] = field(
        default_factory=dict, repr=False, compare=False
    )

    def on(self, device: torch.device) -> ValidationSet:
        """This set on ``device`` (copied once and kept)."""
        key = str(device)
        if key not in self._device_copies:
            self._device_copies[key] = ValidationSet(
                self.images.to(device),
                self.input_ids.to(device),
                self.attention_mask.to(device),
                self.relation.to(device),
                self.attribute.to(device),
            )
        return self._device_copies[key]


def _tokenise_pairs(
    world: ShapesWorld,
    swap: Callable[[int, int], str | None],
    captions: int,
    tokenizer,
    max_len: int,
) -> SwapTokens:
    """The swap pairs of the first ``captions`` captions of every image of ``world``."""
    images, true_texts, swapped_texts = [], [], []
    for index in range(len(world)):
        for caption, text in enumerate(world.captions(index)[:captions]):
            twin = swap(index, caption)
            if twin is not None:
                images.append(index)
                true_texts.append(text)
                swapped_texts.append(twin)
    if not images:
        raise ValueError(
            f"the validation split ({len(world)} images, {captions} caption(s) each) "
            f"has no {swap.__name__.replace('_', '-')} pairs; use more validation "
            "images"
        )
    true_ids, true_attention = tokenizer.encode_batch(true_texts, max_len=max_len)
    swapped_ids, swapped_attention = tokenizer.encode_batch(
        swapped_texts, max_len=max_len
    )
    return SwapTokens(
        torch.tensor(images, dtype=torch.long),
        true_ids,
        true_attention,
        swapped_ids,
        swapped_attention,
    )


def make_validation_set(
    world: ShapesWorld,
    tokenizer,
    max_len: int,
    images: torch.Tensor,
    captions: int = 1,
) -> ValidationSet:
    """The :class:`ValidationSet` of ``world`` (use a split the model neither trains nor
    is tested on, e.g. ``"val"``).

    ``images`` are the inputs of the image tower for ``world``'s scenes, one per scene
    (``world.render(...)`` for pixels, :func:`scene_features` for the oracle); the
    retrieval part pairs each with its first caption, the swap parts take the swaps of
    its first ``captions`` captions (more captions: a steadier score, a dearer
    evaluation; every reward evaluation encodes all of them).
    """
    if not isinstance(world, ShapesWorld):
        raise TypeError(f"world must be a ShapesWorld, got {type(world).__name__}")
    if len(images) != len(world):
        raise ValueError(
            f"images must hold one input per scene ({len(world)}), got {len(images)}"
        )
    if len(world) < 2:
        raise ValueError(f"the validation split needs >= 2 images, got {len(world)}")
    captions = _check_int("captions", captions, 1)
    if captions > world.captions_per_image:
        raise ValueError(
            f"captions={captions} exceeds the {world.captions_per_image} captions per "
            "image"
        )
    ids, attention = tokenizer.encode_batch(
        [world.captions(index)[0] for index in range(len(world))], max_len=max_len
    )
    return ValidationSet(
        images=images,
        input_ids=ids,
        attention_mask=attention,
        relation=_tokenise_pairs(
            world, world.relation_swap, captions, tokenizer, max_len
        ),
        attribute=_tokenise_pairs(
            world, world.attribute_swap, captions, tokenizer, max_len
        ),
    )


#: Components of :func:`validation_score`, in the order of ``score_weights``.
SCORE_PARTS = ("retrieval", "relation", "attribute")


def _check_weights(weights: Sequence[float]) -> list[float]:
    """``weights`` as three floats, or a ``ValueError``."""
    values = [float(w) for w in weights]
    if (
        len(values) != len(SCORE_PARTS)
        or not all(math.isfinite(w) and w >= 0 for w in values)
        or sum(values) <= 0
    ):
        raise ValueError(
            f"score_weights must be three non-negative numbers {SCORE_PARTS} with a "
            f"positive sum, got {tuple(weights)}"
        )
    return values


def _soft_swap(
    model: DualEncoder, image_emb: torch.Tensor, pairs: SwapTokens, scale
) -> torch.Tensor:
    true_emb = model.encode_text(pairs.true_ids, pairs.true_attention)
    swapped_emb = model.encode_text(pairs.swapped_ids, pairs.swapped_attention)
    images = image_emb[pairs.images]
    margin = (images * true_emb).sum(dim=1) - (images * swapped_emb).sum(dim=1)
    return torch.sigmoid(scale * margin).mean()


def validation_score(
    model: DualEncoder,
    validation: ValidationSet,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, float]:
    """Soft retrieval, relation- and attribute-swap accuracies of ``model`` on
    ``validation``, and their weighted mean ``"score"``.

    All in [0, 1], computed under ``torch.no_grad`` in eval mode at the model's
    temperature (see the module docstring); the model is put back in the mode it was
    in, and no random number is drawn. One host synchronisation.
    """
    weight_list = _check_weights(weights)
    device = next(model.parameters()).device
    data = validation.on(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            image_emb = model.encode_image(data.images)
            text_emb = model.encode_text(data.input_ids, data.attention_mask)
            scale = model.logit_scale
            logits = scale * image_emb @ text_emb.T
            retrieval = (
                F.softmax(logits, dim=1).diagonal().mean()
                + F.softmax(logits, dim=0).diagonal().mean()
            ) / 2
            parts = torch.stack(
                [
                    retrieval,
                    _soft_swap(model, image_emb, data.relation, scale),
                    _soft_swap(model, image_emb, data.attribute, scale),
                ]
            ).double()
            values = parts.cpu().tolist()
    finally:
        model.train(was_training)
    scores = dict(zip(SCORE_PARTS, values, strict=True))
    scores["score"] = sum(
        w * v for w, v in zip(weight_list, values, strict=True)
    ) / sum(weight_list)
    return scores


# --------------------------------------------------------------------------- method


def negatives_loss(model: DualEncoder, batch: AlignmentBatch, arm: str) -> torch.Tensor:
    """The InfoNCE loss of ``batch`` with the hard negatives of ``arm`` (see
    :data:`ARMS`).

    ``"random"`` is the plain CLIP loss (the negatives are not encoded at all); the
    other arms keep their columns of the batch's ``[B, 2]`` negatives, with their
    validity mask, and drop the rest before the text tower.
    """
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {tuple(ARMS)}, got {arm!r}")
    image_emb, text_emb, scale = model(
        batch.images, batch.input_ids, batch.attention_mask
    )
    columns = ARMS[arm]
    if columns.stop == columns.start:
        return clip_loss(image_emb, text_emb, scale)
    if (
        batch.negative_ids is None
        or batch.negative_attention is None
        or batch.negative_valid is None
    ):
        raise ValueError(
            f"arm {arm!r} needs negative_ids, negative_attention and negative_valid in "
            "the batch (make_batch with negatives='chosen')"
        )
    if batch.negative_ids.shape[1] != 2:
        raise ValueError(
            "the batch must hold the two 'chosen' negatives per image (relation, "
            f"attribute), got {batch.negative_ids.shape[1]}"
        )
    ids = batch.negative_ids[:, columns]
    attention = batch.negative_attention[:, columns]
    size, k, length = ids.shape
    negatives = model.encode_text(
        ids.reshape(size * k, length), attention.reshape(size * k, length)
    )
    return clip_loss_with_hard_negatives(
        image_emb,
        text_emb,
        negatives.reshape(size, k, -1),
        scale,
        negative_mask=batch.negative_valid[:, columns],
    )


@dataclass
class BanditRound:
    """One round: its first step, the arm picked, the distribution it was drawn from,
    the validation scores at its start (``None`` without evaluation) and the reward it
    was credited with (``None`` for the last round, or without evaluation)."""

    start: int
    arm: str
    probabilities: tuple[float, ...]
    scores: dict[str, float] | None = None
    reward: float | None = None


class AdaptiveNegativesMethod(AlignmentMethod):
    """InfoNCE whose hard negatives are chosen per round of ``round_steps`` steps by
    ``policy``.

    :meth:`loss` asks the policy for an arm at the start of every round and trains on
    that arm's negatives (:func:`negatives_loss`) for the round. A learning policy
    (``policy.learns``) needs ``validation``: at each round's start the model is scored
    (:func:`validation_score`) and the previous round's arm is credited with
    ``reward(score change)`` (:class:`ProgressReward`). The state (step counter,
    ``picks``: the arm of every step, ``rounds``) belongs to one training run: use a new
    method per run.
    """

    hard_negatives = "chosen"

    def __init__(
        self,
        policy: ArmPolicy,
        arms: Sequence[str] = tuple(ARMS),
        round_steps: int = 10,
        validation: ValidationSet | None = None,
        reward: ProgressReward | None = None,
        score_weights: Sequence[float] = (1.0, 1.0, 1.0),
        name: str = "adaptive",
    ) -> None:
        if not isinstance(policy, ArmPolicy):
            raise TypeError(f"policy must be an ArmPolicy, got {type(policy).__name__}")
        self.arms = tuple(arms)
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError(
                f"arms must be distinct names from {tuple(ARMS)}, got {self.arms}"
            )
        if policy.n_arms != len(self.arms):
            raise ValueError(
                f"policy.n_arms={policy.n_arms} must equal the number of arms "
                f"({len(self.arms)}: {self.arms})"
            )
        if policy.learns and validation is None:
            raise ValueError(
                f"{type(policy).__name__} learns from rewards: pass validation= "
                "(make_validation_set)"
            )
        self.policy = policy
        self.round_steps = _check_int("round_steps", round_steps, 1)
        self.validation = validation
        self.reward = reward or ProgressReward()
        self.score_weights = tuple(_check_weights(score_weights))
        self.name = name
        self.summary = f"InfoNCE + negatives chosen by {type(policy).__name__}"
        self.step = 0
        self.picks: list[str] = []
        self.rounds: list[BanditRound] = []
        self._arm = self.arms[0]
        self._last_score: float | None = None

    def _start_round(self, model: DualEncoder) -> None:
        """Credit the finished round (learning policies) and pick the next arm."""
        scores = None
        if self.policy.learns:
            assert self.validation is not None
            scores = validation_score(model, self.validation, self.score_weights)
            if self._last_score is not None:
                reward = self.reward(scores["score"] - self._last_score)
                self.policy.update(reward)
                self.rounds[-1].reward = reward
            self._last_score = scores["score"]
        index = self.policy.select()
        self._arm = self.arms[index]
        self.rounds.append(
            BanditRound(
                start=self.step,
                arm=self._arm,
                probabilities=tuple(float(p) for p in self.policy.probabilities[-1]),
                scores=scores,
            )
        )

    def loss(
        self,
        model: DualEncoder,
        batch: AlignmentBatch,
        auxiliary: nn.Module | None = None,
    ) -> torch.Tensor:
        """The loss of this step's arm on ``batch`` (a round's first step also
        evaluates and picks)."""
        if self.step % self.round_steps == 0:
            self._start_round(model)
        self.picks.append(self._arm)
        self.step += 1
        return negatives_loss(model, batch, self._arm)


def arm_shares(
    picks: Sequence[str], arms: Sequence[str], parts: int = 4
) -> list[dict[str, float]]:
    """The share of each arm among ``picks`` in ``parts`` consecutive, nearly equal
    stretches (quarters by default): how the bandit's choice moved over training."""
    parts = _check_int("parts", parts, 1)
    if parts > len(picks):
        raise ValueError(f"parts={parts} exceeds the number of picks ({len(picks)})")
    unknown = sorted(set(picks) - set(arms))
    if unknown:
        raise ValueError(
            f"picks hold arms {unknown} that are not in arms={tuple(arms)}"
        )
    shares = []
    for chunk in np.array_split(np.asarray(picks, dtype=object), parts):
        shares.append({arm: float(np.mean(chunk == arm)) for arm in arms})
    return shares


# ----------------------------------------------------------------------- comparison


@dataclass
class AdaptiveComparison:
    """The bandit and the fixed strategies at equal steps.

    ``results``: one :class:`~crossalign.experiments.compare.MethodResult` per strategy,
    the bandit first (``format_table`` prints them); ``picks``: the bandit's arm at
    every step; ``rounds``: its rounds (arm, probabilities, validation scores, reward).
    """

    results: list[MethodResult]
    arms: tuple[str, ...]
    picks: list[str]
    rounds: list[BanditRound]

    def rows(self) -> list[dict[str, float | str]]:
        """Per strategy: name, relation- and attribute-swap accuracy, R@1 both ways,
        training seconds."""
        return [
            {
                "strategy": result.name,
                "relation_swap": result.relation_swap,
                "attribute_swap": result.attribute_swap,
                "i2t_r1": result.retrieval["i2t_r1"],
                "t2i_r1": result.retrieval["t2i_r1"],
                "seconds": result.seconds,
            }
            for result in self.results
        ]

    def shares(self, parts: int = 4) -> list[dict[str, float]]:
        """The bandit's arm shares per stretch of training (:func:`arm_shares`)."""
        return arm_shares(self.picks, self.arms, parts)


def _make_policy(
    strategy: str, arms: tuple[str, ...], gamma: float, eta: float | None, seed: int
) -> ArmPolicy:
    if strategy == "exp3":
        return Exp3(len(arms), gamma=gamma, eta=eta, seed=seed)
    if strategy == "discounted_ucb":
        return DiscountedUCB(len(arms), seed=seed)
    if strategy == "uniform":
        return UniformArm(len(arms), seed=seed)
    if strategy in arms:
        return FixedArm(arms.index(strategy), len(arms), seed=seed)
    raise ValueError(
        f"strategy {strategy!r} is neither a bandit {BANDITS}, 'uniform', nor one of "
        f"the arms {arms}"
    )


def _scene_oracle_trainer(
    config: CompareConfig, data: ComparisonData
) -> Callable[[AlignmentMethod], MethodResult]:
    """A function training a method as
    :func:`~crossalign.experiments.scene_oracle.train_with_scene_oracle` does, with the
    scene features computed once for all the methods (about a second per 3,000 scenes
    that every call of that function would spend again)."""
    scenes = with_scene_inputs(config, data, scene_features)
    out_dim = config.experiment().model.image_kwargs.get("out_dim", 256)

    def train(method: AlignmentMethod) -> MethodResult:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            encoder = SceneGraphEncoder(out_dim=out_dim)
        result = train_method(method, config, scenes, image_encoder=encoder)
        if data.negatives is None:
            # keep the tokenised swaps for the caller's next run
            data.negatives = scenes.negatives
        return result

    return train


def _image_trainer(
    config: CompareConfig,
    data: ComparisonData,
    image_encoder_factory: Callable[[], nn.Module] | None,
) -> Callable[[AlignmentMethod], MethodResult]:
    """A function training a method on the pixels, with the runner's image tower or a
    fresh ``image_encoder_factory()`` built under ``config.seed``."""

    def train(method: AlignmentMethod) -> MethodResult:
        encoder = None
        if image_encoder_factory is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                encoder = image_encoder_factory()
        return train_method(method, config, data, image_encoder=encoder)

    return train


def run_adaptive_comparison(
    config: CompareConfig,
    data: ComparisonData | None = None,
    image_encoder_factory: Callable[[], nn.Module] | None = None,
    *,
    scene_oracle: bool = True,
    bandit: str = "exp3",
    fixed: Sequence[str] = FIXED_STRATEGIES,
    arms: Sequence[str] = tuple(ARMS),
    round_steps: int = 10,
    gamma: float = 0.2,
    eta: float | None = 0.3,
    validation_size: int = 64,
    validation_captions: int = 1,
    score_weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> AdaptiveComparison:
    """Train the ``bandit`` and each ``fixed`` strategy for ``config.steps`` steps on
    the same batches, and score them on the test split.

    Image tower: with ``scene_oracle=True`` (default) the Deep Sets scene-graph oracle,
    exactly as :func:`~crossalign.experiments.scene_oracle.train_with_scene_oracle`
    builds it (so what differs between rows is what the text tower learnt); otherwise
    ``image_encoder_factory()`` (called under ``config.seed`` for every run, so all
    start alike) or, when that is ``None``, the runner's default pixel tower. The
    bandit's reward is measured on ``validation_size`` images of the ``"val"`` split
    (never the test split) and the swaps of their first ``validation_captions``
    captions. ``gamma``/``eta`` configure EXP3 (``eta=None``: Auer et
    al.'s ``gamma / K``, too slow for a few dozen rounds); rounds last ``round_steps``
    steps for every strategy.
    """
    if bandit not in BANDITS:
        raise ValueError(f"bandit must be one of {BANDITS}, got {bandit!r}")
    arms = tuple(arms)
    for strategy in fixed:
        if strategy != "uniform" and strategy not in arms:
            raise ValueError(
                f"fixed strategy {strategy!r} must be 'uniform' or one of arms={arms}"
            )
    if scene_oracle and image_encoder_factory is not None:
        raise ValueError(
            "scene_oracle=True builds its own image tower; pass "
            "image_encoder_factory only with scene_oracle=False"
        )
    _check_int("validation_size", validation_size, 2)
    data = data or prepare_data(config)
    world = ShapesWorld(
        "val", size=validation_size, image_size=config.image_size, seed=config.seed
    )
    images = scene_features(world) if scene_oracle else world.render(range(len(world)))
    validation = make_validation_set(
        world, data.tokenizer, config.max_len, images, captions=validation_captions
    )
    train = (
        _scene_oracle_trainer(config, data)
        if scene_oracle
        else _image_trainer(config, data, image_encoder_factory)
    )
    results, bandit_method = [], None
    for strategy in [bandit, *fixed]:
        learns = strategy in BANDITS
        method = AdaptiveNegativesMethod(
            _make_policy(strategy, arms, gamma, eta, config.seed),
            arms=arms,
            round_steps=round_steps,
            validation=validation if learns else None,
            score_weights=score_weights,
            name=strategy if learns else f"fixed {strategy}",
        )
        results.append(train(method))
        if learns:
            bandit_method = method
    assert bandit_method is not None
    return AdaptiveComparison(
        results=results,
        arms=arms,
        picks=list(bandit_method.picks),
        rounds=list(bandit_method.rounds),
    )

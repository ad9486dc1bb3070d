"""The negatives bandit: EXP3 and discounted UCB against their closed-form updates, the
arms' losses against the runner's own methods, the reward bookkeeping, and the
comparison on a tiny budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossalign.data.shapes import ShapesWorld
from crossalign.evaluation import embed_texts
from crossalign.experiments.adaptive import (
    ARMS,
    AdaptiveNegativesMethod,
    DiscountedUCB,
    Exp3,
    FixedArm,
    ProgressReward,
    UniformArm,
    arm_shares,
    exp3_probabilities,
    exp3_update,
    make_validation_set,
    run_adaptive_comparison,
    validation_score,
)
from crossalign.experiments.compare import (
    CompareConfig,
    batch_indices,
    make_batch,
    prepare_data,
)
from crossalign.experiments.methods import HardNegativeMethod, InfoNCEMethod
from crossalign.experiments.scene_oracle import (
    SceneGraphEncoder,
    scene_features,
    train_with_scene_oracle,
)
from crossalign.train.trainer import build_model
from crossalign.utils import seed_everything

TINY = CompareConfig.fast(train_size=64, test_size=16, steps=3, batch_size=16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared CPU: one intra-op thread is several times faster than
    two threads fighting the other processes for the cores (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return prepare_data(TINY)


@pytest.fixture(scope="module")
def world():
    return ShapesWorld("val", size=24, image_size=TINY.image_size, seed=0)


@pytest.fixture(scope="module")
def validation(data, world):
    return make_validation_set(
        world, data.tokenizer, TINY.max_len, scene_features(world), captions=2
    )


@pytest.fixture()
def model(data):
    seed_everything(0)
    return build_model(TINY.experiment(), data.tokenizer).eval()


@pytest.fixture()
def oracle_model(data):
    """The tiny model with the scene-graph oracle as its image tower (reads
    ``validation``)."""
    seed_everything(0)
    model = build_model(TINY.experiment(), data.tokenizer)
    model.image_encoder = SceneGraphEncoder(out_dim=model.image_encoder.out_dim)
    return model.eval()


@pytest.fixture()
def batch(data):
    images, captions = batch_indices(64, 16, 5, seed=0, step=0)
    return make_batch(
        data, images, captions, torch.device("cpu"), "chosen", TINY.max_len
    )


# ------------------------------------------------------------------------- EXP3


def test_exp3_follows_the_closed_form_update_step_by_step():
    # K = 3, gamma = 0.3, eta = gamma / K = 0.1 (Auer et al. 2002)
    gamma, eta = 0.3, 0.1
    w = np.ones(3) / 3
    p0 = exp3_probabilities(w, gamma)
    assert np.allclose(p0, [1 / 3, 1 / 3, 1 / 3])
    # step 1: arm 0, reward 1 -> w0 *= exp(0.1 * 1 / (1/3)) = exp(0.3)
    w = exp3_update(w, 0, 1.0, p0, eta)
    p1 = exp3_probabilities(w, gamma)
    total = math.exp(0.3) + 2
    assert np.allclose(
        p1, [0.7 * math.exp(0.3) / total + 0.1, 0.7 / total + 0.1, 0.7 / total + 0.1]
    )
    assert np.allclose(p1, [0.382072, 0.308964, 0.308964], atol=1e-6)  # by hand
    # step 2: arm 2, reward 0.5 -> w2 *= exp(0.1 * 0.5 / p1[2])
    w = exp3_update(w, 2, 0.5, p1, eta)
    p2 = exp3_probabilities(w, gamma)
    raw = np.array([math.exp(0.3), 1.0, math.exp(0.05 / 0.308964)])
    assert np.allclose(p2, 0.7 * raw / raw.sum() + 0.1, atol=1e-6)
    # step 3: arm 1, reward 0 -> nothing changes
    w3 = exp3_update(w, 1, 0.0, p2, eta)
    assert np.allclose(exp3_probabilities(w3, gamma), p2)
    # EXP3.S: every weight also gets e * alpha / K of the old total
    shared = exp3_update(np.array([0.5, 0.25, 0.25]), 1, 1.0, p0, eta, share=0.03)
    raw = np.array([0.5, 0.25 * math.exp(0.3), 0.25]) + math.e * 0.01 * 1.0
    assert np.allclose(shared, raw / raw.sum())


def test_exp3_class_replays_the_formula_and_keeps_its_floor():
    policy = Exp3(4, gamma=0.2, eta=0.5, seed=3)
    rng = np.random.default_rng(7)
    weights = np.ones(4) / 4
    for _ in range(200):
        arm = policy.select()
        p = policy.probabilities[-1]
        assert np.allclose(p, exp3_probabilities(weights, 0.2))
        assert math.isclose(p.sum(), 1.0) and np.all(p >= 0.2 / 4 - 1e-12)
        reward = float(rng.random())
        policy.update(reward)
        weights = exp3_update(weights, arm, reward, p, 0.5)
    assert policy.rewards[-1] == reward and len(policy.arms) == 200


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exp3_learns_the_arm_that_is_always_better(seed):
    policy = Exp3(3, gamma=0.1, seed=seed)  # Auer's eta = gamma / K
    for _ in range(300):
        arm = policy.select()
        policy.update(0.9 if arm == 1 else 0.1)
    late = np.array(policy.arms[-100:])
    assert np.mean(late == 1) > 0.6  # 1/K = 0.33 for a policy that learnt nothing
    assert policy.distribution()[1] > 0.8


def test_same_seed_same_picks_and_the_seed_matters():
    def picks(seed):
        policy = Exp3(4, gamma=0.5, seed=seed)
        for step in range(60):
            policy.update(float(policy.select() == step % 4))
        return policy.arms

    assert picks(5) == picks(5)
    assert picks(5) != picks(6)


def test_policies_validate_their_arguments_and_call_order():
    with pytest.raises(ValueError, match="gamma"):
        Exp3(3, gamma=0.0)
    with pytest.raises(ValueError, match="n_arms"):
        Exp3(0)
    with pytest.raises(ValueError, match="eta"):
        Exp3(3, eta=-1.0)
    with pytest.raises(ValueError, match="share"):
        Exp3(3, share=-0.1)
    with pytest.raises(ValueError, match="discount"):
        DiscountedUCB(3, discount=1.5)
    with pytest.raises(ValueError, match="arm"):
        FixedArm(3, 3)
    policy = Exp3(3)
    with pytest.raises(RuntimeError, match="select"):
        policy.update(0.5)
    policy.select()
    with pytest.raises(RuntimeError, match="update"):
        policy.select()
    with pytest.raises(ValueError, match="reward"):
        policy.update(1.5)
    fixed = FixedArm(2, 3)
    assert [fixed.select() for _ in range(4)] == [2, 2, 2, 2]  # needs no rewards
    uniform = UniformArm(4, seed=0)
    counts = np.bincount([uniform.select() for _ in range(400)], minlength=4)
    assert counts.min() > 60 and not uniform.learns


# ---------------------------------------------------------------- discounted UCB


def test_discounted_ucb_tries_every_arm_then_follows_its_index():
    policy = DiscountedUCB(3, discount=0.5, xi=0.6)
    for expected, reward in zip([0, 1, 2], [0.2, 1.0, 0.4]):
        assert policy.select() == expected
        policy.update(reward)
    # after three pulls: N = [0.25, 0.5, 1], S = [0.05, 0.5, 0.4]
    assert np.allclose(policy.counts, [0.25, 0.5, 1.0])
    assert np.allclose(policy.sums, [0.05, 0.5, 0.4])
    n = 1.75
    index = [
        s / c + 2 * math.sqrt(0.6 * math.log(n) / c)
        for s, c in zip([0.05, 0.5, 0.4], [0.25, 0.5, 1.0])
    ]
    assert np.allclose(policy.indices(), index)
    assert policy.select() == int(np.argmax(index))


def test_discounted_ucb_prefers_the_better_arm():
    policy = DiscountedUCB(3, discount=0.99)  # memory of ~100 pulls
    for _ in range(300):
        policy.update(0.9 if policy.select() == 2 else 0.3)
    assert np.mean(np.array(policy.arms[-100:]) == 2) > 0.6


# ------------------------------------------------------------------ the arms' losses


def test_fixed_random_is_infonce_and_fixed_both_is_hard_negatives(model, batch):
    random_arm = AdaptiveNegativesMethod(FixedArm(0, 4))
    both_arm = AdaptiveNegativesMethod(FixedArm(3, 4))
    assert random_arm.arms[0] == "random" and both_arm.arms[3] == "both"
    assert torch.allclose(
        random_arm.loss(model, batch), InfoNCEMethod().loss(model, batch), atol=1e-6
    )
    assert torch.allclose(
        both_arm.loss(model, batch), HardNegativeMethod("chosen").loss(model, batch)
    )
    assert random_arm.picks == ["random"] and both_arm.picks == ["both"]


def test_an_arm_ignores_the_other_columns_negatives(model, batch, data):
    relation = AdaptiveNegativesMethod(FixedArm(1, 4))
    before = relation.loss(model, batch)
    tampered = make_batch(
        data, *batch_indices(64, 16, 5, 0, 0), torch.device("cpu"), "chosen", 40
    )
    tampered.negative_ids[:, 1] = torch.randint(
        4, 20, tampered.negative_ids[:, 1].shape
    )
    tampered.negative_attention[:, 1] = True
    tampered.negative_valid[:, 1] = True
    assert torch.equal(relation.loss(model, tampered), before)
    # ... and equals the full method with the attribute column marked invalid
    masked = make_batch(
        data, *batch_indices(64, 16, 5, 0, 0), torch.device("cpu"), "chosen", 40
    )
    masked.negative_valid[:, 1] = False
    assert torch.allclose(before, HardNegativeMethod("chosen").loss(model, masked))
    # whereas the relation negatives do count
    tampered.negative_ids[:, 0] = tampered.negative_ids[:, 0].roll(1, dims=0)
    assert not torch.allclose(relation.loss(model, tampered), before)


def test_the_method_validates_its_arguments(validation):
    with pytest.raises(ValueError, match="validation"):
        AdaptiveNegativesMethod(Exp3(4))
    with pytest.raises(ValueError, match="n_arms"):
        AdaptiveNegativesMethod(Exp3(3), validation=validation)
    with pytest.raises(ValueError, match="arms"):
        AdaptiveNegativesMethod(FixedArm(0, 2), arms=("random", "colour"))
    with pytest.raises(ValueError, match="round_steps"):
        AdaptiveNegativesMethod(FixedArm(0, 4), round_steps=0)
    with pytest.raises(ValueError, match="score_weights"):
        AdaptiveNegativesMethod(FixedArm(0, 4), score_weights=(1, -1, 1))
    assert set(ARMS) == {"random", "relation", "attribute", "both"}


def test_validation_set_checks_its_inputs(data, world):
    features = scene_features(world)
    with pytest.raises(ValueError, match="captions"):
        make_validation_set(world, data.tokenizer, 40, features, captions=6)
    with pytest.raises(ValueError, match="one input per scene"):
        make_validation_set(world, data.tokenizer, 40, features[:-1])
    one = make_validation_set(world, data.tokenizer, 40, features, captions=1)
    assert len(one.input_ids) == len(world)
    # the swaps of the first caption only: at most one pair per image
    assert len(one.relation.images) == len(set(one.relation.images.tolist()))


# ---------------------------------------------------------- validation and rewards


def test_validation_score_matches_an_independent_computation(
    oracle_model, validation, world, data
):
    model = oracle_model
    model.train()
    rng_before = torch.get_rng_state()
    scores = validation_score(model, validation, weights=(1.0, 2.0, 1.0))
    assert model.training  # mode restored
    assert torch.equal(torch.get_rng_state(), rng_before)  # no random numbers drawn
    model.eval()
    validation_score(model, validation)
    assert not model.training
    with torch.no_grad():
        images = model.encode_image(scene_features(world))
        captions = [world.captions(i)[0] for i in range(len(world))]
        text = embed_texts(model, captions, data.tokenizer, max_len=TINY.max_len)
        logits = model.logit_scale * images @ text.T
        labels = torch.arange(len(world))
        retrieval = (
            torch.exp(-F.cross_entropy(logits, labels, reduction="none")).mean()
            + torch.exp(-F.cross_entropy(logits.T, labels, reduction="none")).mean()
        ) / 2
    assert math.isclose(scores["retrieval"], float(retrieval), rel_tol=1e-5)
    for part in ("relation", "attribute"):
        assert 0.0 < scores[part] < 1.0
    expected = (scores["retrieval"] + 2 * scores["relation"] + scores["attribute"]) / 4
    assert math.isclose(scores["score"], expected)


def test_swap_parts_match_two_way_softmax_on_embedded_strings(
    oracle_model, validation, data, world
):
    model = oracle_model
    scores = validation_score(model, validation)
    with torch.no_grad():
        image_emb = model.encode_image(scene_features(world))
        for part, swap in (
            ("relation", world.relation_swap),
            ("attribute", world.attribute_swap),
        ):
            rows, true_texts, swapped_texts = [], [], []
            for index in range(len(world)):
                for caption, text in enumerate(world.captions(index)[:2]):
                    twin = swap(index, caption)
                    if twin is not None:
                        rows.append(index)
                        true_texts.append(text)
                        swapped_texts.append(twin)
            true_emb = embed_texts(
                model, true_texts, data.tokenizer, max_len=TINY.max_len
            )
            swapped_emb = embed_texts(
                model, swapped_texts, data.tokenizer, max_len=TINY.max_len
            )
            u = image_emb[rows]
            logits = model.logit_scale * torch.stack(
                [(u * true_emb).sum(1), (u * swapped_emb).sum(1)], dim=1
            )
            expected = F.softmax(logits, dim=1)[:, 0].mean()
            assert math.isclose(scores[part], float(expected), rel_tol=1e-5)


def test_progress_reward_closed_form():
    reward = ProgressReward(decay=0.5)
    assert reward(0.2) == 0.5  # nothing to compare with yet
    # baseline 0.2, spread 0.2: advantage 0.1 -> 0.5 + 0.1 / 0.4
    assert math.isclose(reward(0.3), 0.75)
    # baseline 0.25, spread 0.15: advantage -0.15 -> 0.5 - 0.5, clipped at 0
    assert math.isclose(reward(0.1), 0.0, abs_tol=1e-12)
    assert math.isclose(reward.baseline, 0.175) and math.isclose(reward.spread, 0.15)
    with pytest.raises(ValueError, match="decay"):
        ProgressReward(decay=1.0)


class RecordingExp3(Exp3):
    """EXP3 that notes which arm every reward was credited to."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.credited: list[tuple[int, float]] = []

    def _learn(self, arm, reward, probabilities):
        self.credited.append((arm, reward))
        super()._learn(arm, reward, probabilities)


class RecordingMethod(AdaptiveNegativesMethod):
    """Notes the captions of every batch it is given, and the model's mode when the
    step's loss is computed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[torch.Tensor] = []
        self.training: list[bool] = []

    def loss(self, model, batch, auxiliary=None):
        self.seen.append(batch.input_ids.clone())
        loss = super().loss(model, batch, auxiliary)
        self.training.append(model.training)
        return loss


def test_rewards_go_to_the_arms_pulled_and_batches_are_unchanged(data, validation):
    config = CompareConfig.fast(train_size=64, test_size=16, steps=7, batch_size=16)
    policy = RecordingExp3(4, gamma=0.5, eta=1.0, seed=1)
    method = RecordingMethod(policy, round_steps=2, validation=validation)
    train_with_scene_oracle(method, config, data)
    arms = [method.arms[a] for a in policy.arms]
    assert len(arms) == 4  # rounds start at steps 0, 2, 4, 6
    assert method.picks == [arms[0]] * 2 + [arms[1]] * 2 + [arms[2]] * 2 + [arms[3]]
    assert [r.start for r in method.rounds] == [0, 2, 4, 6]
    # rounds 0-2 were credited at the next round's start; the last one never is
    assert [arm for arm, _ in policy.credited] == policy.arms[:3]
    assert policy.rewards[3] is None and method.rounds[3].reward is None
    replay = ProgressReward()
    scores = [r.scores["score"] for r in method.rounds]
    expected = [replay(b - a) for a, b in zip(scores, scores[1:])]
    assert [r for _, r in policy.credited] == expected
    assert [r.reward for r in method.rounds[:3]] == expected
    assert len(set(scores)) > 1  # the model did train between evaluations
    # every training step ran in train mode, also right after an evaluation
    assert method.training == [True] * 7
    # the same batches as a strategy that never evaluates, and as batch_indices says
    plain = RecordingMethod(FixedArm(3, 4), round_steps=2)
    train_with_scene_oracle(plain, config, data)
    assert all(r.scores is None for r in plain.rounds)
    for step, (a, b) in enumerate(zip(method.seen, plain.seen, strict=True)):
        images, captions = batch_indices(64, 16, 5, config.seed, step)
        assert torch.equal(a, b)
        assert torch.equal(a, data.train_ids[images, captions])


def test_arm_shares_per_stretch():
    picks = ["a", "a", "b", "a", "b", "b", "b", "b"]
    assert arm_shares(picks, ("a", "b"), parts=2) == [
        {"a": 0.75, "b": 0.25},
        {"a": 0.0, "b": 1.0},
    ]
    with pytest.raises(ValueError, match="parts"):
        arm_shares(picks, ("a", "b"), parts=9)
    with pytest.raises(ValueError, match="c"):
        arm_shares(["c"], ("a", "b"), parts=1)


# ------------------------------------------------------------------- comparison


def test_comparison_on_a_tiny_budget_returns_every_row(data):
    run = run_adaptive_comparison(TINY, data, round_steps=1, validation_size=16)
    names = [row["strategy"] for row in run.rows()]
    assert names == [
        "exp3",
        "fixed random",
        "fixed relation",
        "fixed attribute",
        "fixed both",
        "fixed uniform",
    ]
    for row in run.rows():
        for key in ("relation_swap", "attribute_swap", "i2t_r1", "t2i_r1", "seconds"):
            assert math.isfinite(row[key])
    assert len(run.picks) == 3 and len(run.rounds) == 3
    assert [r.reward is not None for r in run.rounds] == [True, True, False]
    shares = run.shares(parts=3)
    assert all(math.isclose(sum(s.values()), 1.0) for s in shares)
    # the oracle rows train exactly as train_with_scene_oracle trains the runner's
    # own methods: fixed "random" is infonce, fixed "both" is hard_negatives
    for row, name in ((1, "infonce"), (4, "hard_negatives")):
        reference = train_with_scene_oracle(name, TINY, data)
        assert np.allclose(run.results[row].losses, reference.losses, rtol=1e-5)
        assert run.results[row].relation_swap == reference.relation_swap


def test_comparison_with_the_pixel_tower_and_argument_checks(data):
    run = run_adaptive_comparison(
        TINY,
        data,
        scene_oracle=False,
        bandit="discounted_ucb",
        fixed=(),
        validation_size=16,
    )
    assert [row["strategy"] for row in run.rows()] == ["discounted_ucb"]
    assert all(math.isfinite(row["relation_swap"]) for row in run.rows())
    with pytest.raises(ValueError, match="bandit"):
        run_adaptive_comparison(TINY, data, bandit="greedy")
    with pytest.raises(ValueError, match="fixed"):
        run_adaptive_comparison(TINY, data, fixed=("colour",))
    with pytest.raises(ValueError, match="image_encoder_factory"):
        run_adaptive_comparison(TINY, data, image_encoder_factory=lambda: None)

"""Adversarial attacks, robustness evaluation and adversarial training
(crossalign.attacks).

Independent truths: the closed-form maximiser of a linear loss over the L-infinity ball
and the pixel box (every pixel at ``clip(x + epsilon * sign(w))``), a loss with zero
input gradient (nothing moves), ``torch.nn.functional.cross_entropy`` for the attacked
losses, clean accuracy and R@1 computed by the existing zero-shot and retrieval code,
and the model's parameters, gradients, modes and batch-norm statistics before and after.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crossalign.attacks import (
    PIXEL_RANGE,
    AdversarialTrainingMethod,
    adversarial_finetune,
    attack_images,
    clip_attack_loss,
    default_step_size,
    eval_mode,
    fgsm,
    format_robustness,
    pgd,
    retrieval_loss,
    retrieval_robustness,
    robustness_curve,
    zero_shot_loss,
    zero_shot_robustness,
)
from crossalign.evaluation import embed_texts
from crossalign.experiments.compare import (
    CompareConfig,
    evaluate_method,
    prepare_data,
    train_method,
)
from crossalign.experiments.methods import AlignmentBatch
from crossalign.losses import clip_loss
from crossalign.metrics import retrieval_metrics
from crossalign.train.trainer import build_model
from crossalign.zero_shot import (
    COLOUR_TEMPLATES,
    COLOURS,
    attribute_images,
    class_embeddings,
    zero_shot_predict,
)

TINY = CompareConfig.fast(
    image_size=32, train_size=64, test_size=16, steps=3, batch_size=16, device="cpu"
)
EPS = 8 / 255
# Float32 rounding of ``x + epsilon`` can overshoot epsilon by half an ulp.
ROUNDING = 1e-6


@pytest.fixture(scope="module")
def data():
    return prepare_data(TINY)


@pytest.fixture
def model(data):
    torch.manual_seed(0)
    return build_model(TINY.experiment(), data.tokenizer).eval()


@pytest.fixture(scope="module")
def text_emb(data):
    torch.manual_seed(0)
    model = build_model(TINY.experiment(), data.tokenizer)
    return model, embed_texts(model, data.test_texts, data.tokenizer)


def _pixels(seed: int = 0, shape=(4, 3, 8, 8)) -> torch.Tensor:
    """Random images with some pixels exactly at 0 and 1, where clamping bites."""
    images = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    images[:, 0, 0, :4] = 0.0
    images[:, 1, 0, :4] = 1.0
    return images


def _smooth_loss(w: torch.Tensor):
    return lambda x: torch.sin(3 * x * w).sum() + (x * w).sum()


def _positives(data, start: int, stop: int) -> torch.Tensor:
    return data.test_owner[None, :] == torch.arange(start, stop)[:, None]


# ---------------------------------------------------------------- the attacks
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("clamp", [(0.0, 1.0), (-1.0, 1.0)])
def test_perturbation_stays_in_the_ball_and_the_pixel_range(attack, clamp):
    low, high = clamp
    images = low + (high - low) * _pixels()
    w = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    if attack == "fgsm":
        adversarial = fgsm(_smooth_loss(w), images, EPS, clamp)
    else:
        adversarial = pgd(
            _smooth_loss(w), images, EPS, steps=7, step_size=EPS / 2, clamp=clamp
        )
    change = (adversarial - images).abs()
    assert float(change.max()) <= EPS + ROUNDING
    assert float(adversarial.min()) >= low and float(adversarial.max()) <= high
    assert float(change.max()) >= EPS - ROUNDING  # the attack did move pixels
    assert not adversarial.requires_grad


def test_pgd_with_one_step_of_epsilon_and_no_random_start_is_fgsm(data, model):
    images = data.test_images[:8]
    loss_fn = retrieval_loss(
        model,
        embed_texts(model, data.test_texts, data.tokenizer),
        _positives(data, 0, 8),
    )
    expected = fgsm(loss_fn, images, EPS)
    got = pgd(loss_fn, images, EPS, steps=1, step_size=EPS, random_start=False)
    assert torch.equal(got, expected)
    assert not torch.equal(got, images)


def test_a_loss_with_zero_input_gradient_leaves_images_unchanged(data, model):
    images = data.test_images[:4]
    with torch.no_grad():
        model.image_projection.weight.zero_()  # the image embedding ignores the pixels
    loss_fn = zero_shot_loss(
        model, torch.eye(model.config.embed_dim)[:3], torch.tensor([0, 1, 2, 0])
    )
    closure_losses = [loss_fn, lambda x: (0 * x).sum() + 1.0, lambda x: torch.ones(())]
    for loss in closure_losses:
        assert torch.equal(fgsm(loss, images, EPS), images)
        assert torch.equal(
            pgd(loss, images, EPS, steps=3, step_size=EPS / 3, random_start=False),
            images,
        )


def test_fgsm_on_a_linear_loss_moves_every_pixel_by_epsilon_times_sign_w():
    images = _pixels(2)
    w = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    w[0, 2] = 0.0  # no gradient: these pixels stay put
    expected = (images.double() + EPS * torch.sign(w).double()).clamp(0, 1).float()
    got = fgsm(lambda x: (w * x).sum(), images, EPS)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
    assert torch.equal(got[0, 2], images[0, 2])
    # From a random start, 7 steps of epsilon / 3 (enough to cross the ball) reach
    # the same corner of the ball: the exact maximiser of w . x.
    reached = pgd(lambda x: (w * x).sum(), images, EPS, steps=7, step_size=EPS / 3)
    pixels_free = w != 0
    torch.testing.assert_close(
        reached[pixels_free], expected[pixels_free], rtol=0, atol=1e-6
    )


def test_attacks_raise_the_loss_of_a_model(data, model):
    images = data.test_images
    texts = embed_texts(model, data.test_texts, data.tokenizer)
    loss_fn = retrieval_loss(model, texts, _positives(data, 0, len(images)))
    with torch.no_grad():
        clean = float(loss_fn(images))
        by_fgsm = float(loss_fn(fgsm(loss_fn, images, EPS)))
        generator = torch.Generator().manual_seed(0)
        adversarial = pgd(loss_fn, images, EPS, 5, EPS / 2, generator=generator)
        by_pgd = float(loss_fn(adversarial))
    assert by_fgsm > clean
    assert by_pgd > clean


def test_epsilon_zero_returns_the_clean_images():
    images = _pixels()
    w = torch.randn(images.shape)
    assert torch.equal(fgsm(_smooth_loss(w), images, 0.0), images)
    assert torch.equal(pgd(_smooth_loss(w), images, 0, 5, 0.1), images)


def test_pgd_random_start_is_reproducible_with_a_generator():
    images = _pixels()
    w = torch.randn(images.shape, generator=torch.Generator().manual_seed(4))
    runs = [
        pgd(
            _smooth_loss(w),
            images,
            EPS,
            2,
            EPS / 4,
            generator=torch.Generator().manual_seed(9),
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_default_step_size():
    assert default_step_size(0.1, 10) == pytest.approx(0.025)
    assert default_step_size(0.1, 1) == pytest.approx(0.125)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda x, f: fgsm(f, x, -0.1), "epsilon"),
        (lambda x, f: fgsm(f, x, math.nan), "epsilon"),
        (lambda x, f: fgsm(f, x, True), "epsilon"),
        (lambda x, f: pgd(f, x, 0.1, 0, 0.01), "steps"),
        (lambda x, f: pgd(f, x, 0.1, 2.5, 0.01), "steps"),
        (lambda x, f: pgd(f, x, 0.1, 3, 0.0), "step_size"),
        (lambda x, f: fgsm(f, x, 0.1, clamp=(1.0, 0.0)), "clamp"),
        (lambda x, f: fgsm(f, 2 * x - 1, 0.1), "clamp"),
        (lambda x, f: fgsm(f, x.long(), 0.1), "images"),
        (lambda x, f: fgsm(lambda y: y.sum(dim=0), x, 0.1), "loss_fn"),
        (lambda x, f: default_step_size(0.1, 0), "steps"),
        (lambda x, f: AdversarialTrainingMethod(epsilon=-1), "epsilon"),
        (lambda x, f: AdversarialTrainingMethod(steps=0), "steps"),
    ],
)
def test_argument_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call(_pixels(), lambda y: y.sum())


def test_evaluation_argument_errors_name_the_argument(data, model):
    images, labels = data.test_images[:4], torch.zeros(4, dtype=torch.long)
    classes = torch.eye(model.config.embed_dim)[:2]
    with pytest.raises(ValueError, match="attack"):
        zero_shot_robustness(model, images, labels, classes, [0.0], attack="cw")
    with pytest.raises(ValueError, match=r"epsilons\[1\]"):
        zero_shot_robustness(model, images, labels, classes, [0.0, -1.0])
    with pytest.raises(ValueError, match="batch_size"):
        zero_shot_robustness(model, images, labels, classes, [EPS], batch_size=0)
    with pytest.raises(ValueError, match="labels"):
        zero_shot_loss(model, classes, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="positives"):
        retrieval_loss(model, classes, torch.zeros(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="zero_shot_size"):
        robustness_curve(model, data, zero_shot_size=0)


# ---------------------------------------------------------------- the losses
def test_retrieval_loss_is_the_image_to_text_cross_entropy(data, model, text_emb):
    _, texts = text_emb
    images = data.test_images[:5]
    with torch.no_grad():
        logits = model.logit_scale * model.encode_image(images) @ texts.T
        # One positive each: plain cross-entropy against the true index.
        targets = torch.tensor([3, 7, 0, 12, 40])
        one = torch.zeros(5, len(texts), dtype=torch.bool)
        one[torch.arange(5), targets] = True
        single = retrieval_loss(model, texts, one)(images)
        torch.testing.assert_close(single, F.cross_entropy(logits, targets))
        # All own captions: minus the log of their total softmax probability.
        positives = _positives(data, 0, 5)
        several = retrieval_loss(model, texts, positives)(images)
        probability = (logits.softmax(dim=1) * positives).sum(dim=1)
        torch.testing.assert_close(several, -probability.log().mean())


def test_zero_shot_and_clip_losses_match_their_definitions(data, model, text_emb):
    _, texts = text_emb
    images = data.test_images[:4]
    classes = F.normalize(torch.randn(3, model.config.embed_dim), dim=1)
    labels = torch.tensor([2, 0, 1, 1])
    with torch.no_grad():
        image_emb = model.encode_image(images)
        logits = model.logit_scale * image_emb @ classes.T
        torch.testing.assert_close(
            zero_shot_loss(model, classes, labels)(images),
            F.cross_entropy(logits, labels),
        )
        torch.testing.assert_close(
            clip_attack_loss(model, texts[:4])(images),
            clip_loss(image_emb, texts[:4], model.logit_scale),
        )


# ---------------------------------------------------------------- no state leaks
def _state(model):
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_attacks_leave_no_gradients_modes_or_statistics_behind(data, model):
    model.train()
    model.text_encoder.eval()  # a mixed state must come back as it was
    modes = {name: m.training for name, m in model.named_modules()}
    before = _state(model)
    classes = F.normalize(torch.randn(4, model.config.embed_dim), dim=1)
    labels = torch.tensor([0, 1, 2, 3] * 4)
    zero_shot_robustness(
        model, data.test_images, labels, classes, [0.0, EPS], steps=2, batch_size=5
    )
    method = AdversarialTrainingMethod(epsilon=EPS, steps=2)
    images, ids = data.train_images[:8], data.train_ids[:8, 0]
    mask = data.train_attention[:8, 0]
    attacked = method.perturb(model, AlignmentBatch(images, ids, mask))
    assert float((attacked - images).abs().max()) <= EPS + ROUNDING
    assert all(p.grad is None for p in model.parameters())
    assert {name: m.training for name, m in model.named_modules()} == modes
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats too


def test_attack_images_does_not_depend_on_the_chunk_size(data, model):
    texts = embed_texts(model, data.test_texts, data.tokenizer)

    def loss_for(start, stop):
        return retrieval_loss(model, texts, _positives(data, start, stop))

    images = data.test_images[:8]
    whole = attack_images(model, images, loss_for, EPS, "fgsm")
    chunked = attack_images(model, images, loss_for, EPS, "fgsm", batch_size=3)
    # Rows do not interact in eval mode; only a pixel whose gradient is within
    # rounding of zero could flip its sign between convolution algorithms.
    assert float((whole != chunked).double().mean()) < 1e-3


# ---------------------------------------------------------------- evaluation
def test_epsilon_zero_gives_clean_accuracy_and_recall(data, model):
    images, labels = attribute_images("colour", size=24, image_size=TINY.image_size)
    classes = class_embeddings(model, data.tokenizer, COLOURS, COLOUR_TEMPLATES[:2])
    accuracies = zero_shot_robustness(
        model, images, labels, classes, [0.0, EPS], steps=2
    )
    clean = float((zero_shot_predict(model, images, classes) == labels).double().mean())
    assert accuracies[0] == clean
    assert 0.0 <= accuracies[1] <= clean

    texts = embed_texts(model, data.test_texts, data.tokenizer, max_len=TINY.max_len)
    rows = retrieval_robustness(
        model, data.test_images, texts, data.test_owner, [0.0, EPS], steps=2
    )
    with torch.no_grad():
        reference = retrieval_metrics(
            model.encode_image(data.test_images), texts, data.test_owner
        )
    assert rows[0] == {"epsilon": 0.0, **reference}
    assert rows[1]["epsilon"] == EPS and rows[1]["i2t_r1"] <= reference["i2t_r1"]


def test_robustness_curve_rows_and_table(data, model):
    rows = robustness_curve(
        model,
        data,
        [0.0, EPS],
        attack="fgsm",
        zero_shot_size=16,
        max_len=TINY.max_len,
    )
    assert [row["epsilon"] for row in rows] == [0.0, EPS]
    assert all(set(row) == {"epsilon", "colour", "shape", "i2t_r1"} for row in rows)
    assert all(0.0 <= row[k] <= 1.0 for row in rows for k in ("colour", "shape"))
    clean = evaluate_method(model, data, torch.device("cpu"), TINY.max_len)
    assert rows[0]["i2t_r1"] == clean["retrieval"]["i2t_r1"]
    table = format_robustness({"base": rows})
    assert len(table.splitlines()) == 4 and "8.0" in table


# ---------------------------------------------------------------- the defence
def test_adversarial_training_runs_through_train_method(data):
    method = AdversarialTrainingMethod(epsilon=4 / 255, steps=2)
    result = train_method(method, TINY, data)
    assert result.name == "adversarial_training"
    assert len(result.losses) == TINY.steps
    assert all(math.isfinite(loss) for loss in result.losses)
    assert result.model is not None and not result.model.training


def test_adversarial_training_loss_is_the_clip_loss_of_attacked_images(data, model):
    batch = AlignmentBatch(
        data.train_images[:8], data.train_ids[:8, 0], data.train_attention[:8, 0]
    )
    method = AdversarialTrainingMethod(epsilon=EPS, steps=2)
    torch.manual_seed(5)
    loss = method.loss(model, batch)
    torch.manual_seed(5)
    attacked = method.perturb(model, batch)
    with torch.no_grad():
        clean = clip_loss(*model(batch.images, batch.input_ids, batch.attention_mask))
        expected = clip_loss(*model(attacked, batch.input_ids, batch.attention_mask))
    torch.testing.assert_close(loss.detach(), expected)
    assert float(expected) > float(clean)
    loss.backward()  # the training loss does reach the parameters
    assert model.image_projection.weight.grad is not None


def test_adversarial_finetune_changes_only_a_copy_of_the_image_tower(data, model):
    original = _state(model)
    result = adversarial_finetune(model, TINY, data, epsilon=EPS, steps=2)
    tuned = result.model
    assert tuned is not None and tuned is not model
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())
    assert all(math.isfinite(loss) for loss in result.losses)
    assert len(result.losses) == 2
    tuned_state = tuned.state_dict()
    for name, value in original.items():
        if name.startswith(("text_", "log_logit_scale")):
            assert torch.equal(tuned_state[name], value), name
    assert not torch.equal(
        tuned_state["image_projection.weight"], original["image_projection.weight"]
    )
    assert all(p.requires_grad for p in tuned.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_eval_mode_restores_modes_after_an_error(model):
    model.train()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training and all(m.training for m in model.modules())


def test_pixel_range_is_the_range_shapesworld_renders(data):
    assert PIXEL_RANGE == (0.0, 1.0)
    assert float(data.test_images.min()) >= 0.0
    assert float(data.test_images.max()) <= 1.0

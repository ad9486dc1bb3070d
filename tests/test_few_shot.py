"""Few-shot adaptation: support sets, linear probe, CoOp prompt tuning, CLIP-Adapter
and the curve over k."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossalign.data.shapes import COLOURS, HELD_OUT_PAIRS, SHAPES, caption_words
from crossalign.data.vocab import Vocabulary
from crossalign.few_shot import (
    PAIR_CLASSES,
    Adapter,
    CoOp,
    FewShotProblem,
    LinearProbe,
    PromptLearner,
    ResidualAdapter,
    ZeroShot,
    encode_images,
    few_shot_curve,
    format_curve,
    make_task,
    sample_support,
    single_object_images,
    summarise_curve,
    token_embedding,
)
from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig
from crossalign.zero_shot import attribute_images, class_embeddings, zero_shot_predict

VOCAB = Vocabulary.build(caption_words())
TEXT_TOWERS = {
    "conv": {"embed_dim": 8, "width": 16, "dilations": [1, 2]},
    "gru": {"embed_dim": 8, "hidden_dim": 8},
    "transformer": {"dim": 16, "depth": 1, "heads": 2},
}


def _model(text_encoder: str = "conv") -> DualEncoder:
    torch.manual_seed(0)
    config = DualEncoderConfig(
        image_kwargs={"widths": [8, 16], "out_dim": 16},
        text_encoder=text_encoder,
        text_kwargs={"vocab_size": len(VOCAB), **TEXT_TOWERS[text_encoder]},
        embed_dim=8,
    )
    return DualEncoder(config).eval()


@pytest.fixture(scope="module")
def composition():
    return make_task("composition", test_per_class=2, pool_per_class=4, image_size=32)


# ------------------------------------------------------------------------ data
def test_single_object_images_are_the_attribute_images_of_the_same_world():
    images, labels, index = single_object_images(
        "test", COLOURS, lambda obj: obj.colour, per_class=2, seed=3, image_size=32
    )
    assert torch.bincount(labels, minlength=len(COLOURS)).tolist() == [2] * 8
    reference, colours = attribute_images(
        "colour", size=int(index.max()) + 1, seed=3, image_size=32
    )
    torch.testing.assert_close(images, reference[index], rtol=0, atol=0)
    assert torch.equal(labels, colours[index])


def test_compositional_images_hold_exactly_the_held_out_pairs():
    names = [f"{c} {s}" for c, s in HELD_OUT_PAIRS]
    _, labels, index = single_object_images(
        "compositional",
        names,
        lambda obj: f"{obj.colour} {obj.shape}",
        per_class=2,
        image_size=32,
    )
    size = int(index.max()) + 1
    _, colours = attribute_images("colour", size, "compositional", image_size=32)
    _, shapes = attribute_images("shape", size, "compositional", image_size=32)
    found = [(COLOURS[colours[i]], SHAPES[shapes[i]]) for i in index]
    assert found == [HELD_OUT_PAIRS[row] for row in labels]
    assert sorted(set(found)) == sorted(HELD_OUT_PAIRS)


def test_composition_task_is_balanced_and_its_test_images_are_not_in_the_pool(
    composition,
):
    assert composition.class_names == PAIR_CLASSES and len(PAIR_CLASSES) == 40
    assert [PAIR_CLASSES[i] for i in composition.unseen] == [
        f"{c} {s}" for c, s in HELD_OUT_PAIRS
    ]
    assert torch.bincount(composition.test_labels, minlength=40).tolist() == [2] * 40
    assert torch.bincount(composition.support_labels, minlength=40).tolist() == [4] * 40
    pool = composition.support_images.flatten(1)
    test = composition.test_images.flatten(1)
    assert not (pool[:, None] == test[None]).all(dim=2).any()


def test_support_sets_have_k_per_class_are_seeded_nested_and_from_the_pool(
    composition,
):
    labels = composition.support_labels
    three = sample_support(labels, 3, seed=5)
    assert len(set(three.tolist())) == len(three)
    assert torch.bincount(labels[three], minlength=40).tolist() == [3] * 40
    assert torch.equal(three, sample_support(labels, 3, seed=5))
    assert not torch.equal(three, sample_support(labels, 3, seed=6))
    assert set(sample_support(labels, 2, seed=5).tolist()) <= set(three.tolist())
    with pytest.raises(ValueError, match="fewer than k=5"):
        sample_support(labels, 5, seed=0)
    with pytest.raises(ValueError, match="k=0"):
        sample_support(labels, 0, seed=0)
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("size")


# ------------------------------------------------------------------ linear probe
def _blobs(n_per_class: int, spread: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]])
    labels = torch.arange(3).repeat_interleave(n_per_class)
    noise = torch.randn(len(labels), 2, generator=generator) * spread
    return centres[labels] + noise, labels


def test_linear_probe_separates_separable_features_and_its_loss_falls():
    features, labels = _blobs(10, spread=0.3, seed=0)
    fit = LinearProbe(steps=60, lr=0.1).fit_features(features, labels, 3)
    fresh, fresh_labels = _blobs(50, spread=0.3, seed=1)
    with torch.no_grad():
        assert torch.equal(fit.classifier(features).argmax(1), labels)
        assert torch.equal(fit.classifier(fresh).argmax(1), fresh_labels)
    assert fit.losses[0] == pytest.approx(math.log(3), rel=1e-6)  # zero init
    assert fit.losses[-1] < 0.2 * fit.losses[0]


def _probe_objective(probe: nn.Linear, features, labels, l2: float) -> torch.Tensor:
    loss = F.cross_entropy(probe(features), labels)
    return loss + 0.5 * l2 * probe.weight.pow(2).sum()


def test_linear_probe_reaches_the_regularised_logistic_regression_optimum():
    features, labels = _blobs(20, spread=2.0, seed=2)  # overlapping classes
    l2 = 0.05
    probe = LinearProbe(steps=400, lr=0.05, l2=l2)
    fitted = probe.fit_features(features, labels, 3).classifier
    assert isinstance(fitted, nn.Linear)
    gradients = torch.autograd.grad(
        _probe_objective(fitted, features, labels, l2), list(fitted.parameters())
    )
    assert max(float(g.abs().max()) for g in gradients) < 1e-3  # stationary point
    sklearn = pytest.importorskip("sklearn.linear_model")
    reference = sklearn.LogisticRegression(
        C=1.0 / (l2 * len(labels)), tol=1e-10, max_iter=10_000
    ).fit(features.numpy(), labels.numpy())
    with torch.no_grad():
        probabilities = fitted(features).softmax(dim=1)
    expected = torch.from_numpy(reference.predict_proba(features.numpy())).float()
    torch.testing.assert_close(probabilities, expected, rtol=0, atol=2e-3)


# ------------------------------------------------------------------------- CoOp
def _problem(model, class_names, templates) -> FewShotProblem:
    classes = class_embeddings(model, VOCAB, class_names, templates)
    return FewShotProblem(
        model, VOCAB, tuple(class_names), tuple(templates), classes.clone(), 10.0
    )


@pytest.mark.parametrize("tower", sorted(TEXT_TOWERS))
@pytest.mark.parametrize("template", ["a small {}", "a little {} in the middle"])
def test_prompt_learner_from_template_words_equals_the_token_path(tower, template):
    model = _model(tower)
    names = ["red triangle", "violet rhombus", "cyan disc"]
    learner = PromptLearner(model, VOCAB, names, template)
    with torch.no_grad():
        tuned = learner()
    expected = class_embeddings(model, VOCAB, names, [template])
    torch.testing.assert_close(tuned, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("tower", sorted(TEXT_TOWERS))
def test_prompt_learner_really_feeds_its_context_vectors_to_the_text_tower(tower):
    model = _model(tower)
    names = ["red", "blue"]
    learner = PromptLearner(model, VOCAB, names, "a small {} circle")
    table = token_embedding(model.text_encoder)
    other = [VOCAB.token_to_id(w) for w in ("the", "large", "square")]
    with torch.no_grad():
        learner.context.copy_(table.weight[other])
        tuned = learner()
    expected = class_embeddings(model, VOCAB, names, ["the large {} square"])
    torch.testing.assert_close(tuned, expected, rtol=0, atol=1e-5)
    before = class_embeddings(model, VOCAB, names, ["a small {} circle"])
    assert (tuned - before).abs().max() > 1e-3


def test_coop_trains_only_the_context_and_leaves_the_text_tower_untouched():
    model = _model("conv")
    names = list(COLOURS[:4])
    problem = _problem(model, names, ["a small {} circle"])
    features = F.normalize(
        torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    )
    labels = torch.arange(4).repeat(2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fit = CoOp(steps=15, lr=0.05).fit(problem, features, labels, seed=0)
    for name, parameter in model.named_parameters():
        assert parameter.grad is None, name
        assert parameter.requires_grad, name  # the freeze is undone
        assert torch.equal(parameter, state[name]), name
    assert fit.losses[-1] < fit.losses[0]
    assert (fit.classifier.classes - problem.classes).abs().max() > 1e-4


def test_coop_reports_encoders_without_an_embedding_table_and_empty_templates():
    model = _model("conv")
    with pytest.raises(ValueError, match="no words around"):
        PromptLearner(model, VOCAB, ["red"], "{}")

    class Hashing(nn.Module):
        out_dim = 16

        def forward(self, ids, mask):
            return torch.zeros(ids.shape[0], 16)

    model.text_encoder = Hashing()
    with pytest.raises(ValueError, match="token-embedding table"):
        PromptLearner(model, VOCAB, ["red"], "a small {}")


# ----------------------------------------------------------------------- adapter
def test_adapter_with_alpha_zero_is_the_zero_shot_classifier(composition):
    model = _model("conv")
    problem = FewShotProblem.from_task(model, VOCAB, composition)
    images = composition.test_images
    features = encode_images(model, images)
    expected = zero_shot_predict(model, images, problem.classes)
    adapter = ResidualAdapter(problem.classes, problem.scale, alpha=0.0)
    with torch.no_grad():
        assert torch.equal(adapter(features).argmax(1), expected)
        zero_shot = ZeroShot().fit(problem, features[:0], expected[:0], seed=0)
        assert torch.equal(zero_shot.classifier(features).argmax(1), expected)
        torch.testing.assert_close(
            adapter(features), problem.scale * features @ problem.classes.T
        )


def test_adapter_gradients_reach_only_the_adapter():
    model = _model("conv")
    problem = _problem(model, list(COLOURS[:4]), ["a small {} circle"])
    features = F.normalize(
        torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    )
    labels = torch.arange(4).repeat(2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fit = Adapter(steps=20, lr=0.05).fit(problem, features, labels, seed=3)
    torch.manual_seed(3)
    fresh = ResidualAdapter(problem.classes, problem.scale)
    names = [name for name, _ in fit.classifier.named_parameters()]
    assert names == ["mlp.0.weight", "mlp.2.weight"]
    for name, parameter in fit.classifier.named_parameters():
        assert not torch.equal(parameter, dict(fresh.named_parameters())[name])
    torch.testing.assert_close(fit.classifier.classes, problem.classes)
    for name, parameter in model.named_parameters():
        assert parameter.grad is None and torch.equal(parameter, state[name]), name
    assert fit.losses[-1] < fit.losses[0]


# ------------------------------------------------------------------------- curve
def test_few_shot_curve_gives_one_row_per_method_k_and_seed(composition):
    methods = [ZeroShot(), LinearProbe(steps=3), CoOp(steps=2), Adapter(steps=3)]
    rows = few_shot_curve(
        _model("conv"), VOCAB, composition, shots=(1, 3), seeds=(0, 1), methods=methods
    )
    keys = [(r["method"], r["k"], r["seed"]) for r in rows]
    expected = {("zero_shot", 0, s) for s in (0, 1)} | {
        (m, k, s)
        for m in ("linear_probe", "coop", "adapter")
        for k in (1, 3)
        for s in (0, 1)
    }
    assert len(keys) == len(set(keys)) and set(keys) == expected
    for row in rows:
        assert row["task"] == "composition"
        for key in ("accuracy", "seen_accuracy", "unseen_accuracy"):
            assert 0.0 <= row[key] <= 1.0
        unseen = 5 * 2  # five held-out pairs, two test images each
        mixed = (row["seen_accuracy"] * 70 + row["unseen_accuracy"] * unseen) / 80
        assert row["accuracy"] == pytest.approx(mixed)
    zero = [r["accuracy"] for r in rows if r["method"] == "zero_shot"]
    assert zero[0] == zero[1]
    with pytest.raises(ValueError, match="unknown few-shot method"):
        few_shot_curve(_model("conv"), VOCAB, composition, methods=["knn"])


def test_summary_is_the_mean_and_sample_std_over_seeds():
    rows = [
        {"task": "t", "method": m, "k": k, "seed": s, "accuracy": a}
        for m, k, s, a in [
            ("probe", 1, 0, 0.5),
            ("probe", 1, 1, 0.7),
            ("probe", 1, 2, 0.9),
            ("probe", 2, 0, 0.8),
        ]
    ]
    summary = summarise_curve(rows)
    assert [(s["method"], s["k"], s["n"]) for s in summary] == [
        ("probe", 1, 3),
        ("probe", 2, 1),
    ]
    assert summary[0]["mean"] == pytest.approx(0.7)
    assert summary[0]["std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))
    assert summary[1]["std"] == 0.0
    table = format_curve(rows)
    assert "0.700±0.200" in table and "k=2" in table

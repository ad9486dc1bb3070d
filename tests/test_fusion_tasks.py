"""Tests for crossalign.experiments.fusion_tasks: shapes, padding, additivity, learning,
scoring, tables."""

from __future__ import annotations

import pytest
import torch

from crossalign.data.shapes import ShapesWorld
from crossalign.data.shapes_tasks import ANSWERS, ShapesMatching, ShapesQA
from crossalign.experiments.fusion_tasks import (
    Backbone,
    FusionClassifier,
    FusionResult,
    FusionTaskConfig,
    TokenFeatures,
    accuracy_by_group,
    backbone_vocabulary,
    build_task_data,
    compare_fusion,
    encode_tokens,
    format_fusion_table,
    pretrain_backbone,
    train_fusion,
)
from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig
from crossalign.models.fusion import FUSION_NAMES

OPTIONS = {
    "concat": {"hidden_dim": 16},
    "cross_attention": {"num_heads": 2, "hidden_dim": 16},
}
TINY = dict(
    image_size=32,
    train_size=48,
    test_size=24,
    image_widths=(8, 8, 8),
    text_dim=8,
    pretrain_size=32,
    pretrain_steps=3,
    pretrain_batch_size=16,
    embed_dim=8,
    fusion_dim=8,
    fusion_options=OPTIONS,
    steps=40,
    batch_size=16,
    lr=1e-2,
    warmup_steps=2,
    eval_batch_size=7,
)


def _backbone(seed: int = 0) -> Backbone:
    """Untrained, frozen towers of the default shape (enough for every test that is not
    about pretraining)."""
    torch.manual_seed(seed)
    tokenizer = backbone_vocabulary(
        ["what colour is the circle", "how many objects are there"]
    )
    model = DualEncoder(
        DualEncoderConfig(
            image_encoder="small_cnn",
            image_kwargs={"widths": [8, 8, 8], "out_dim": 8, "pool": "flatten"},
            text_encoder="gru",
            text_kwargs={"vocab_size": len(tokenizer), "embed_dim": 8, "hidden_dim": 8},
            embed_dim=8,
        )
    )
    # BatchNorm statistics that are not the identity, so eval mode is really exercised.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return Backbone(model.eval().requires_grad_(False), tokenizer)


def _classifier(name: str, num_classes: int = 3, seed: int = 0) -> FusionClassifier:
    backbone = _backbone(seed)
    torch.manual_seed(seed + 1)
    model = FusionClassifier(
        backbone, name, num_classes, fusion_dim=8, fusion_options=OPTIONS.get(name)
    ).eval()
    # random biases too: torch starts some at zero, which could hide a bug
    with torch.no_grad():
        for p in list(model.fusion.parameters()) + list(model.head.parameters()):
            p.normal_(0.0, 0.5)
    return model


TEXTS = [
    "a small red circle is left of a large blue square",
    "what colour is the circle",
    "there is a big green cross at the top left",
    "how many objects are there",
]


def _inputs(n: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    world = ShapesWorld("test", size=n, image_size=32)
    images = world.render(range(n))
    ids, mask = _backbone().tokenizer.encode_batch(TEXTS[:n])
    return images, ids, mask, TEXTS[:n]


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_output_shape_and_padding_invariance(name: str) -> None:
    """A padded batch gives, row by row, the logits of each item run alone without
    padding."""
    model = _classifier(name)
    images, ids, mask, texts = _inputs()
    assert not bool(mask.all())  # the batch really is padded
    logits = model(images, ids, mask)
    assert logits.shape == (4, 3)
    for row, text in enumerate(texts):
        alone_ids, alone_mask = _backbone().tokenizer.encode_batch([text])
        assert alone_mask.all()
        alone = model(images[row : row + 1], alone_ids, alone_mask)
        torch.testing.assert_close(logits[row : row + 1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mean", "weighted"])
def test_affine_fusion_is_late_fusion(name: str) -> None:
    """logit(i, t) = a(i) + b(t): swapping partners leaves the sum of two pairs' logits
    unchanged."""
    model = _classifier(name).double()
    images, ids, mask, _ = _inputs()
    swapped = torch.tensor([1, 0, 3, 2])
    together = model(images.double(), ids, mask) + model(
        images[swapped].double(), ids[swapped], mask[swapped]
    )
    crossed = model(images.double(), ids[swapped], mask[swapped]) + model(
        images[swapped].double(), ids, mask
    )
    torch.testing.assert_close(together, crossed, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["cross_attention", "film", "gated", "concat"])
def test_interacting_fusion_is_not_additive(name: str) -> None:
    """The same identity fails for fusions that let one modality act on the other."""
    model = _classifier(name).double()
    images, ids, mask, _ = _inputs()
    swapped = torch.tensor([1, 0, 3, 2])
    together = model(images.double(), ids, mask) + model(
        images[swapped].double(), ids[swapped], mask[swapped]
    )
    crossed = model(images.double(), ids[swapped], mask[swapped]) + model(
        images[swapped].double(), ids, mask
    )
    assert (together - crossed).abs().max() > 1e-4


def test_towers_are_frozen_and_stay_in_eval_mode() -> None:
    model = _classifier("film").train()
    assert not model.image_encoder.training and not model.text_encoder.training
    assert model.fusion.training and model.head.training
    frozen = [
        p for m in (model.image_encoder, model.text_encoder) for p in m.parameters()
    ]
    assert frozen and not any(p.requires_grad for p in frozen)


def test_encode_tokens_matches_the_towers_item_by_item() -> None:
    backbone = _backbone()
    data = build_task_data("qa", FusionTaskConfig(**TINY))
    features = encode_tokens(backbone, data.test, batch_size=5)
    # 32 px, three stride-2 stages: a 4 x 4 grid
    assert features.image_tokens.shape == (
        24,
        16,
        8,
    )
    for i in (0, 13, 23):
        ids, mask = backbone.tokenizer.encode_batch([data.test.texts[i]])
        image = backbone.image_encoder.forward_tokens(data.test.images[i : i + 1])
        text = backbone.text_encoder.forward_tokens(ids, mask)
        torch.testing.assert_close(
            features.image_tokens[i], image[0], rtol=1e-5, atol=1e-5
        )
        length = ids.shape[1]
        torch.testing.assert_close(
            features.text_tokens[i, :length], text[0], rtol=1e-5, atol=1e-5
        )
        assert (
            features.text_mask[i].sum() == length
            and not features.text_tokens[i, length:].any()
        )


def test_task_data_follows_the_task_datasets() -> None:
    config = FusionTaskConfig(**TINY)
    matching, qa = build_task_data("matching", config), build_task_data("qa", config)
    world = ShapesWorld("test", size=24, image_size=32, seed=0)
    expected = ShapesMatching(world, seed=0)
    for i in (0, 5, 23):
        caption, label, kind = expected.pair(i)
        got = (
            matching.test.texts[i],
            int(matching.test.targets[i]),
            matching.test.groups[i],
        )
        assert got == (caption, label, kind)
        qa_item = ShapesQA(world, seed=0).question(i)
        assert (
            qa.test.texts[i] == qa_item.question
            and ANSWERS[int(qa.test.targets[i])] == qa_item.answer
        )
    torch.testing.assert_close(matching.test.images, world.render(range(24)))
    assert matching.class_names == ("false", "true") and qa.class_names == ANSWERS


def test_accuracy_by_group_on_hand_made_predictions() -> None:
    predictions = [1, 0, 0, 1, 1, 0]
    targets = [1, 0, 1, 1, 0, 0]
    groups = ["positive", "relation", "positive", "positive", "random", "relation"]
    accuracy, counts = accuracy_by_group(predictions, targets, groups)
    assert list(accuracy) == ["overall", "positive", "relation", "random"]
    assert accuracy == {
        "overall": 4 / 6,
        "positive": 2 / 3,
        "relation": 1.0,
        "random": 0.0,
    }
    assert counts == {"overall": 6, "positive": 3, "relation": 2, "random": 1}
    with pytest.raises(ValueError, match="one entry per item"):
        accuracy_by_group([1, 0], [1], ["a", "b"])
    with pytest.raises(ValueError, match="zero items"):
        accuracy_by_group([], [], [])


def _full_loss(model: FusionClassifier, features: TokenFeatures) -> float:
    """Cross-entropy of ``model`` over every item of ``features`` (eval mode)."""
    image, text, mask, targets = features.batch(torch.arange(len(features)))
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(
            model.eval().classify(image, text, mask), targets
        ).item()


def test_training_lowers_the_loss_and_leaves_the_towers_alone() -> None:
    config = FusionTaskConfig(**{**TINY, "steps": 80, "lr": 3e-2})
    backbone = _backbone()
    before = [p.clone() for p in backbone.dual_encoder.parameters()]
    data = build_task_data("qa", config)
    features = (encode_tokens(backbone, data.train), encode_tokens(backbone, data.test))
    result = train_fusion("film", "qa", config, backbone=backbone, features=features)
    # train_fusion seeds the same way before building its model
    torch.manual_seed(config.seed)
    untrained = FusionClassifier(backbone, "film", len(ANSWERS), config.fusion_dim)
    assert len(result.losses) == config.steps
    assert _full_loss(result.model, features[0]) < 0.75 * _full_loss(
        untrained, features[0]
    )
    assert all(
        torch.equal(a, b) for a, b in zip(before, backbone.dual_encoder.parameters())
    )
    assert result.counts["overall"] == 24
    assert result.fusion_parameters == sum(
        p.numel() for p in result.model.fusion.parameters()
    )


def test_pretraining_lowers_the_contrastive_loss_and_freezes() -> None:
    config = FusionTaskConfig(**{**TINY, "pretrain_steps": 25, "pretrain_lr": 1e-2})
    backbone = pretrain_backbone(config, extra_texts=["how many objects are there"])
    assert len(backbone.losses) == 25
    assert sum(backbone.losses[-5:]) / 5 < sum(backbone.losses[:5]) / 5 - 0.2
    assert not any(p.requires_grad for p in backbone.dual_encoder.parameters())
    assert "many" in backbone.tokenizer and "circle" in backbone.tokenizer


def test_compare_fusion_and_the_table() -> None:
    config = FusionTaskConfig(**{**TINY, "steps": 3})
    results = compare_fusion(["mean", "film"], "matching", config)
    assert [r.name for r in results] == ["mean", "film"]
    table = format_fusion_table(results).splitlines()
    assert table[0].split()[:2] == ["fusion", "overall"] and "relation" in table[0]
    mean_row = table[2].split()
    assert mean_row[0] == "mean" and float(mean_row[1]) == pytest.approx(
        100 * results[0].accuracy["overall"], abs=0.05
    )
    qa = FusionResult(
        "mean", "qa", {"overall": 0.5}, {"overall": 2}, [], 1, 0.0, results[0].model
    )
    with pytest.raises(ValueError, match="one task"):
        format_fusion_table([results[0], qa])


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        build_task_data("captioning")
    with pytest.raises(ValueError, match="steps"):
        FusionTaskConfig(steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        FusionTaskConfig(train_size=10, batch_size=64)
    with pytest.raises(ValueError, match="unknown fusion"):
        FusionTaskConfig(fusion_options={"sum": {}})
    with pytest.raises(ValueError, match="unknown fusion"):
        FusionClassifier(_backbone(), "sum", 2)
    with pytest.raises(ValueError, match="num_classes"):
        FusionClassifier(_backbone(), "mean", 1)
    with pytest.raises(TypeError, match="single str"):
        compare_fusion("mean", "matching")

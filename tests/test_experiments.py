"""Tests of the method registry and the comparison runner (crossalign.experiments).

Independent truths: losses against direct formulas (clip_loss, the siamese formula),
swap accuracy against a loop and a hand-counted example, the swap negatives against
ShapesWorld.relation_swap / attribute_swap, and every method's loss going down on a
fixed batch under the shared optimiser.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from crossalign.experiments.compare import (
    COMPARISON_TEXT_TOWER,
    CompareConfig,
    MethodResult,
    batch_indices,
    compare_methods,
    format_table,
    make_batch,
    optimise,
    prepare_data,
    swap_accuracy,
)
from crossalign.experiments.methods import AlignmentBatch, get_method, method_names
from crossalign.losses import clip_loss
from crossalign.models.text_encoders import ConvTextEncoder, GRUTextEncoder
from crossalign.train.trainer import build_model
from crossalign.utils import seed_everything

TINY = CompareConfig.fast(
    image_size=32, train_size=48, test_size=6, steps=3, batch_size=16, device="cpu"
)


@pytest.fixture(scope="module")
def data():
    return prepare_data(TINY)


def _fixed_batch(data, negatives: str | None) -> AlignmentBatch:
    images, captions = batch_indices(
        len(data.train_images), TINY.batch_size, 5, TINY.seed, 0
    )
    return make_batch(
        data, images, captions, torch.device("cpu"), negatives, TINY.max_len
    )


def _method(name: str, data):
    if name == "distillation":
        seed_everything(1)
        return get_method(name, teacher=build_model(TINY.experiment(), data.tokenizer))
    if name == "adversarial_only":
        # With the reversal switched off the game reduces to training the discriminator,
        # whose loss must fall.
        return get_method(name, lambda_=0.0)
    return get_method(name)


@pytest.mark.parametrize("name", method_names())
def test_every_method_trains_and_its_loss_falls_on_a_fixed_batch(
    name: str, data
) -> None:
    method = _method(name, data)
    seed_everything(0)
    model = build_model(TINY.experiment(), data.tokenizer)
    auxiliary = method.auxiliary(model.config.embed_dim)
    trainable = torch.nn.ModuleDict(
        {"model": model, **({"auxiliary": auxiliary} if auxiliary else {})}
    )
    batch = _fixed_batch(data, method.hard_negatives)
    train = TINY.experiment().train
    train.steps, train.warmup_steps, train.lr = 12, 1, 3e-3
    losses = optimise(
        trainable,
        lambda step: method.loss(model, batch, auxiliary),
        train,
        torch.device("cpu"),
    )
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert min(losses[-3:]) < losses[0], f"{name}: {losses}"


def test_registry_names_and_errors() -> None:
    assert method_names() == [
        "infonce",
        "vse0",
        "vsepp",
        "siamese",
        "adversarial",
        "adversarial_only",
        "distillation",
        "hard_negatives",
    ]
    assert [get_method(n).name for n in method_names() if n != "distillation"] == [
        n for n in method_names() if n != "distillation"
    ]
    with pytest.raises(ValueError, match="unknown alignment method 'clip'"):
        get_method("clip")
    with pytest.raises(TypeError, match="teacher"):
        get_method("distillation", teacher=torch.nn.Linear(2, 2))


def test_infonce_and_masked_hard_negatives_equal_clip_loss(data) -> None:
    seed_everything(0)
    model = build_model(TINY.experiment(), data.tokenizer).eval()
    batch = _fixed_batch(data, "all")
    with torch.no_grad():
        image_emb, text_emb, scale = model(
            batch.images, batch.input_ids, batch.attention_mask
        )
        expected = clip_loss(image_emb, text_emb, scale)
        assert torch.allclose(get_method("infonce").loss(model, batch), expected)
        none_valid = copy.copy(batch)
        none_valid.negative_valid = torch.zeros_like(batch.negative_valid)
        assert torch.allclose(
            get_method("hard_negatives").loss(model, none_valid), expected
        )
        # Real negatives can only add to the image-to-text denominators.
        assert get_method("hard_negatives").loss(model, batch) > expected


def test_siamese_loss_matches_its_formula(data) -> None:
    seed_everything(0)
    model = build_model(TINY.experiment(), data.tokenizer).eval()
    batch = _fixed_batch(data, None)
    with torch.no_grad():
        image_emb, text_emb, _ = model(
            batch.images, batch.input_ids, batch.attention_mask
        )
        same = (image_emb - text_emb).norm(dim=1).pow(2)
        different = (
            (1.0 - (image_emb - text_emb.roll(1, dims=0)).norm(dim=1))
            .clamp(min=0)
            .pow(2)
        )
        expected = torch.cat([same, different]).mean()
        assert torch.allclose(
            get_method("siamese", margin=1.0).loss(model, batch), expected, atol=1e-6
        )


def test_hard_negatives_are_the_swapped_captions(data) -> None:
    ids, attention, valid = data.hard_negatives(TINY.max_len)
    world = data.train_set
    assert ids.shape[:3] == (TINY.train_size, 5, 2) and valid.shape == (
        TINY.train_size,
        5,
        2,
    )
    for index in range(TINY.train_size):
        for caption in range(5):
            for k, swap in enumerate((world.relation_swap, world.attribute_swap)):
                text = swap(index, caption)
                assert bool(valid[index, caption, k]) == (text is not None)
                if text is not None:
                    expected, _ = data.tokenizer.encode_batch(
                        [text], max_len=TINY.max_len
                    )
                    length = int(attention[index, caption, k].sum())
                    assert (
                        ids[index, caption, k, :length].tolist() == expected[0].tolist()
                    )
    assert valid.any() and not valid.all()


def test_batch_negatives_chosen_are_a_slice_of_all(data) -> None:
    images, captions = batch_indices(TINY.train_size, TINY.batch_size, 5, TINY.seed, 1)
    cpu = torch.device("cpu")
    chosen = make_batch(data, images, captions, cpu, "chosen", TINY.max_len)
    every = make_batch(data, images, captions, cpu, "all", TINY.max_len)
    assert chosen.negative_valid.shape == (
        TINY.batch_size,
        2,
    ) and every.negative_valid.shape == (TINY.batch_size, 10)
    for row in range(TINY.batch_size):
        c = int(captions[row])
        assert torch.equal(
            every.negative_valid[row, 2 * c : 2 * c + 2], chosen.negative_valid[row]
        )
        assert torch.equal(
            every.negative_ids[row, 2 * c : 2 * c + 2], chosen.negative_ids[row]
        )
    assert (
        make_batch(data, images, captions, cpu, None, TINY.max_len).negative_ids is None
    )
    with pytest.raises(ValueError, match="negatives"):
        make_batch(data, images, captions, cpu, "some", TINY.max_len)


def test_batches_are_epoch_permutations_and_reproducible() -> None:
    seen = torch.cat([batch_indices(48, 16, 5, 3, step)[0] for step in range(3)])
    assert sorted(seen.tolist()) == list(range(48))
    first, second = batch_indices(48, 16, 5, 3, 4), batch_indices(48, 16, 5, 3, 4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert int(first[1].min()) >= 0 and int(first[1].max()) < 5
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(8, 16, 5, 0, 0)


def test_swap_accuracy_hand_computed_and_against_a_loop() -> None:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    image = torch.stack([e1, e1, e1, e2])
    true = torch.stack([e1, e2, e1, e2])
    # right, wrong, tie (counts as wrong), right
    swapped = torch.stack([e2, e1, e1, e1])
    assert swap_accuracy(image, true, swapped) == 0.5
    generator = torch.Generator().manual_seed(0)
    image, true, swapped = (torch.randn(50, 8, generator=generator) for _ in range(3))
    loop = (
        sum(float(image[i] @ true[i]) > float(image[i] @ swapped[i]) for i in range(50))
        / 50
    )
    assert swap_accuracy(image, true, swapped) == pytest.approx(loop)
    with pytest.raises(ValueError, match="same shape"):
        swap_accuracy(image, true[:3], swapped)


def test_format_table_has_every_column_and_row() -> None:
    retrieval = {f"{d}_r{k}": 0.5 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    geometry = {
        "modality_gap": 0.25,
        "alignment": 0.5,
        "uniformity_image": -3.0,
        "uniformity_text": -2.0,
    }
    rows = [
        MethodResult("infonce", retrieval, 0.5, 0.75, geometry, 12.34),
        MethodResult(
            "hard_negatives", {**retrieval, "i2t_r1": 0.875}, 0.96, 0.9, geometry, 20.0
        ),
    ]
    table = format_table(rows)
    lines = table.splitlines()
    for column in (
        "method",
        "i2t R@1",
        "t2i R@1",
        "R@5",
        "R@10",
        "rel-swap",
        "attr-swap",
        "gap",
        "align",
        "unif",
        "time s",
    ):
        assert column in lines[0]
    assert len(lines) == 4
    assert lines[2].split() == [
        "infonce",
        "0.50",
        "0.50",
        "0.50",
        "0.50",
        "0.50",
        "0.50",
        "0.50",
        "0.75",
        "0.25",
        "0.50",
        "-2.50",
        "12.3",
    ]
    assert lines[3].split()[1] == "0.88" and lines[3].split()[7] == "0.96"
    with pytest.raises(ValueError):
        format_table([])


def test_compare_methods_scores_are_in_range_and_distillation_reuses_infonce() -> None:
    results = compare_methods(["infonce", "distillation"], TINY)
    assert [r.name for r in results] == ["infonce", "distillation"]
    for result in results:
        assert len(result.losses) == TINY.steps and all(
            math.isfinite(x) for x in result.losses
        )
        assert all(
            0.0 <= result.retrieval[f"{d}_r{k}"] <= 1.0
            for d in ("i2t", "t2i")
            for k in (1, 5, 10)
        )
        # with 6 test images every rank is at most 6
        assert result.retrieval["t2i_r10"] == 1.0
        assert (
            0.0 <= result.relation_swap <= 1.0 and 0.0 <= result.attribute_swap <= 1.0
        )
        assert 0.0 <= result.geometry["modality_gap"] <= 2.0 and result.seconds > 0
    with pytest.raises(ValueError, match="unknown alignment methods"):
        compare_methods(["infonce", "nope"], TINY)


def test_format_table_widens_the_name_column_for_long_names() -> None:
    retrieval = {f"{d}_r{k}": 0.5 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    geometry = {
        "modality_gap": 0.25,
        "alignment": 0.5,
        "uniformity_image": -3.0,
        "uniformity_text": -2.0,
    }
    rows = [
        MethodResult(
            "infonce, oracle, conv tower", retrieval, 0.5, 0.75, geometry, 1.0
        ),
        MethodResult("vse0", retrieval, 0.5, 0.75, geometry, 1.0),
    ]
    lines = format_table(rows).splitlines()
    assert lines[2].split()[:4] == ["infonce,", "oracle,", "conv", "tower"]
    assert len({len(line) for line in lines}) == 1  # every row as wide as the header
    assert lines[0].index("i2t R@1") == lines[3].index("0.50") - 3


def test_text_tower_choice_builds_the_named_encoder(data) -> None:
    conv = build_model(TINY.experiment(), data.tokenizer).text_encoder
    assert isinstance(conv, ConvTextEncoder)
    assert {k: conv.config[k] for k in COMPARISON_TEXT_TOWER if k != "name"} == {
        k: v for k, v in COMPARISON_TEXT_TOWER.items() if k != "name"
    }
    recipe = dataclasses.replace(TINY, text_tower="recipe")
    assert isinstance(
        build_model(recipe.experiment(), data.tokenizer).text_encoder, GRUTextEncoder
    )
    with pytest.raises(ValueError, match="text_tower='lstm' must be one of"):
        dataclasses.replace(TINY, text_tower="lstm").experiment()


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        CompareConfig.fast(train_size=10, batch_size=16).check()
    with pytest.raises(ValueError, match="steps"):
        CompareConfig.fast(steps=0).check()


@pytest.mark.parametrize(
    "setting", ["compile=True", "grad_accum=2", "channels_last=True"]
)
def test_the_runner_rejects_settings_it_does_not_honour(setting):
    name, value = setting.split("=")
    train = dataclasses.replace(
        TINY.experiment().train, **{name: int(value) if value.isdigit() else True}
    )
    with pytest.raises(ValueError, match=name):
        optimise(
            torch.nn.Linear(2, 2),
            lambda step: torch.zeros(()),
            train,
            torch.device("cpu"),
        )

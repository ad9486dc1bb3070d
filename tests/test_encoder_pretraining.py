"""Encoder pretraining on ShapesWorld scene labels: targets read off the scene graph, a
loss that falls well below its starting value, reproducibility and the freezing
contract."""

from __future__ import annotations

import pytest
import torch

from crossalign.data.batches import EpochBatches
from crossalign.data.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    SceneGraph,
    ShapeObject,
    ShapesWorld,
)
from crossalign.models.image_encoders import SmallCNN
from crossalign.train.encoder_pretraining import (
    LABEL_GROUPS,
    SCENE_LABELS,
    pretrain_on_scene_labels,
    scene_label_names,
    scene_label_targets,
)

TWO_OBJECTS = SceneGraph(
    objects=(
        ShapeObject("circle", "red", "small", 0.2, 0.2),
        ShapeObject("cross", "red", "large", 0.8, 0.7),
    ),
    relations=(),
)


def test_targets_mark_exactly_the_attributes_present():
    empty = SceneGraph(objects=(), relations=())
    targets = scene_label_targets([TWO_OBJECTS, empty])
    assert SCENE_LABELS == (*SHAPES, *COLOURS, *SIZES) and targets.shape == (
        2,
        len(SCENE_LABELS),
    )
    on = {SCENE_LABELS[j] for j in torch.nonzero(targets[0]).flatten().tolist()}
    assert on == {"circle", "cross", "red", "small", "large"}
    assert targets[1].sum() == 0


def test_pair_and_region_targets_bind_attributes_and_place_centres():
    names = scene_label_names(["pairs", "regions"])
    assert (
        len(names)
        == len(COLOURS) * len(SHAPES) + len(SIZES) * len(SHAPES) + 9
        == len(set(names))
    )
    targets = scene_label_targets([TWO_OBJECTS], ["pairs", "regions"])
    on = {names[j] for j in torch.nonzero(targets[0]).flatten().tolist()}
    # centres (0.2, 0.2) and (0.8, 0.7): the top-left and bottom-right ninths (y points
    # down)
    assert on == {
        "red circle",
        "small circle",
        "red cross",
        "large cross",
        "top left",
        "bottom right",
    }
    # the scene has a large object and a circle, but no large circle: a pair needs one
    # object with both
    assert targets[0, names.index("large circle")] == 0
    everything = scene_label_targets([TWO_OBJECTS], list(LABEL_GROUPS))
    assert (
        everything.shape == (1, len(SCENE_LABELS) + len(names))
        and everything.sum() == 5 + 6
    )


@pytest.mark.parametrize(
    "groups", [[], "regions", ["regions", "regions"], ["attributes", "positions"]]
)
def test_label_groups_are_checked(groups):
    with pytest.raises(ValueError, match="label_groups"):
        scene_label_names(groups)


def test_pretraining_lowers_the_label_loss_and_is_reproducible():
    world = ShapesWorld("train", size=256, image_size=32, seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        encoder = SmallCNN(widths=(8, 16, 32), downsample="maxpool")
        result = pretrain_on_scene_labels(
            encoder, world, steps=60, batch_size=32, lr=1e-2, warmup_steps=5, seed=3
        )
        runs.append((encoder, result))
    (encoder, result), (twin, twin_result) = runs
    assert len(result.history) == 60 and result.seconds > 0
    assert sum(result.history[-5:]) / 5 < 0.7 * result.history[0]
    assert result.history == twin_result.history
    assert all(
        torch.equal(a, b)
        for a, b in zip(encoder.state_dict().values(), twin.state_dict().values())
    )


def test_pretraining_on_every_label_group_sizes_the_head_and_lowers_the_loss():
    torch.manual_seed(0)
    encoder = SmallCNN(widths=(8, 16, 32), downsample="maxpool")
    world = ShapesWorld("train", size=256, image_size=32, seed=0)
    result = pretrain_on_scene_labels(
        encoder,
        world,
        steps=60,
        batch_size=32,
        lr=1e-2,
        warmup_steps=5,
        label_groups=list(LABEL_GROUPS),
    )
    assert result.labels == scene_label_names(
        list(LABEL_GROUPS)
    ) and result.head.out_features == len(result.labels)
    assert sum(result.history[-5:]) / 5 < 0.7 * result.history[0]


def test_frozen_parameters_are_trained_then_frozen_again():
    encoder = SmallCNN(widths=(8, 16))
    encoder.requires_grad_(False)
    encoder.eval()
    # the grid (not the pooled head)
    before = [p.detach().clone() for p in encoder.features.parameters()]
    pretrain_on_scene_labels(
        encoder, ShapesWorld("train", size=64, image_size=32), steps=3, batch_size=8
    )
    assert not any(
        torch.equal(a, b) for a, b in zip(before, encoder.features.parameters())
    )
    assert (
        not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    )


def test_pretraining_reads_epoch_batches_and_leaves_no_gradient_behind(monkeypatch):
    """Each step renders the batch :class:`EpochBatches` gives for that step (every
    image once per epoch), and the encoder ends with no gradient: a stale one would
    count in the norm of a later loop that clips over the whole model."""
    world = ShapesWorld("train", size=40, image_size=32, seed=0)
    rendered: list[list[int]] = []
    render = world.render

    def recording(indices):
        rendered.append(list(indices))
        return render(indices)

    monkeypatch.setattr(world, "render", recording)
    encoder = SmallCNN(widths=(8, 16))
    pretrain_on_scene_labels(encoder, world, steps=6, batch_size=16, seed=5)
    batches = EpochBatches(40, 16, 5)
    assert rendered == [batches(step).tolist() for step in range(6)]
    assert sorted(rendered[0] + rendered[1]) == sorted(set(rendered[0] + rendered[1]))
    assert all(p.grad is None for p in encoder.parameters())


def test_pretraining_refuses_what_it_cannot_use():
    encoder = SmallCNN(widths=(8,))
    with pytest.raises(TypeError, match="needs a ShapesWorld"):
        pretrain_on_scene_labels(encoder, [1, 2, 3], steps=1)
    with pytest.raises(ValueError, match="steps and batch_size"):
        pretrain_on_scene_labels(
            encoder, ShapesWorld("train", size=8, image_size=32), steps=0
        )
    with pytest.raises(TypeError, match="forward_grid"):
        pretrain_on_scene_labels(
            torch.nn.Linear(2, 2), ShapesWorld("train", size=8, image_size=32), steps=1
        )

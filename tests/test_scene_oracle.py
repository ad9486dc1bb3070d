"""The scene-graph oracle tower: features read off the scene graph, a set function that ignores
empty slots and object order, and training through the comparison runner's own loop."""

from __future__ import annotations

import pytest
import torch

from crossalign.data.shapes import COLOURS, SHAPES, SIZES, ShapesWorld
from crossalign.experiments.compare import CompareConfig, prepare_data, train_method
from crossalign.experiments.scene_oracle import (
    MAX_SCENE_OBJECTS, SCENE_FEATURES, SceneGraphEncoder, scene_features, train_with_scene_oracle,
)


def test_features_encode_each_object_and_leave_absent_slots_empty():
    world = ShapesWorld("test", size=40, image_size=32, seed=1)
    features = scene_features(world)
    assert features.shape == (40, MAX_SCENE_OBJECTS, SCENE_FEATURES)
    colour_at, size_at = len(SHAPES), len(SHAPES) + len(COLOURS)
    place_at = size_at + len(SIZES)
    for row, scene in enumerate(world.scenes(range(40))):
        for slot in range(MAX_SCENE_OBJECTS):
            v = features[row, slot]
            if slot >= len(scene.objects):
                assert v.abs().sum() == 0
                continue
            obj = scene.objects[slot]
            assert SHAPES[int(v[:colour_at].argmax())] == obj.shape and v[:colour_at].sum() == 1
            assert COLOURS[int(v[colour_at:size_at].argmax())] == obj.colour and v[colour_at:size_at].sum() == 1
            assert SIZES[int(v[size_at:place_at].argmax())] == obj.size and v[size_at:place_at].sum() == 1
            assert torch.allclose(v[place_at:], torch.tensor([2 * obj.x - 1, 2 * obj.y - 1, 1.0]))
    with pytest.raises(TypeError, match="ShapesWorld"):
        scene_features([1, 2])


def test_encoder_is_a_set_function_of_the_real_objects():
    torch.manual_seed(0)
    encoder = SceneGraphEncoder(out_dim=16, hidden_dim=32)
    features = scene_features(ShapesWorld("test", size=8, image_size=32, seed=2))
    out = encoder(features)
    assert out.shape == (8, 16)
    assert torch.allclose(encoder(features.flip(1)), out, atol=1e-6)  # object order does not matter
    junk = features.clone()
    empty = junk[..., -1] == 0
    junk[empty] = torch.where(torch.arange(SCENE_FEATURES) < SCENE_FEATURES - 1, 5.0, 0.0)  # garbage, not present
    assert torch.allclose(encoder(junk), out, atol=1e-6)
    one = encoder.mlp(features[:, :1]).squeeze(1)  # a lone object: exactly its own vector
    lone = features[:, 1, -1] == 0
    assert torch.allclose(out[lone], one[lone], atol=1e-6)
    with pytest.raises(ValueError, match="scene_features"):
        encoder(torch.zeros(2, 3, 4))


def test_oracle_training_runs_the_comparison_loop_and_keeps_the_pixels_untouched():
    config = CompareConfig.fast(train_size=128, test_size=32, steps=4, batch_size=32)
    data = prepare_data(config)
    pixels = data.train_images.clone()
    result = train_with_scene_oracle("hard_negatives", config, data)
    assert isinstance(result.model.image_encoder, SceneGraphEncoder)
    assert len(result.losses) == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    assert 0.0 <= result.relation_swap <= 1.0 and set(result.retrieval) >= {"i2t_r1", "t2i_r1"}
    assert torch.equal(data.train_images, pixels) and data.negatives is not None  # data reusable for the CNN
    again = train_with_scene_oracle("hard_negatives", config, data)
    assert again.losses == result.losses  # seeded: the same run twice


def test_train_method_refuses_an_image_encoder_of_the_wrong_width():
    config = CompareConfig.fast(train_size=64, test_size=16, steps=1, batch_size=32)
    with pytest.raises(ValueError, match="out_dim"):
        train_method("infonce", config, image_encoder=SceneGraphEncoder(out_dim=7))

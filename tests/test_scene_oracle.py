"""The scene-graph oracle: features read off the scene graph, a set function that
ignores empty slots and object order, training through the comparison runner's own loop,
and captioners trained on scene graphs through the captioning loop."""

from __future__ import annotations

import pytest
import torch

from crossalign.data.build import build_caption_dataset
from crossalign.data.shapes import COLOURS, SHAPES, SIZES, ShapesWorld
from crossalign.evaluation import evaluate_captioner
from crossalign.experiments.compare import CompareConfig, prepare_data, train_method
from crossalign.experiments.scene_oracle import (
    MAX_SCENE_OBJECTS,
    SCENE_FEATURES,
    SceneGraphCaptions,
    SceneGraphEncoder,
    oracle_caption_config,
    oracle_caption_dataset,
    scene_features,
    train_captioner_with_scene_oracle,
    train_with_scene_oracle,
)
from crossalign.train.captioning import (
    default_caption_config_path,
    load_caption_config,
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
            assert (
                SHAPES[int(v[:colour_at].argmax())] == obj.shape
                and v[:colour_at].sum() == 1
            )
            assert (
                COLOURS[int(v[colour_at:size_at].argmax())] == obj.colour
                and v[colour_at:size_at].sum() == 1
            )
            assert (
                SIZES[int(v[size_at:place_at].argmax())] == obj.size
                and v[size_at:place_at].sum() == 1
            )
            assert torch.allclose(
                v[place_at:], torch.tensor([2 * obj.x - 1, 2 * obj.y - 1, 1.0])
            )
    with pytest.raises(TypeError, match="ShapesWorld"):
        scene_features([1, 2])


def test_encoder_is_a_set_function_of_the_real_objects():
    torch.manual_seed(0)
    encoder = SceneGraphEncoder(out_dim=16, hidden_dim=32)
    features = scene_features(ShapesWorld("test", size=8, image_size=32, seed=2))
    out = encoder(features)
    assert out.shape == (8, 16)
    # object order does not matter
    assert torch.allclose(encoder(features.flip(1)), out, atol=1e-6)
    junk = features.clone()
    empty = junk[..., -1] == 0
    # garbage, not present
    junk[empty] = torch.where(
        torch.arange(SCENE_FEATURES) < SCENE_FEATURES - 1, 5.0, 0.0
    )
    assert torch.allclose(encoder(junk), out, atol=1e-6)
    # a lone object: exactly its own vector
    one = encoder.mlp(features[:, :1]).squeeze(1)
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
    assert 0.0 <= result.relation_swap <= 1.0 and set(result.retrieval) >= {
        "i2t_r1",
        "t2i_r1",
    }
    # data reusable for the CNN
    assert torch.equal(data.train_images, pixels) and data.negatives is not None
    again = train_with_scene_oracle("hard_negatives", config, data)
    assert again.losses == result.losses  # seeded: the same run twice


def test_train_method_refuses_an_image_encoder_of_the_wrong_width():
    config = CompareConfig.fast(train_size=64, test_size=16, steps=1, batch_size=32)
    with pytest.raises(ValueError, match="out_dim"):
        train_method("infonce", config, image_encoder=SceneGraphEncoder(out_dim=7))


def _tiny_caption_config(*overrides: str):
    return load_caption_config(default_caption_config_path()).override(
        [
            "data.train_size=64",
            "data.test_size=16",
            "data.image_size=32",
            "train.steps=3",
            "train.batch_size=8",
            "train.warmup_steps=1",
            "train.progress=false",
            "model.hidden_dim=32",
            "model.embed_dim=16",
            "model.attention_dim=16",
            *overrides,
        ]
    )


def test_scene_graph_captions_are_the_image_worlds_scenes_and_captions():
    config = _tiny_caption_config()
    images, graphs = (
        build_caption_dataset(config, "test"),
        oracle_caption_dataset(config, "test"),
    )
    assert isinstance(graphs, SceneGraphCaptions) and len(graphs) == len(images) == 16
    assert torch.equal(graphs.features, scene_features(images))
    items = graphs.__getitems__([3, 0, 15])
    for item, index in zip(items, [3, 0, 15]):
        assert set(item) == {"features", "captions", "index"} and item["index"] == index
        assert torch.equal(item["features"], scene_features(images)[index])
        assert item["captions"] == images[index]["captions"] == images.captions(index)
        assert graphs.scene(index) == images.scene(index)


def test_captioner_trains_and_decodes_from_scene_graphs_without_touching_the_config():
    config = _tiny_caption_config()
    before = config.to_dict()
    run = train_captioner_with_scene_oracle(config)
    assert config.to_dict() == before  # the caller's config keeps its image encoder
    assert (
        run.model.encoder is None
        and run.model.feature_dim == SCENE_FEATURES
        and run.pretrain_seconds == 0.0
    )
    assert (
        run.config.model.image_encoder is None
        and run.config.train.encoder_pretrain_steps == 0
    )
    assert len(run.history) == 3 and all(
        torch.isfinite(torch.tensor([h["loss"] for h in run.history]))
    )
    result = evaluate_captioner(
        run.model,
        oracle_caption_dataset(config, "test"),
        run.tokenizer,
        beam_size=2,
        max_len=12,
    )
    assert (
        len(result.captions) == 16
        and 0.0 <= result.metrics["semantic"] <= 1.0
        and "BLEU-4" in result.metrics
    )
    again = train_captioner_with_scene_oracle(config)
    # seeded: the same run twice
    assert [h["loss"] for h in again.history] == [h["loss"] for h in run.history]


def test_scene_graph_oracle_needs_shapesworld():
    config = _tiny_caption_config("data.name=flickr8k", "data.root=/nonexistent")
    with pytest.raises(ValueError, match="data.name"):
        oracle_caption_config(config)

"""A dual encoder trained on cached features of a frozen image encoder (chapter 1 on
Flickr8k), and the full-size budgets that CI's smoke run shrinks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from flickr8k_fixtures import make_spec, save_stand_in_weights, write_original

import crossalign.utils
from crossalign import full
from crossalign.data import CaptionCollator, Vocabulary, batch_inputs, build_dataset
from crossalign.data.feature_cache import CachedFeatures, cache_flickr8k_features
from crossalign.data.flickr8k import Flickr8k
from crossalign.evaluation import embed_images
from crossalign.models.dual_encoder import (
    DualEncoder,
    DualEncoderConfig,
    PrecomputedFeatures,
)
from crossalign.train import default_config_path, load_config, train
from crossalign.train.checkpoint import load_weights, resolve_checkpoint
from crossalign.utils import seed_everything


@pytest.fixture
def flickr_root(tmp_path):
    spec = make_spec(n_train=24, n_val=4, n_test=6)
    write_original(tmp_path / "flickr8k", spec)
    return tmp_path / "flickr8k", spec


def _config(root, cache, steps=3):
    return load_config(default_config_path()).override(
        [
            "data.name=flickr8k",
            f"data.root={root}",
            "data.image_size=32",
            f"data.feature_cache={cache}",
            "data.feature_encoder=resnet18",
            "data.pretrained_encoder=false",
            "model.image_encoder=features",
            "model.image_kwargs={}",
            f"train.steps={steps}",
            "train.batch_size=8",
            "train.progress=false",
            "train.device=cpu",
        ]
    )


def test_pooled_cache_holds_the_frozen_resnets_pooled_output(flickr_root, tmp_path):
    root, spec = flickr_root
    path = cache_flickr8k_features(
        root,
        tmp_path / "cache",
        splits=("test",),
        encoder="resnet18",
        pretrained=False,
        image_size=32,
        seed=3,
        device="cpu",
        progress=False,
        pooled=True,
    )["test"]
    assert path.name == "flickr8k_test_resnet18-random-seed3-32px-pooled.safetensors"
    cached = CachedFeatures(path)
    # the same weights, rebuilt from the seed, give the cached vectors
    seed_everything(3)
    resnet = torchvision.models.resnet18(weights=None).eval()
    resnet.fc = torch.nn.Identity()
    test_split = Flickr8k(root, "test", image_size=32, progress=False)
    images = torch.stack([item["image"] for item in test_split])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = resnet((images - mean) / std)
    assert cached.features.shape == (len(spec.splits["test"]), 512)
    torch.testing.assert_close(cached.features.float(), expected, rtol=2e-3, atol=2e-3)


def test_a_dual_encoder_trains_on_cached_features_and_reloads(flickr_root, tmp_path):
    root, _ = flickr_root
    config = _config(root, tmp_path / "cache")
    config.train.output_dir = str(tmp_path / "run")
    result = train(config)
    model = result.model
    assert isinstance(model.image_encoder, PrecomputedFeatures)
    assert model.config.image_kwargs == {"dim": 512}
    assert len(result.history) == 3
    test_set = build_dataset(config.data, "test", device="cpu")
    assert isinstance(test_set, CachedFeatures)
    embedded = embed_images(model, test_set)
    assert embedded.shape == (6, config.model.embed_dim)
    # the checkpoint rebuilds the same model from its saved config
    reloaded = DualEncoder(DualEncoderConfig.from_dict(model.config.to_dict()))
    load_weights(reloaded, resolve_checkpoint(result.checkpoint))
    torch.testing.assert_close(embed_images(reloaded, test_set), embedded)


def test_mismatched_encoder_and_data_are_named(flickr_root, tmp_path):
    root, _ = flickr_root
    features_without_cache = _config(root, tmp_path / "cache")
    features_without_cache.data.feature_cache = None
    with pytest.raises(ValueError, match="data.feature_cache"):
        train(features_without_cache)
    cache_with_cnn = _config(root, tmp_path / "cache").override(
        ["model.image_encoder=small_cnn"]
    )
    with pytest.raises(ValueError, match="model.image_encoder='features'"):
        train(cache_with_cnn)
    shapes_with_cache = load_config(default_config_path()).override(
        [f"data.feature_cache={tmp_path}"]
    )
    with pytest.raises(ValueError, match="ShapesWorld"):
        build_dataset(shapes_with_cache.data, "test")
    with pytest.raises(ValueError, match=r"shape \[B, 4\]"):
        PrecomputedFeatures(4)(torch.zeros(2, 5))


def test_collator_and_batch_inputs_read_images_or_features():
    vocab = Vocabulary.build(["a red circle", "a blue square"])
    items = [
        {
            "features": torch.full((3,), float(i)),
            "captions": ["a red circle"],
            "index": i,
        }
        for i in range(2)
    ]
    batch = CaptionCollator(vocab, caption="first")(items)
    assert torch.equal(batch["images"], torch.tensor([[0.0] * 3, [1.0] * 3]))
    images = [{"image": torch.zeros(3, 4, 4)}, {"image": torch.ones(3, 4, 4)}]
    assert batch_inputs(images).shape == (2, 3, 4, 4)


def test_stand_in_weights_load_through_torchvisions_pretrained_path(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (path,) = save_stand_in_weights(tmp_path / "torch", ["resnet18"])
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    loaded = torchvision.models.resnet18(
        weights=weights
    )  # no download: the file is there
    saved = torch.load(path, weights_only=True)
    assert torch.equal(loaded.conv1.weight, saved["conv1.weight"])


def test_full_is_the_budget_unless_a_smoke_run_shrinks_it(monkeypatch, capsys):
    monkeypatch.setattr(crossalign.utils, "_smoke_announced", False)
    monkeypatch.delenv("CROSSALIGN_SMOKE", raising=False)
    assert full(3000) == 3000
    monkeypatch.setenv("CROSSALIGN_SMOKE", "1")
    assert [full(3000), full(40), full(12)] == [75, 1, 1]
    assert "CROSSALIGN_SMOKE=1" in capsys.readouterr().out
    with pytest.raises(ValueError, match="positive integer"):
        full(0)
    with pytest.raises(ValueError, match="positive integer"):
        full(2.5)

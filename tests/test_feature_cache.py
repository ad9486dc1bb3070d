"""Feature cache: cached features equal the frozen encoder's output; writes are atomic;
metadata is checked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from flickr8k_fixtures import make_spec, write_original
from safetensors import safe_open
from torch import nn

from crossalign.data.feature_cache import (
    CachedFeatures,
    cache_image_features,
    load_feature_cache,
    sidecar_path,
)
from crossalign.data.flickr8k import Flickr8k

# fp16 keeps 11 significant bits: relative rounding error <= 2**-11 ~ 4.9e-4
# (bf16: 3.9e-3).
FP16_RTOL = 6e-4


class TinyEncoder(nn.Module):
    """Conv + BatchNorm + Dropout: train mode would change both the output and the BN
    statistics."""

    def __init__(self, grid: bool = False) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
        self.dropout = nn.Dropout(0.5)
        self.grid = grid
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_inference_mode_enabled()))
        features = self.dropout(torch.relu(self.bn(self.conv(images))))
        return features if self.grid else features.mean(dim=(2, 3))


class ImageDicts(torch.utils.data.Dataset):
    """Random images with captions and ids, as items of the project's data sets look."""

    def __init__(self, n: int = 10, size: int = 12) -> None:
        self.images = torch.rand(
            n, 3, size, size, generator=torch.Generator().manual_seed(1)
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "captions": [f"image {i}", f"picture {i}"],
            "image_id": f"{i:03d}.jpg",
            "index": i,
        }


def reference_features(encoder: TinyEncoder, images: torch.Tensor) -> torch.Tensor:
    encoder.eval()
    with torch.no_grad():
        return encoder(images)


@pytest.mark.parametrize("grid", [False, True], ids=["pooled", "grid"])
def test_cached_features_equal_the_fp32_output_to_fp16_precision(tmp_path, grid):
    data, encoder = ImageDicts(), TinyEncoder(grid)
    path = cache_image_features(
        encoder,
        data,
        tmp_path / "feats.safetensors",
        batch_size=4,
        progress=False,
        encoder_id="tiny-v1",
    )
    expected = reference_features(TinyEncoder(grid), data.images)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.get_tensor("features").dtype == torch.float16
    cached = CachedFeatures(path)
    assert len(cached) == 10 and cached[3]["features"].dtype == torch.float32
    stacked = torch.stack([cached[i]["features"] for i in range(len(cached))])
    torch.testing.assert_close(stacked, expected, rtol=FP16_RTOL, atol=1e-7)
    assert not torch.equal(stacked, expected)
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["encoder_class"] == "TinyEncoder" and meta["encoder_id"] == "tiny-v1"
    assert (
        meta["num_items"] == 10
        and meta["feature_shape"] == list(expected.shape[1:])
        and meta["dtype"] == "float16"
    )
    assert meta["image_ids"] == [f"{i:03d}.jpg" for i in range(10)]
    assert cached[7]["captions"] == ["image 7", "picture 7"] and cached[7]["index"] == 7


def test_float32_cache_matches_to_float32_precision(tmp_path):
    data = ImageDicts()
    path = cache_image_features(
        TinyEncoder(),
        data,
        tmp_path / "f.safetensors",
        batch_size=3,
        dtype=torch.float32,
        progress=False,
    )
    features, meta = load_feature_cache(path)
    assert features.dtype == torch.float32 and meta["dtype"] == "float32"
    torch.testing.assert_close(
        features, reference_features(TinyEncoder(), data.images), rtol=1e-5, atol=1e-6
    )


def test_encoder_runs_in_eval_and_inference_mode_and_keeps_its_mode(tmp_path):
    encoder = TinyEncoder().train()
    running_mean = encoder.bn.running_mean.clone()
    cache_image_features(
        encoder, ImageDicts(), tmp_path / "f.safetensors", batch_size=4, progress=False
    )
    assert encoder.calls == [(False, True)] * 3
    assert encoder.training
    torch.testing.assert_close(encoder.bn.running_mean, running_mean, rtol=0, atol=0)


class CrashingEncoder(TinyEncoder):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if len(self.calls) == 1:
            raise RuntimeError("out of memory, say")
        return super().forward(images)


def test_a_crash_midway_leaves_no_file_and_an_earlier_cache_intact(tmp_path):
    path = tmp_path / "f.safetensors"
    with pytest.raises(RuntimeError, match="out of memory"):
        cache_image_features(
            CrashingEncoder(), ImageDicts(), path, batch_size=4, progress=False
        )
    assert list(tmp_path.iterdir()) == []
    cache_image_features(
        TinyEncoder(),
        ImageDicts(),
        path,
        batch_size=4,
        progress=False,
        encoder_id="first",
    )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="out of memory"):
        cache_image_features(
            CrashingEncoder(),
            ImageDicts(),
            path,
            batch_size=4,
            progress=False,
            encoder_id="second",
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert (
        CachedFeatures(path, expected_encoder_id="first").metadata["encoder_id"]
        == "first"
    )


def test_missing_sidecar_is_named(tmp_path):
    path = cache_image_features(
        TinyEncoder(), ImageDicts(), tmp_path / "f.safetensors", progress=False
    )
    sidecar_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="f.json"):
        CachedFeatures(path)
    with pytest.raises(FileNotFoundError, match="no feature cache"):
        CachedFeatures(tmp_path / "absent.safetensors")


def test_metadata_that_does_not_match_the_callers_expectation_is_refused(tmp_path):
    path = cache_image_features(
        TinyEncoder(),
        ImageDicts(),
        tmp_path / "f.safetensors",
        progress=False,
        encoder_id="resnet50-imagenet",
    )
    assert (
        len(
            CachedFeatures(
                path,
                expected_encoder_id="resnet50-imagenet",
                expected_num_items=10,
                expected_feature_shape=[8],
            )
        )
        == 10
    )
    for kwargs, field in [
        ({"expected_encoder_id": "vit-b16"}, "encoder_id"),
        ({"expected_num_items": 8000}, "num_items"),
        ({"expected_feature_shape": (2048,)}, "feature_shape"),
    ]:
        with pytest.raises(ValueError, match=field):
            CachedFeatures(path, **kwargs)


def test_a_sidecar_from_another_run_is_refused(tmp_path):
    first = cache_image_features(
        TinyEncoder(), ImageDicts(), tmp_path / "a.safetensors", progress=False
    )
    second = cache_image_features(
        TinyEncoder(), ImageDicts(), tmp_path / "b.safetensors", progress=False
    )
    shutil.copy(sidecar_path(second), sidecar_path(first))
    with pytest.raises(ValueError, match="different runs"):
        CachedFeatures(first)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        cache_image_features(
            TinyEncoder(), ImageDicts(), tmp_path / "f.pt", progress=False
        )

    class TupleEncoder(TinyEncoder):
        def forward(self, images):
            return (super().forward(images),)

    with pytest.raises(TypeError, match="encoder must return a tensor"):
        cache_image_features(
            TupleEncoder(), ImageDicts(), tmp_path / "f.safetensors", progress=False
        )
    with pytest.raises(TypeError, match="'image' tensor"):
        cache_image_features(
            TinyEncoder(),
            [torch.rand(3, 8, 8)],
            tmp_path / "f.safetensors",
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []


def test_a_flickr8k_cache_carries_captions_and_ids_so_images_are_not_needed(tmp_path):
    spec = make_spec()
    write_original(tmp_path / "flickr8k", spec)
    data = Flickr8k(tmp_path / "flickr8k", "test", image_size=16, progress=False)
    path = cache_image_features(
        TinyEncoder(grid=True),
        data,
        tmp_path / "test.safetensors",
        batch_size=3,
        progress=False,
    )
    shutil.rmtree(tmp_path / "flickr8k")
    cached = CachedFeatures(path, expected_num_items=len(spec.splits["test"]))
    assert cached.image_ids == spec.splits["test"]
    assert [cached[i]["captions"] for i in range(len(cached))] == [
        spec.captions[name] for name in spec.splits["test"]
    ]
    captions, image_index = cached.caption_image_index()
    assert captions[5] == spec.captions[spec.splits["test"][1]][
        0
    ] and image_index.tolist() == [i for i in range(4) for _ in range(5)]
    assert (
        cached[0]["features"].shape == (8, 16, 16)
        and cached.metadata["dataset_class"] == "Flickr8k"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_caching_on_cuda_matches_cpu(tmp_path):
    data = ImageDicts(n=20, size=32)
    on_cpu = cache_image_features(
        TinyEncoder(), data, tmp_path / "cpu.safetensors", batch_size=8, progress=False
    )
    on_gpu = cache_image_features(
        TinyEncoder(),
        data,
        tmp_path / "gpu.safetensors",
        batch_size=8,
        device="cuda",
        progress=False,
    )
    cpu_features, _ = load_feature_cache(on_cpu)
    gpu_features, _ = load_feature_cache(on_gpu)
    assert gpu_features.device.type == "cpu"
    torch.testing.assert_close(
        gpu_features.float(), cpu_features.float(), rtol=2e-3, atol=1e-4
    )

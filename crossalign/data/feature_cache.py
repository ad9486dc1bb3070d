"""Run a frozen image encoder once over a data set and cache its features on disk.

Caption and projector training with a frozen vision encoder spends most of its time
re-encoding the same images every epoch. Encoding them once and training from the cache
is the standard trick (chapter 10). The cache is two files written atomically:

- ``<name>.safetensors``: one tensor ``features`` of shape ``[N, *feature_shape]`` (fp16
  by default, which halves the size at a relative precision of about 5e-4);
- ``<name>.json``: the sidecar, with the encoder's class name, the caller's
  ``encoder_id``, the number of items, the feature shape and dtype, and, when the data
  set provides them, the image ids and captions, so training from the cache needs no
  images at all.

Both files carry the same random ``run_id``; a sidecar that belongs to another run is
refused.

:func:`cache_flickr8k_features` does this for Flickr8k with a frozen torchvision ResNet:
feature grids for the captioner (chapter 9), or pooled vectors for a dual encoder whose
image tower is frozen (chapter 1).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from crossalign.data.encode import encode_dataset
from crossalign.data.flickr8k import Flickr8k, flatten_captions
from crossalign.utils import atomic_path, seed_everything, select_device

CACHE_FORMAT = "crossalign.feature_cache"
CACHE_VERSION = 1


def sidecar_path(path: str | os.PathLike) -> Path:
    """Return the JSON sidecar that goes with a feature file: ``x.safetensors`` ->
    ``x.json``."""
    return Path(path).with_suffix(".json")


def _as_caption_list(captions: str | Sequence[str]) -> list[str]:
    return (
        [captions]
        if isinstance(captions, str)
        else [str(caption) for caption in captions]
    )


def cache_image_features(
    encoder: nn.Module,
    dataset: torch.utils.data.Dataset,
    path: str | os.PathLike,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    num_workers: int = 0,
    progress: bool = True,
    *,
    encoder_id: str | None = None,
) -> Path:
    """Encode every image of ``dataset`` with a frozen ``encoder`` and cache the
    features at ``path``.

    ``encoder`` maps ``[B, 3, H, W]`` to a tensor ``[B, ...]`` (pooled ``[B, D]`` or a
    grid ``[B, C, h, w]``); it is moved to ``device`` and run once over the data set
    by :func:`~crossalign.data.encode.encode_dataset` (eval mode, no gradients, its
    mode restored afterwards). Dataset
    items are dicts with an ``"image"`` tensor; their ``"captions"`` and ``"image_id"``
    are stored in the sidecar when every item has them. ``encoder_id`` (default: the
    encoder's class name) names the weights, so that :func:`load_feature_cache` can
    refuse features from another encoder. Features are kept in memory as ``dtype`` until
    both files are written atomically: a crash leaves no cache file behind and an
    earlier cache at ``path`` intact.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"path={str(path)!r} must end in .safetensors (the sidecar goes beside it "
            "as .json)"
        )
    device = select_device(device)
    captions: list[Any] = []
    image_ids: list[Any] = []

    def keep_references(items: Sequence[Mapping[str, Any]]) -> None:
        captions.extend(item.get("captions") for item in items)
        image_ids.extend(item.get("image_id") for item in items)

    features = encode_dataset(
        encoder.to(device),
        dataset,
        batch_size=batch_size,
        device=device,
        modules=[encoder],
        dtype=dtype,
        num_workers=num_workers,
        on_items=keep_references,
        progress=progress,
        desc="caching features",
    )
    run_id = uuid.uuid4().hex
    metadata = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "run_id": run_id,
        "encoder_class": type(encoder).__name__,
        "encoder_id": encoder_id if encoder_id is not None else type(encoder).__name__,
        "dataset_class": type(dataset).__name__,
        "num_items": len(features),
        "feature_shape": list(features.shape[1:]),
        "dtype": str(dtype).removeprefix("torch."),
        "image_ids": [str(i) for i in image_ids]
        if all(i is not None for i in image_ids)
        else None,
        "captions": [_as_caption_list(c) for c in captions]
        if all(c is not None for c in captions)
        else None,
    }
    with (
        atomic_path(path) as tmp_features,
        atomic_path(sidecar_path(path)) as tmp_sidecar,
    ):
        save_file(
            {"features": features},
            str(tmp_features),
            metadata={"format": CACHE_FORMAT, "run_id": run_id},
        )
        tmp_sidecar.write_text(json.dumps(metadata), encoding="utf-8")
    return path


def _mismatch(path: Path, what: str, expected: Any, found: Any) -> ValueError:
    return ValueError(
        f"{path}: cached {what} is {found!r} but {expected!r} was expected; "
        "re-create the cache with cache_image_features() or point to the right file"
    )


def load_feature_cache(
    path: str | os.PathLike,
    *,
    expected_encoder_id: str | None = None,
    expected_num_items: int | None = None,
    expected_feature_shape: Sequence[int] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Load cached features (in their stored dtype) and their metadata, checking both.

    Raises ``FileNotFoundError`` if the feature file or its sidecar is missing, and
    ``ValueError`` if the two come from different runs, disagree with each other, or do
    not match the ``expected_*`` values the caller gives.
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no feature cache at {path}; create it with cache_image_features()"
        )
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"{path} has no sidecar {sidecar.name} (it is written with the features; "
            "an interrupted or "
            "foreign file has none): re-create the cache with cache_image_features()"
        )
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{sidecar}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != CACHE_FORMAT:
        raise ValueError(
            f"{sidecar} is not a crossalign feature cache sidecar (no format "
            f"{CACHE_FORMAT!r})"
        )
    with safe_open(str(path), framework="pt") as handle:
        file_run_id = (handle.metadata() or {}).get("run_id")
        if "features" not in handle.keys():
            raise ValueError(
                f"{path} holds no 'features' tensor; it is not a crossalign feature "
                "cache"
            )
        features = handle.get_tensor("features")
    if file_run_id != metadata.get("run_id"):
        raise ValueError(
            f"{path} and {sidecar.name} were written by different runs (run_id "
            f"{file_run_id} vs "
            f"{metadata.get('run_id')}); re-create the cache with "
            "cache_image_features()"
        )
    stored = {"num_items": features.shape[0], "feature_shape": list(features.shape[1:])}
    for key, value in stored.items():
        if metadata.get(key) != value:
            raise ValueError(
                f"{sidecar} says {key}={metadata.get(key)!r} but {path} holds {value!r}"
            )
    expected = {
        "encoder_id": expected_encoder_id,
        "num_items": expected_num_items,
        "feature_shape": list(expected_feature_shape)
        if expected_feature_shape is not None
        else None,
    }
    for key, value in expected.items():
        if value is not None and metadata[key] != value:
            raise _mismatch(path, key, value, metadata[key])
    return features, metadata


class CachedFeatures(torch.utils.data.Dataset):
    """Cached encoder features as a data set:
    ``{"features", "captions", "image_id", "index"}``.

    ``features`` comes as ``dtype`` (float32 by default); ``captions`` and ``image_id``
    are present when the source data set had them. Checks are those of
    :func:`load_feature_cache`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        dtype: torch.dtype = torch.float32,
        expected_encoder_id: str | None = None,
        expected_num_items: int | None = None,
        expected_feature_shape: Sequence[int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.features, self.metadata = load_feature_cache(
            self.path,
            expected_encoder_id=expected_encoder_id,
            expected_num_items=expected_num_items,
            expected_feature_shape=expected_feature_shape,
        )
        self.dtype = dtype
        self.captions: list[list[str]] | None = self.metadata.get("captions")
        self.image_ids: list[str] | None = self.metadata.get("image_ids")

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} cached items")
        index %= len(self)
        item: dict[str, Any] = {
            "features": self.features[index].to(self.dtype),
            "index": index,
        }
        if self.captions is not None:
            item["captions"] = list(self.captions[index])
        if self.image_ids is not None:
            item["image_id"] = self.image_ids[index]
        return item

    def caption_image_index(self) -> tuple[list[str], torch.Tensor]:
        """All cached captions as one list, and the item index of each (for retrieval
        metrics)."""
        if self.captions is None:
            raise ValueError(f"{self.path} was cached from a data set without captions")
        return flatten_captions(self.captions)


# --------------------------------------------------------------------------------------
# Flickr8k through a frozen torchvision ResNet


class _GridEncoder(Protocol):
    """What :func:`cache_flickr8k_features` needs of an image encoder (the models'
    ``ImageEncoder``, named structurally: the data package does not import the models
    at module level)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor: ...


class _FrozenEncoderOutput(nn.Module):
    """Calls an image encoder's ``forward_grid`` (``[B, C, h, w]``) or, with
    ``pooled``, its ``forward`` (``[B, C]``): what a feature cache stores."""

    def __init__(self, encoder: _GridEncoder, pooled: bool) -> None:
        super().__init__()
        self.encoder, self.pooled = encoder, pooled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (
            self.encoder(images) if self.pooled else self.encoder.forward_grid(images)
        )


def feature_encoder_id(
    encoder: str, pretrained: bool, image_size: int, seed: int, pooled: bool = False
) -> str:
    """The name a feature cache records for its encoder (random weights are named by
    their seed), e.g. ``resnet50-imagenet-224px-grid``."""
    weights = "imagenet" if pretrained else f"random-seed{seed}"
    return f"{encoder}-{weights}-{image_size}px-{'pooled' if pooled else 'grid'}"


def cache_flickr8k_features(
    root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    splits: Sequence[str] = ("train", "val", "test"),
    encoder: str = "resnet50",
    pretrained: bool = True,
    image_size: int = 224,
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    progress: bool = True,
    pooled: bool = False,
) -> dict[str, Path]:
    """Run a frozen torchvision ResNet once over Flickr8k splits and cache its features
    (fp16); return the path of each split's cache.

    ``pooled=False`` stores the last feature grid (``[2048, 7, 7]`` for ResNet-50 at
    224 px), what an attention captioner reads; ``pooled=True`` stores the globally
    pooled vector (``[2048]``), what a dual encoder with a frozen image tower reads. A
    split whose cache already exists with the same encoder is not recomputed.
    ``pretrained=False`` uses randomly initialised weights (seeded by ``seed``), which
    needs no download: useful for tests and for timing, useless for real results.
    """
    # imported here: the data package does not depend on the models at import time
    from crossalign.models.image_encoders import build_image_encoder

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    encoder_id = feature_encoder_id(encoder, pretrained, image_size, seed, pooled)
    paths: dict[str, Path] = {}
    model: nn.Module | None = None
    for split in splits:
        path = cache_dir / f"flickr8k_{split}_{encoder_id}.safetensors"
        paths[split] = path
        if path.is_file():
            CachedFeatures(path, expected_encoder_id=encoder_id)
            continue
        if model is None:
            seed_everything(seed)
            model = _FrozenEncoderOutput(
                build_image_encoder(encoder, pretrained=pretrained, trainable=False),
                pooled,
            )
        dataset = Flickr8k(
            Path(root),
            split=split,
            image_size=image_size,
            on_error="skip",
            progress=progress,
        )
        cache_image_features(
            model,
            dataset,
            path,
            batch_size=batch_size,
            device=device,
            progress=progress,
            encoder_id=encoder_id,
        )
    return paths


def cached_flickr8k_split(
    cfg: Any,
    split: str,
    *,
    pooled: bool,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> CachedFeatures:
    """The ``split`` of Flickr8k as the cached features a data config asks for
    (``cfg.root``, ``feature_cache``, ``feature_encoder``, ``pretrained_encoder``,
    ``image_size``), computed the first time: pooled vectors for a dual encoder, grids
    for a captioner."""
    paths = cache_flickr8k_features(
        cfg.root,
        cfg.feature_cache,
        splits=(split,),
        encoder=cfg.feature_encoder,
        pretrained=cfg.pretrained_encoder,
        image_size=cfg.image_size,
        seed=seed,
        device=device,
        progress=progress,
        pooled=pooled,
    )
    return CachedFeatures(paths[split])

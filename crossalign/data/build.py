"""Building data sets and tokenizers from a config, and reading items and captions out
of any data set."""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import TYPE_CHECKING, Any

from crossalign.data.shapes import ShapesWorld, caption_words
from crossalign.data.vocab import HFTokenizerAdapter, Vocabulary

if TYPE_CHECKING:
    from crossalign.data.feature_cache import CachedFeatures
    from crossalign.data.flickr8k import Flickr8k

DATASETS = ("shapes", "flickr8k")
TOKENIZERS = ("word", "hf")


def build_dataset(
    cfg: Any,
    split: str,
    seed: int = 0,
    size: int | None = None,
    device: str = "auto",
    progress: bool = False,
    pooled: bool = True,
) -> ShapesWorld | Flickr8k | CachedFeatures:
    """The ``split`` ("train", "val", "test", or for ShapesWorld "compositional") of
    ``cfg.name``.

    ``cfg`` is a :class:`crossalign.train.config.DataConfig` (or anything with its
    fields, such as a captioning config's data section). With ``cfg.feature_cache``
    (Flickr8k only) the split comes as the features of a frozen ResNet, computed on
    ``device`` the first time and read from the cache after: pooled to one vector per
    image, or with ``pooled=False`` the feature grids a captioner attends over.
    """
    if cfg.name == "shapes":
        if getattr(cfg, "feature_cache", None):
            raise ValueError(
                "data.feature_cache caches Flickr8k features; ShapesWorld is rendered "
                "on the fly (set data.feature_cache: null)"
            )
        default = {
            "train": cfg.train_size,
            "val": cfg.val_size,
            "test": cfg.test_size,
        }.get(split, cfg.test_size)
        return ShapesWorld(
            split,
            size=size or default,
            image_size=cfg.image_size,
            seed=seed,
            noise=cfg.noise,
        )
    if cfg.name == "flickr8k":
        from crossalign.data.flickr8k import Flickr8k

        if not cfg.root:
            raise ValueError(
                "data.name='flickr8k' needs data.root: the folder holding the Flickr8k "
                "files"
            )
        if getattr(cfg, "feature_cache", None):
            from crossalign.data.feature_cache import cached_flickr8k_split

            return cached_flickr8k_split(
                cfg, split, pooled=pooled, seed=seed, device=device, progress=progress
            )
        return Flickr8k(
            cfg.root,
            split=split,
            image_size=cfg.image_size,
            on_error="skip",
            progress=progress,
        )
    raise ValueError(f"data.name={cfg.name!r} is not known; use one of {DATASETS}")


def build_caption_dataset(
    config: Any, split: str, size: int | None = None
) -> ShapesWorld | Flickr8k | CachedFeatures:
    """The ``split`` of a captioning experiment's data
    (:class:`~crossalign.train.captioning.CaptionExperimentConfig`): its ``data``
    section seeded with its ``seed``, cached features as grids (``pooled=False``)."""
    return build_dataset(
        config.data,
        split,
        seed=config.seed,
        size=size,
        device=config.train.device,
        progress=config.train.progress,
        pooled=False,
    )


def build_tokenizer(
    cfg: Any, train_dataset: ShapesWorld | Flickr8k | CachedFeatures
) -> Vocabulary | HFTokenizerAdapter:
    """A word vocabulary built on the training captions (:func:`build_vocabulary`), or
    a Hugging Face tokenizer."""
    if cfg.tokenizer == "hf":
        return HFTokenizerAdapter(cfg.tokenizer_name, max_len=cfg.max_len)
    if cfg.tokenizer != "word":
        raise ValueError(
            f"data.tokenizer={cfg.tokenizer!r} is not known; use one of {TOKENIZERS}"
        )
    return build_vocabulary(train_dataset, cfg.min_freq)


def build_vocabulary(dataset: Any, min_freq: int = 1) -> Vocabulary:
    """The word vocabulary of ``dataset``: for ShapesWorld the grammar's word list,
    which is exactly the set of words any caption can use (no unknown words at test
    time); otherwise the words of its captions seen at least ``min_freq`` times."""
    if isinstance(dataset, ShapesWorld):
        return Vocabulary.build(caption_words(), min_freq=1)
    return Vocabulary.build(
        [caption for captions in all_captions(dataset) for caption in captions],
        min_freq=min_freq,
    )


def all_captions(dataset: Any) -> list[list[str]]:
    """Every item's reference captions, in index order (without loading any image)."""
    if isinstance(dataset, ShapesWorld):
        return [dataset.captions(i) for i in range(len(dataset))]
    captions = getattr(dataset, "captions", None)
    if captions is None:
        raise ValueError(
            f"{type(dataset).__name__} has no captions to build a vocabulary or score "
            "against"
        )
    return [list(c) for c in captions]


def dataset_size(dataset: Any) -> int:
    """``len(dataset)``; a TypeError for a data set without one (an iterable one)."""
    if not isinstance(dataset, Sized):
        raise TypeError(
            f"{type(dataset).__name__} has no len(); "
            "give a data set that is indexed 0..N-1"
        )
    return len(dataset)


def fetch_items(dataset: Any, indices: Sequence[int]) -> list[dict]:
    """Items ``indices`` of ``dataset``, in one ``__getitems__`` call where the data set
    has one (ShapesWorld renders a whole batch at once), one by one otherwise."""
    getitems = getattr(dataset, "__getitems__", None)
    if getitems is not None:
        return getitems(list(indices))
    return [dataset[i] for i in indices]

"""Building data sets and tokenizers from a config."""

from __future__ import annotations

from collections.abc import Sequence
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
) -> ShapesWorld | Flickr8k | CachedFeatures:
    """The ``split`` ("train", "val", "test", or for ShapesWorld "compositional") of
    ``cfg.name``.

    ``cfg`` is a :class:`crossalign.train.config.DataConfig` (or anything with its
    fields). With ``cfg.feature_cache`` (Flickr8k only) the split comes as the pooled
    features of a frozen ResNet, computed on ``device`` the first time and read from the
    cache after.
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
                cfg, split, pooled=True, seed=seed, device=device, progress=progress
            )
        return Flickr8k(
            cfg.root, split=split, image_size=cfg.image_size, on_error="skip"
        )
    raise ValueError(f"data.name={cfg.name!r} is not known; use one of {DATASETS}")


def build_tokenizer(
    cfg: Any, train_dataset: ShapesWorld | Flickr8k | CachedFeatures
) -> Vocabulary | HFTokenizerAdapter:
    """A word vocabulary built on the training captions, or a Hugging Face tokenizer.

    For ShapesWorld the vocabulary is built from the grammar's word list, which is
    exactly the set of words any caption can use (no unknown words at test time).
    """
    if cfg.tokenizer == "hf":
        return HFTokenizerAdapter(cfg.tokenizer_name, max_len=cfg.max_len)
    if cfg.tokenizer != "word":
        raise ValueError(
            f"data.tokenizer={cfg.tokenizer!r} is not known; use one of {TOKENIZERS}"
        )
    if isinstance(train_dataset, ShapesWorld):
        return Vocabulary.build(caption_words(), min_freq=1)
    if train_dataset.captions is None:
        raise ValueError("the training data has no captions to build a vocabulary from")
    texts = [caption for captions in train_dataset.captions for caption in captions]
    return Vocabulary.build(texts, min_freq=cfg.min_freq)


def fetch_items(dataset: Any, indices: Sequence[int]) -> list[dict]:
    """Items ``indices`` of ``dataset``, in one ``__getitems__`` call where the data set
    has one (ShapesWorld renders a whole batch at once), one by one otherwise."""
    getitems = getattr(dataset, "__getitems__", None)
    if getitems is not None:
        return getitems(list(indices))
    return [dataset[i] for i in indices]

"""Turning data-set items into training batches: stacked images plus one tokenised
caption each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from crossalign.data.shapes import hash_uniform


class BatchTokenizer(Protocol):
    """What the collator needs from a tokenizer (``Vocabulary`` and
    ``HFTokenizerAdapter`` both fit)."""

    def encode_batch(
        self, texts: Sequence[str], max_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, L] and a boolean mask [B, L] that is True on real tokens."""
        ...


def batch_inputs(items: Sequence[dict]) -> torch.Tensor:
    """Stack what a model reads from data-set items: their ``"image"`` tensors, or the
    ``"features"`` a frozen encoder cached for them (:class:`CachedFeatures`)."""
    key = "image" if "image" in items[0] else "features"
    return torch.stack([item[key] for item in items])


class CaptionCollator:
    """Collate ``{"image", "captions", "index"}`` items, picking one caption per image.

    Items of cached features (``"features"`` instead of ``"image"``) collate the same
    way; the batch's ``"images"`` then holds the features.

    ``caption="random"`` picks a caption per (epoch, image) with a counter-based hash of
    the seed, so the choice does not depend on batch order or on worker processes, and a
    resumed run sees exactly the captions an uninterrupted run would.
    ``caption="first"`` always takes caption 0; an integer takes that caption. Call
    :meth:`set_epoch` at each new epoch.
    """

    def __init__(
        self,
        tokenizer: BatchTokenizer,
        caption: str | int = "random",
        seed: int = 0,
        max_len: int | None = None,
    ) -> None:
        if not (
            caption in ("random", "first")
            or (isinstance(caption, int) and caption >= 0)
        ):
            raise ValueError(
                f"caption={caption!r} must be 'random', 'first' or a caption number >= "
                "0"
            )
        self.tokenizer = tokenizer
        self.caption = caption
        self.seed = seed
        self.max_len = max_len
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose caption choices the next batches use."""
        self.epoch = epoch

    def choose(self, items: Sequence[dict]) -> list[str]:
        """The caption used for each item."""
        if self.caption == "random":
            indices = np.array([item["index"] for item in items], dtype=np.int64)
            u = hash_uniform(self.seed, 7, indices, 1000 + self.epoch, 1)[:, 0]
            return [
                item["captions"][int(x * len(item["captions"]))]
                for item, x in zip(items, u)
            ]
        k = 0 if self.caption == "first" else int(self.caption)
        chosen = []
        for item in items:
            if k >= len(item["captions"]):
                raise IndexError(
                    f"caption={k} asked for, but item {item['index']} has "
                    f"{len(item['captions'])} captions"
                )
            chosen.append(item["captions"][k])
        return chosen

    def __call__(self, items: Sequence[dict]) -> dict:
        if not items:
            raise ValueError("cannot collate an empty batch")
        captions = self.choose(items)
        input_ids, attention_mask = self.tokenizer.encode_batch(
            captions, max_len=self.max_len
        )
        return {
            "images": batch_inputs(items),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "captions": captions,
            "indices": torch.tensor(
                [item["index"] for item in items], dtype=torch.long
            ),
        }

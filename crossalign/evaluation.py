"""Embedding whole data sets with a dual encoder and scoring retrieval on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from crossalign.data.collate import batch_inputs
from crossalign.metrics import retrieval_metrics


@torch.inference_mode()
def embed_images(
    model: Any,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Unit-length embeddings [N, D] of every image of ``dataset``, in index order (on
    the CPU)."""
    model.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=batch_inputs
    )
    return torch.cat(
        [model.encode_image(images.to(device)).float().cpu() for images in loader]
    )


@torch.inference_mode()
def embed_texts(
    model: Any,
    texts: Sequence[str],
    tokenizer: Any,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    max_len: int | None = None,
) -> torch.Tensor:
    """Unit-length embeddings [N, D] of ``texts`` (on the CPU)."""
    model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenizer.encode_batch(
            list(texts[start : start + batch_size]), max_len=max_len
        )
        chunks.append(model.encode_text(ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(chunks)


def evaluate_retrieval(
    model: Any,
    dataset: Dataset,
    tokenizer: Any,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    max_len: int | None = None,
) -> dict[str, float]:
    """Image-to-text and text-to-image R@1/5/10 and ranks over every caption of
    ``dataset``.

    ``dataset`` must offer ``caption_image_index()`` (ShapesWorld and Flickr8k do): each
    caption counts as a positive for its own image only (many-to-many protocol).
    """
    if not hasattr(dataset, "caption_image_index"):
        raise TypeError(
            f"{type(dataset).__name__} has no caption_image_index(): retrieval needs "
            "every caption and its image (ShapesWorld and Flickr8k give them)"
        )
    texts, owner = dataset.caption_image_index()
    image_emb = embed_images(model, dataset, batch_size=batch_size, device=device)
    text_emb = embed_texts(
        model,
        texts,
        tokenizer,
        batch_size=2 * batch_size,
        device=device,
        max_len=max_len,
    )
    return retrieval_metrics(image_emb, text_emb, owner)

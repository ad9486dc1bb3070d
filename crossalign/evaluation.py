"""Evaluation in one place: retrieval of a dual encoder (embedding whole data sets and
ranking) and captioning of a captioner (decoding a split and scoring the captions)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from crossalign.data.build import all_captions, dataset_size, fetch_items
from crossalign.data.collate import batch_inputs
from crossalign.data.encode import encode_dataset, encode_in_batches
from crossalign.data.shapes import ShapesWorld
from crossalign.metrics import retrieval_metrics
from crossalign.metrics.captioning import caption_metrics, tokenize_caption
from crossalign.metrics.semantic import semantic_report
from crossalign.utils import select_device

if TYPE_CHECKING:
    from crossalign.data.vocab import Vocabulary
    from crossalign.decoding import DecodeResult
    from crossalign.models.captioners import Captioner


# --------------------------------------------------------------------------------------
# retrieval


def embed_images(
    model: Any,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Unit-length embeddings [N, D] of every image of ``dataset``, in index order (on
    the CPU), with ``model`` in eval mode."""
    return encode_dataset(
        model.encode_image,
        dataset,
        batch_size=batch_size,
        device=device,
        modules=[model],
        desc="embed images",
    )


def embed_texts(
    model: Any,
    texts: Sequence[str],
    tokenizer: Any,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    max_len: int | None = None,
) -> torch.Tensor:
    """Unit-length embeddings [N, D] of ``texts`` (on the CPU), with ``model`` in eval
    mode; each batch is padded to its own longest text."""

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(texts), batch_size):
            ids, mask = tokenizer.encode_batch(
                list(texts[start : start + batch_size]), max_len=max_len
            )
            yield ids.to(device), mask.to(device)

    return encode_in_batches(
        model.encode_text, batches(), len(texts), modules=[model], desc="embed texts"
    )


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


# --------------------------------------------------------------------------------------
# captioning


@dataclass
class CaptionEvaluation:
    """Generated captions of a split, their references and scores.

    ``metrics`` holds BLEU-1..4, ROUGE-L and CIDEr-D and, on ShapesWorld, ``semantic``
    (exact semantic accuracy) with the per-check rates of
    :func:`~crossalign.metrics.semantic.semantic_report` under ``semantic/<check>``.
    """

    captions: list[str]
    references: list[list[str]]
    metrics: dict[str, float]


def generate_captions(
    model: Captioner,
    dataset: Dataset,
    tokenizer: Vocabulary,
    indices: Sequence[int] | None = None,
    beam_size: int = 3,
    max_len: int = 30,
    length_penalty: float = 0.0,
    batch_size: int = 100,
    device: str | torch.device | None = None,
) -> tuple[list[str], DecodeResult | None]:
    """Caption items of ``dataset`` (all by default); returns the captions and the last
    batch's decoding."""
    device = (
        next(model.parameters()).device if device is None else select_device(device)
    )
    indices = list(range(dataset_size(dataset))) if indices is None else list(indices)
    captions: list[str] = []
    result = None
    for start in range(0, len(indices), batch_size):
        inputs = batch_inputs(
            fetch_items(dataset, indices[start : start + batch_size])
        ).to(device)
        result = model.generate(
            inputs, beam_size=beam_size, max_len=max_len, length_penalty=length_penalty
        )
        captions += tokenizer.decode_batch(result.tokens.cpu())
    return captions, result


def evaluate_captioner(
    model: Captioner,
    dataset: Dataset,
    tokenizer: Vocabulary,
    beam_size: int = 3,
    max_len: int = 30,
    length_penalty: float = 0.0,
    batch_size: int = 100,
    device: str | torch.device | None = None,
) -> CaptionEvaluation:
    """Caption every image of ``dataset`` and score the captions against all its
    references."""
    captions, _ = generate_captions(
        model,
        dataset,
        tokenizer,
        None,
        beam_size,
        max_len,
        length_penalty,
        batch_size,
        device,
    )
    references = all_captions(dataset)
    metrics = caption_metrics(
        [" ".join(tokenize_caption(c)) for c in captions],
        [[" ".join(tokenize_caption(r)) for r in refs] for refs in references],
    )
    if isinstance(dataset, ShapesWorld):
        report = semantic_report(captions, dataset.scenes(range(len(dataset))))
        metrics["semantic"] = report["exact"]
        metrics.update(
            {
                f"semantic/{key}": value
                for key, value in report.items()
                if key != "exact"
            }
        )
    return CaptionEvaluation(captions, references, metrics)

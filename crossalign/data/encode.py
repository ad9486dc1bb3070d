"""Running a frozen encoder once over a whole data set, text list or tensor.

A frozen encoder gives an item the same features at every epoch, so the book encodes
each data set once and trains or evaluates on the result: region grids for a captioner
(chapter 9), image features for a projector (chapter 11), sentence vectors for LiT
(chapter 5), token features for fusion modules (chapter 3), embeddings for retrieval
(chapter 1) and the on-disk feature cache (chapter 10).
:func:`encode_in_batches` is the one loop that does it; :func:`encode_dataset` feeds it
the items of a data set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from crossalign.data.build import dataset_size, fetch_items
from crossalign.data.collate import batch_inputs

__all__ = ["encode_dataset", "encode_in_batches", "eval_mode"]


@contextmanager
def eval_mode(*modules: nn.Module | Any) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block, then give every submodule back the
    mode it had (a captioner's frozen encoder stays in eval mode inside a model that
    trains). Objects that are not ``nn.Module`` but have an ``eval()`` are switched
    and left as they are."""
    modes = [
        (m, m.training)
        for module in modules
        if isinstance(module, nn.Module)
        for m in module.modules()
    ]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def encode_in_batches(
    encode: Callable[..., torch.Tensor],
    batches: Iterable[Sequence[Any]],
    total: int,
    *,
    modules: Sequence[nn.Module | Any] = (),
    keep_on: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
    progress: bool = False,
    desc: str = "encoding",
    batch_size: int | None = None,
) -> torch.Tensor:
    """``encode(*batch)`` for every batch, under ``torch.inference_mode`` and with
    ``modules`` in eval mode, written in order into one ``[total, ...]`` tensor.

    The result is an ordinary tensor (training may read it) on ``keep_on`` (the CPU
    by default; the training device to train on it), as ``dtype`` (``None``: the
    encoder's own). It is allocated once, at the first batch, so the features of a
    large data set are never held twice; an encoder that does not return ``[B, ...]``
    for a batch of ``B`` raises a TypeError. ``batch_size`` only sizes the progress
    bar.
    """
    out: torch.Tensor | None = None
    start = 0
    steps = math.ceil(total / batch_size) if batch_size else None
    with eval_mode(*modules):
        for batch in tqdm(batches, desc=desc, total=steps, disable=not progress):
            rows = len(batch[0])
            with torch.inference_mode():
                output = encode(*batch)
            if not isinstance(output, torch.Tensor) or output.shape[:1] != (rows,):
                raise TypeError(
                    f"encoder must return a tensor [B, ...] with B={rows}, got "
                    f"{getattr(output, 'shape', type(output).__name__)}; wrap it to "
                    "return the features"
                )
            if start + rows > total:
                raise RuntimeError(f"the batches hold more than total={total} items")
            if out is None:
                out = torch.empty(
                    (total, *output.shape[1:]),
                    dtype=output.dtype if dtype is None else dtype,
                    device=keep_on,
                )
            out[start : start + rows] = output
            start += rows
    if out is None or start != total:
        raise RuntimeError(f"the batches held {start} items but total is {total}")
    return out


def _item_list(items: list[Any]) -> list[Any]:
    """A DataLoader ``collate_fn`` that keeps the items as they are (picklable, for
    worker processes)."""
    return items


def _item_batches(
    dataset: Any, batch_size: int, num_workers: int
) -> Iterator[list[dict]]:
    """The items of ``dataset`` in order, a batch at a time: fetched here
    (:func:`~crossalign.data.build.fetch_items`), or by ``num_workers`` worker
    processes. Neither draws from the global random generator (a DataLoader seeds its
    workers from its own generator here), so encoding a data set leaves every later
    random draw as it was."""
    total = dataset_size(dataset)
    if num_workers == 0:
        for start in range(0, total, batch_size):
            yield fetch_items(dataset, range(start, min(start + batch_size, total)))
        return
    yield from torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_item_list,
        generator=torch.Generator(),
    )


def _dataset_batches(
    dataset: Any,
    batch_size: int,
    device: str | torch.device,
    num_workers: int,
    on_items: Callable[[Sequence[Mapping[str, Any]]], None] | None,
) -> Iterator[tuple[torch.Tensor]]:
    for items in _item_batches(dataset, batch_size, num_workers):
        for item in items:
            if not isinstance(item, Mapping) or not any(
                isinstance(item.get(key), torch.Tensor) for key in ("image", "features")
            ):
                raise TypeError(
                    "data set items must be dicts with an 'image' tensor (or the "
                    f"'features' of a cache), got {type(item).__name__}"
                )
        if on_items is not None:
            on_items(items)
        yield (batch_inputs(items).to(device),)


def encode_dataset(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Any,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    modules: Sequence[nn.Module | Any] = (),
    keep_on: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
    num_workers: int = 0,
    on_items: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
    progress: bool = False,
    desc: str = "encoding",
) -> torch.Tensor:
    """Features ``[len(dataset), ...]`` of every item of ``dataset``, in index order:
    ``encode`` applied to batches of its images (or cached ``"features"``) on
    ``device``.

    ``encode`` is typically a frozen model's method (``model.encode_image``,
    ``captioner.regions``); pass the model in ``modules`` to run it in eval mode, so an
    item's features do not depend on the batch it came in. Items are fetched in batches
    (one ``__getitems__`` call where the data set has one), by ``num_workers`` worker
    processes if asked, without drawing from the global random generator; ``on_items``
    sees each batch's items (their captions, ids) before they are encoded.
    ``keep_on``, ``dtype``: as in :func:`encode_in_batches`.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    total = dataset_size(dataset)
    if total == 0:
        raise ValueError(
            f"{type(dataset).__name__} is empty: there is nothing to encode"
        )
    return encode_in_batches(
        encode,
        _dataset_batches(dataset, batch_size, device, num_workers, on_items),
        total,
        modules=modules,
        keep_on=keep_on,
        dtype=dtype,
        progress=progress,
        desc=desc,
        batch_size=batch_size,
    )

"""``fetch_items``: one batched call where a data set has ``__getitems__``, item by
item otherwise, the same items either way."""

from __future__ import annotations

import torch

from crossalign.data import ShapesWorld, fetch_items


class ItemByItem:
    def __init__(self, world: ShapesWorld) -> None:
        self.world = world

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, index: int) -> dict:
        return self.world[index]


def test_batched_and_item_by_item_fetches_agree(monkeypatch):
    world = ShapesWorld("train", size=12, image_size=32, seed=0)
    calls = []
    real = ShapesWorld.__getitems__

    def counting(self, indices):
        calls.append(list(indices))
        return real(self, indices)

    monkeypatch.setattr(ShapesWorld, "__getitems__", counting)
    batched = fetch_items(world, (5, 1, 7))
    assert calls == [[5, 1, 7]]
    one_by_one = fetch_items(ItemByItem(world), [5, 1, 7])
    assert len(batched) == len(one_by_one) == 3
    for a, b in zip(batched, one_by_one):
        assert torch.equal(a["image"], b["image"])
        assert a["captions"] == b["captions"]

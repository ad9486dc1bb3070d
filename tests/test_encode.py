"""The one frozen-encoder loop: crossalign.data.encode (encode_in_batches,
encode_dataset, eval_mode)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossalign.data import ShapesWorld
from crossalign.data.encode import encode_dataset, encode_in_batches, eval_mode


class MeanColour(nn.Module):
    """A deterministic 'encoder': the mean colour of an image, plus dropout, which
    only eval mode switches off."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dropout(images.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld("test", size=11, image_size=32, seed=4)


@pytest.mark.parametrize("batch_size", [1, 4, 11, 64])
def test_every_item_gets_its_own_features_whatever_the_batch(world, batch_size):
    encoder = MeanColour().train()
    got = encode_dataset(encoder, world, batch_size=batch_size, modules=[encoder])
    expected = world.render(range(len(world))).mean(dim=(2, 3))
    torch.testing.assert_close(got, expected)
    assert encoder.training and encoder.dropout.training
    assert not got.requires_grad and got.dtype == torch.float32


def test_without_modules_the_encoder_keeps_its_mode(world):
    encoder = MeanColour().train()
    torch.manual_seed(0)
    got = encode_dataset(encoder, world, batch_size=4)
    expected = world.render(range(len(world))).mean(dim=(2, 3))
    # dropout was active: some entries are zeroed, the others doubled
    assert ((got == 0) | torch.isclose(got, 2 * expected)).all()
    assert (got == 0).any()


def test_eval_mode_restores_each_submodule_as_it_was():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    model.train()
    model[2].eval()  # a frozen part that stays in eval mode while the rest trains
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, True, False]
    with pytest.raises(RuntimeError, match="inside"), eval_mode(model):
        raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == [True, True, True, False]


def test_dtype_and_keep_on(world):
    half = encode_dataset(lambda x: x.mean(dim=(2, 3)), world, dtype=torch.float16)
    own = encode_dataset(lambda x: x.double().mean(dim=(2, 3)), world, dtype=None)
    assert half.dtype == torch.float16 and own.dtype == torch.float64
    assert half.device.type == "cpu"
    torch.testing.assert_close(half.float(), own.float(), rtol=1e-3, atol=1e-3)


def test_on_items_sees_every_item_once_in_order(world):
    seen: list[int] = []
    encode_dataset(
        lambda x: x.flatten(1),
        world,
        batch_size=3,
        on_items=lambda items: seen.extend(item["index"] for item in items),
    )
    assert seen == list(range(len(world)))


def test_worker_processes_give_the_same_features(world):
    one = encode_dataset(lambda x: x.flatten(1), world, batch_size=4)
    two = encode_dataset(lambda x: x.flatten(1), world, batch_size=4, num_workers=2)
    assert torch.equal(one, two)


def test_text_batches_with_several_inputs():
    ids = torch.arange(10).reshape(5, 2)
    mask = torch.ones(5, 2)
    got = encode_in_batches(
        lambda i, m: (i * m).sum(dim=1),
        ((ids[s : s + 2], mask[s : s + 2]) for s in range(0, 5, 2)),
        5,
    )
    torch.testing.assert_close(got, torch.tensor([1.0, 5.0, 9.0, 13.0, 17.0]))


def test_errors_name_the_problem(world):
    with pytest.raises(TypeError, match="B=4"):
        encode_dataset(lambda x: x[:1], world, batch_size=4)
    with pytest.raises(TypeError, match="encoder must return a tensor"):
        encode_dataset(lambda x: x.tolist(), world, batch_size=4)
    with pytest.raises(ValueError, match="batch_size=0"):
        encode_dataset(lambda x: x, world, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        encode_dataset(lambda x: x, torch.utils.data.Subset(world, []))
    with pytest.raises(TypeError, match="has no len"):
        encode_dataset(lambda x: x, iter([]))
    with pytest.raises(TypeError, match="'image' tensor"):
        encode_dataset(lambda x: x, [{"caption": "a red circle"}])
    batches = [(torch.ones(2, 3),), (torch.ones(2, 3),)]
    with pytest.raises(RuntimeError, match="held 4 items but total is 5"):
        encode_in_batches(lambda x: x, batches, 5)
    with pytest.raises(RuntimeError, match="more than total=3"):
        encode_in_batches(lambda x: x, batches, 3)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_encoding_leaves_the_global_random_generator_alone(world, num_workers):
    """Encoding a data set between two random draws does not change the second."""
    torch.manual_seed(5)
    torch.rand(1)
    expected = torch.rand(3)
    torch.manual_seed(5)
    torch.rand(1)
    encode_dataset(lambda x: x.flatten(1), world, batch_size=4, num_workers=num_workers)
    assert torch.equal(torch.rand(3), expected)

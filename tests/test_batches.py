"""The one batcher: epochs are seeded permutations, a batch depends only on
(seed, step), ranks slice one global batch, per-epoch choices are fixed."""

from __future__ import annotations

import pytest
import torch

from crossalign.data.batches import EpochBatches, StepBatchSampler


def test_each_epoch_is_a_permutation_minus_the_dropped_tail() -> None:
    batches = EpochBatches(50, 16, seed=3)
    assert batches.batches_per_epoch == 3
    for epoch in range(3):
        steps = range(3 * epoch, 3 * epoch + 3)
        seen = torch.cat([batches(step) for step in steps])
        assert len(seen) == 48 and len(set(seen.tolist())) == 48
        generator = torch.Generator().manual_seed(3 * 1_000_003 + epoch)
        assert torch.equal(seen, torch.randperm(50, generator=generator)[:48])
    assert not torch.equal(batches(0), batches(3))  # epochs differ


def test_a_batch_depends_only_on_seed_and_step() -> None:
    walked = EpochBatches(40, 8, seed=1)
    sequence = [walked(step) for step in range(12)]
    for step in (11, 0, 7, 5):  # a fresh batcher, and steps out of order
        assert torch.equal(EpochBatches(40, 8, seed=1)(step), sequence[step])
        assert torch.equal(walked(step), sequence[step])
    assert not torch.equal(EpochBatches(40, 8, seed=2)(0), sequence[0])


def test_ranks_slice_one_global_batch() -> None:
    single = EpochBatches(64, 8, seed=5)
    ranks = [EpochBatches(64, 4, seed=5, world_size=2, rank=r) for r in (0, 1)]
    for step in range(10):
        assert torch.equal(torch.cat([rank(step) for rank in ranks]), single(step))


def test_choices_are_fixed_per_epoch_and_in_range() -> None:
    batches = EpochBatches(30, 10, seed=0)
    first = batches.choices(0, 5)
    assert first.shape == (10,) and int(first.min()) >= 0 and int(first.max()) < 5
    # the same item keeps its choice within an epoch, drawn after the permutation
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(30, generator=generator)
    per_item = torch.randint(5, (30,), generator=generator)
    for step in range(3):
        assert torch.equal(batches(step), order[10 * step : 10 * step + 10])
        assert torch.equal(batches.choices(step, 5), per_item[batches(step)])
    # ... and a new epoch draws again
    assert not torch.equal(
        EpochBatches(30, 10, seed=0).choices(3, 5), per_item[batches(3)]
    )


def test_choices_with_a_count_per_item() -> None:
    counts = [1, 2, 3, 4, 5, 6] * 5
    batches = EpochBatches(30, 6, seed=2)
    picked = torch.cat([batches.choices(step, counts) for step in range(5)])
    items = torch.cat([batches(step) for step in range(5)])
    limits = torch.tensor(counts)[items]
    assert bool((picked >= 0).all()) and bool((picked < limits).all())
    assert bool((picked[limits == 1] == 0).all())
    # over many epochs an item with six choices takes each of them
    seen = {
        int(choice)
        for step in range(0, 300, 5)
        for item, choice in zip(batches(step), batches.choices(step, counts))
        if counts[int(item)] == 6
    }
    assert seen == set(range(6))


def test_step_batch_sampler_tags_the_batches_with_their_epoch() -> None:
    batches = EpochBatches(64, 8, seed=1)
    sampler = StepBatchSampler(64, 8, seed=1, start=6, stop=12)
    assert len(sampler) == 6
    for step, tagged in zip(range(6, 12), sampler, strict=True):
        assert [index for _, index in tagged] == batches(step).tolist()
        assert {epoch for epoch, _ in tagged} == {step // 8}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_items": 7, "batch_size": 8}, "7 items, fewer than one batch of 8; hint"),
        (
            {"num_items": 15, "batch_size": 8, "world_size": 2, "rank": 1},
            "fewer than one global batch of 16",
        ),
        ({"num_items": 8, "batch_size": 0}, "batch_size must be >= 1"),
        ({"num_items": 8, "batch_size": 2, "world_size": 2, "rank": 2}, "rank 2"),
    ],
)
def test_bad_sizes_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        EpochBatches(seed=0, hint="hint", **kwargs)


def test_bad_choices_are_named() -> None:
    batches = EpochBatches(4, 2, seed=0)
    with pytest.raises(ValueError, match="3 entries for a data set of 4"):
        batches.choices(0, [1, 2, 3])
    with pytest.raises(ValueError, match="item 2 has 0 choices"):
        batches.choices(0, [1, 2, 0, 3])
    with pytest.raises(ValueError, match="counts must be >= 1"):
        batches.choices(0, 0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        batches(-1)

"""The one batcher: which items each training step reads, from a seed and the step.

Every training loop in the package draws its batches here. Epoch ``e`` is a
permutation of the items drawn from a generator seeded with ``seed * 1_000_003 + e``;
step ``s`` reads batch ``s mod batches_per_epoch`` of epoch ``s // batches_per_epoch``,
and the last incomplete batch of an epoch is dropped, so every batch has the same
size. A batch therefore depends only on ``(seed, step)``:

- resuming at step ``k`` needs no saved sampler state, and gives the batches an
  uninterrupted run would have read (bit-exact resume);
- methods compared on the same data and seed see exactly the same batches;
- the ranks of a distributed run draw the same global batch and each keeps its own
  slice of it.

Per-item random choices that belong to an epoch (which of an image's captions it is
paired with) come from the same epoch generator, after the permutation, so they too
depend only on ``(seed, step)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

_SEED_STRIDE = 1_000_003


class EpochBatches:
    """``batches(step)``: the item indices of training step ``step`` (module
    docstring).

    Args:
        num_items: the size of the data set.
        batch_size: items per batch (per rank in a distributed run).
        seed: the run's seed.
        world_size, rank: the distributed run this process belongs to; each rank
            reads its slice of a global batch of ``batch_size * world_size`` items.
        hint: what to change when the data set is smaller than one global batch
            (it ends the error message).

    Only the current epoch's permutation (and its choices) are kept, so a long run
    holds one permutation, not one per epoch.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        hint: str = "lower the batch size or enlarge the data set",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"rank {rank} is not in 0 .. world_size - 1 = {world_size - 1}"
            )
        global_batch = batch_size * world_size
        if num_items < global_batch:
            raise ValueError(
                f"the data set has {num_items} items, fewer than one "
                f"{'global ' if world_size > 1 else ''}batch of {global_batch}; {hint}"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.world_size, self.rank = world_size, rank
        self.batches_per_epoch = num_items // global_batch
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)
        self._generator = torch.Generator()
        self._choices: dict[tuple[int, ...] | int, torch.Tensor] = {}

    def epoch_of(self, step: int) -> int:
        """The epoch that step ``step`` belongs to."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return step // self.batches_per_epoch

    def _enter(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._generator.manual_seed(self.seed * _SEED_STRIDE + epoch)
            self._order = torch.randperm(self.num_items, generator=self._generator)
            self._choices = {}
            self._epoch = epoch

    def __call__(self, step: int) -> torch.Tensor:
        epoch = self.epoch_of(step)
        self._enter(epoch)
        position = step - epoch * self.batches_per_epoch
        first = (position * self.world_size + self.rank) * self.batch_size
        return self._order[first : first + self.batch_size]

    def choices(self, step: int, counts: int | Sequence[int]) -> torch.Tensor:
        """For each item of step ``step``, a choice in ``0 .. count - 1``, fixed for
        the epoch.

        ``counts`` is one count for every item (an image's five captions) or a count
        per item of the data set (images with different numbers of captions). The
        choices of an epoch are drawn once, from the epoch's generator after its
        permutation, in the order of the items' indices.
        """
        epoch = self.epoch_of(step)
        self._enter(epoch)
        key = counts if isinstance(counts, int) else tuple(counts)
        if key not in self._choices:
            self._choices[key] = self._draw_choices(counts)
        return self._choices[key][self(step)]

    def _draw_choices(self, counts: int | Sequence[int]) -> torch.Tensor:
        if isinstance(counts, int):
            if counts < 1:
                raise ValueError(f"counts must be >= 1, got {counts}")
            return torch.randint(counts, (self.num_items,), generator=self._generator)
        per_item = torch.as_tensor(counts, dtype=torch.long)
        if per_item.shape != (self.num_items,):
            raise ValueError(
                f"counts has {len(per_item)} entries for a data set of "
                f"{self.num_items} items; give one count per item"
            )
        if int(per_item.min()) < 1:
            bad = int(torch.argmin(per_item))
            raise ValueError(f"item {bad} has {int(per_item[bad])} choices; need >= 1")
        # one 62-bit draw per item, reduced modulo its count: the bias is below 2**-50
        draws = torch.randint(1 << 62, (self.num_items,), generator=self._generator)
        return draws % per_item


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """The batches of micro-steps ``start`` .. ``stop - 1`` as a DataLoader
    ``batch_sampler``: each index is tagged with its epoch, ``(epoch, index)``, so a
    data set can vary an item by epoch (which caption an image is paired with).

    The indices are :class:`EpochBatches`' for the same seed, so a run resumed at
    ``start`` reads what an uninterrupted run would have.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.batches = EpochBatches(
            num_samples,
            batch_size,
            seed,
            world_size=world_size,
            rank=rank,
            hint="lower train.batch_size or enlarge the data set",
        )
        self.start, self.stop = start, stop
        self.batches_per_epoch = self.batches.batches_per_epoch

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            epoch = self.batches.epoch_of(step)
            yield [(epoch, index) for index in self.batches(step).tolist()]

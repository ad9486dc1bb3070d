"""Small helpers around ``torch.distributed`` for runs launched with ``torchrun``.

Every helper also works in a plain single-process run: ranks default to 0, the world
size to 1, collectives become no-ops and ``gather_with_grad`` hands its input back.
That way training code calls them unconditionally and has no separate distributed
branch to forget to test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from crossalign.utils import select_device

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "barrier",
    "all_reduce_mean",
    "cleanup",
    "gather_with_grad",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run.

    ``rank`` is the global process index, ``local_rank`` the index on this machine (it
    picks the GPU), ``device`` the device this process should put its model on and
    ``is_main`` whether this is rank 0, the process that logs and writes checkpoints.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool


def _env_int(name: str) -> int:
    """Read an integer environment variable set by ``torchrun``, with a clear error."""
    value = os.environ.get(name)
    if value is None:
        raise ValueError(
            f"environment variable {name} is not set although WORLD_SIZE is; "
            "launch with torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK together"
        )
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} is not an integer"
        ) from None


def init_distributed(
    backend: str | None = None, timeout: timedelta | None = None
) -> DistInfo:
    """Join the process group described by ``torchrun``'s environment and say where we
    are.

    ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR``
    and ``MASTER_PORT``). With ``WORLD_SIZE`` absent or 1 nothing is initialised and the
    single-process answer comes back (rank 0, world size 1, the best available device).

    ``backend=None`` chooses ``"nccl"`` when CUDA is available and ``"gloo"`` otherwise.
    With NCCL each process takes the GPU ``cuda:LOCAL_RANK``; with Gloo it runs on the
    CPU. ``timeout`` bounds how long a collective waits for the other ranks (PyTorch's
    default when ``None``). Calling it again after the group exists just reports the
    same answer.
    """
    world_size = _env_int("WORLD_SIZE") if "WORLD_SIZE" in os.environ else 1
    if world_size < 1:
        raise ValueError(
            f"environment variable WORLD_SIZE={world_size} must be at least 1"
        )
    if world_size == 1 and not dist.is_initialized():
        return DistInfo(
            rank=0,
            world_size=1,
            local_rank=0,
            device=select_device("auto"),
            is_main=True,
        )

    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK")
    if not 0 <= rank < world_size:
        raise ValueError(
            f"environment variable RANK={rank} is outside [0, WORLD_SIZE={world_size})"
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError(
                "backend='nccl' needs CUDA, which is not available here; use "
                "backend='gloo'"
            )
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible; "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    if not dist.is_initialized():
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, **kwargs
        )
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        is_main=dist.get_rank() == 0,
    )


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes in the run (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    """Wait until every rank reaches this point (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Return the mean of ``tensor`` over all ranks, for logging losses and metrics.

    The result is a new, detached tensor (the input is untouched); every rank receives
    the same value. Integer tensors are averaged in float32. Without a process group it
    returns a detached copy of ``tensor``.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    result = tensor.detach().clone()
    if not result.is_floating_point():
        result = result.float()
    if is_distributed():
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
        result /= dist.get_world_size()
    return result


def cleanup() -> None:
    """Leave and destroy the process group, if one was initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_MAX_GATHER_DIMS = 8


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 in forward; sum the gradients over ranks in backward.

    Forward: rank ``r`` contributes ``x_r`` and every rank receives
    ``cat(x_0, ..., x_{W-1})``.

    Backward: the output is used by the loss on *every* rank, so the gradient of the
    total (summed over ranks) objective with respect to ``x_r`` is the sum, over ranks
    ``s``, of the slice ``r`` of rank ``s``'s incoming gradient. An all-reduce (sum) of
    the incoming gradient followed by taking this rank's slice computes exactly that. A
    reduce-scatter would move about half the bytes, but Gloo does not implement it; the
    all-reduce works on every backend, and the tensors involved (one batch of
    embeddings) are small.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x)
        ctx.rank = dist.get_rank()
        ctx.local_size = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (in rank order) so that gradients reach each
    rank's part.

    The plain ``torch.distributed.all_gather`` returns tensors that are cut off from the
    autograd graph, so a contrastive loss computed on them would push no gradient into
    the other ranks' features. Here the backward pass all-reduces (sums) the incoming
    gradient and hands each rank the slice for its own rows: the features of rank ``r``
    then receive the gradient from every rank's loss, as they would in one process on
    the whole batch. This is written out as a small ``autograd.Function`` (rather than
    using ``torch.distributed.nn.functional.all_gather``) so that the backward rule is
    visible in one place and behaves the same on NCCL and Gloo.

    All ranks must pass tensors of the same shape and dtype; the shapes are checked
    first (one small extra collective) so a mismatch raises the same ``ValueError`` on
    every rank instead of hanging. With world size 1 ``x`` itself is returned.
    """
    if not is_distributed():
        return x
    # Every rank sends a fixed-length record (number of dimensions, then the shape
    # padded with -1), so even ranks whose tensors disagree take part in one well-formed
    # collective and all of them raise the same error below instead of hanging.
    record = torch.full((1 + _MAX_GATHER_DIMS,), -1, dtype=torch.long, device=x.device)
    record[0] = x.dim()
    record[1 : 1 + min(x.dim(), _MAX_GATHER_DIMS)] = torch.tensor(
        x.shape[:_MAX_GATHER_DIMS], dtype=torch.long
    )
    records = [torch.empty_like(record) for _ in range(dist.get_world_size())]
    dist.all_gather(records, record)
    shapes = [tuple(int(n) for n in r[1 : 1 + int(r[0])]) for r in records]
    if any(not torch.equal(r, records[0]) for r in records):
        raise ValueError(
            f"gather_with_grad needs the same shape on every rank, got {shapes} (rank "
            "order); "
            "give every rank the same local batch size, e.g. drop_last=True in the "
            "sampler and loader"
        )
    if not 1 <= x.dim() <= _MAX_GATHER_DIMS:
        raise ValueError(
            f"gather_with_grad needs a tensor with 1 to {_MAX_GATHER_DIMS} dimensions, "
            f"got shape {tuple(x.shape)}"
        )
    return _GatherWithGrad.apply(x)

"""Distributed helpers and the distributed CLIP loss: 2 Gloo processes on the CPU
against one process.

One spawn of two ranks (module-scoped fixture) runs every multi-process check and writes
each rank's results to a file; the tests below compare them with values computed in this
process.
"""

from __future__ import annotations

import math
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from crossalign.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup,
    gather_with_grad,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
)
from crossalign.losses import ClipLoss, clip_loss

WORLD_SIZE = 2
LOCAL_BATCH = 4
SPAWN_DEADLINE_S = 90.0
COLLECTIVE_TIMEOUT = timedelta(seconds=30)


class TinyDualEncoder(nn.Module):
    """Two linear projections into a shared 4-d space and a learnable log-scale, in
    float64."""

    def __init__(self) -> None:
        super().__init__()
        self.image_proj = nn.Linear(6, 4, dtype=torch.float64)
        self.text_proj = nn.Linear(5, 4, dtype=torch.float64)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0), dtype=torch.float64))

    def forward(
        self, images: torch.Tensor, texts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.image_proj(images), dim=1)
        text_features = F.normalize(self.text_proj(texts), dim=1)
        return image_features, text_features, self.log_scale.exp()


def make_model() -> TinyDualEncoder:
    """The same initial weights in every process (seeded)."""
    torch.manual_seed(0)
    return TinyDualEncoder()


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of WORLD_SIZE * LOCAL_BATCH (image, text) inputs."""
    gen = torch.Generator().manual_seed(1)
    n = WORLD_SIZE * LOCAL_BATCH
    return torch.randn(n, 6, generator=gen, dtype=torch.float64), torch.randn(
        n, 5, generator=gen, dtype=torch.float64
    )


def gather_input(rank: int) -> torch.Tensor:
    """Rank r's 3 x 2 contribution to the gather, distinct per rank."""
    return torch.arange(6, dtype=torch.float64).reshape(3, 2) + 100 * rank


def gather_weights(rank: int) -> torch.Tensor:
    """Rank-dependent weights of the gathered tensor, so each rank's loss differs."""
    return torch.arange(12, dtype=torch.float64).reshape(6, 2) * (rank + 1) + 0.5


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: set torchrun's variables, run every check, save the results to
    out_dir/rank{rank}.pt."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    info = init_distributed(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
    results: dict[str, object] = {}
    try:
        results["info"] = [
            info.rank,
            info.world_size,
            info.local_rank,
            int(info.is_main),
            str(info.device),
        ]
        results["helpers"] = [get_rank(), get_world_size(), int(is_distributed())]
        results["reduced_mean"] = all_reduce_mean(
            torch.tensor([rank + 1.0, 10.0 * rank])
        )
        results["reduced_int_mean"] = all_reduce_mean(torch.tensor(rank + 2))
        barrier()

        x = gather_input(rank).requires_grad_(True)
        gathered = gather_with_grad(x)
        (gathered * gather_weights(rank)).sum().backward()
        results["gathered"] = gathered.detach()
        results["gather_grad"] = x.grad

        model = make_model()
        ddp = DistributedDataParallel(model)
        images, texts = make_batch()
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        image_features, text_features, scale = ddp(images[local], texts[local])
        loss = ClipLoss()(image_features, text_features, scale)
        loss.backward()
        results["local_loss"] = loss.detach()
        results["mean_loss"] = all_reduce_mean(loss)
        results["grads"] = {
            name: p.grad.clone() for name, p in model.named_parameters()
        }

        uneven = torch.zeros(LOCAL_BATCH + rank, 4, dtype=torch.float64)
        try:
            ClipLoss()(uneven, uneven, 1.0)
            results["uneven_error"] = ""
        except ValueError as error:
            results["uneven_error"] = str(error)
    finally:
        cleanup()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def _free_port() -> int:
    """A TCP port that was free a moment ago, for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _import_root() -> str:
    """The folder from which this module imports under its current name (any pytest
    import mode).

    Spawned ranks unpickle ``_worker`` by module name, and they start with the parent's
    ``sys.path``; this folder must be on it.
    """
    root = Path(__file__).resolve().parent
    for _ in range(__name__.count(".")):
        root = root.parent
    return str(root)


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Spawn WORLD_SIZE Gloo ranks once, wait (bounded) for them, and load what each
    saved."""
    out_dir = tmp_path_factory.mktemp("ranks")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(_import_root())
        context = mp.spawn(
            _worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=False
        )
    deadline = time.monotonic() + SPAWN_DEADLINE_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(
                f"the {WORLD_SIZE} Gloo ranks did not finish within "
                f"{SPAWN_DEADLINE_S:.0f} s (killed)"
            )
    return [
        torch.load(out_dir / f"rank{rank}.pt", weights_only=True)
        for rank in range(WORLD_SIZE)
    ]


def test_init_distributed_reads_torchrun_environment(rank_results: list[dict]) -> None:
    for rank, result in enumerate(rank_results):
        assert result["info"] == [rank, WORLD_SIZE, rank, int(rank == 0), "cpu"]
        assert result["helpers"] == [rank, WORLD_SIZE, 1]


def test_all_reduce_mean_averages_over_ranks(rank_results: list[dict]) -> None:
    for result in rank_results:
        torch.testing.assert_close(result["reduced_mean"], torch.tensor([1.5, 5.0]))
        torch.testing.assert_close(result["reduced_int_mean"], torch.tensor(2.5))


def test_gather_with_grad_values_and_gradient(rank_results: list[dict]) -> None:
    expected_values = torch.cat([gather_input(r) for r in range(WORLD_SIZE)])
    total_weights = sum(gather_weights(r) for r in range(WORLD_SIZE))
    for rank, result in enumerate(rank_results):
        torch.testing.assert_close(result["gathered"], expected_values, rtol=0, atol=0)
        # d/dx_r of sum_s <gathered, w_s> is the rank-r slice of sum_s w_s.
        torch.testing.assert_close(
            result["gather_grad"],
            total_weights[3 * rank : 3 * rank + 3],
            rtol=0,
            atol=0,
        )


def _single_process_reference() -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of one process on the concatenated batch, with
    clip_loss."""
    model = make_model()
    images, texts = make_batch()
    loss = clip_loss(*model(images, texts))
    loss.backward()
    return loss.item(), {name: p.grad for name, p in model.named_parameters()}


def test_ddp_clip_loss_equals_single_process_on_concatenated_batch(
    rank_results: list[dict],
) -> None:
    reference_loss, reference_grads = _single_process_reference()
    for result in rank_results:
        assert result["mean_loss"].item() == pytest.approx(
            reference_loss, rel=1e-5, abs=1e-5
        )
        assert result["mean_loss"].item() == pytest.approx(reference_loss, rel=1e-12)
        assert result["grads"].keys() == reference_grads.keys()
        for name, grad in reference_grads.items():
            torch.testing.assert_close(
                result["grads"][name],
                grad,
                rtol=1e-5,
                atol=1e-5,
                msg=f"gradient of {name}",
            )
            torch.testing.assert_close(
                result["grads"][name],
                grad,
                rtol=1e-10,
                atol=1e-12,
                msg=f"gradient of {name}",
            )
    # The ranks' own losses differ (different rows); only their mean is the global loss.
    assert rank_results[0]["local_loss"].item() != pytest.approx(
        rank_results[1]["local_loss"].item(), rel=1e-6
    )


def test_uneven_local_batches_raise_on_every_rank(rank_results: list[dict]) -> None:
    for result in rank_results:
        assert "same shape on every rank" in result["uneven_error"]
        assert f"({LOCAL_BATCH}, 4), ({LOCAL_BATCH + 1}, 4)" in result["uneven_error"]


@pytest.fixture
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove torchrun's variables for one test, as in a plain `python` run."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_run_is_not_initialised(
    no_torchrun_env: pytest.MonkeyPatch,
) -> None:
    info = init_distributed()
    assert isinstance(info, DistInfo)
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (
        0,
        1,
        0,
        True,
    )
    assert not torch.distributed.is_initialized()
    assert (get_rank(), get_world_size(), is_distributed()) == (0, 1, False)
    barrier()
    cleanup()


def test_single_process_collectives_are_identities(
    no_torchrun_env: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    mean = all_reduce_mean(x)
    assert torch.equal(mean, x.detach()) and not mean.requires_grad
    assert all_reduce_mean(torch.tensor(3)).dtype == torch.float32
    with pytest.raises(TypeError, match="tensor must be a torch.Tensor"):
        all_reduce_mean(3.0)


def test_init_distributed_rejects_incomplete_environment(
    no_torchrun_env: pytest.MonkeyPatch,
) -> None:
    no_torchrun_env.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed(backend="gloo")
    no_torchrun_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK is not set"):
        init_distributed(backend="gloo")
    no_torchrun_env.setenv("RANK", "5")
    no_torchrun_env.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match=r"RANK=5 is outside \[0, WORLD_SIZE=2\)"):
        init_distributed(backend="gloo")
    no_torchrun_env.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one' is not an integer"):
        init_distributed(backend="gloo")
    assert not torch.distributed.is_initialized()


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the error raised when CUDA is absent"
)
def test_nccl_without_cuda_is_refused(no_torchrun_env: pytest.MonkeyPatch) -> None:
    no_torchrun_env.setenv("WORLD_SIZE", "2")
    no_torchrun_env.setenv("RANK", "0")
    no_torchrun_env.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="backend='nccl' needs CUDA"):
        init_distributed(backend="nccl")
    assert not torch.distributed.is_initialized()

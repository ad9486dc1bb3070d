"""The training loop under DDP: 2 Gloo processes on the CPU train exactly like one
process.

Each rank takes half of every global batch; the contrastive loss gathers features across
ranks and DDP averages gradients, so losses and weights must match a single process that
sees the whole batch. The image tower is a small ViT: BatchNorm (in the CNN) computes
its statistics per rank, which is a real, documented difference between the two
settings.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from crossalign.train import ExperimentConfig, train

STEPS = 3
GLOBAL_BATCH = 16


def config(output_dir: Path | None, batch_size: int) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "seed": 5,
            "data": {"name": "shapes", "image_size": 32, "train_size": 128},
            "model": {
                "image_encoder": "vit",
                "image_kwargs": {
                    "image_size": 32,
                    "patch_size": 8,
                    "dim": 16,
                    "depth": 1,
                    "heads": 2,
                },
                "text_encoder": "gru",
                "text_kwargs": {"embed_dim": 8, "hidden_dim": 8},
                "embed_dim": 8,
            },
            "train": {
                "steps": STEPS,
                "batch_size": batch_size,
                "warmup_steps": 1,
                "progress": False,
                "device": "cpu",
                "channels_last": False,
                "output_dir": str(output_dir) if output_dir else None,
            },
        }
    )


def _rank(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from crossalign.distributed import cleanup

    try:
        result = train(
            config(Path(out_dir) / "run" if rank == 0 else None, GLOBAL_BATCH // 2)
        )
        torch.save(
            {"history": result.history, "state": result.model.state_dict()},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_training_equals_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), *sys.path])
    )
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = train(config(None, GLOBAL_BATCH))

    expected = [h["loss"] for h in single.history]
    for result in ranks:
        assert len(result["history"]) == STEPS
        for got, want in zip((h["loss"] for h in result["history"]), expected):
            assert abs(got - want) < 1e-5, (got, want)
    for name, value in single.model.state_dict().items():
        # replicas stay identical
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name
        if name.endswith("in_proj_bias"):
            # The key part of this bias has an exactly zero gradient (a softmax does not
            # change when a constant is added to all its logits); Adam divides round-off
            # by round-off there and takes full-size steps of arbitrary sign, in one
            # process as in two. Compare the rest.
            dim = value.shape[0] // 3
            # query and value parts
            keep = torch.cat([torch.arange(dim), torch.arange(2 * dim, 3 * dim)])
            value, got = value[keep], ranks[0]["state"][name][keep]
        else:
            got = ranks[0]["state"][name]
        torch.testing.assert_close(got, value, rtol=1e-4, atol=1e-5, msg=name)
    # only rank 0 writes checkpoints
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()

"""The training loop: exact resume, non-finite stop, checkpoints, schedule,
precision."""

from __future__ import annotations

import math

import pytest
import torch

from crossalign.data.batches import StepBatchSampler
from crossalign.train import checkpoint as ckpt
from crossalign.train import trainer
from crossalign.train.config import ExperimentConfig
from crossalign.train.engine import NonFiniteLossError
from crossalign.train.schedule import warmup_cosine


def tiny_config(tmp_path, **train) -> ExperimentConfig:
    """A model and data small enough to train a few steps in about a second."""
    config = ExperimentConfig.from_dict(
        {
            "seed": 3,
            "data": {
                "name": "shapes",
                "image_size": 32,
                "train_size": 256,
                "val_size": 32,
                "test_size": 32,
            },
            "model": {
                "image_encoder": "small_cnn",
                "image_kwargs": {"widths": [8, 16], "out_dim": 16},
                "text_encoder": "gru",
                "text_kwargs": {"embed_dim": 8, "hidden_dim": 8},
                "embed_dim": 8,
            },
            "train": {
                "steps": 6,
                "batch_size": 16,
                "warmup_steps": 2,
                "log_every": 1,
                "progress": False,
                "output_dir": str(tmp_path / "run"),
                "device": "cpu",
                **train,
            },
        }
    )
    return config


def losses(history):
    return [h["loss"] for h in history if "loss" in h]


def test_resume_continues_bit_for_bit(tmp_path):
    straight = trainer.train(tiny_config(tmp_path / "a"))
    interrupted = trainer.train(tiny_config(tmp_path / "b"), stop_after=3)
    assert len(losses(interrupted.history)) == 3
    resumed = trainer.train(
        tiny_config(tmp_path / "b"), resume_from=interrupted.checkpoint
    )
    assert losses(resumed.history) == losses(straight.history)
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items()
    ):
        assert torch.equal(a, b), name


def test_gradient_accumulation_logs_the_mean_micro_batch_loss(tmp_path):
    """With two micro-batches per step, the first step's logged loss is the mean of the
    two micro-batch losses, recomputed here by hand from the same batches and initial
    weights."""
    result = trainer.train(
        tiny_config(tmp_path, steps=1, batch_size=8, grad_accum=2, warmup_steps=0)
    )
    config = tiny_config(tmp_path, steps=1, batch_size=8, grad_accum=2)
    from crossalign.data.build import build_dataset, build_tokenizer
    from crossalign.data.collate import CaptionCollator
    from crossalign.losses import clip_loss
    from crossalign.utils import seed_everything

    train_set = build_dataset(config.data, "train", seed=config.seed)
    tokenizer = build_tokenizer(config.data, train_set)
    seed_everything(config.seed)
    model = trainer.build_model(config, tokenizer)
    model.image_encoder.to(memory_format=torch.channels_last)
    sampler = StepBatchSampler(len(train_set), 8, config.seed, 0, 2)
    collate = CaptionCollator(tokenizer, seed=config.seed, max_len=config.data.max_len)
    expected = 0.0
    for keys in sampler:
        items = trainer._EpochTagged(train_set).__getitems__(keys)
        batch = collate(items)
        expected += (
            clip_loss(
                *model(batch["images"], batch["input_ids"], batch["attention_mask"])
            ).item()
            / 2
        )
    assert result.history[0]["loss"] == pytest.approx(expected, rel=1e-6)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = trainer.ClipLoss

    class BreaksAtStep4(real):
        calls = 0

        def forward(self, *args):
            BreaksAtStep4.calls += 1
            loss = super().forward(*args)
            return loss * float("nan") if BreaksAtStep4.calls == 4 else loss

    monkeypatch.setattr(trainer, "ClipLoss", BreaksAtStep4)
    config = tiny_config(tmp_path, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"nan at step 4.*step_000002"):
        trainer.train(config)
    run = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in run.iterdir()) == ["latest", "step_000002"]
    assert ckpt.load_train_state(run)["step"] == 2


def test_failed_checkpoint_write_leaves_nothing_behind(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    first = ckpt.save_checkpoint(tmp_path, 1, model, {"a": 1}, {"step": 1})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 2, model, {"a": 2}, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001"]
    assert ckpt.resolve_checkpoint(tmp_path) == first


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    result = trainer.train(tiny_config(tmp_path, steps=2))
    model, tokenizer, config = ckpt.load_dual_encoder(tmp_path / "run")
    # the completed model config (vocabulary size included)
    assert config.model == result.model.config
    assert (config.data, config.train, config.seed) == (
        result.config.data,
        result.config.train,
        result.config.seed,
    )
    ids, mask = tokenizer.encode_batch(["a small red circle at the top left"])
    images = torch.rand(2, 3, 32, 32)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), result.model.state_dict().items()
    ):
        assert torch.equal(a, b), name
    # the trained copy keeps its channels-last layout, so equality is up to float
    # rounding
    torch.testing.assert_close(
        model.encode_image(images),
        result.model.encode_image(images),
        rtol=1e-5,
        atol=1e-6,
    )
    torch.testing.assert_close(
        model.encode_text(ids, mask), result.model.encode_text(ids, mask)
    )


def test_not_a_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ckpt.resolve_checkpoint(tmp_path)


def test_warmup_cosine_closed_form():
    total, warmup, floor = 100, 10, 0.1
    assert warmup_cosine(0, total, warmup, floor) == pytest.approx(0.1)
    assert warmup_cosine(9, total, warmup, floor) == pytest.approx(1.0)
    assert warmup_cosine(10, total, warmup, floor) == pytest.approx(1.0)
    middle = warmup + (total - warmup) / 2
    assert warmup_cosine(int(middle), total, warmup, floor) == pytest.approx(
        floor + (1 - floor) * 0.5
    )
    assert warmup_cosine(total, total, warmup, floor) == pytest.approx(floor)
    values = [warmup_cosine(s, total, warmup, floor) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine(0, 0, 0)


def test_learning_rates_follow_the_schedule(tmp_path):
    result = trainer.train(
        tiny_config(tmp_path, steps=6, warmup_steps=2, min_lr_ratio=0.0)
    )
    base = result.config.train.lr
    logged = [h["lr"] for h in result.history if "lr" in h]
    assert logged == pytest.approx(
        [base * warmup_cosine(s, 6, 2, 0.0) for s in range(6)]
    )


def test_temperature_starts_at_clip_value_and_is_clamped():
    from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig

    model = DualEncoder(
        DualEncoderConfig(
            image_kwargs={"widths": [4], "out_dim": 4},
            text_kwargs={"vocab_size": 10, "embed_dim": 4, "hidden_dim": 4},
        )
    )
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(1000.0))
    assert model.logit_scale.item() == pytest.approx(100.0, rel=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_and_stays_close_to_fp32(tmp_path, precision):
    fp32 = trainer.train(tiny_config(tmp_path / "32", steps=2))
    mixed = trainer.train(
        tiny_config(tmp_path / precision, steps=2, precision=precision)
    )
    assert all(math.isfinite(x) for x in losses(mixed.history))
    assert losses(mixed.history)[0] == pytest.approx(losses(fp32.history)[0], rel=0.05)


def test_batch_larger_than_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        trainer.train(tiny_config(tmp_path, batch_size=512))


def test_distributed_sampler_slices_the_global_batch():
    single = list(StepBatchSampler(64, 8, seed=1, start=0, stop=4, world_size=1))
    rank0 = list(StepBatchSampler(64, 4, seed=1, start=0, stop=4, rank=0, world_size=2))
    rank1 = list(StepBatchSampler(64, 4, seed=1, start=0, stop=4, rank=1, world_size=2))
    assert [a + b for a, b in zip(rank0, rank1)] == single
    epochs = [
        e
        for batch in StepBatchSampler(64, 8, seed=1, start=0, stop=16)
        for e, _ in batch
    ]
    assert epochs[: 8 * 8] == [0] * 64 and epochs[64:] == [1] * 64

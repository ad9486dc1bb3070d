"""The training engine: accumulation, clipping, schedule, NaN reporting, DDP no_sync
and host reads, each against an independent computation."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from host_reads import count_host_reads

from crossalign.models.gpt import GPT, GPTConfig
from crossalign.train.engine import Engine, NonFiniteLossError
from crossalign.train.schedule import warmup_cosine, warmup_cosine_scheduler


def _applied_gradient(make_model, loss_of, batches, grad_accum):
    """The gradient one engine step applies, read off an SGD step with lr = 1:
    ``batches`` are the micro-batches, ``loss_of(model, batch)`` a mean loss."""
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    Engine(optimizer, grad_accum=grad_accum).step(
        lambda micro: loss_of(model, batches[micro])
    )
    return [b - p.detach() for b, p in zip(before, model.parameters())]


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)
    ).double()


def _gpt() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    return GPT(config).double()


def _classify(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _next_token(model, ids):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].flatten())


@pytest.mark.parametrize("grad_accum", [2, 4])
def test_accumulated_micro_batches_give_the_gradient_of_one_large_batch(grad_accum):
    torch.manual_seed(1)
    x = torch.randn(8 * grad_accum, 5, dtype=torch.float64)
    y = torch.randint(4, (8 * grad_accum,))
    large = _applied_gradient(_mlp, _classify, [(x, y)], 1)
    micro = list(zip(x.chunk(grad_accum), y.chunk(grad_accum)))
    accumulated = _applied_gradient(_mlp, _classify, micro, grad_accum)
    for a, b in zip(accumulated, large):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert max(float(g.abs().max()) for g in large) > 1e-3  # a real gradient


def test_accumulation_equals_a_large_batch_for_the_gpt_language_model():
    torch.manual_seed(2)
    ids = torch.randint(11, (12, 8))  # equal lengths: the token mean is an item mean
    large = _applied_gradient(_gpt, _next_token, [ids], 1)
    accumulated = _applied_gradient(_gpt, _next_token, list(ids.chunk(3)), 3)
    for a, b in zip(accumulated, large):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_steps_record_each_loss_and_the_scheduled_learning_rate():
    model = _mlp()
    torch.manual_seed(3)
    data = [(torch.randn(6, 5, dtype=torch.float64), torch.randint(4, (6,)))] * 7
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = warmup_cosine_scheduler(optimizer, 7, 2, 0.1)
    expected = []

    def loss_at(micro):
        loss = _classify(model, data[micro])
        expected.append(loss.item())
        return loss

    history = Engine(optimizer, scheduler, log_every=3).run(loss_at, 7)
    assert [entry["step"] for entry in history] == list(range(1, 8))
    assert [entry["loss"] for entry in history] == expected
    for entry in history:
        factor = warmup_cosine(entry["step"] - 1, 7, 2, 0.1)
        assert entry["lr"] == pytest.approx(0.1 * factor, rel=1e-12)


def test_clipping_matches_torch_clip_grad_norm():
    torch.manual_seed(4)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(4, (16,))
    unclipped = _applied_gradient(_mlp, lambda m, b: 100 * _classify(m, b), [(x, y)], 1)
    reference = _mlp()
    (100 * _classify(reference, (x, y))).backward()
    norm = math.sqrt(sum(float((p.grad**2).sum()) for p in reference.parameters()))
    assert norm > 1.0
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    Engine(optimizer, clip_grad_norm=1.0).step(
        lambda micro: 100 * _classify(model, (x, y))
    )
    applied = [b - p.detach() for b, p in zip(before, model.parameters())]
    for got, raw, ref in zip(applied, unclipped, reference.parameters()):
        torch.testing.assert_close(got, ref.grad / norm, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(raw, ref.grad, rtol=1e-12, atol=1e-12)


def test_a_nan_is_reported_at_the_step_it_appeared_with_the_hint():
    model = _mlp()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randint(4, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    engine = Engine(
        optimizer, log_every=10, desc="toy", hint=lambda: "last checkpoint: none"
    )

    def loss_at(micro):
        loss = _classify(model, (x, y))
        return loss * float("nan") if micro == 4 else loss

    for _ in range(6):
        engine.step(loss_at)  # nothing is read back before the flush
    with pytest.raises(NonFiniteLossError, match=r"toy: .*nan at step 5.*checkpoint"):
        engine.flush()
    assert isinstance(NonFiniteLossError("x"), FloatingPointError)


def test_extras_and_observed_values_are_recorded_and_transformed():
    model = _mlp()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randint(4, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    weight = model[0].weight
    seen = []

    def loss_at(micro):
        loss = _classify(model, (x, y))
        return loss, {"double": 2 * loss}

    def observe():
        seen.append(weight[0, 0].item())
        return {"w": weight[0, 0]}

    engine = Engine(
        optimizer,
        observe=observe,
        record=lambda e: {"s": e["step"], "ratio": e["double"] / e["loss"], **e},
    )
    history = engine.run(loss_at, 3)
    assert [entry["s"] for entry in history] == [1, 2, 3]
    assert all(entry["ratio"] == 2.0 for entry in history)
    assert [entry["w"] for entry in history] == seen  # the value after each step


def test_under_ddp_only_the_last_micro_batch_all_reduces():
    entered = []

    class FakeDDP(torch.nn.Module):
        @contextlib.contextmanager
        def no_sync(self):
            entered.append(True)
            yield

    model = _mlp()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randint(4, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    engine = Engine(optimizer, grad_accum=3, ddp_model=FakeDDP())
    engine.run(lambda micro: _classify(model, (x, y)), 2)
    assert len(entered) == 2 * 2


def test_the_logged_loss_is_the_reduced_one():
    model = _mlp()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randint(4, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine = Engine(optimizer, reduce=lambda t: t * 0 + 7.0)
    history = engine.run(lambda micro: _classify(model, (x, y)), 2)
    assert [entry["loss"] for entry in history] == [7.0, 7.0]


def test_no_value_is_read_back_between_log_intervals():
    model = _mlp()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randint(4, (4,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = warmup_cosine_scheduler(optimizer, 20, 2)
    engine = Engine(optimizer, scheduler, clip_grad_norm=1.0, log_every=20)
    with count_host_reads() as reads:
        engine.run(lambda micro: _classify(model, (x, y)), 20)
    assert reads.count == 1, reads.calls  # the one read-back of the 20 losses
    assert len(engine.history) == 20


@pytest.mark.parametrize(
    ("argument", "value"), [("grad_accum", 0), ("grad_accum", 1.5), ("log_every", 0)]
)
def test_bad_settings_are_rejected_by_name(argument, value):
    optimizer = torch.optim.SGD(_mlp().parameters(), lr=0.1)
    with pytest.raises(ValueError, match=argument):
        Engine(optimizer, **{argument: value})


def test_input_checks_skip_accelerator_tensors_only_inside_a_training_step():
    from crossalign import utils

    assert utils.values_hold(torch.tensor([True, True]))
    assert not utils.values_hold(torch.tensor([True, False]))
    on_meta = torch.empty(3, dtype=torch.bool, device="meta")  # has no values to read
    with pytest.raises((RuntimeError, NotImplementedError)):
        utils.values_hold(on_meta)  # outside training the check runs
    with utils.training_step():
        assert utils.values_hold(on_meta)  # skipped: no read, no wait
        assert not utils.values_hold(torch.tensor([False]))  # CPU checks still run


def test_the_loss_is_built_inside_a_training_step():
    from crossalign import utils

    model = _mlp()
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.randint(4, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = []

    def loss_at(micro):
        seen.append(utils._in_training_step)
        return _classify(model, (x, y))

    Engine(optimizer, grad_accum=2).run(loss_at, 2)
    assert seen == [True] * 4
    assert not utils._in_training_step


def test_tf32_is_switched_on_for_cuda_only(monkeypatch):
    from crossalign.train import engine as engine_module

    calls = []
    monkeypatch.setattr(engine_module, "enable_tf32", calls.append)
    optimizer = torch.optim.SGD(_mlp().parameters(), lr=0.1)
    Engine(optimizer, device="cpu")
    assert calls == []
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        monkeypatch.undo()
        engine_module.enable_tf32(True)
        assert matmul.allow_tf32 and cudnn.allow_tf32
        engine_module.enable_tf32(False)
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved

"""Every training loop, beam search and the retrieval metrics on CUDA, each checked
against the CPU.

Every test takes the ``device`` fixture: ``"cpu"`` always runs, so the unit suite
exercises each check without a GPU; ``"cuda"`` is marked ``gpu`` and skipped without
CUDA (``pytest -m gpu`` runs it, and so does ``benchmarks/gpu_check.sh``). A run on
``device`` is compared with the same run on the CPU, made once per session (on the CPU
it is also the run under test, which keeps the CPU variants cheap). On CUDA the two may
differ by the kernels' summation orders only: fp32 means fp32 here, TF32 is switched off
for matrix products and convolutions, so a few steps' losses agree to 1e-3 relative.
bf16 and fp16 runs must stay finite and start within 5% of fp32.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from test_experiments import TINY as COMPARE_TINY
from test_fusion_tasks import TINY as FUSION_TINY
from test_prefix_lm import CLASS_CAPTIONS, VOCAB, _captioner, _features
from test_retrieval import random_captioning, tied_embeddings
from test_train import losses, tiny_config
from test_train_captioning import TINY as CAPTION_TINY
from test_train_language_model import _random_sequences

from crossalign.data.build import (
    build_caption_dataset,
    build_tokenizer,
)
from crossalign.data.shapes import ShapesWorld
from crossalign.decoding import DecodeResult, beam_search, beam_search_reference
from crossalign.evaluation import (
    embed_images,
    embed_texts,
    evaluate_retrieval,
    generate_captions,
)
from crossalign.experiments.compare import compare_methods, prepare_data
from crossalign.experiments.fusion_tasks import (
    FusionTaskConfig,
    build_task_data,
    compare_fusion,
    encode_tokens,
    pretrain_backbone,
    train_fusion,
)
from crossalign.experiments.methods import method_names
from crossalign.metrics import retrieval_metrics
from crossalign.models.captioners import CaptionerConfig, build_captioner
from crossalign.models.fusion import FUSION_NAMES
from crossalign.models.gpt import GPT, GPTConfig
from crossalign.models.image_encoders import SmallCNN
from crossalign.models.mlp_lm import MLPLanguageModel
from crossalign.models.prefix_lm import PrefixCaptioner
from crossalign.models.qformer import QFormer
from crossalign.train import engine as engine_module
from crossalign.train import trainer
from crossalign.train.captioning import (
    CaptionExperimentConfig,
    train_captioner,
)
from crossalign.train.config import TrainConfig
from crossalign.train.encoder_pretraining import pretrain_on_scene_labels
from crossalign.train.language_model import perplexity, train_language_model
from crossalign.train.optim import optimizer_for
from crossalign.train.precision import grad_scaler
from crossalign.train.prefix import train_prefix

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
#: Optimiser steps of every short run.
STEPS = 4


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, NEEDS_CUDA])]
)
def device(request) -> Iterator[str]:
    """``"cpu"``, or ``"cuda"`` with TF32 off (fp32 products in fp32) for the test."""
    if request.param == "cpu":
        yield "cpu"
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        with pytest.MonkeyPatch.context() as patch:  # the engine turns TF32 on
            patch.setattr(engine_module, "enable_tf32", lambda enabled=True: None)
            yield "cuda"
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread() -> Iterator[None]:
    """The models here are tiny: one intra-op thread runs them as fast as several, and
    on a machine whose cores are busy with other work far faster (no thread waits for a
    descheduled sibling)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_CPU_RUNS: dict[str, Any] = {}


def on_cpu(key: str, run: Callable[[], Any]) -> Any:
    """``run()`` on the CPU, computed once per session: the reference of every
    device's run."""
    if key not in _CPU_RUNS:
        _CPU_RUNS[key] = run()
    return _CPU_RUNS[key]


def run_on(device: str, key: str, run: Callable[[str], Any]) -> tuple[Any, Any]:
    """``(run(device), run("cpu"))``, the CPU run made once per session. On the CPU it
    is also the run under test: the CPU variants check the checks (that a CPU run
    repeats exactly is tested where each loop is)."""
    expected = on_cpu(key, lambda: run("cpu"))
    return (expected if device == "cpu" else run(device)), expected


def assert_same_run(actual: Any, expected: Any, device: str) -> None:
    """Equal on the CPU; on CUDA equal up to the kernels' summation orders (relative
    1e-3 after a few fp32 steps)."""
    tolerance = (
        {"rtol": 0.0, "atol": 0.0} if device == "cpu" else {"rtol": 1e-3, "atol": 1e-4}
    )
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float64),
        torch.as_tensor(expected, dtype=torch.float64),
        **tolerance,
    )


def all_finite(values) -> bool:
    return all(math.isfinite(value) for value in values)


# --- the dual encoder ---------------------------------------------------------------

#: Steps of the dual encoder's runs: enough for fp16 to take steps after the grad
# scaler has skipped the first few while it finds its scale.
DUAL_STEPS = 6


def _train_dual_encoder(
    tmp_path, device: str, **train
) -> tuple[trainer.TrainResult, list[torch.amp.GradScaler]]:
    """A short run of the trainer, and the gradient scaler it made."""
    scalers: list[torch.amp.GradScaler] = []

    def recording_scaler(*args):
        scalers.append(grad_scaler(*args))
        return scalers[-1]

    config = tiny_config(
        tmp_path, steps=DUAL_STEPS, device=device, output_dir=None, **train
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "grad_scaler", recording_scaler)
        return trainer.train(config), scalers


def _cpu_dual_encoder_losses(tmp_path) -> list[float]:
    result, _ = on_cpu("dual encoder", lambda: _train_dual_encoder(tmp_path, "cpu"))
    return losses(result.history)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_dual_encoder_trains_on_device_as_on_cpu(device, precision, tmp_path):
    """The trainer's fast path on ``device``: channels-last images, fused AdamW,
    autocast, the fp16 grad scaler. fp32 gives the CPU's losses; bf16 stays within 5%
    of them; fp16 starts within 5% and takes steps once the scaler has found its
    scale."""
    expected = _cpu_dual_encoder_losses(tmp_path)
    if precision == "fp32":
        (result, scalers), _ = run_on(
            device, "dual encoder", lambda where: _train_dual_encoder(tmp_path, where)
        )
    else:
        result, scalers = _train_dual_encoder(tmp_path, device, precision=precision)
    got = losses(result.history)
    assert len(got) == DUAL_STEPS and all_finite(got)
    if precision == "fp32":
        assert_same_run(got, expected, device)
    elif precision == "bf16":
        torch.testing.assert_close(
            torch.tensor(got), torch.tensor(expected), rtol=0.05, atol=0.0
        )
    else:
        # The first loss is computed before any update; the scaler then skips the
        # steps whose gradients overflow fp16 (halving its scale each time), so the
        # later losses lag behind fp32's.
        assert got[0] == pytest.approx(expected[0], rel=0.05)
    (scaler,) = scalers
    assert scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":
        skipped = math.log2(2.0**16 / scaler.get_scale())
        assert 0 <= skipped < DUAL_STEPS
    kernels = [p for p in result.model.image_encoder.parameters() if p.dim() == 4]
    assert kernels and all(
        p.device.type == device and p.is_contiguous(memory_format=torch.channels_last)
        for p in kernels
    )


def _strict_engine(monkeypatch) -> None:
    """Make every ``Engine.step`` run under ``torch.cuda.set_sync_debug_mode("error")``
    (any call that makes the CPU wait for the GPU raises), except the read-back at log
    intervals (``Engine.flush``), the one wait the engine is allowed."""
    real_step, real_flush = engine_module.Engine.step, engine_module.Engine.flush

    def strict_step(self, loss_at):
        torch.cuda.set_sync_debug_mode("error")
        try:
            real_step(self, loss_at)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def allowed_flush(self):
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("default")
        try:
            real_flush(self)
        finally:
            torch.cuda.set_sync_debug_mode(mode)

    monkeypatch.setattr(engine_module.Engine, "step", strict_step)
    monkeypatch.setattr(engine_module.Engine, "flush", allowed_flush)


@pytest.mark.gpu
@NEEDS_CUDA
def test_the_training_step_never_waits_for_the_gpu(tmp_path, monkeypatch):
    """Under ``torch.cuda.set_sync_debug_mode("error")`` every call that makes the CPU
    wait for the GPU raises. The engine's steps run in that mode, except its read-back
    at log intervals (the one wait it is allowed): the dual encoder with a Transformer
    text tower (pinned, non-blocking batch copies), and a GPT language model.

    The GRU text tower is left out: packing variable-length sequences for cuDNN takes
    the lengths on the host, one wait per step by the design of that API.
    """
    _strict_engine(monkeypatch)
    config = tiny_config(tmp_path, steps=4, device="cuda", output_dir=None, log_every=2)
    config.model.text_encoder = "transformer"
    config.model.text_kwargs = {"dim": 16, "depth": 1, "heads": 2}
    result = trainer.train(config)
    assert len(losses(result.history)) == 4 and all_finite(losses(result.history))
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=15, block_size=16, n_layer=1, n_head=2, n_embd=16))
    lm = train_language_model(
        gpt.cuda(), _random_sequences(12, 15, 0), steps=4, batch_size=4, log_every=2
    )
    assert len(lm.losses) == 4 and all_finite(lm.losses)


@pytest.mark.gpu
@NEEDS_CUDA
def test_fusion_training_reads_its_tokens_on_the_gpu(monkeypatch):
    """The fusion tokens move to the GPU once (``TokenFeatures.to``) and a batch's
    length comes from the lengths kept on the CPU, so no fusion training step waits
    for the GPU. The backbone's pretraining is left out (its GRU packs on the host)."""
    config = FusionTaskConfig(**{**FUSION_TINY, "steps": 4, "device": "cuda"})
    data = build_task_data("matching", config)
    backbone = pretrain_backbone(config, data.train.texts)
    features = (
        encode_tokens(backbone, data.train, 7),
        encode_tokens(backbone, data.test, 7),
    )
    _strict_engine(monkeypatch)
    result = train_fusion("gated", "matching", config, data, backbone, features)
    assert len(result.losses) == 4 and all_finite(result.losses)
    assert next(result.model.head.parameters()).device.type == "cuda"


def _fused_adamw_available(device: str) -> bool:
    try:
        torch.optim.AdamW(
            [torch.zeros(1, device=device, requires_grad=True)], fused=True
        )
    except (RuntimeError, TypeError):
        return False
    return True


def test_fused_adamw_is_used_and_steps_like_the_for_each_one(device):
    """``train.fused_optimizer`` gets the fused kernel (always on CUDA; on the CPU where
    this PyTorch has one), and it takes the same steps as the for-each AdamW."""
    if device == "cuda":
        assert _fused_adamw_available(device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5))
    twin = copy.deepcopy(model)
    config = TrainConfig(lr=1e-2)
    fused = optimizer_for(model.to(device), config)
    plain = optimizer_for(
        twin.to(device), dataclasses.replace(config, fused_optimizer=False)
    )
    assert bool(fused.defaults.get("fused")) == _fused_adamw_available(device)
    assert not plain.defaults.get("fused")
    inputs = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)).to(device)
    for _ in range(3):
        for module, optimizer in ((model, fused), (twin, plain)):
            optimizer.zero_grad()
            module(inputs).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_training_gives_the_eager_losses(device, tmp_path, monkeypatch):
    """``train.compile=true`` gives the eager CPU run's losses to 1e-3. On CUDA with
    the default backend (Inductor's fused kernels); on the CPU with Dynamo's ``eager``
    backend, which checks the graph capture in seconds instead of a minute of C++
    compilation."""
    expected = _cpu_dual_encoder_losses(tmp_path)
    if device == "cpu":
        monkeypatch.setattr(
            torch, "compile", functools.partial(torch.compile, backend="eager")
        )
    torch._dynamo.reset()
    try:
        result, _ = _train_dual_encoder(tmp_path, device, compile=True)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(
        torch.tensor(losses(result.history)),
        torch.tensor(expected),
        rtol=1e-3,
        atol=1e-4,
    )


# --- retrieval ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_retrieval_metrics_on_device_equal_cpu(device, dtype):
    """Small-integer embeddings have exact scores on any device and in any of these
    precisions, ties included: every metric must be equal."""
    owner = random_captioning(120, seed=5)
    image, text = tied_embeddings(120, len(owner), seed=6)
    expected = retrieval_metrics(
        image.to(dtype), text.to(dtype), torch.tensor(owner), chunk_size=32
    )
    got = retrieval_metrics(
        image.to(device, dtype),
        text.to(device, dtype),
        torch.tensor(owner, device=device),
        chunk_size=32,
    )
    assert got == expected


def test_evaluation_embeds_on_device_as_on_cpu(device, tmp_path):
    """``evaluate_retrieval``'s embeddings computed on ``device`` (and returned on the
    CPU) are the CPU's."""
    config = tiny_config(tmp_path)
    dataset = ShapesWorld("test", size=16, image_size=32, seed=2)
    tokenizer = build_tokenizer(config.data, dataset)
    torch.manual_seed(0)
    model = trainer.build_model(config, tokenizer).eval()
    texts, _ = dataset.caption_image_index()

    def embed(model, where):
        return (
            embed_images(model, dataset, batch_size=8, device=where),
            embed_texts(model, texts, tokenizer, batch_size=32, device=where),
        )

    expected = on_cpu("evaluation embeddings", lambda: embed(model, "cpu"))
    moved = copy.deepcopy(model).to(device)
    got = embed(moved, device)
    tolerance = (
        {"rtol": 0.0, "atol": 0.0} if device == "cpu" else {"rtol": 1e-4, "atol": 1e-5}
    )
    for a, b in zip(got, expected):
        assert a.device.type == "cpu"
        torch.testing.assert_close(a, b, **tolerance)
    metrics = evaluate_retrieval(moved, dataset, tokenizer, batch_size=8, device=device)
    assert all(
        0.0 <= metrics[f"{d}_r{k}"] <= 1.0 for d in ("i2t", "t2i") for k in (1, 5)
    )


# --- captioning, encoder pretraining -------------------------------------------------


CAPTION_SETTINGS = {
    # a pretrained, frozen CNN whose regions are encoded once (the default recipe)
    "sat": {
        "model": {"kind": "sat", "freeze_encoder": True},
        "train": {"encoder_pretrain_steps": 2},
    },
    # the encoder trained by the caption loss, run at every step
    "transformer": {
        "model": {"kind": "transformer", "num_layers": 1, "num_heads": 2},
        "train": {},
    },
}


def _caption_config(kind: str, device: str) -> CaptionExperimentConfig:
    settings = CAPTION_SETTINGS[kind]
    return CaptionExperimentConfig.from_dict(
        {
            **CAPTION_TINY,
            "data": {**CAPTION_TINY["data"], "train_size": 48, "test_size": 4},
            "model": {**CAPTION_TINY["model"], **settings["model"]},
            "train": {
                **CAPTION_TINY["train"],
                "steps": STEPS,
                "batch_size": 16,
                "device": device,
                **settings["train"],
            },
        }
    )


def _train_captioner(kind: str, where: str, *overrides: str) -> tuple[Any, ...]:
    """The trained captioner, its losses and its encoder pretraining's losses."""
    result = train_captioner(_caption_config(kind, where).override(list(overrides)))
    assert next(result.model.parameters()).device.type == where
    return result, [h["loss"] for h in result.history], result.pretrain_history


@pytest.mark.parametrize("kind", list(CAPTION_SETTINGS))
def test_captioner_trains_on_device_as_on_cpu(device, kind):
    """Encoder pretraining and teacher forcing give the CPU's losses; the captioner
    then decodes on ``device``."""
    (result, got, pretrain), (_, expected, expected_pretrain) = run_on(
        device, f"captioner {kind}", lambda where: _train_captioner(kind, where)
    )
    assert len(got) == STEPS and all_finite(got)
    assert_same_run(got, expected, device)
    assert len(pretrain) == result.config.train.encoder_pretrain_steps
    assert_same_run(pretrain, expected_pretrain, device)
    test_set = build_caption_dataset(result.config, "test")
    captions, decoded = generate_captions(
        result.model, test_set, result.tokenizer, beam_size=2, max_len=8
    )
    assert len(captions) == len(test_set) and decoded is not None
    assert decoded.tokens.device.type == device


@pytest.mark.parametrize(
    "kind, precision",
    [
        ("sat", "bf16"),
        ("sat", "fp16"),
        ("transformer", "bf16"),
        ("transformer", "fp16"),
    ],
)
def test_captioner_in_mixed_precision_starts_at_the_fp32_loss(device, kind, precision):
    """``train.precision`` bf16 and fp16 (with the grad scaler): finite losses, the
    first (before any update) within 5% of fp32's."""
    _, expected, _ = on_cpu(f"captioner {kind}", lambda: _train_captioner(kind, "cpu"))
    _, got, _ = _train_captioner(kind, device, f"train.precision={precision}")
    assert len(got) == STEPS and all_finite(got)
    assert got[0] == pytest.approx(expected[0], rel=0.05)


def test_encoder_pretraining_on_device_as_on_cpu(device):
    world = ShapesWorld("train", size=64, image_size=32, seed=0)

    def run(where: str) -> list[float]:
        torch.manual_seed(0)
        encoder = SmallCNN(widths=(8, 16), downsample="maxpool")
        history = pretrain_on_scene_labels(
            encoder,
            world,
            steps=STEPS,
            batch_size=16,
            lr=1e-2,
            warmup_steps=1,
            seed=3,
            device=where,
            label_groups=["attributes", "pairs", "regions"],
        ).history
        assert next(encoder.parameters()).device.type == where
        return history

    got, expected = run_on(device, "encoder pretraining", run)
    assert len(got) == STEPS and all_finite(got)
    assert_same_run(got, expected, device)


# --- beam search ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sat", "transformer"])
def test_beam_search_on_device_gives_the_cpu_captions(device, kind):
    """A small captioner in float64, where no two hypotheses are near enough for the
    devices' roundings to reorder them: the same tokens, lengths and scores; and on the
    device too the batched search equals the per-image reference."""
    torch.manual_seed(0)
    captioner = (
        build_captioner(
            CaptionerConfig(
                kind=kind,
                vocab_size=12,
                image_kwargs={"widths": [8, 16], "out_dim": 8},
                embed_dim=8,
                hidden_dim=16,
                attention_dim=8,
                num_layers=1,
                num_heads=2,
                ff_dim=16,
                dropout=0.0,
            )
        )
        .double()
        .eval()
    )
    images = ShapesWorld("test", size=5, image_size=32, seed=1).render(range(5))
    options = dict(beam_size=3, max_len=10, length_penalty=0.5)

    def decode(where: str) -> DecodeResult:
        model = copy.deepcopy(captioner).to(where)
        return model.generate(images.to(where, torch.float64), **options)

    got, expected = run_on(device, f"beam search {kind}", decode)
    assert got.tokens.device.type == device
    assert torch.equal(got.tokens.cpu(), expected.tokens)
    assert torch.equal(got.lengths.cpu(), expected.lengths)
    torch.testing.assert_close(got.scores.cpu(), expected.scores, rtol=1e-9, atol=0.0)
    model = copy.deepcopy(captioner).to(device)
    with torch.no_grad():
        state = model.init_state(images.to(device, torch.float64))
    cfg = model.config
    arguments = dict(
        batch_size=len(images), bos_id=cfg.bos_id, eos_id=cfg.eos_id, pad_id=cfg.pad_id
    )
    with torch.no_grad():
        batched = beam_search(model.step, state, **arguments, **options)
        reference = beam_search_reference(model.step, state, **arguments, **options)
    assert torch.equal(batched.tokens, reference.tokens)
    torch.testing.assert_close(batched.scores, reference.scores, rtol=1e-9, atol=0.0)


# --- language models, the vision-to-LM bridge ----------------------------------------


@pytest.mark.parametrize("kind", ["gpt", "mlp"])
def test_language_model_trains_on_device_as_on_cpu(device, kind):
    sequences = _random_sequences(40, vocab=15, seed=4)

    def run(where: str) -> tuple[list[float], float]:
        torch.manual_seed(0)
        model = (
            GPT(GPTConfig(vocab_size=15, block_size=16, n_layer=2, n_head=2, n_embd=16))
            if kind == "gpt"
            else MLPLanguageModel(vocab_size=15, context=3)
        ).to(where)
        result = train_language_model(
            model, sequences, steps=STEPS, batch_size=8, lr=1e-2, seed=1
        )
        assert next(model.parameters()).device.type == where
        return result.losses, perplexity(model, sequences, batch_size=16)

    (got, got_perplexity), (expected, expected_perplexity) = run_on(
        device, f"language model {kind}", run
    )
    assert len(got) == STEPS and all_finite(got)
    assert_same_run(got, expected, device)
    assert_same_run(got_perplexity, expected_perplexity, device)


@pytest.mark.parametrize("stage", ["projector", "lora", "qformer"])
def test_prefix_captioner_trains_on_device_as_on_cpu(device, stage):
    """Stage 1 (the projector, LM frozen), stage 2 with LoRA adapters, and a Q-Former
    bridge with its contrastive loss added."""
    features, classes = _features(24)
    captions = [[CLASS_CAPTIONS[c]] for c in classes]

    def run(where: str) -> list[float]:
        captioner = _captioner()
        extra = None
        torch.manual_seed(2)
        if stage == "lora":
            captioner.set_lm_training("lora", rank=2)
        elif stage == "qformer":
            qformer = QFormer(
                feature_dim=features.shape[1],
                lm_dim=16,
                vocab_size=len(VOCAB),
                num_queries=2,
                dim=8,
                depth=1,
                heads=2,
            )
            captioner = PrefixCaptioner(
                captioner.lm,
                qformer,
                bos_id=VOCAB.bos_id,
                eos_id=VOCAB.eos_id,
                pad_id=VOCAB.pad_id,
            )
            extra = qformer.contrastive_loss
        history = train_prefix(
            captioner,
            features,
            captions,
            VOCAB,
            steps=STEPS,
            batch_size=8,
            lr=1e-2,
            warmup_steps=1,
            extra_loss=extra,
            device=where,
            progress=False,
        ).history
        assert next(captioner.parameters()).device.type == where
        return [h["loss"] for h in history]

    got, expected = run_on(device, f"prefix {stage}", run)
    assert len(got) == STEPS and all_finite(got)
    assert_same_run(got, expected, device)


# --- experiments: the comparison runner, fusion tasks --------------------------------


def test_comparison_runner_on_device_as_on_cpu(device):
    """Alignment methods trained a few steps by the comparison runner: the CPU's losses
    and embedding geometry. Every method on CUDA; on the CPU the one that moves most to
    the device (its swapped captions too). The retrieval ranks of a barely trained
    model can swap on a rounding, so they are only checked for range here (the metrics
    themselves are compared exactly above)."""
    names = method_names() if device == "cuda" else ["hard_negatives"]
    data = on_cpu("comparison data", lambda: prepare_data(COMPARE_TINY))

    def run(where: str) -> list[tuple[list[float], dict[str, float]]]:
        config = dataclasses.replace(COMPARE_TINY, device=where)
        results = compare_methods(names, config, data)
        assert [result.name for result in results] == names
        for result in results:
            assert next(result.model.parameters()).device.type == where
            assert all(
                0.0 <= result.retrieval[f"{d}_r{k}"] <= 1.0
                for d in ("i2t", "t2i")
                for k in (1, 5, 10)
            )
        return [(result.losses, result.geometry) for result in results]

    got, expected = run_on(device, f"comparison {names}", run)
    for name, (got_losses, got_geometry), (cpu_losses, cpu_geometry) in zip(
        names, got, expected
    ):
        assert len(got_losses) == COMPARE_TINY.steps and all_finite(got_losses), name
        assert_same_run(got_losses, cpu_losses, device)
        keys = sorted(cpu_geometry)
        assert_same_run(
            [got_geometry[key] for key in keys],
            [cpu_geometry[key] for key in keys],
            device,
        )


@pytest.mark.parametrize("task", ["matching", "qa"])
def test_fusion_tasks_train_on_device_as_on_cpu(device, task):
    """The contrastive backbone, then every fusion module on its frozen tokens."""

    def run(where: str) -> tuple[list[float], list[list[float]]]:
        config = FusionTaskConfig(**{**FUSION_TINY, "steps": STEPS, "device": where})
        data = build_task_data(task, config)
        backbone = pretrain_backbone(config, data.train.texts)
        assert next(backbone.dual_encoder.parameters()).device.type == where
        results = compare_fusion(FUSION_NAMES, task, config, data, backbone)
        return backbone.losses, [result.losses for result in results]

    (got_backbone, got), (expected_backbone, expected) = run_on(
        device, f"fusion {task}", run
    )
    assert len(got_backbone) == FUSION_TINY["pretrain_steps"]
    assert_same_run(got_backbone, expected_backbone, device)
    assert len(got) == len(FUSION_NAMES)
    for got_losses, cpu_losses in zip(got, expected):
        assert len(got_losses) == STEPS and all_finite(got_losses)
        assert_same_run(got_losses, cpu_losses, device)

"""benchmarks/bench_vs_open_clip.py: the crossalign model it builds, one training step,
and (with open_clip installed) the two models at the same size."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_vs_open_clip.py"


def _load() -> ModuleType:
    name = "bench_vs_open_clip"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


bench = _load()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small():
    return bench.get_size("small")


def _copy_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _changed(model: torch.nn.Module, before: list[torch.Tensor]) -> int:
    return sum(
        not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before)
    )


def test_the_small_size_is_the_one_the_issue_measured(small):
    assert (small.image_size, small.patch_size) == (64, 8)
    assert (small.vision_width, small.vision_depth, small.vision_heads) == (192, 4, 3)
    assert (small.text_width, small.text_depth, small.text_heads) == (256, 2, 4)
    # from the default experiment: data.max_len, the ShapesWorld vocabulary, embed_dim
    assert (small.context_length, small.embed_dim) == (40, 128)
    assert small.vocab_size > 2


def test_the_crossalign_model_has_the_asked_widths_and_depths(small):
    model = bench.build_crossalign(small)
    vit, text = model.image_encoder, model.text_encoder
    assert vit.config["image_size"] == 64 and vit.config["patch_size"] == 8
    assert vit.patch_embed.out_channels == 192
    assert len(vit.blocks.layers) == 4
    assert vit.blocks.layers[0].self_attn.num_heads == 3
    assert vit.blocks.layers[0].linear1.out_features == 4 * 192
    assert text.token_embed.embedding_dim == 256
    assert text.token_embed.num_embeddings == small.vocab_size
    assert text.pos_embed.shape == (1, small.context_length, 256)
    assert len(text.blocks.layers) == 2
    assert text.blocks.layers[0].self_attn.num_heads == 4
    assert model.image_projection.out_features == small.embed_dim
    assert model.text_projection.out_features == small.embed_dim


def test_the_crossalign_model_trains_one_step_on_the_cpu(small):
    trainee = bench.Trainee("crossalign", small, batch_size=4, device=CPU)
    before = _copy_parameters(trainee.model)
    loss = trainee.step()
    assert math.isfinite(float(loss))
    assert _changed(trainee.model, before) == len(before)


def test_the_flop_count_is_positive_and_leaves_no_gradient(small):
    trainee = bench.Trainee("crossalign", small, batch_size=4, device=CPU)
    assert trainee.flops_per_sample() > 1e8
    assert all(p.grad is None for p in trainee.model.parameters())


def test_parse_args_rejects_a_zero_batch():
    assert bench.parse_args([]).batch_size == 128
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch-size", "0"])


def test_the_two_models_have_the_same_parameter_count(small):
    pytest.importorskip("open_clip")
    counts = {
        name: bench.count_parameters(bench.build_model(name, small))
        for name in bench.MODELS
    }
    assert counts["crossalign"] == pytest.approx(counts["open_clip"], rel=0.01)
    # the one known difference: open_clip's ln_pre (2 x width) against crossalign's
    # patch-embedding bias (1 x width)
    assert counts["open_clip"] - counts["crossalign"] == small.vision_width


def test_the_two_models_have_the_same_parameter_count_at_vit_b_32():
    pytest.importorskip("open_clip")
    size = bench.VIT_B_32
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        counts = {
            name: bench.count_parameters(bench.build_model(name, size))
            for name in bench.MODELS
        }
    assert counts["open_clip"] == pytest.approx(151_277_313, rel=1e-3)  # CLIP ViT-B/32
    assert counts["open_clip"] - counts["crossalign"] == size.vision_width


def test_the_two_losses_agree():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    gen = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    scale = torch.tensor(14.3)
    ours = bench.ClipLoss()(image, text, scale)
    theirs = open_clip_loss.ClipLoss()(image, text, scale)
    torch.testing.assert_close(ours, theirs)


def test_one_step_of_each_model_runs(small):
    pytest.importorskip("open_clip")
    for name in bench.MODELS:
        trainee = bench.Trainee(name, small, batch_size=4, device=CPU)
        before = _copy_parameters(trainee.model)
        assert math.isfinite(float(trainee.step())), name
        assert _changed(trainee.model, before) == len(before), name


def test_main_prints_the_table(small, capsys):
    pytest.importorskip("open_clip")
    threads = torch.get_num_threads()
    try:
        code = bench.main(
            ["--device", "cpu", "--batch-size", "4", "--steps", "1", "--warmup", "0"]
            + ["--repeats", "1", "--threads", str(threads)]
        )
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0
    assert "crossalign / open_clip samples/s:" in out
    assert "MFU" not in out  # CUDA only

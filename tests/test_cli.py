"""The command line, run in-process: what each subcommand prints and writes, and how it
refuses bad input."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from crossalign.cli import main
from crossalign.data.build import build_dataset
from crossalign.evaluation import evaluate_retrieval
from crossalign.metrics import format_retrieval
from crossalign.train import trainer
from crossalign.train.checkpoint import load_dual_encoder, load_train_state
from crossalign.train.config import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
QUERY = "a red circle left of a blue square"
RANKED_LINE = re.compile(r"^\s*(\d+)\. image (\d+)\s+score ([+-]\d+\.\d{3})  \((.*)\)$")

TINY_EXPERIMENT = {
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
        "steps": 3,
        "batch_size": 16,
        "warmup_steps": 2,
        "log_every": 1,
        "progress": False,
        "device": "cpu",
    },
}


def write_tiny_config(folder: Path) -> Path:
    """The tiny experiment as a YAML file (no output_dir: the command line decides where
    runs go)."""
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_EXPERIMENT), encoding="utf-8")
    return path


def losses(history: list[dict]) -> list[float]:
    """The training losses of a history, in step order."""
    return [entry["loss"] for entry in history if "loss" in entry]


def usage_error(capsys) -> str:
    """The single stderr line of a refused command (nothing on stdout)."""
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line message, got:\n{err}"
    assert out == ""
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-step CLI training run shared by the tests: (config file, run folder, what
    it printed)."""
    folder = tmp_path_factory.mktemp("cli")
    config = write_tiny_config(folder)
    run = folder / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(
            ["train", "--config", str(config), "--output-dir", str(run), "--quiet"]
        )
    assert status == 0
    return config, run, printed.getvalue()


def test_train_prints_steps_checkpoint_and_the_test_table(trained):
    _, run, printed = trained
    assert "trained to step 3" in printed
    assert f"checkpoint: {run / 'checkpoints' / 'step_000003'}" in printed
    model, tokenizer, config = load_dual_encoder(run)
    test = build_dataset(config.data, "test", seed=config.seed)
    metrics = evaluate_retrieval(model, test, tokenizer, max_len=config.data.max_len)
    assert f"test split (32 images):\n{format_retrieval(metrics)}" in printed


def test_train_writes_config_history_and_checkpoint(trained):
    config_path, run, _ = trained
    expected = load_config(config_path)
    expected.train.output_dir = str(run)
    assert load_config(run / "config.yaml") == expected
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    assert [entry["step"] for entry in history] == [1, 2, 3]
    assert all(
        isinstance(entry["loss"], float) and entry["loss"] > 0 for entry in history
    )
    assert history == load_train_state(run / "checkpoints")["history"]
    assert (run / "checkpoints" / "latest").read_text(
        encoding="utf-8"
    ).strip() == "step_000003"
    assert (run / "checkpoints" / "step_000003" / "model.safetensors").is_file()


def test_set_overrides_the_config_and_default_output_is_runs_config_name(
    tmp_path, monkeypatch, capsys
):
    config_path = write_tiny_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "train",
                "--config",
                str(config_path),
                "--set",
                "train.steps=2",
                "--set",
                "train.lr=0.004",
                "--quiet",
            ]
        )
        == 0
    )
    assert "trained to step 2" in capsys.readouterr().out
    run = tmp_path / "runs" / "tiny"
    saved = load_config(run / "config.yaml")
    assert (saved.train.steps, saved.train.lr) == (2, 0.004)
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    # warm-up over 2 steps: the optimiser used lr/2, then the full overridden lr
    assert [entry["lr"] for entry in history] == pytest.approx([0.002, 0.004])


def test_resume_finishes_an_interrupted_run_exactly_like_the_straight_one(
    trained, tmp_path, capsys
):
    config_path, straight_run, _ = trained
    run = tmp_path / "run"
    interrupted = load_config(config_path)
    interrupted.train.output_dir = str(run)
    trainer.train(interrupted, stop_after=2)
    assert (
        main(
            [
                "train",
                "--config",
                str(config_path),
                "--output-dir",
                str(run),
                "--resume",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    assert "trained to step 3" in capsys.readouterr().out
    resumed = json.loads((run / "history.json").read_text(encoding="utf-8"))
    straight = json.loads((straight_run / "history.json").read_text(encoding="utf-8"))
    assert losses(resumed) == losses(straight)
    assert (run / "checkpoints" / "latest").read_text(
        encoding="utf-8"
    ).strip() == "step_000003"


def test_evaluate_prints_the_table_and_writes_the_same_metrics_as_json(
    trained, tmp_path, capsys
):
    _, run, _ = trained
    model, tokenizer, config = load_dual_encoder(run)
    direct = evaluate_retrieval(
        model,
        build_dataset(config.data, "test", seed=config.seed),
        tokenizer,
        max_len=config.data.max_len,
    )
    out_json = tmp_path / "out.json"
    assert main(["evaluate", str(run), "--device", "cpu", "--json", str(out_json)]) == 0
    assert (
        capsys.readouterr().out
        == f"test split (32 images):\n{format_retrieval(direct)}\n"
    )
    assert json.loads(out_json.read_text(encoding="utf-8")) == direct


def test_evaluate_a_checkpoint_folder_on_fewer_images(trained, capsys):
    _, run, _ = trained
    model, tokenizer, config = load_dual_encoder(run)
    direct = evaluate_retrieval(
        model,
        build_dataset(config.data, "test", seed=config.seed, size=8),
        tokenizer,
        max_len=config.data.max_len,
    )
    assert (
        main(
            [
                "evaluate",
                str(run / "checkpoints" / "step_000003"),
                "--size",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (
        capsys.readouterr().out
        == f"test split (8 images):\n{format_retrieval(direct)}\n"
    )


def test_retrieve_ranks_like_an_independent_search_and_saves_a_png(
    trained, tmp_path, capsys
):
    _, run, _ = trained
    figure = tmp_path / "fig.png"
    assert (
        main(
            [
                "retrieve",
                str(run),
                "--query",
                QUERY,
                "--top-k",
                "3",
                "--device",
                "cpu",
                "--save",
                str(figure),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()

    model, tokenizer, config = load_dual_encoder(run)
    test = build_dataset(config.data, "test", seed=config.seed)
    with torch.no_grad():
        images = model.encode_image(
            torch.stack([test[i]["image"] for i in range(len(test))])
        )
        ids, mask = tokenizer.encode_batch([QUERY], max_len=config.data.max_len)
        scores = (model.encode_text(ids, mask) @ images.T)[0]
    top_scores, top_indices = scores.topk(4)
    assert (top_scores[:-1] - top_scores[1:]).min() > 1e-4, (
        "near-tied scores would make the order fragile"
    )

    assert lines[0] == f'query: "{QUERY}"'
    ranked = [RANKED_LINE.match(line) for line in lines[1:4]]
    assert all(ranked), lines
    assert [int(m.group(1)) for m in ranked] == [1, 2, 3]
    assert [int(m.group(2)) for m in ranked] == top_indices[:3].tolist()
    assert [float(m.group(3)) for m in ranked] == pytest.approx(
        top_scores[:3].tolist(), abs=5.01e-4
    )
    assert [m.group(4) for m in ranked] == [
        test[i]["captions"][0] for i in top_indices[:3].tolist()
    ]
    assert lines[4:] == [f"figure saved to {figure}"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_config_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["train", "--config", str(missing)]) == 2
    assert str(missing) in usage_error(capsys)


def test_unknown_config_key_is_named(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  stepz: 3\n", encoding="utf-8")
    assert (
        main(["train", "--config", str(path), "--output-dir", str(tmp_path / "run")])
        == 2
    )
    message = usage_error(capsys)
    assert (
        message.startswith("crossalign train: error:")
        and "stepz" in message
        and str(path) in message
    )


def test_invalid_yaml_config_is_a_one_line_error(tmp_path, capsys):
    """The module promises a one-line message; PyYAML's error text spans several
    lines."""
    path = tmp_path / "broken.yaml"
    path.write_text("data: {name: shapes\n", encoding="utf-8")
    assert (
        main(["train", "--config", str(path), "--output-dir", str(tmp_path / "run")])
        == 2
    )
    assert str(path) in usage_error(capsys)


@pytest.mark.parametrize("item", ["train.steps", "steps=3", "optim.lr=0.1"])
def test_bad_override_syntax_is_a_usage_error(tmp_path, capsys, item):
    config_path = write_tiny_config(tmp_path)
    assert (
        main(
            [
                "train",
                "--config",
                str(config_path),
                "--output-dir",
                str(tmp_path / "run"),
                "--set",
                item,
            ]
        )
        == 2
    )
    message = usage_error(capsys)
    assert (
        message.startswith("crossalign train: error: override")
        and repr(item) in message
    )


def test_wrongly_typed_value_is_a_usage_error(tmp_path, capsys):
    """``--set train.steps=ten`` must be refused with exit status 2, not crash inside
    the trainer."""
    config_path = write_tiny_config(tmp_path)
    assert (
        main(
            [
                "train",
                "--config",
                str(config_path),
                "--output-dir",
                str(tmp_path / "run"),
                "--set",
                "train.steps=ten",
            ]
        )
        == 2
    )
    assert "steps" in usage_error(capsys)


@pytest.mark.parametrize("command", ["evaluate", "retrieve"])
def test_folder_that_is_not_a_checkpoint_is_named(tmp_path, capsys, command):
    folder = tmp_path / "not_a_checkpoint"
    folder.mkdir()
    extra = ["--query", QUERY] if command == "retrieve" else []
    assert main([command, str(folder), *extra]) == 2
    message = usage_error(capsys)
    assert (
        message.startswith(f"crossalign {command}: error:") and str(folder) in message
    )


@pytest.mark.parametrize("top_k", ["0", "33"])
def test_top_k_outside_the_gallery_is_refused(trained, capsys, top_k):
    _, run, _ = trained
    assert (
        main(
            [
                "retrieve",
                str(run),
                "--query",
                QUERY,
                "--top-k",
                top_k,
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert f"--top-k {top_k}" in usage_error(capsys)


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_refused(trained, capsys, query):
    _, run, _ = trained
    assert main(["retrieve", str(run), "--query", query]) == 2
    assert "--query" in usage_error(capsys)


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["frobnicate"], "invalid choice"),
        ([], "required"),
        (["evaluate"], "checkpoint"),
        (["retrieve", "somewhere"], "--query"),
        (["retrieve", "somewhere", "--query", "x", "--top-k", "three"], "invalid int"),
    ],
)
def test_argparse_rejects_unknown_commands_and_missing_arguments(
    capsys, argv, complaint
):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


def test_module_runs_as_a_script():
    result = subprocess.run(
        [sys.executable, "-m", "crossalign.cli", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert all(
        command in result.stdout for command in ("train", "evaluate", "retrieve")
    )

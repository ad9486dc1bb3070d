"""Checkpoints: model weights in safetensors, configs in JSON, optimiser state for
resuming.

A checkpoint is a folder::

    step_000600/
        model.safetensors   the model's weights (safe to load: no pickle) config.json
        experiment config + tokenizer, enough to rebuild the model train_state.pt
        optimiser, scheduler, scaler, RNG states, step, history (resume only)

Folders are written under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint, and ``latest`` (a one-line text file) is rewritten
atomically after each successful save. ``train_state.pt`` is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from crossalign.utils import atomic_write_text

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"
LATEST_FILE = "latest"


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(
    directory: str | Path,
    step: int,
    model: nn.Module,
    config: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``directory/step_{step:06d}`` atomically and point ``directory/latest`` at
    it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=directory))
    try:
        safetensors.torch.save_model(_unwrap(model), str(tmp / MODEL_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        if train_state is not None:
            torch.save(train_state, tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    atomic_write_text(directory / LATEST_FILE, final.name + "\n")
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder, or a run/checkpoints folder holding ``latest``;
    return the folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        latest = candidate / LATEST_FILE
        if latest.is_file():
            path = candidate / latest.read_text(encoding="utf-8").strip()
            break
    if not (path / MODEL_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not a crossalign checkpoint: expected {MODEL_FILE} and "
            f"{CONFIG_FILE} in it "
            f"(or a '{LATEST_FILE}' file pointing to such a folder)"
        )
    return path


def read_config(checkpoint: str | Path) -> dict[str, Any]:
    """The JSON config stored in a checkpoint."""
    path = resolve_checkpoint(checkpoint) / CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def load_weights(
    model: nn.Module, checkpoint: str | Path, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a checkpoint's safetensors weights into ``model`` (strict: every key must
    match)."""
    path = resolve_checkpoint(checkpoint) / MODEL_FILE
    missing, unexpected = safetensors.torch.load_model(
        _unwrap(model), str(path), strict=False, device=str(device)
    )
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the model (missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)})"
        )
    return model


def load_train_state(checkpoint: str | Path) -> dict[str, Any]:
    """The resume state of a checkpoint (optimiser, scheduler, scaler, RNG, step,
    history)."""
    path = resolve_checkpoint(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: this checkpoint holds weights only and cannot resume "
            "training"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def load_dual_encoder(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any, Any]:
    """Rebuild a trained dual encoder from a checkpoint: returns (model in eval mode,
    tokenizer, config).

    The config is an :class:`~crossalign.train.config.ExperimentConfig`; the tokenizer
    is the one the model was trained with.
    """
    from crossalign.data.vocab import tokenizer_from_dict
    from crossalign.models.dual_encoder import DualEncoder
    from crossalign.train.config import ExperimentConfig

    saved = read_config(checkpoint)
    if "experiment" not in saved or "tokenizer" not in saved:
        raise ValueError(
            f"{resolve_checkpoint(checkpoint) / CONFIG_FILE}: expected 'experiment' "
            "and 'tokenizer' entries"
        )
    config = ExperimentConfig.from_dict(
        saved["experiment"], source=str(resolve_checkpoint(checkpoint) / CONFIG_FILE)
    )
    tokenizer = tokenizer_from_dict(saved["tokenizer"])
    model = DualEncoder(config.model)
    load_weights(model, checkpoint, device=device)
    return model.to(device).eval(), tokenizer, config

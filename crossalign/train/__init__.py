"""Training: experiment configs, the training loop, precision, schedules and checkpoints."""

from crossalign.train.checkpoint import load_dual_encoder, resolve_checkpoint
from crossalign.train.config import (
    DataConfig, ExperimentConfig, TrainConfig, default_config_path, load_config, save_config,
)
from crossalign.train.trainer import NonFiniteLossError, TrainResult, train

__all__ = [
    "DataConfig", "ExperimentConfig", "NonFiniteLossError", "TrainConfig", "TrainResult", "default_config_path",
    "load_config", "load_dual_encoder", "resolve_checkpoint", "save_config", "train",
]

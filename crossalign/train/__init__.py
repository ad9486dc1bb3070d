"""Training: experiment configs, the training loops (dual encoder, captioner, language
model, vision-to-LM projector), precision, schedules and checkpoints."""

from crossalign.train.captioning import (
    CaptionExperimentConfig,
    load_caption_config,
    load_captioner,
    train_captioner,
)
from crossalign.train.checkpoint import load_dual_encoder, resolve_checkpoint
from crossalign.train.config import (
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    default_config_path,
    load_config,
    save_config,
)
from crossalign.train.engine import NonFiniteLossError
from crossalign.train.language_model import perplexity, train_language_model
from crossalign.train.prefix import PrefixTrainResult, train_prefix
from crossalign.train.trainer import TrainResult, train

__all__ = [
    "CaptionExperimentConfig",
    "load_caption_config",
    "load_captioner",
    "train_captioner",
    "perplexity",
    "train_language_model",
    "PrefixTrainResult",
    "train_prefix",
    "DataConfig",
    "ExperimentConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "default_config_path",
    "load_config",
    "load_dual_encoder",
    "resolve_checkpoint",
    "save_config",
    "train",
]

"""The CLIP-style dual encoder: two towers, two projection heads, one shared embedding
space."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.models.image_encoders import build_image_encoder
from crossalign.models.text_encoders import build_text_encoder


@dataclass
class DualEncoderConfig:
    """Everything needed to rebuild a :class:`DualEncoder` (saved as JSON beside the
    weights).

    ``image_kwargs`` / ``text_kwargs`` go to ``build_image_encoder`` /
    ``build_text_encoder``; ``text_kwargs`` must hold ``vocab_size`` for word-level text
    encoders. ``image_encoder="features"`` trains on features that a frozen encoder
    computed once (``data.feature_cache``): the image tower is then
    :class:`PrecomputedFeatures`, and ``image_kwargs`` holds their width (``dim``).
    """

    image_encoder: str = "small_cnn"
    image_kwargs: dict[str, Any] = field(default_factory=dict)
    text_encoder: str = "gru"
    text_kwargs: dict[str, Any] = field(default_factory=dict)
    embed_dim: int = 128
    projection: str = "linear"
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    learn_temperature: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualEncoderConfig:
        """Build from a dict, naming any key this config does not know."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown model config keys {sorted(unknown)}; valid keys: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)


class PrecomputedFeatures(nn.Module):
    """The image tower of a dual encoder whose image encoder is frozen and already ran:
    it passes ``[B, dim]`` cached features through unchanged, so only the projection
    head (and the text side) learns. Encoding every image once instead of at every step
    is what makes a pretrained CNN affordable on a CPU (chapter 1 on Flickr8k)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim={dim} must be >= 1")
        self.out_dim = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.out_dim:
            raise ValueError(
                f"precomputed image features must have shape [B, {self.out_dim}], got "
                f"{tuple(features.shape)}: was the feature cache made by another "
                "encoder, or is the data set not the cached one?"
            )
        return features.float()


def _projection(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim)
        )
    raise ValueError(f"projection={kind!r} is not known; use 'linear' or 'mlp'")


class DualEncoder(nn.Module):
    """Image tower + text tower, each followed by a projection into a shared space.

    Both embeddings are L2-normalised, so a dot product is a cosine similarity. The
    logit scale (1 / temperature) is learnt in log space, starts at
    ``1 / init_temperature`` (1 / 0.07, as in CLIP) and is clamped at
    ``max_logit_scale`` (100), which keeps the softmax from becoming arbitrarily sharp
    and the training from diverging.
    """

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        if not 0 < config.init_temperature:
            raise ValueError(f"init_temperature={config.init_temperature} must be > 0")
        if 1.0 / config.init_temperature > config.max_logit_scale:
            raise ValueError(
                f"init_temperature={config.init_temperature} gives a logit scale above "
                f"max_logit_scale={config.max_logit_scale}"
            )
        self.config = config
        image_encoder = (
            PrecomputedFeatures(**config.image_kwargs)
            if config.image_encoder == "features"
            else build_image_encoder(config.image_encoder, **config.image_kwargs)
        )
        # Any module that maps images to [B, out_dim] may replace the built image tower
        # (crossalign.experiments.compare.train_method's image_encoder does).
        self.image_encoder: nn.Module = image_encoder
        self.text_encoder = build_text_encoder(
            config.text_encoder, **config.text_kwargs
        )
        self.image_projection = _projection(
            config.projection, image_encoder.out_dim, config.embed_dim
        )
        self.text_projection = _projection(
            config.projection, self.text_encoder.out_dim, config.embed_dim
        )
        log_scale = torch.tensor(math.log(1.0 / config.init_temperature))
        if config.learn_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)

    @property
    def logit_scale(self) -> torch.Tensor:
        """1 / temperature, clamped at ``max_logit_scale``."""
        return self.log_logit_scale.clamp(
            max=math.log(self.config.max_logit_scale)
        ).exp()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings [B, embed_dim] from images [B, 3, H, W] in [0,
        1]."""
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Unit-length text embeddings [B, embed_dim] from token ids and their padding
        mask."""
        return F.normalize(
            self.text_projection(self.text_encoder(input_ids, attention_mask)), dim=-1
        )

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (image embeddings, text embeddings, logit scale), the inputs of the
        CLIP loss."""
        return (
            self.encode_image(images),
            self.encode_text(input_ids, attention_mask),
            self.logit_scale,
        )

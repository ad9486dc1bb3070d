"""Projectors: turn image features into ``k`` "soft token" embeddings a language model
can read.

A frozen language model only understands vectors that look like its own token
embeddings. A projector learns to produce such vectors from a frozen image encoder's
output; placed in front of the text, they act as a *prefix* the LM conditions on. Three
designs:

- :class:`LinearProjector` — one linear map (LLaVA, Liu et al. 2023);
- :class:`MLPProjector` — linear, GELU, linear (LLaVA-1.5, Liu et al. 2024);
- :class:`TransformerMapper` — ClipCap's mapper (Mokady et al. 2021): the image features
  and ``k`` learned prefix constants go through a small Transformer; the outputs at the
  constants' positions are the prefix.

Every projector accepts either one pooled vector per image ``[B, D]`` or a sequence of
patch or grid features ``[B, N, D]`` and returns ``[B, k, lm_dim]``:

- with a sequence and ``prefix_len=None`` the map is applied to every patch (LLaVA: one
  soft token per patch, ``k = N``);
- with a pooled vector, ``prefix_len=k`` expands it into ``k`` tokens (ClipCap: one
  output layer of width ``k * lm_dim``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "LinearProjector",
    "MLPProjector",
    "TransformerMapper",
    "build_projector",
    "projector_names",
]


def _check_dims(**dims: int | None) -> None:
    """Raise a ValueError naming the first dimension that is not a positive integer
    (None allowed)."""
    for name, value in dims.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _TokenwiseOrExpanding(nn.Module):
    """Shared shape logic of the linear and MLP projectors (see the module
    docstring)."""

    def __init__(self, feature_dim: int, lm_dim: int, prefix_len: int | None) -> None:
        super().__init__()
        _check_dims(feature_dim=feature_dim, lm_dim=lm_dim, prefix_len=prefix_len)
        self.feature_dim, self.lm_dim, self.prefix_len = feature_dim, lm_dim, prefix_len
        self.out_width = lm_dim * (prefix_len or 1)
        # set by the subclass: features [.., D] -> [.., out_width]
        self.net: nn.Module = nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Image features ``[B, D]`` or ``[B, N, D]`` -> prefix embeddings
        ``[B, k, lm_dim]``."""
        if features.shape[-1] != self.feature_dim or features.dim() not in (2, 3):
            raise ValueError(
                f"features must be [B, {self.feature_dim}] or [B, N, "
                f"{self.feature_dim}], "
                f"got {tuple(features.shape)}"
            )
        if self.prefix_len is None:
            if features.dim() != 3:
                raise ValueError(
                    "a projector with prefix_len=None maps every patch of [B, N, D] "
                    "features; "
                    "for one pooled vector per image give prefix_len"
                )
            return self.net(features)
        if features.dim() != 2:
            raise ValueError(
                f"a projector with prefix_len={self.prefix_len} expands pooled [B, D] "
                "features; "
                "for patch features [B, N, D] use prefix_len=None"
            )
        return self.net(features).view(features.shape[0], self.prefix_len, self.lm_dim)


class LinearProjector(_TokenwiseOrExpanding):
    """One linear layer from image features to LM embeddings (LLaVA's projector).

    Args:
        feature_dim: width ``D`` of the image features.
        lm_dim: width of the language model's token embeddings.
        prefix_len: ``k`` tokens made from one pooled vector; ``None`` maps each patch.
    """

    def __init__(
        self, feature_dim: int, lm_dim: int, prefix_len: int | None = None
    ) -> None:
        super().__init__(feature_dim, lm_dim, prefix_len)
        self.net = nn.Linear(feature_dim, self.out_width)


class MLPProjector(_TokenwiseOrExpanding):
    """Linear, GELU, linear (LLaVA-1.5's projector; ClipCap's MLP mapper when
    expanding).

    Args:
        feature_dim, lm_dim, prefix_len: as for :class:`LinearProjector`.
        hidden_dim: width of the hidden layer (default ``lm_dim``, as in LLaVA-1.5).
    """

    def __init__(
        self,
        feature_dim: int,
        lm_dim: int,
        prefix_len: int | None = None,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(feature_dim, lm_dim, prefix_len)
        hidden = hidden_dim if hidden_dim is not None else lm_dim
        _check_dims(hidden_dim=hidden)
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.GELU(), nn.Linear(hidden, self.out_width)
        )


class TransformerMapper(nn.Module):
    """ClipCap's Transformer mapper: image tokens + ``k`` learned constants -> ``k``
    prefix embeddings.

    A pooled vector ``[B, D]`` is first expanded linearly into ``image_tokens`` tokens
    of width ``lm_dim``; patch features ``[B, N, D]`` are mapped token-wise instead. The
    learned prefix constants are appended, a Transformer encoder (bidirectional) mixes
    everything, and the outputs at the constants' positions are returned. The constants
    let the mapper ask the image for what the language model needs, with a prefix length
    independent of ``N``.

    Args:
        feature_dim: width of the image features. lm_dim: width of the language model's
        embeddings (also the mapper's width). prefix_len: ``k``, the number of learned
        constants and of output tokens. image_tokens: tokens made from a pooled vector
        (ignored for patch features). depth, heads: Transformer layers and attention
        heads (``heads`` divides ``lm_dim``).
    """

    def __init__(
        self,
        feature_dim: int,
        lm_dim: int,
        prefix_len: int = 4,
        image_tokens: int = 4,
        depth: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        _check_dims(
            feature_dim=feature_dim,
            lm_dim=lm_dim,
            prefix_len=prefix_len,
            image_tokens=image_tokens,
            depth=depth,
            heads=heads,
        )
        if lm_dim % heads:
            raise ValueError(f"heads={heads} must divide lm_dim={lm_dim}")
        self.feature_dim, self.lm_dim = feature_dim, lm_dim
        self.prefix_len, self.image_tokens = prefix_len, image_tokens
        self.expand = nn.Linear(feature_dim, image_tokens * lm_dim)
        self.tokenwise = nn.Linear(feature_dim, lm_dim)
        self.prefix_constants = nn.Parameter(torch.randn(prefix_len, lm_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            lm_dim,
            heads,
            dim_feedforward=4 * lm_dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, depth, enable_nested_tensor=False
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Image features ``[B, D]`` or ``[B, N, D]`` -> prefix embeddings
        ``[B, prefix_len, lm_dim]``."""
        if features.shape[-1] != self.feature_dim or features.dim() not in (2, 3):
            raise ValueError(
                f"features must be [B, {self.feature_dim}] or [B, N, "
                f"{self.feature_dim}], "
                f"got {tuple(features.shape)}"
            )
        batch = features.shape[0]
        if features.dim() == 2:
            image = self.expand(features).view(batch, self.image_tokens, self.lm_dim)
        else:
            image = self.tokenwise(features)
        constants = self.prefix_constants.unsqueeze(0).expand(batch, -1, -1)
        mixed = self.transformer(torch.cat([image, constants], dim=1))
        return mixed[:, -self.prefix_len :]


_PROJECTORS = {
    "linear": LinearProjector,
    "mlp": MLPProjector,
    "transformer": TransformerMapper,
}


def projector_names() -> list[str]:
    """Names accepted by :func:`build_projector`."""
    return sorted(_PROJECTORS)


def build_projector(name: str, feature_dim: int, lm_dim: int, **kwargs) -> nn.Module:
    """Build a projector by name (``"linear"``, ``"mlp"``, ``"transformer"``); kwargs go
    to its class."""
    if name not in _PROJECTORS:
        raise ValueError(
            f"projector {name!r} is not known; choose one of {projector_names()}"
        )
    return _PROJECTORS[name](feature_dim, lm_dim, **kwargs)

"""Fusion modules: combine image tokens and text tokens into one vector, behind one
interface.

Every module is built as ``Cls(image_dim, text_dim, out_dim, **options)`` and called as

    forward(image_tokens [B, N, image_dim], text_tokens [B, L, text_dim],
            image_mask [B, N] | None = None, text_mask [B, L] | None = None) -> [B,
            out_dim]

Masks are boolean with True on real tokens (``None``: all tokens are real), as in the
text encoders. Pooled inputs ``[B, C]`` are accepted and read as a single token. Padded
tokens are replaced by zeros before anything else happens, so they can never change the
output (not even when they hold NaN) and receive exactly zero gradient.

The modules, from simplest to richest:

=====================
========================================================================== ``concat``
masked mean of each modality, concatenated, then a linear layer or an MLP ``mean``
both pooled modalities projected to ``out_dim`` and averaged ``weighted``           the
two projections mixed with learned softmax weights (one pair for all) ``gated``
gated multimodal unit: a per-example, per-unit gate picks between modalities
``attention``          attention over the two modality vectors with a learned query
``cross_attention``    text tokens attend to image tokens, then a Transformer-style MLP
block ``film``               pooled text scales and shifts every image token (FiLM),
then pooling =====================
==========================================================================

``mean``, ``weighted`` and ``concat`` without an MLP are affine in the pooled inputs:
followed by a linear classifier they cannot represent an interaction such as "label =
image bit XOR text bit" (the test suite proves and checks this). The other modules
multiply or gate one modality by a function of the other, or are followed by a
non-linearity, and can.

``build_fusion(name, image_dim, text_dim, out_dim, **options)`` builds a module by name
(see :data:`FUSION_NAMES`); every module keeps its arguments in ``module.config`` so
that ``build_fusion(**module.config)`` rebuilds it (with fresh weights).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from crossalign.models.text_encoders import masked_mean
from crossalign.utils import values_hold


def _as_tokens(
    tokens: torch.Tensor, mask: torch.Tensor | None, dim: int, modality: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one modality's input; return
    ``(tokens [B, N, dim] with padding zeroed, mask [B, N])``."""
    arg = f"{modality}_tokens"
    if not isinstance(tokens, torch.Tensor) or not tokens.is_floating_point():
        raise TypeError(
            f"{arg} must be a floating-point tensor, got "
            f"{getattr(tokens, 'dtype', type(tokens))}"
        )
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(1)
    elif tokens.dim() != 3:
        raise ValueError(
            f"{arg} must have shape [B, N, {dim}] or pooled [B, {dim}], got "
            f"{tuple(tokens.shape)}"
        )
    if tokens.shape[-1] != dim:
        raise ValueError(
            f"{arg} have {tokens.shape[-1]} features but the module was built with "
            f"{modality}_dim={dim}"
        )
    if tokens.shape[1] == 0:
        raise ValueError(f"{arg} has no tokens (shape {tuple(tokens.shape)})")
    if mask is None:
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    else:
        if mask.is_floating_point():
            raise TypeError(
                f"{modality}_mask must be boolean (True = real token), got "
                f"{mask.dtype}; float masks are "
                "additive attention biases in torch. Convert a 0/1 mask with "
                "mask.bool()"
            )
        mask = mask.bool()
        if mask.shape != tokens.shape[:2]:
            raise ValueError(
                f"{modality}_mask has shape {tuple(mask.shape)} but {arg} need "
                f"{tuple(tokens.shape[:2])} "
                "(a pooled [B, C] input takes a [B, 1] mask or None)"
            )
        if not values_hold(mask.any(dim=1)):
            raise ValueError(
                f"every example needs at least one real {modality} token "
                f"({modality}_mask has an all-False row)"
            )
    return tokens.masked_fill(~mask.unsqueeze(-1), 0.0), mask


def _check_positive(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a positive integer (``name`` is the
    argument's name)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class FusionModule(nn.Module):
    """Base class: the shared constructor arguments, ``config`` and input checks of
    every fusion module.

    Subclasses set the class attribute ``name`` (their key in :func:`build_fusion`) and
    implement ``forward(image_tokens, text_tokens, image_mask=None, text_mask=None)``,
    which returns ``[B, out_dim]``.
    """

    name: str

    def __init__(
        self, image_dim: int, text_dim: int, out_dim: int, **options: Any
    ) -> None:
        """Store the dimensions and ``config``; ``options`` are the subclass's own
        keyword arguments."""
        super().__init__()
        for arg, value in (
            ("image_dim", image_dim),
            ("text_dim", text_dim),
            ("out_dim", out_dim),
        ):
            _check_positive(arg, value)
        self.image_dim, self.text_dim, self.out_dim = image_dim, text_dim, out_dim
        self.config: dict[str, Any] = {
            "name": self.name,
            "image_dim": image_dim,
            "text_dim": text_dim,
            "out_dim": out_dim,
            **options,
        }

    def prepare(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check both inputs; return
        ``(image [B, N, Ci], text [B, L, Ct], image_mask, text_mask)``.

        Pooled ``[B, C]`` inputs become one token, ``None`` masks become all-True, and
        padded tokens are set to zero.
        """
        image, image_mask = _as_tokens(
            image_tokens, image_mask, self.image_dim, "image"
        )
        text, text_mask = _as_tokens(text_tokens, text_mask, self.text_dim, "text")
        if image.shape[0] != text.shape[0]:
            raise ValueError(
                "image_tokens and text_tokens must have the same batch size, got "
                f"{image.shape[0]} and {text.shape[0]}"
            )
        return image, text, image_mask, text_mask

    def pooled(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the masked mean of each modality:
        ``(image [B, Ci], text [B, Ct])``."""
        image, text, image_mask, text_mask = self.prepare(
            image_tokens, text_tokens, image_mask, text_mask
        )
        return masked_mean(image, image_mask), masked_mean(text, text_mask)

    def extra_repr(self) -> str:
        """Show the dimensions in ``print(module)``."""
        return (
            f"image_dim={self.image_dim}, text_dim={self.text_dim}, "
            f"out_dim={self.out_dim}"
        )


class ConcatFusion(FusionModule):
    """Concatenate the masked means of both modalities and map them to ``out_dim``
    (early fusion).

    Args:
        image_dim, text_dim, out_dim: feature sizes of the inputs and of the output.
        hidden_dim: ``None`` for a single linear layer (affine, so a linear head after
        it cannot
            learn interactions between modalities); an integer for a two-layer ReLU MLP
            of that width, which can.
    """

    name = "concat"

    def __init__(
        self, image_dim: int, text_dim: int, out_dim: int, hidden_dim: int | None = None
    ) -> None:
        super().__init__(image_dim, text_dim, out_dim, hidden_dim=hidden_dim)
        in_dim = image_dim + text_dim
        if hidden_dim is None:
            self.head: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            _check_positive("hidden_dim", hidden_dim)
            self.head = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
            )

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return ``head([mean(image); mean(text)])`` -> ``[B, out_dim]``."""
        image, text = self.pooled(image_tokens, text_tokens, image_mask, text_mask)
        return self.head(torch.cat([image, text], dim=-1))


class MeanFusion(FusionModule):
    """Project both pooled modalities to ``out_dim`` with linear layers and average
    them."""

    name = "mean"

    def __init__(self, image_dim: int, text_dim: int, out_dim: int) -> None:
        super().__init__(image_dim, text_dim, out_dim)
        self.image_proj = nn.Linear(image_dim, out_dim)
        self.text_proj = nn.Linear(text_dim, out_dim)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return ``(W_i mean(image) + W_t mean(text)) / 2`` (with biases) ->
        ``[B, out_dim]``."""
        image, text = self.pooled(image_tokens, text_tokens, image_mask, text_mask)
        return 0.5 * (self.image_proj(image) + self.text_proj(text))


class WeightedSumFusion(FusionModule):
    """Mix the two projected modalities with learned weights ``softmax(logits)`` shared
    by all examples.

    The logits start at zero, so training starts from :class:`MeanFusion`; the learned
    weights (:meth:`modality_weights`) tell how much the model relies on each modality
    overall.
    """

    name = "weighted"

    def __init__(self, image_dim: int, text_dim: int, out_dim: int) -> None:
        super().__init__(image_dim, text_dim, out_dim)
        self.image_proj = nn.Linear(image_dim, out_dim)
        self.text_proj = nn.Linear(text_dim, out_dim)
        self.logits = nn.Parameter(torch.zeros(2))

    def modality_weights(self) -> torch.Tensor:
        """Return the mixing weights ``[w_image, w_text]`` (non-negative, summing to
        1)."""
        return torch.softmax(self.logits, dim=0)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return ``w_image * W_i mean(image) + w_text * W_t mean(text)`` ->
        ``[B, out_dim]``."""
        image, text = self.pooled(image_tokens, text_tokens, image_mask, text_mask)
        weights = self.modality_weights()
        return weights[0] * self.image_proj(image) + weights[1] * self.text_proj(text)


class GatedFusion(FusionModule):
    """Gated multimodal unit (Arevalo et al., 2017): a learned gate chooses, per unit,
    which modality to trust.

    With ``x_i``, ``x_t`` the masked means::

        h = z * tanh(W_i x_i + b_i) + (1 - z) * tanh(W_t x_t + b_t),   z = sigmoid(W_z
        [x_i; x_t] + b_z)

    (the paper writes the layers without biases; they are kept here as in most
    implementations).
    """

    name = "gated"

    def __init__(self, image_dim: int, text_dim: int, out_dim: int) -> None:
        super().__init__(image_dim, text_dim, out_dim)
        self.image_proj = nn.Linear(image_dim, out_dim)
        self.text_proj = nn.Linear(text_dim, out_dim)
        self.gate = nn.Linear(image_dim + text_dim, out_dim)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the gated mixture ``h`` -> ``[B, out_dim]``."""
        image, text = self.pooled(image_tokens, text_tokens, image_mask, text_mask)
        z = torch.sigmoid(self.gate(torch.cat([image, text], dim=-1)))
        return z * torch.tanh(self.image_proj(image)) + (1 - z) * torch.tanh(
            self.text_proj(text)
        )


class ModalityAttentionFusion(FusionModule):
    """Attend over the two modality vectors with a learned query; the weights depend on
    the example.

    Each pooled modality is projected to ``v_m`` in ``out_dim``; its score is
    ``q . tanh(W_k v_m + b_k)`` (additive attention with a learned context vector
    ``q``), the weights are the softmax of the two scores, and the output is
    ``sum_m a_m v_m``.
    """

    name = "attention"

    def __init__(self, image_dim: int, text_dim: int, out_dim: int) -> None:
        super().__init__(image_dim, text_dim, out_dim)
        self.image_proj = nn.Linear(image_dim, out_dim)
        self.text_proj = nn.Linear(text_dim, out_dim)
        self.key = nn.Linear(out_dim, out_dim)
        self.query = nn.Parameter(torch.randn(out_dim) / math.sqrt(out_dim))

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return ``[B, out_dim]``, or ``(output, weights [B, 2])`` (image, text) with
        ``return_attention``."""
        image, text = self.pooled(image_tokens, text_tokens, image_mask, text_mask)
        values = torch.stack([self.image_proj(image), self.text_proj(text)], dim=1)
        scores = torch.tanh(self.key(values)) @ self.query
        weights = torch.softmax(scores, dim=1)
        output = (weights.unsqueeze(-1) * values).sum(dim=1)
        return (output, weights) if return_attention else output


class CrossAttentionFusion(FusionModule):
    """Let every text token attend to the image tokens, then pool the text tokens (a
    cross-attention block).

    Text tokens are projected to ``out_dim`` and used as queries over the image tokens
    (``nn.MultiheadAttention`` with padded image tokens masked out), followed by
    residual + LayerNorm, a ReLU MLP, residual + LayerNorm again (post-norm, as in the
    original Transformer), and a masked mean over the real text tokens.

    Args:
        image_dim, text_dim, out_dim: feature sizes; ``out_dim`` is also the attention
        width. num_heads: attention heads; must divide ``out_dim``. hidden_dim: width of
        the MLP (default ``4 * out_dim``). dropout: dropout on the attention weights and
        on both residual branches.
    """

    name = "cross_attention"

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        out_dim: int,
        num_heads: int = 4,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            image_dim,
            text_dim,
            out_dim,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            dropout=dropout,
        )
        _check_positive("num_heads", num_heads)
        if out_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide out_dim ({out_dim})")
        hidden_dim = 4 * out_dim if hidden_dim is None else hidden_dim
        _check_positive("hidden_dim", hidden_dim)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.text_proj = nn.Linear(text_dim, out_dim)
        self.attention = nn.MultiheadAttention(
            out_dim,
            num_heads,
            dropout=dropout,
            kdim=image_dim,
            vdim=image_dim,
            batch_first=True,
        )
        self.attention_norm = nn.LayerNorm(out_dim)
        self.mlp = nn.Sequential(
            nn.Linear(out_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
        )
        self.mlp_norm = nn.LayerNorm(out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return ``[B, out_dim]``, or ``(output, attention [B, L, N])`` with
        ``return_attention``.

        The attention weights are averaged over heads; each real text token's row sums
        to 1 over the real image tokens, and rows of padded text tokens are zero.
        """
        image, text, image_mask, text_mask = self.prepare(
            image_tokens, text_tokens, image_mask, text_mask
        )
        queries = self.text_proj(text)
        attended, weights = self.attention(
            queries,
            image,
            image,
            key_padding_mask=~image_mask,
            need_weights=return_attention,
        )
        x = self.attention_norm(queries + self.dropout(attended))
        x = self.mlp_norm(x + self.dropout(self.mlp(x)))
        output = masked_mean(x, text_mask)
        if not return_attention:
            return output
        return output, weights.masked_fill(~text_mask.unsqueeze(-1), 0.0)


class FiLMFusion(FusionModule):
    """Let the text modulate the image (FiLM, Perez et al., 2018):
    ``gamma * token + beta`` on every image token.

    ``gamma = 1 + delta_gamma`` and ``beta`` come from one linear layer on the pooled
    text, so a zeroed layer is the identity modulation. The modulated tokens go through
    ``activation``, are averaged over the real image tokens, and are projected to
    ``out_dim``.

    Args:
        image_dim, text_dim, out_dim: feature sizes of the inputs and of the output.
        activation: ``"relu"`` (as after FiLM layers in the paper) or ``"identity"``.
    """

    name = "film"
    activations = ("relu", "identity")

    def __init__(
        self, image_dim: int, text_dim: int, out_dim: int, activation: str = "relu"
    ) -> None:
        super().__init__(image_dim, text_dim, out_dim, activation=activation)
        if activation not in self.activations:
            raise ValueError(
                f"activation must be one of {', '.join(self.activations)}, got "
                f"{activation!r}"
            )
        self.film = nn.Linear(text_dim, 2 * image_dim)
        self.activation: nn.Module = (
            nn.ReLU() if activation == "relu" else nn.Identity()
        )
        self.out_proj = nn.Linear(image_dim, out_dim)

    def conditioning(
        self, text_tokens: torch.Tensor, text_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(gamma, beta)``, each ``[B, image_dim]``, computed from the masked
        mean of the text."""
        text, text_mask = _as_tokens(text_tokens, text_mask, self.text_dim, "text")
        return self._gamma_beta(masked_mean(text, text_mask))

    def _gamma_beta(
        self, pooled_text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map the pooled text ``[B, text_dim]`` to ``(1 + delta_gamma, beta)``."""
        delta_gamma, beta = self.film(pooled_text).chunk(2, dim=-1)
        return 1.0 + delta_gamma, beta

    def modulate(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the modulated image tokens ``gamma * token + beta``
        ``[B, N, image_dim]`` (padding stays 0)."""
        return self._modulate(
            *self.prepare(image_tokens, text_tokens, image_mask, text_mask)
        )

    def _modulate(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        image_mask: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`modulate` on inputs already checked by :meth:`prepare`."""
        gamma, beta = self._gamma_beta(masked_mean(text, text_mask))
        modulated = gamma.unsqueeze(1) * image + beta.unsqueeze(1)
        return modulated.masked_fill(~image_mask.unsqueeze(-1), 0.0)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return ``out_proj(masked mean of activation(modulated image tokens))`` ->
        ``[B, out_dim]``."""
        image, text, image_mask, text_mask = self.prepare(
            image_tokens, text_tokens, image_mask, text_mask
        )
        modulated = self.activation(self._modulate(image, text, image_mask, text_mask))
        return self.out_proj(masked_mean(modulated, image_mask))


_FUSIONS: dict[str, type[FusionModule]] = {
    cls.name: cls
    for cls in (
        ConcatFusion,
        MeanFusion,
        WeightedSumFusion,
        GatedFusion,
        ModalityAttentionFusion,
        CrossAttentionFusion,
        FiLMFusion,
    )
}

FUSION_NAMES: tuple[str, ...] = tuple(_FUSIONS)
"""Names :func:`build_fusion` accepts, simplest first."""


def build_fusion(
    name: str, image_dim: int, text_dim: int, out_dim: int, **options: Any
) -> FusionModule:
    """Build a fusion module by name (one of :data:`FUSION_NAMES`); ``options`` go to
    its constructor.

    ``build_fusion(**module.config)`` rebuilds ``module`` with fresh weights.
    """
    if name not in _FUSIONS:
        raise ValueError(
            f"unknown fusion {name!r}; valid names: {', '.join(FUSION_NAMES)}"
        )
    cls = _FUSIONS[name]
    accepted = [
        arg
        for arg in inspect.signature(cls).parameters
        if arg not in ("image_dim", "text_dim", "out_dim")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"fusion {name!r} got unknown option(s) {', '.join(unknown)}; it accepts: "
            f"{', '.join(accepted) or 'none'}"
        )
    return cls(image_dim, text_dim, out_dim, **options)

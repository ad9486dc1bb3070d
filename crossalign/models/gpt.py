"""A GPT-style decoder-only Transformer language model, readable from top to bottom.

The model predicts every next token of a sequence at once::

    ids (B, T) -> token embedding + learned position embedding
               -> n_layer x Block( x + Attn(LN(x)),  x + MLP(LN(x)) )      (pre-norm
               residuals) -> final LayerNorm -> lm_head (tied to the token embedding) ->
               logits (B, T, vocab)

Position ``t`` only attends to positions ``<= t`` (causal self-attention), so the logits
at ``t`` are a distribution over token ``t + 1`` that never looked at the answer. The
layout is the one of GPT-2 (:class:`GPTConfig` defaults: GELU with the tanh
approximation, LayerNorm eps 1e-5, biases everywhere, tied input and output embeddings),
so the weights convert one to one to and from Hugging Face's ``GPT2LMHeadModel``
(:mod:`crossalign.models.gpt_hf`).

Two ways in, one way out:

- ``model(input_ids)`` embeds token ids;
- ``model(inputs_embeds=...)`` takes ready-made vectors (B, T, n_embd) instead, which is
  how a projector feeds image features to the language model as "soft tokens";
- ``attention_mask`` (B, T), 1 on real tokens and 0 on padding, hides padded keys.
  Positions are always ``0 .. T-1`` (as in ``GPT2LMHeadModel`` without
  ``position_ids``), so pad on the right: a right-padded real token then sees exactly
  what it would see unpadded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crossalign.utils import values_hold

__all__ = ["GPT", "GPTConfig"]


@dataclass
class GPTConfig:
    """The shape of a :class:`GPT` model.

    Args:
        vocab_size: number of token ids. block_size: the longest sequence the model
        accepts (number of learned positions). n_layer: number of Transformer blocks.
        n_head: attention heads per block; must divide ``n_embd``. n_embd: width of the
        residual stream. dropout: dropout on embeddings, attention weights and residual
        branches (training only). bias: whether linear layers and LayerNorms have biases
        (GPT-2 has them). layer_norm_eps: LayerNorm epsilon (GPT-2 uses 1e-5).
        tie_weights: share the token embedding matrix with the output layer (GPT-2
        does).
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    layer_norm_eps: float = 1e-5
    tie_weights: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"GPTConfig.{name} must be an integer >= 1, got {value!r}"
                )
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd={self.n_embd} must be divisible by "
                f"n_head={self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"GPTConfig.dropout must lie in [0, 1), got {self.dropout!r}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(
                f"GPTConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}"
            )


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees only itself and earlier
    positions.

    One linear layer ``qkv`` computes queries, keys and values together (3 * n_embd
    outputs, in that order), like GPT-2's fused ``c_attn``; ``proj`` mixes the heads
    back.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """Attend within ``x`` (B, T, C); ``allowed`` (B or 1, 1, T, T) is True where a
        query may see a key, or None for plain causal attention.

        Without padding the mask is the causal triangle, and SDPA is told so with
        ``is_causal=True`` instead of being handed the triangle: an explicit mask
        rules out its fastest (flash) kernels on a GPU, which skip the masked half.
        """
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim): every head attends independently.
        q, k, v = (
            t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)
            for t in (q, k, v)
        )
        dropout = self.attn_dropout if self.training else 0.0
        # softmax(q k^T / sqrt(head_dim), masked by `allowed` or causally) v
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=dropout, is_causal=allowed is None
        )
        y = y.transpose(1, 2).contiguous().view(batch, length, width)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """The position-wise feed-forward network: widen 4x, GELU (tanh approximation),
    project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform every position of ``x`` (B, T, C) on its own."""
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    """One Transformer block with pre-norm residual connections: communicate, then
    compute."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(
            config.n_embd, eps=config.layer_norm_eps, bias=config.bias
        )
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(
            config.n_embd, eps=config.layer_norm_eps, bias=config.bias
        )
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """Apply attention then the MLP, each added to the residual stream ``x`` (B, T,
        C)."""
        x = x + self.attn(self.ln_1(x), allowed)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A GPT-2-style causal language model: ``forward`` returns next-token logits (B, T,
    vocab).

    Args:
        config: the model's shape (:class:`GPTConfig`).

    Parameters are initialised as in GPT-2: normal(0, 0.02) for weights and embeddings,
    zero biases, and the output projections of every residual branch scaled down by
    ``1 / sqrt(2 n_layer)`` so the residual stream does not grow with depth.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        blocks = [Block(config) for _ in range(config.n_layer)]
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(
            config.n_embd, eps=config.layer_norm_eps, bias=config.bias
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for block in blocks:
            nn.init.normal_(block.attn.proj.weight, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2 initialisation of one module (see the class docstring)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table (vocab_size, n_embd), as Hugging Face models expose
        it."""
        return self.wte

    def num_parameters(self) -> int:
        """Number of distinct trainable numbers (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits (B, T, vocab_size) for token ids (B, T) or embeddings (B,
        T, n_embd).

        Give exactly one of ``input_ids`` and ``inputs_embeds``. ``attention_mask`` (B,
        T) is 1 (or True) on real tokens and 0 on padding; padded keys are hidden from
        every query. A query whose visible keys are all padding attends to itself only,
        so its (meaningless) logits stay finite.
        """
        x = self._embed(input_ids, inputs_embeds)
        batch, length, _ = x.shape
        allowed = None  # causal attention, no padding
        if attention_mask is not None:
            causal = torch.ones(
                length, length, dtype=torch.bool, device=x.device
            ).tril()
            keys = self._key_mask(attention_mask, batch, length, x.device)
            allowed = causal[None, None] & keys[:, None, None, :]
            allowed = allowed | torch.eye(length, dtype=torch.bool, device=x.device)
        for block in self.blocks:
            x = block(x, allowed)
        return self.lm_head(self.ln_f(x))

    def _embed(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """Token (or given) embeddings plus position embeddings, with dropout -> (B, T,
        n_embd)."""
        if input_ids is not None and inputs_embeds is None:
            if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32):
                raise ValueError(
                    "input_ids must be an integer tensor of shape (B, T), "
                    f"got {input_ids.dtype} {tuple(input_ids.shape)}"
                )
            if input_ids.numel() and not values_hold(
                (input_ids >= 0) & (input_ids < self.config.vocab_size)
            ):
                raise ValueError(
                    f"input_ids must lie in [0, {self.config.vocab_size}) (vocab_size)"
                )
            tokens = self.wte(input_ids)
        elif inputs_embeds is not None and input_ids is None:
            if (
                inputs_embeds.dim() != 3
                or inputs_embeds.shape[-1] != self.config.n_embd
            ):
                raise ValueError(
                    f"inputs_embeds must have shape (B, T, {self.config.n_embd}), got "
                    f"{tuple(inputs_embeds.shape)}"
                )
            tokens = inputs_embeds
        else:
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        length = tokens.shape[1]
        if not 1 <= length <= self.config.block_size:
            raise ValueError(
                f"sequence length {length} must lie in [1, "
                f"block_size={self.config.block_size}]"
            )
        positions = torch.arange(length, device=tokens.device)
        return self.drop(tokens + self.wpe(positions))

    @staticmethod
    def _key_mask(
        attention_mask: torch.Tensor, batch: int, length: int, device: torch.device
    ) -> torch.Tensor:
        """``attention_mask`` checked and turned into a boolean (B, T) tensor."""
        if tuple(attention_mask.shape) != (batch, length):
            raise ValueError(
                f"attention_mask must have shape {(batch, length)}, got "
                f"{tuple(attention_mask.shape)}"
            )
        return attention_mask.to(device=device).bool()

    def extra_repr(self) -> str:
        """Shown by ``print(model)``: the configuration."""
        return ", ".join(f"{key}={value}" for key, value in asdict(self.config).items())

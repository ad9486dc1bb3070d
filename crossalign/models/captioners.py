"""Image captioners: Show, Attend and Tell (soft attention + LSTM) and a Transformer
decoder.

Both captioners read an image as a set of *regions*: the feature grid of a CNN (or
cached features of one), flattened row by row into ``[B, N, C]``. Both share one
interface:

- ``forward(inputs, input_ids) -> CaptionOutput``: teacher forcing. ``input_ids`` is
  ``[B, L]`` = ``<bos> w1 ... wn <eos> <pad> ...``; the model predicts
  ``input_ids[:, 1:]`` from ``input_ids[:, :-1]`` and returns logits ``[B, L - 1, V]``
  and the attention it paid to the regions at each position ``[B, L - 1, N]``.
  ``input_ids`` may also hold ``k`` captions per image (``[k * B_images, L]``, grouped
  by image): the image encoder then runs once per image.
- ``init_state(inputs)`` and ``step(tokens, state)``: the step function of
  :mod:`crossalign.decoding`, so greedy and beam search work unchanged on either model,
  and return the per-word attention maps.
- ``generate(inputs, beam_size=...)``: decoding in one call.

``inputs`` is either images ``[B, 3, H, W]`` in [0, 1] (when the captioner owns an image
encoder) or precomputed features ``[B, C, h, w]`` / ``[B, N, C]`` (when it does not,
e.g. trained from a :mod:`crossalign.data.feature_cache`).

Padding is handled exactly: a position's prediction depends only on the tokens before it
(the LSTM runs left to right; the Transformer uses a causal mask), and
:func:`caption_loss` averages the cross-entropy over real target tokens only, so the
values at padded positions change nothing.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.decoding import DecodeResult, beam_search, greedy_decode
from crossalign.models.image_encoders import ImageEncoder, build_image_encoder
from crossalign.utils import values_hold

CAPTIONER_KINDS = ("sat", "transformer")


@dataclass
class CaptionerConfig:
    """Everything needed to rebuild a captioner (saved as JSON beside its weights).

    Attributes:
        kind: ``"sat"`` (Show, Attend and Tell) or ``"transformer"``. vocab_size,
        pad_id, bos_id, eos_id: the tokenizer's vocabulary size and special ids.
        image_encoder: name for
        :func:`~crossalign.models.image_encoders.build_image_encoder`,
            or ``None`` when the inputs are precomputed features of width
            ``feature_dim``.
        image_kwargs: keyword arguments of the image encoder. feature_dim: channels of
        precomputed features (needed only without an image encoder). freeze_encoder:
        keep the image encoder's weights fixed (and in eval mode). embed_dim: word
        embedding size. hidden_dim: LSTM state size (SAT) or model width (Transformer).
        attention_dim: size of the additive attention's hidden layer (SAT). num_layers,
        num_heads, ff_dim: Transformer decoder depth, heads and MLP width. max_len:
        longest token sequence the Transformer accepts (its position table).
        max_regions: most image regions the Transformer accepts (its region position
        table). dropout: dropout probability in the decoder. attention_penalty: weight
        of the doubly stochastic attention regulariser (SAT only;
            Xu et al. use 1).
        region_positions: add a learnt position embedding to every region (SAT; the
            Transformer always has one). Soft attention returns a weighted *sum* of
            region features, which forgets where the attended regions were; with the
            embedding the context says where as well as what, which "at the top left"
            and "left of" need.
        attend_with_word: let the SAT's attention query read the previous word as well
        as the
            LSTM state. In Xu et al. the attention for word ``t`` is computed from
            ``h_{t-1}``, which has not yet read word ``t - 1``: when a caption may name
            its objects in any order, the decoder cannot know which object was just
            named ("red") until a step later, so its attention lags a word behind. With
            the word in the query it can look at the object the caption has just named,
            as the top-down attention of Anderson et al. (2018) and the adaptive
            attention of Lu et al. (2017) do by attending after the word has been read.
    """

    kind: str = "sat"
    vocab_size: int = 0
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    image_encoder: str | None = "small_cnn"
    image_kwargs: dict[str, Any] = field(default_factory=dict)
    feature_dim: int | None = None
    freeze_encoder: bool = False
    embed_dim: int = 128
    hidden_dim: int = 256
    attention_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 512
    max_len: int = 40
    max_regions: int = 256
    dropout: float = 0.1
    attention_penalty: float = 1.0
    region_positions: bool = False
    attend_with_word: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionerConfig:
        """Build from a dict, naming any key this config does not know."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown captioner config keys {sorted(unknown)}; valid keys: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)


class CaptionOutput(NamedTuple):
    """Teacher-forced outputs: ``logits [B, T, V]`` and region attention
    ``[B, T, N]``."""

    logits: torch.Tensor
    attention: torch.Tensor


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 when it is in a half-precision type (softmax and log are done in
    fp32 or fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def caption_loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int
) -> torch.Tensor:
    """Mean cross-entropy over the real (non-``pad_id``) target tokens of a batch.

    ``logits`` is ``[B, T, V]``, ``targets`` ``[B, T]``. Every real token counts once,
    so a long caption weighs more than a short one, as in a language model's per-token
    loss.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [B, T, V] and targets [B, T]; got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if not values_hold((targets != pad_id).any()):
        raise ValueError(
            "targets hold only padding: there is no token to compute a loss on"
        )
    return F.cross_entropy(
        _at_least_fp32(logits).flatten(0, 1), targets.flatten(), ignore_index=pad_id
    )


def doubly_stochastic_penalty(
    attention: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Xu et al.'s doubly stochastic attention regulariser, ``(1 - sum_t alpha_ti)^2``
    averaged over regions i and images.

    ``attention`` is ``[B, T, N]`` (each row sums to 1 over the N regions); ``mask``
    ``[B, T]`` marks the real positions, so padded steps add no attention. The penalty
    pushes every region to receive about one unit of attention over the whole caption,
    so that the model looks at every part of the image. The paper sums over regions; the
    mean used here keeps the weight's meaning independent of the grid size (the sum is
    ``N`` times larger).

    A caption of ``T`` words hands out ``T`` units in all, so with ``T > N`` (a 20-word
    ShapesWorld caption over a 4 x 4 grid) no attention can meet every target, and the
    penalty is smallest when every region gets ``T / N``: it pulls attention towards
    uniform, away from the one object a word is about
    (``benchmarks/caption_relations.py`` measures the cost). Xu et al. had 196 regions
    and shorter captions, where ``T < N``.
    """
    if attention.dim() != 3 or mask.shape != attention.shape[:2]:
        raise ValueError(
            "attention must be [B, T, N] and mask [B, T]; got "
            f"{tuple(attention.shape)} and {tuple(mask.shape)}"
        )
    received = (attention * mask.unsqueeze(-1).to(attention.dtype)).sum(dim=1)
    return ((1.0 - received) ** 2).mean()


class Captioner(nn.Module, ABC):
    """Base class: image regions, teacher forcing, the decoding step and ``generate``.

    Subclasses implement ``_start(regions)`` (the initial decoder state), ``step`` and
    ``forward``.
    """

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        if config.kind not in CAPTIONER_KINDS:
            raise ValueError(
                f"kind={config.kind!r} is not a captioner; use one of {CAPTIONER_KINDS}"
            )
        if config.vocab_size <= max(config.pad_id, config.bos_id, config.eos_id):
            raise ValueError(
                f"vocab_size={config.vocab_size} must exceed the special ids (pad "
                f"{config.pad_id}, bos "
                f"{config.bos_id}, eos {config.eos_id}); set it to len(tokenizer)"
            )
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout={config.dropout} must be in [0, 1)")
        self.config = config
        self.encoder: ImageEncoder | None = None
        if config.image_encoder is not None:
            self.encoder = build_image_encoder(
                config.image_encoder, **config.image_kwargs
            )
            self.feature_dim = self.encoder.grid_dim
            if config.freeze_encoder:
                self.encoder.requires_grad_(False)
        elif config.feature_dim is None or config.feature_dim < 1:
            raise ValueError(
                "a captioner without image_encoder reads precomputed features: set "
                "feature_dim to their width"
            )
        else:
            self.feature_dim = config.feature_dim

    def train(self, mode: bool = True) -> Captioner:
        """Set training mode; a frozen image encoder stays in eval mode (fixed
        batch-norm statistics)."""
        super().train(mode)
        if self.encoder is not None and self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def regions(self, inputs: torch.Tensor) -> torch.Tensor:
        """Image regions ``[B, N, C]`` from images (through the encoder) or from
        precomputed features.

        A captioner with an image encoder encodes 4-D images ``[B, 3, H, W]`` and also
        accepts 3-D regions ``[B, N, C]`` that its encoder produced earlier: a frozen
        encoder's regions can be computed once per image and reused at every epoch
        (``train.cache_frozen_regions`` in :mod:`crossalign.train.captioning`).
        """
        if self.encoder is not None and inputs.dim() == 4:
            return self.encoder.forward_tokens(inputs)
        if inputs.dim() == 4:
            inputs = inputs.flatten(2).transpose(1, 2)
        if inputs.dim() != 3 or inputs.shape[-1] != self.feature_dim:
            if self.encoder is not None:
                raise ValueError(
                    "inputs must be images [B, 3, H, W] or their regions [B, N, "
                    f"{self.feature_dim}], "
                    f"got {tuple(inputs.shape)}"
                )
            raise ValueError(
                f"precomputed features must be [B, {self.feature_dim}, h, w] or [B, N, "
                f"{self.feature_dim}], "
                f"got {tuple(inputs.shape)}"
            )
        # e.g. fp16 cached features for an fp32 model
        return inputs.to(next(self.parameters()).dtype)

    def teacher_regions(self, inputs: torch.Tensor, num_captions: int) -> torch.Tensor:
        """Regions ``[num_captions, N, C]`` for teacher forcing ``num_captions``
        captions of ``inputs``.

        When ``num_captions`` is ``k`` times the number of images, caption ``j`` belongs
        to image ``j // k`` (captions grouped by image): the encoder runs once per image
        and its regions are repeated, so several captions of one image cost one CNN pass
        and their gradients add up in it.
        """
        regions = self.regions(inputs)
        if num_captions == regions.shape[0]:
            return regions
        if num_captions < 1 or num_captions % regions.shape[0]:
            raise ValueError(
                f"got {num_captions} captions for {regions.shape[0]} images; pass the "
                "same number of captions "
                "for every image, grouped by image"
            )
        return regions.repeat_interleave(num_captions // regions.shape[0], dim=0)

    def _region_count(self, regions: torch.Tensor) -> int:
        """The number of regions ``N`` of ``[B, N, C]``, checked against the position
        table's ``max_regions``."""
        if regions.shape[1] > self.config.max_regions:
            raise ValueError(
                f"the image has {regions.shape[1]} regions but "
                f"max_regions={self.config.max_regions}"
            )
        return regions.shape[1]

    def init_state(self, inputs: torch.Tensor) -> Any:
        """The decoder state before the first word (a pytree whose tensors are
        batch-first)."""
        return self._start(self.regions(inputs))

    @abstractmethod
    def _start(self, regions: torch.Tensor) -> Any:
        """The initial decoder state for image regions ``[B, N, C]``."""

    @abstractmethod
    def step(
        self, tokens: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Next-word log-probabilities ``[B, V]``, the new state and the region
        attention ``[B, N]``."""

    @abstractmethod
    def forward(self, inputs: torch.Tensor, input_ids: torch.Tensor) -> CaptionOutput:
        """Teacher forcing: logits and attention for predicting ``input_ids[:, 1:]``."""

    def loss(
        self, inputs: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, CaptionOutput]:
        """Teacher-forced training loss (cross-entropy over real tokens, plus any
        regulariser)."""
        output = self(inputs, input_ids)
        return caption_loss(output.logits, input_ids[:, 1:], self.config.pad_id), output

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor,
        beam_size: int = 1,
        max_len: int = 30,
        length_penalty: float = 0.0,
    ) -> DecodeResult:
        """Caption a batch: greedy decoding for ``beam_size == 1``, batched beam search
        otherwise."""
        was_training = self.training
        self.eval()
        try:
            state = self.init_state(inputs)
            cfg = self.config
            common: dict[str, Any] = dict(
                batch_size=inputs.shape[0],
                bos_id=cfg.bos_id,
                eos_id=cfg.eos_id,
                max_len=max_len,
                pad_id=cfg.pad_id,
            )
            if beam_size == 1:
                return greedy_decode(self.step, state, **common)
            return beam_search(
                self.step,
                state,
                beam_size=beam_size,
                length_penalty=length_penalty,
                **common,
            )
        finally:
            self.train(was_training)


class AdditiveAttention(nn.Module):
    """Bahdanau-style soft attention: ``alpha = softmax_i(w^T tanh(W_r r_i + W_h h))``.

    The region projection ``W_r r_i`` does not depend on the decoder state, so it is
    computed once per image (:meth:`project_regions`) and reused at every step.
    """

    def __init__(self, region_dim: int, query_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.region_proj = nn.Linear(region_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def project_regions(self, regions: torch.Tensor) -> torch.Tensor:
        """``W_r r_i`` for every region: ``[B, N, attention_dim]``."""
        return self.region_proj(regions)

    def forward(
        self, regions: torch.Tensor, projected: torch.Tensor, query: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the context ``sum_i alpha_i r_i`` ``[B, C]`` and the weights ``alpha``
        ``[B, N]``."""
        scores = self.score(
            torch.tanh(projected + self.query_proj(query).unsqueeze(1))
        ).squeeze(-1)
        alpha = scores.softmax(dim=-1)
        return torch.bmm(alpha.unsqueeze(1), regions).squeeze(1), alpha


class SATState(NamedTuple):
    """Decoder state of :class:`ShowAttendTell`: LSTM ``h``, ``c`` and the image's
    regions."""

    h: torch.Tensor
    c: torch.Tensor
    regions: torch.Tensor
    projected: torch.Tensor


class ShowAttendTell(Captioner):
    """Show, Attend and Tell (Xu et al. 2015) with soft attention.

    At each step: attend over the regions with the previous hidden state (and, with
    ``attend_with_word``, the previous word's embedding), scale the context by a learnt
    gate ``beta = sigmoid(f_beta(h))``, feed ``[word embedding; beta * context]`` to an
    LSTM cell, and predict the next word with the paper's *deep output*
    ``L_o(E y + L_h h + L_z z)``. The LSTM starts from ``tanh`` projections of the mean
    region. ``forward`` runs the very same cell as ``step``, one position at a time.
    """

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__(config)
        c, e, h = self.feature_dim, config.embed_dim, config.hidden_dim
        self.embedding = nn.Embedding(config.vocab_size, e)
        self.attention = AdditiveAttention(
            c, h + (e if config.attend_with_word else 0), config.attention_dim
        )
        self.init_h = nn.Linear(c, h)
        self.init_c = nn.Linear(c, h)
        self.gate = nn.Linear(h, 1)
        self.cell = nn.LSTMCell(e + c, h)
        self.out_h = nn.Linear(h, e)
        self.out_z = nn.Linear(c, e)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(e, config.vocab_size)
        self.region_pos = None
        if config.region_positions:
            self.region_pos = nn.Parameter(torch.zeros(1, config.max_regions, c))
            nn.init.trunc_normal_(self.region_pos, std=0.02)

    def _start(self, regions: torch.Tensor) -> SATState:
        if self.region_pos is not None:
            regions = regions + self.region_pos[:, : self._region_count(regions)].to(
                regions.dtype
            )
        mean = regions.mean(dim=1)
        return SATState(
            torch.tanh(self.init_h(mean)),
            torch.tanh(self.init_c(mean)),
            regions,
            self.attention.project_regions(regions),
        )

    def _recur(
        self, embedded: torch.Tensor, state: SATState
    ) -> tuple[SATState, torch.Tensor, torch.Tensor]:
        """Attend with the previous state (and word), then one LSTM step on the previous
        word's embedding ``[B, E]``.

        Returns the new state, the gated context ``[B, C]`` and the attention
        ``[B, N]``.
        """
        query = (
            torch.cat([state.h, embedded], dim=-1)
            if self.config.attend_with_word
            else state.h
        )
        context, alpha = self.attention(state.regions, state.projected, query)
        context = torch.sigmoid(self.gate(state.h)) * context
        h, c = self.cell(torch.cat([embedded, context], dim=-1), (state.h, state.c))
        return SATState(h, c, state.regions, state.projected), context, alpha

    def _deep_output(
        self, embedded: torch.Tensor, h: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """Next-word logits from the deep output ``L_o(E y + L_h h + L_z z)``, for one
        step or many at once."""
        deep = embedded + self.out_h(self.dropout(h)) + self.out_z(context)
        return self.output(self.dropout(deep))

    def step(
        self, tokens: torch.Tensor, state: SATState
    ) -> tuple[torch.Tensor, SATState, torch.Tensor]:
        """Decoding step: only the last token of ``tokens`` is read; the LSTM state
        carries the rest."""
        embedded = self.embedding(tokens[:, -1])
        state, context, alpha = self._recur(embedded, state)
        logits = self._deep_output(embedded, state.h, context)
        return _at_least_fp32(logits).log_softmax(dim=-1), state, alpha

    def forward(self, inputs: torch.Tensor, input_ids: torch.Tensor) -> CaptionOutput:
        """Teacher forcing: logits and attention for predicting ``input_ids[:, 1:]``.

        Only the recurrence (attention and LSTM cell) runs position by position, as in
        :meth:`step`, and only for the captions that still have a real (non-padding)
        target there: the captions are sorted by length, so at position ``t`` it runs on
        the first ``active[t]`` of them. A batch's captions are far from equally long
        (ShapesWorld's average is two thirds of a batch's longest), so this skips about
        a third of the recurrence's steps (``benchmarks/bench_caption_training.py``).
        Positions past a caption's last target are never run: their attention is zero
        and their logits those of a zero state and context, and the loss does not read
        them. The word embeddings and the deep output, which do not feed back into the
        recurrence, are computed for all positions at once.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] < 2:
            raise ValueError(
                "input_ids must be [B, L] with L >= 2 (<bos> and at least one "
                f"target), got {tuple(input_ids.shape)}"
            )
        batch, positions = input_ids.shape[0], input_ids.shape[1] - 1
        lengths = (input_ids[:, 1:] != self.config.pad_id).sum(dim=1)
        order = lengths.argsort(descending=True, stable=True)
        active = (
            lengths[order].unsqueeze(0)
            > torch.arange(positions, device=lengths.device).unsqueeze(1)
        ).sum(dim=1)
        state = self._start(self.teacher_regions(inputs, batch)[order])
        embedded = self.embedding(input_ids[order, :-1])
        outputs: dict[str, list[torch.Tensor]] = {"h": [], "context": [], "alpha": []}
        for t, count in enumerate(active.tolist()):
            state = SATState(*(part[:count] for part in state))
            state, context, alpha = self._recur(embedded[:count, t], state)
            for name, value in zip(outputs, (state.h, context, alpha)):
                outputs[name].append(F.pad(value, (0, 0, 0, batch - count)))
        h, context, alpha = (torch.stack(values, dim=1) for values in outputs.values())
        logits = self._deep_output(embedded, h, context)
        restore = order.argsort()
        return CaptionOutput(logits[restore], alpha[restore])

    def loss(
        self, inputs: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, CaptionOutput]:
        """Cross-entropy over real tokens plus ``attention_penalty`` x the doubly
        stochastic penalty."""
        output = self(inputs, input_ids)
        targets = input_ids[:, 1:]
        loss = caption_loss(output.logits, targets, self.config.pad_id)
        if self.config.attention_penalty:
            mask = targets != self.config.pad_id
            loss = loss + self.config.attention_penalty * doubly_stochastic_penalty(
                output.attention, mask
            )
        return loss, output


class DecoderBlock(nn.Module):
    """Pre-norm Transformer decoder block: causal self-attention, cross-attention to
    regions, MLP.

    Returns the cross-attention weights averaged over heads, ``[B, T, N]``.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(
            dim, heads, dropout=dropout, batch_first=True
        )
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(
            dim, heads, dropout=dropout, batch_first=True
        )
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, causal_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, T, D]``, ``memory`` ``[B, N, D]``, ``causal_mask`` ``[T, T]``
        (True = blocked)."""
        y = self.norm_self(x)
        x = x + self.dropout(
            self.self_attention(y, y, y, attn_mask=causal_mask, need_weights=False)[0]
        )
        attended, weights = self.cross_attention(
            self.norm_cross(x), memory, memory, need_weights=True
        )
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ff(self.norm_ff(x)))
        return x, weights


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``[length, length]`` mask, True above the diagonal: position t sees only
    positions <= t."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


class TransformerState(NamedTuple):
    """Decoder state of :class:`TransformerCaptioner`: the projected regions (the prefix
    is re-read)."""

    memory: torch.Tensor


class TransformerCaptioner(Captioner):
    """A Transformer decoder over image regions: causal self-attention on words,
    cross-attention to regions.

    Regions are projected to the model width and given learnt position embeddings
    (row-major region index), words get learnt position embeddings. The step function
    re-runs the decoder on the whole prefix (no key/value cache: simple, and cheap at
    caption lengths) and returns the last block's cross-attention for the newest word.
    """

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__(config)
        if config.num_layers < 1:
            raise ValueError(
                f"num_layers={config.num_layers} must be >= 1: without a decoder block "
                "the captions never attend to the image"
            )
        d = config.hidden_dim
        if d % config.num_heads:
            raise ValueError(
                f"hidden_dim={d} must be divisible by num_heads={config.num_heads}"
            )
        self.region_proj = nn.Linear(self.feature_dim, d)
        self.region_pos = nn.Parameter(torch.zeros(1, config.max_regions, d))
        self.region_norm = nn.LayerNorm(d)
        self.embedding = nn.Embedding(config.vocab_size, d)
        self.word_pos = nn.Parameter(torch.zeros(1, config.max_len, d))
        nn.init.trunc_normal_(self.region_pos, std=0.02)
        nn.init.trunc_normal_(self.word_pos, std=0.02)
        self.blocks = nn.ModuleList(
            DecoderBlock(d, config.num_heads, config.ff_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.output = nn.Linear(d, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def _start(self, regions: torch.Tensor) -> TransformerState:
        memory = (
            self.region_proj(regions)
            + self.region_pos[:, : self._region_count(regions)]
        )
        return TransformerState(self.region_norm(memory))

    def _decode(
        self, tokens: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, T, V]`` and last-block cross-attention ``[B, T, N]`` for every
        prefix position."""
        length = tokens.shape[1]
        if length > self.config.max_len:
            raise ValueError(
                f"{length} tokens exceed the Transformer's "
                f"max_len={self.config.max_len}; build it with a larger max_len"
            )
        x = self.dropout(
            self.embedding(tokens) * math.sqrt(self.config.hidden_dim)
            + self.word_pos[:, :length]
        )
        mask = causal_mask(length, tokens.device)
        for block in self.blocks:  # at least one: __init__ checks num_layers >= 1
            x, weights = block(x, memory, mask)
        return self.output(self.norm(x)), weights

    def step(
        self, tokens: torch.Tensor, state: TransformerState
    ) -> tuple[torch.Tensor, TransformerState, torch.Tensor]:
        """Decoding step on the whole prefix ``tokens`` ``[B, t]``: scores of the word
        after it."""
        logits, weights = self._decode(tokens, state.memory)
        return _at_least_fp32(logits[:, -1]).log_softmax(dim=-1), state, weights[:, -1]

    def forward(self, inputs: torch.Tensor, input_ids: torch.Tensor) -> CaptionOutput:
        """Teacher forcing: logits and attention for predicting ``input_ids[:, 1:]``,
        all positions at once."""
        if input_ids.dim() != 2 or input_ids.shape[1] < 2:
            raise ValueError(
                "input_ids must be [B, L] with L >= 2 (<bos> and at least one "
                f"target), got {tuple(input_ids.shape)}"
            )
        memory = self._start(self.teacher_regions(inputs, input_ids.shape[0])).memory
        logits, weights = self._decode(input_ids[:, :-1], memory)
        return CaptionOutput(logits, weights)


def build_captioner(config: CaptionerConfig) -> Captioner:
    """Build the captioner ``config.kind`` names (``"sat"`` or ``"transformer"``)."""
    if config.kind == "sat":
        return ShowAttendTell(config)
    if config.kind == "transformer":
        return TransformerCaptioner(config)
    raise ValueError(
        f"kind={config.kind!r} is not a captioner; use one of {CAPTIONER_KINDS}"
    )

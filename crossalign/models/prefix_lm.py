"""Vision to a frozen language model: image features -> projector -> prefix -> causal LM
-> caption.

The recipe of ClipCap (Mokady et al., 2021) and LLaVA (Liu et al., 2023)::

    image --frozen encoder--> features --projector--> k prefix embeddings [prefix_1 ..
    prefix_k][prompt tokens][<bos> w_1 .. w_n <eos>] --frozen causal LM--> logits

Only the projector learns in stage 1; the language model keeps every weight it had and
receives no gradient, yet learns nothing is needed: the projector learns to *write in
the LM's embedding space*. The training loss is the next-token cross-entropy on the
caption tokens ``w_1 .. w_n <eos>`` only; the prefix, the prompt, ``<bos>`` and the
padding get the label :data:`IGNORE_INDEX` (-100), which is never a token id. Stage 2
(LLaVA's fine-tuning stage) may also tune the LM, all of it or through low-rank adapters
(:mod:`crossalign.models.lora`).

Any causal LM with ``get_input_embeddings()`` and a
``forward(inputs_embeds=..., attention_mask=...)`` works:
:class:`crossalign.models.gpt.GPT` (returns logits) and every Hugging Face causal LM
(returns an output whose ``.logits`` are used).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.decoding import beam_search, greedy_decode
from crossalign.models.lora import apply_lora
from crossalign.utils import values_hold

if TYPE_CHECKING:
    from crossalign.models.image_encoders import ImageEncoder, MaxPooledGrid

__all__ = [
    "IGNORE_INDEX",
    "PrefixCaptioner",
    "caption_labels",
    "count_parameters",
    "freeze",
    "lm_logits",
    "token_cross_entropy",
]

#: Label of every position that must not count in the loss. Negative, so never a token
# id.
IGNORE_INDEX = -100


_Module = TypeVar("_Module", bound=nn.Module)


def freeze(module: _Module) -> _Module:
    """Stop ``module`` from learning: no parameter requires a gradient, and it runs in
    eval mode.

    Gradients left over from earlier training are dropped too, so a frozen module's
    ``.grad`` stays ``None`` from here on (the check that it really receives no
    gradient).
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    return module.eval()


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters in ``module`` (only those that require a gradient, if
    asked)."""
    return sum(
        p.numel() for p in module.parameters() if p.requires_grad or not trainable_only
    )


def lm_logits(
    lm: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``[B, T, V]`` of a causal LM fed with embeddings: our GPT or a Hugging
    Face model."""
    mask = None if attention_mask is None else attention_mask.long()
    output = lm(inputs_embeds=inputs_embeds, attention_mask=mask)
    return output if isinstance(output, torch.Tensor) else output.logits


def _input_embeddings(lm: nn.Module) -> nn.Embedding:
    """``lm.get_input_embeddings()``: the token table of our GPT or a Hugging Face LM.

    ``nn.Module`` does not declare the method, so its type is stated here.
    """
    get_input_embeddings = cast(Callable[[], nn.Embedding], lm.get_input_embeddings)
    return get_input_embeddings()


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: logits at ``t`` predict ``labels[t + 1]``;
    IGNORE_INDEX is skipped.

    ``logits`` is ``[B, T, V]`` and ``labels`` ``[B, T]``; the mean is over all counted
    tokens of the batch (each caption token weighs the same, whatever its caption's
    length).
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree "
            "on [B, T]"
        )
    if not values_hold((labels[:, 1:] != IGNORE_INDEX).any()):
        raise ValueError(
            "no position is labelled: every label is IGNORE_INDEX, the loss would be "
            "undefined"
        )
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(
        shifted_logits.float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


def caption_labels(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_len: int
) -> torch.Tensor:
    """Labels ``[B, prefix_len + L]`` for a prefix followed by captions
    ``<bos> w_1 .. w_n <eos> <pad>..``.

    The prefix positions, ``<bos>`` (given, not predicted) and the padding get
    IGNORE_INDEX; the caption tokens ``w_1 .. <eos>`` keep their ids.
    """
    labels = input_ids.masked_fill(~attention_mask.bool(), IGNORE_INDEX)
    labels[:, 0] = IGNORE_INDEX
    ignored = labels.new_full((labels.shape[0], prefix_len), IGNORE_INDEX)
    return torch.cat([ignored, labels], dim=1)


class PrefixCaptioner(nn.Module):
    """A frozen image encoder, a trainable projector and a (frozen) causal LM that
    writes captions.

    Args:
        lm: the causal language model (our ``GPT`` or a Hugging Face causal LM); frozen
        here. projector: image features -> ``[B, k, lm_dim]`` (see
        :mod:`crossalign.models.projector`,
            or a :class:`crossalign.models.qformer.QFormer`).
        bos_id, eos_id, pad_id: the LM tokenizer's special ids. image_encoder: optional
        frozen encoder so that :meth:`encode_images` turns images into
            features; training usually runs on cached features instead.
        feature_kind: ``"pooled"`` (``image_encoder(images)``, ``[B, D]``) or
        ``"tokens"``
            (``image_encoder.forward_tokens(images)``, ``[B, N, D]``).
        prompt_ids: optional token ids placed between the prefix and the caption (an
            instruction, e.g. "a picture of"); their embeddings come from the LM's
            table.
    """

    prompt_ids: torch.Tensor  # a buffer, registered in __init__

    def __init__(
        self,
        lm: nn.Module,
        projector: nn.Module,
        *,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        image_encoder: ImageEncoder | MaxPooledGrid | None = None,
        feature_kind: str = "pooled",
        prompt_ids: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if feature_kind not in ("pooled", "tokens"):
            raise ValueError(
                f"feature_kind must be 'pooled' or 'tokens', got {feature_kind!r}"
            )
        self.lm = freeze(lm)
        self.projector = projector
        self.image_encoder = (
            freeze(image_encoder) if image_encoder is not None else None
        )
        self.feature_kind = feature_kind
        vocab_size = self.vocab_size
        if 0 <= IGNORE_INDEX < vocab_size:
            raise ValueError(
                f"IGNORE_INDEX={IGNORE_INDEX} must not be a token id in [0, "
                f"{vocab_size})"
            )
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
            if not 0 <= value < vocab_size:
                raise ValueError(
                    f"{name}={value} is outside the LM's vocabulary [0, {vocab_size})"
                )
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        prompt = torch.tensor(list(prompt_ids or []), dtype=torch.long)
        if prompt.numel() and (
            int(prompt.min()) < 0 or int(prompt.max()) >= vocab_size
        ):
            raise ValueError(
                f"prompt_ids must lie in [0, {vocab_size}), got {prompt.tolist()}"
            )
        self.register_buffer("prompt_ids", prompt, persistent=False)

    @property
    def vocab_size(self) -> int:
        """Number of token ids of the language model."""
        return _input_embeddings(self.lm).num_embeddings

    def train(self, mode: bool = True) -> PrefixCaptioner:
        """Set training mode, but keep fully frozen parts (LM, image encoder) in eval
        mode."""
        super().train(mode)
        for part in (self.lm, self.image_encoder):
            if part is not None and not any(p.requires_grad for p in part.parameters()):
                part.eval()
        return self

    # ------------------------------------------------------------------ inputs
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Features of ``images`` [B, 3, H, W] from the frozen image encoder (pooled or
        tokens)."""
        if self.image_encoder is None:
            raise ValueError(
                "this captioner has no image_encoder; pass one, or give features to "
                "its methods"
            )
        if self.feature_kind == "tokens":
            return self.image_encoder.forward_tokens(images)
        return self.image_encoder(images)

    def prefix_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """The projected image prefix followed by the prompt's token embeddings:
        ``[B, k + P, lm_dim]``."""
        prefix = self.projector(features)
        if self.prompt_ids.numel():
            prompt = (
                _input_embeddings(self.lm)(self.prompt_ids)
                .unsqueeze(0)
                .expand(prefix.shape[0], -1, -1)
            )
            prefix = torch.cat([prefix, prompt.to(prefix.dtype)], dim=1)
        return prefix

    def build_inputs(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the LM's ``(inputs_embeds, attention_mask, labels)`` for captions of
        these images.

        ``input_ids`` [B, L] must start with ``<bos>`` and be right-padded
        (``attention_mask`` True on real tokens), as
        :meth:`crossalign.data.Vocabulary.encode_batch` makes them.
        """
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be [B, L], got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        if not values_hold(input_ids[:, 0] == self.bos_id):
            raise ValueError(
                f"every caption must start with <bos> (id {self.bos_id}); encode with "
                "add_special=True"
            )
        prefix = self.prefix_embeddings(features)
        if prefix.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"got {prefix.shape[0]} images but {input_ids.shape[0]} captions"
            )
        tokens = _input_embeddings(self.lm)(input_ids).to(prefix.dtype)
        embeds = torch.cat([prefix, tokens], dim=1)
        prefix_mask = attention_mask.new_ones(prefix.shape[:2], dtype=torch.bool)
        mask = torch.cat([prefix_mask, attention_mask.bool()], dim=1)
        return embeds, mask, caption_labels(input_ids, attention_mask, prefix.shape[1])

    # ------------------------------------------------------------------ training
    def forward(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Logits ``[B, k + P + L, V]`` over the whole sequence (prefix, prompt,
        caption)."""
        embeds, mask, _ = self.build_inputs(features, input_ids, attention_mask)
        return lm_logits(self.lm, embeds, mask)

    def loss(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Mean cross-entropy of the caption tokens given the image prefix
        (prefix/prompt/padding ignored)."""
        embeds, mask, labels = self.build_inputs(features, input_ids, attention_mask)
        return token_cross_entropy(lm_logits(self.lm, embeds, mask), labels)

    def set_lm_training(
        self,
        mode: str,
        rank: int = 4,
        alpha: float = 8.0,
        targets: Sequence[str] | None = None,
    ) -> list[nn.Parameter]:
        """Choose how the LM learns: ``"frozen"``, ``"full"`` or ``"lora"``; return its
        trainable parameters.

        ``"lora"`` wraps the LM's linear layers in low-rank adapters (``rank``,
        ``alpha``, ``targets`` as in :func:`crossalign.models.lora.apply_lora`) and
        trains only those.
        """
        if mode == "frozen":
            freeze(self.lm)
        elif mode == "full":
            for parameter in self.lm.parameters():
                parameter.requires_grad_(True)
        elif mode == "lora":
            apply_lora(self.lm, rank=rank, alpha=alpha, targets=targets)
        else:
            raise ValueError(f"mode must be 'frozen', 'full' or 'lora', got {mode!r}")
        self.train(self.training)
        return [p for p in self.lm.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ generation
    def _step(
        self, tokens: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Any, None]:
        """The decoding step (see :mod:`crossalign.decoding`): next-token
        log-probabilities after ``tokens``."""
        prefix = state["prefix"]
        embeds = torch.cat(
            [prefix, _input_embeddings(self.lm)(tokens).to(prefix.dtype)], dim=1
        )
        logits = lm_logits(self.lm, embeds)[:, -1]
        return torch.log_softmax(logits.float(), dim=-1), state, None

    @torch.no_grad()
    def generate(
        self,
        features: torch.Tensor,
        max_len: int = 24,
        method: str = "greedy",
        beam_size: int = 3,
        length_penalty: float = 0.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Generate one caption per image: token ids without ``<bos>`` and without
        ``<eos>``.

        ``method`` is ``"greedy"``, ``"beam"`` (``beam_size``, ``length_penalty``, as in
        :func:`crossalign.decoding.beam_search`) or ``"sample"`` (``temperature``,
        optional ``top_k``, reproducible with ``generator``).
        """
        if method not in ("greedy", "beam", "sample"):
            raise ValueError(
                f"method must be 'greedy', 'beam' or 'sample', got {method!r}"
            )
        was_training = self.training
        self.eval()
        state = {"prefix": self.prefix_embeddings(features)}
        batch = features.shape[0]
        if method == "sample":
            sequences = self._sample(
                state, batch, max_len, temperature, top_k, generator
            )
        else:
            if method == "greedy":
                result = greedy_decode(
                    self._step,
                    state,
                    batch,
                    self.bos_id,
                    self.eos_id,
                    max_len,
                    pad_id=self.pad_id,
                )
            else:
                result = beam_search(
                    self._step,
                    state,
                    batch,
                    self.bos_id,
                    self.eos_id,
                    beam_size,
                    max_len,
                    length_penalty,
                    pad_id=self.pad_id,
                )
            sequences = [
                row[: int(n)].tolist() for row, n in zip(result.tokens, result.lengths)
            ]
        self.train(was_training)
        return [
            seq[:-1] if seq and seq[-1] == self.eos_id else seq for seq in sequences
        ]

    def _sample(
        self,
        state: dict[str, torch.Tensor],
        batch: int,
        max_len: int,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
    ) -> list[list[int]]:
        """Ancestral sampling from ``softmax(logits / temperature)``, optionally among
        the ``top_k`` best."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k!r}")
        device = state["prefix"].device
        tokens = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        for _ in range(max_len):
            log_probs, state, _ = self._step(tokens, state)
            scores = log_probs / temperature
            if top_k is not None and top_k < scores.shape[1]:
                threshold = scores.topk(top_k, dim=1).values[:, -1:]
                scores = scores.masked_fill(scores < threshold, float("-inf"))
            choice = (
                torch.multinomial(scores.softmax(dim=1).cpu(), 1, generator=generator)
                .to(device)
                .squeeze(1)
            )
            choice = torch.where(finished, torch.full_like(choice, self.pad_id), choice)
            tokens = torch.cat([tokens, choice.unsqueeze(1)], dim=1)
            finished |= choice == self.eos_id
            if bool(finished.all()):
                break
        sequences = []
        for row in tokens[:, 1:].tolist():
            sequences.append(
                row[: row.index(self.eos_id) + 1] if self.eos_id in row else row
            )
        return sequences

    def caption(
        self,
        features: torch.Tensor,
        tokenizer: Any,
        batch_size: int = 256,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Captions as text for ``features`` (in batches), decoded with
        ``tokenizer.decode``."""
        texts: list[str] = []
        for start in range(0, features.shape[0], batch_size):
            for ids in self.generate(
                features[start : start + batch_size], **generate_kwargs
            ):
                texts.append(tokenizer.decode(ids))
        return texts

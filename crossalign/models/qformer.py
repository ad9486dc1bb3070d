"""A small Q-Former: a few learned queries read the image through cross-attention
(BLIP-2's bridge).

BLIP-2 (Li et al., 2023) puts a *querying Transformer* between a frozen image encoder
and a frozen LLM. A fixed set of ``Q`` learned query vectors attends to the image
features, so the LLM always receives ``Q`` soft tokens, however many patches the image
has::

    queries [Q, d] --self-attention--> --cross-attention to image [N, D]--> --MLP-->  (x
    depth)
          -> [B, Q, d] --linear--> [B, Q, lm_dim] = the LM prefix

It is trained with two of BLIP-2's objectives:

- **image-text contrastive** (ITC): each query output and a text embedding are projected
  and normalised; an image-text score is the *best* query's cosine similarity, and the
  symmetric InfoNCE loss aligns matching pairs (:meth:`QFormer.contrastive_loss`);
- **image-grounded captioning**: the query outputs are the prefix of the frozen LM,
  trained with the caption loss of :class:`crossalign.models.prefix_lm.PrefixCaptioner`.

Simplification (said plainly): BLIP-2's text side shares the Q-Former's self-attention
layers; here the text side is a separate small :class:`TransformerTextEncoder`.
:attr:`QFormer.last_attention` keeps the cross-attention maps of the last call, to see
which image regions each query reads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.models.text_encoders import TransformerTextEncoder

__all__ = ["QFormer", "QFormerBlock"]


class QFormerBlock(nn.Module):
    """One Q-Former layer: queries attend to each other, then to the image, then an MLP
    (pre-norm)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        )

    def forward(
        self, queries: torch.Tensor, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update ``queries`` [B, Q, d] from ``image`` [B, N, d]; also return the
        attention [B, Q, N]."""
        x = self.norm_self(queries)
        queries = queries + self.self_attention(x, x, x, need_weights=False)[0]
        read, attention = self.cross_attention(
            self.norm_cross(queries), image, image, need_weights=True
        )
        queries = queries + read
        return queries + self.mlp(self.norm_mlp(queries)), attention


class QFormer(nn.Module):
    """Learned queries that cross-attend to frozen image features; a projector with
    ``Q`` output tokens.

    Args:
        feature_dim: width of the image features (``[B, N, feature_dim]``, or
        ``[B, feature_dim]``
            read as a single token).
        lm_dim: width of the language model's embeddings (the output width). vocab_size:
        size of the text vocabulary for the contrastive text encoder. num_queries:
        ``Q``, the number of learned queries = prefix tokens. dim, depth, heads: width,
        layers and heads of the Q-Former (``heads`` divides ``dim``). embed_dim: width
        of the shared space of the contrastive objective. pad_id: padding id of the text
        tokenizer. max_text_len: longest caption the contrastive text encoder accepts.
        init_temperature: initial temperature of the contrastive loss (learnt,
        log-space).
    """

    def __init__(
        self,
        feature_dim: int,
        lm_dim: int,
        vocab_size: int,
        num_queries: int = 8,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        embed_dim: int = 64,
        pad_id: int = 0,
        max_text_len: int = 64,
        init_temperature: float = 0.07,
    ) -> None:
        super().__init__()
        for name, value in (
            ("feature_dim", feature_dim),
            ("lm_dim", lm_dim),
            ("vocab_size", vocab_size),
            ("num_queries", num_queries),
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
            ("embed_dim", embed_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        if not init_temperature > 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature!r}")
        self.feature_dim, self.lm_dim, self.num_queries = (
            feature_dim,
            lm_dim,
            num_queries,
        )
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.image_in = nn.Sequential(nn.Linear(feature_dim, dim), nn.LayerNorm(dim))
        self.blocks = nn.ModuleList(QFormerBlock(dim, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.to_lm = nn.Linear(dim, lm_dim)
        self.text_encoder = TransformerTextEncoder(
            vocab_size,
            dim=dim,
            depth=1,
            heads=heads,
            max_len=max_text_len,
            pad_id=pad_id,
        )
        self.query_head = nn.Linear(dim, embed_dim)
        self.text_head = nn.Linear(self.text_encoder.out_dim, embed_dim)
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / init_temperature))
        )
        self.last_attention: torch.Tensor | None = None

    def query_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """The queries after reading the image: ``[B, Q, dim]``.

        Sets :attr:`last_attention` to the last layer's cross-attention ``[B, Q, N]``
        (averaged over heads; each row sums to 1 over the ``N`` image tokens).
        """
        if features.dim() == 2:
            features = features.unsqueeze(1)
        if features.dim() != 3 or features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"features must be [B, N, {self.feature_dim}] or [B, "
                f"{self.feature_dim}], "
                f"got {tuple(features.shape)}"
            )
        image = self.image_in(features)
        queries = self.queries.unsqueeze(0).expand(features.shape[0], -1, -1)
        for block in self.blocks:  # at least one: __init__ checks depth >= 1
            queries, attention = block(queries, image)
        self.last_attention = attention.detach()
        return self.norm_out(queries)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Image features -> ``Q`` prefix embeddings ``[B, Q, lm_dim]`` (the projector
        interface)."""
        return self.to_lm(self.query_outputs(features))

    def similarity(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Image-text scores ``[B_images, B_texts]``: the best query's cosine similarity
        with each text."""
        # [B, Q, E]
        queries = F.normalize(self.query_head(self.query_outputs(features)), dim=-1)
        # [T, E]
        texts = F.normalize(
            self.text_head(self.text_encoder(input_ids, attention_mask)), dim=-1
        )
        return torch.einsum("bqe,te->btq", queries, texts).amax(dim=-1)

    def contrastive_loss(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Symmetric InfoNCE over the batch: image ``i`` matches text ``i`` (BLIP-2's
        ITC objective)."""
        scale = self.log_logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * self.similarity(features, input_ids, attention_mask)
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

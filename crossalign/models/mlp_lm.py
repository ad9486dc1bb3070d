"""A neural n-gram language model in the style of Bengio et al. (2003).

Like a count-based n-gram model it predicts each token from a fixed window of the
``context`` tokens before it, but instead of looking the window up in a table it embeds
each of those tokens, concatenates the vectors and passes them through an MLP::

    P(w_t+1 | w_t-k+1 .. w_t) = softmax( W2 tanh(W1 [e(w_t-k+1); ...; e(w_t)] + b1) + b2
    )

Similar words get similar embeddings, so what is learnt about "a red circle" carries
over to "a crimson circle": the model generalises to windows it never saw, which counts
cannot do.

The model has the same interface as :class:`~crossalign.models.gpt.GPT`, so one training
loop and one perplexity function serve both:
``forward(input_ids (B, T)) -> logits (B, T, vocab)``, where the logits at ``t`` use
tokens ``t - context + 1 .. t``. Windows reaching before the start of the sequence are
filled with a learned "before the start" embedding (an extra row of the table, index
``vocab_size``), so the first predictions are well defined too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from crossalign.utils import is_integral, values_hold

__all__ = ["MLPLanguageModel"]


class MLPLanguageModel(nn.Module):
    """Bengio-style feed-forward language model over a window of the previous
    ``context`` tokens.

    Args:
        vocab_size: number of token ids. context: how many previous tokens each
        prediction sees (k; a (k+1)-gram model). embed_dim: size of each token
        embedding. hidden_dim: width of the tanh hidden layer. dropout: dropout on the
        concatenated embeddings and the hidden layer (training only).
    """

    def __init__(
        self,
        vocab_size: int,
        context: int = 3,
        embed_dim: int = 32,
        hidden_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("context", context),
            ("embed_dim", embed_dim),
            ("hidden_dim", hidden_dim),
        ):
            if isinstance(value, bool) or not is_integral(value) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.vocab_size = int(vocab_size)
        self.context = int(context)
        # last row: "before the start"
        self.embedding = nn.Embedding(vocab_size + 1, embed_dim)
        self.hidden = nn.Linear(context * embed_dim, hidden_dim)
        self.output = nn.Linear(hidden_dim, vocab_size)
        self.dropout = nn.Dropout(dropout)

    @property
    def start_id(self) -> int:
        """The id of the learned embedding that fills windows reaching before the first
        token."""
        return self.vocab_size

    def windows(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The ``context`` ids ending at each position: (B, T) -> (B, T, context),
        left-filled with :attr:`start_id`."""
        if (
            input_ids.dim() != 2
            or input_ids.dtype not in (torch.long, torch.int32)
            or input_ids.shape[1] == 0
        ):
            raise ValueError(
                "input_ids must be an integer tensor of shape (B, T) with T >= 1, got "
                f"{tuple(input_ids.shape)}"
            )
        if not values_hold((input_ids >= 0) & (input_ids < self.vocab_size)):
            raise ValueError(
                f"input_ids must lie in [0, {self.vocab_size}) (vocab_size)"
            )
        padded = F.pad(input_ids.long(), (self.context - 1, 0), value=self.start_id)
        return padded.unfold(dimension=1, size=self.context, step=1)

    def forward(
        self, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits (B, T, vocab_size); position ``t`` sees only the window
        ending at ``t``.

        ``attention_mask`` is accepted for interface compatibility and not needed: a
        window only looks back, so right padding never reaches a real position.
        """
        windows = self.windows(input_ids)
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids "
                f"{tuple(input_ids.shape)}"
            )
        batch, length, _ = windows.shape
        features = self.dropout(self.embedding(windows).reshape(batch, length, -1))
        return self.output(self.dropout(torch.tanh(self.hidden(features))))

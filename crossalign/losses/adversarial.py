"""Adversarial modality alignment: a gradient reversal layer and a modality
discriminator.

The idea comes from domain-adversarial training (Ganin & Lempitsky 2015): if a
classifier cannot tell from an embedding whether it came from an image or from a
caption, the two modalities occupy the same region of the space. The gradient reversal
layer (GRL) turns this min-max game into one ordinary minimisation: it is the identity
going forward and multiplies the gradient by ``-lambda`` going backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.losses.contrastive import _check_features

__all__ = [
    "grad_reverse",
    "GradientReversal",
    "ModalityDiscriminator",
    "adversarial_alignment_loss",
]


def _check_lambda(lambda_: float) -> float:
    """Return ``lambda_`` as a float, or raise unless it is a finite, non-negative
    number."""
    if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)):
        raise TypeError(f"lambda_ must be a float, got {type(lambda_).__name__}")
    if not math.isfinite(lambda_) or lambda_ < 0:
        raise ValueError(
            "lambda_ must be a finite number >= 0 (the strength of the reversal), got "
            f"{lambda_}"
        )
    return float(lambda_)


class _GradientReversalFunction(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``-lambda_`` in
    the backward pass."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, lambda_: float) -> torch.Tensor:
        """Return a copy of ``features`` (a copy, so that in-place operations downstream
        stay safe)."""
        ctx.lambda_ = lambda_
        return features.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Reverse and scale the gradient; ``lambda_`` is a constant and gets none."""
        return grad_output * -ctx.lambda_, None


def grad_reverse(features: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Pass ``features`` through unchanged, but multiply the gradient flowing back by
    ``-lambda_``.

    Everything upstream of this call (the encoders) receives ``-lambda_`` times the
    gradient that the loss downstream (the discriminator's) would give it, so it climbs
    that loss while the layers downstream descend it. ``lambda_ = 0`` cuts the gradient
    off.
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(
            f"features must be a torch.Tensor, got {type(features).__name__}"
        )
    return _GradientReversalFunction.apply(features, _check_lambda(lambda_))


class GradientReversal(nn.Module):
    """Module form of ``grad_reverse``; ``lambda_`` may be changed between steps to
    follow a schedule."""

    def __init__(self, lambda_: float = 1.0) -> None:
        """Store the reversal strength (Ganin & Lempitsky ramp it from 0 to 1 during
        training)."""
        super().__init__()
        self.lambda_ = _check_lambda(lambda_)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return ``features`` unchanged; their gradient comes back multiplied by
        ``-lambda_``."""
        return grad_reverse(features, self.lambda_)

    def extra_repr(self) -> str:
        """Show the strength in ``print(module)``."""
        return f"lambda_={self.lambda_}"


class ModalityDiscriminator(nn.Module):
    """An MLP that reads an embedding and guesses its modality: logit > 0 means image, <
    0 means text.

    Two hidden layers of width ``hidden`` with ReLU, then one output logit per embedding
    (Ganin & Lempitsky's domain classifier has the same shape). Image is label 1, text
    label 0.
    """

    def __init__(self, dim: int, hidden: int = 256) -> None:
        """Build the MLP for embeddings of size ``dim``."""
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.dim = dim
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return the image-vs-text logits, shape [N], of embeddings of shape [N,
        dim]."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"ModalityDiscriminator expects features of shape [batch, {self.dim}], "
                f"got {tuple(features.shape)}"
            )
        return self.layers(features).squeeze(1)


def adversarial_alignment_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    discriminator: nn.Module,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """Modality-discrimination BCE on gradient-reversed features: one loss for both
    players of the game.

    Both [N, D] batches go through ``grad_reverse`` and then ``discriminator``, which
    must return one logit per embedding (shape [2N] or [2N, 1]); the result is the
    binary cross-entropy of those logits against the labels image = 1, text = 0,
    averaged over the 2N embeddings. Its value is exactly the discriminator's BCE.

    The min-max game: the discriminator D wants to minimise this BCE (tell the
    modalities apart), while the encoders that produced the features want to maximise it
    (make image and text embeddings indistinguishable, i.e. align the two
    distributions). Because the GRL sits between them, a single backward pass
    gives D the ordinary gradient of the BCE and gives the encoders ``-lambda_`` times
    theirs, so one optimiser step that *minimises* the total loss moves D down the BCE
    and the encoders up it, a gradient step towards the saddle point
    ``min_D max_encoders BCE`` (Ganin & Lempitsky 2015). Add this loss to the alignment
    loss (e.g. ``clip_loss``) and optimise encoders and discriminator together.
    """
    _check_features(image_features, text_features)
    batch = image_features.shape[0]
    features = torch.cat(
        [grad_reverse(image_features, lambda_), grad_reverse(text_features, lambda_)]
    )
    logits = discriminator(features)
    if logits.shape == (2 * batch, 1):
        logits = logits.squeeze(1)
    if logits.shape != (2 * batch,):
        raise ValueError(
            f"discriminator must return one logit per embedding, shape [{2 * batch}] "
            f"or [{2 * batch}, 1], "
            f"got {tuple(logits.shape)}"
        )
    labels = torch.cat([logits.new_ones(batch), logits.new_zeros(batch)])
    return F.binary_cross_entropy_with_logits(logits, labels)

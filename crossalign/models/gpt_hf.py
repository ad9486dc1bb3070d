"""Convert a :class:`~crossalign.models.gpt.GPT` to and from Hugging Face's
``GPT2LMHeadModel``.

Our GPT has GPT-2's architecture, so the conversion only renames and reshapes tensors.
Three differences in how the two store the same numbers:

- GPT-2 keeps its linear layers as ``Conv1D`` modules, which compute ``x @ W + b`` with
  ``W`` of shape (in, out); ``nn.Linear`` computes ``x @ W.T + b`` with ``W`` of shape
  (out, in). Every such weight is **transposed** on the way across.
- GPT-2's attention computes queries, keys and values with one fused layer ``c_attn``
  (out = 3 * n_embd, in the order q, k, v); ours (``attn.qkv``) uses the same order, so
  the fused weight moves as one block.
- GPT-2 nests everything but the output layer under ``transformer.`` and calls the
  blocks ``h.0, h.1, ...``; the output layer ``lm_head`` is tied to ``transformer.wte``.

The activation ``gelu_new`` of GPT-2 is GELU's tanh approximation, the one our MLP uses;
LayerNorm eps (``layer_norm_epsilon``) and dropout carry over through the
configurations. Everything here works offline: the Hugging Face model is built from a
``GPT2Config``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from crossalign.models.gpt import GPT, GPTConfig

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2LMHeadModel

__all__ = [
    "gpt_from_hf",
    "gpt_state_dict_to_hf",
    "gpt_to_hf",
    "hf_state_dict_to_gpt",
    "hf_config_from_gpt",
]

# Our name inside a block -> GPT-2's name inside a block, and whether the weight is
# transposed.
_BLOCK_KEYS = {
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True),
    "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True),
    "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True),
    "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True),
    "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
_TOP_KEYS = {
    "wte.weight": "transformer.wte.weight",
    "wpe.weight": "transformer.wpe.weight",
    "ln_f.weight": "transformer.ln_f.weight",
    "ln_f.bias": "transformer.ln_f.bias",
    "lm_head.weight": "lm_head.weight",
}
# GPT-2 activations that are exactly GELU with the tanh approximation.
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def _key_map(n_layer: int) -> dict[str, tuple[str, bool]]:
    """Every parameter name of our GPT -> (GPT-2 name, transposed?) for ``n_layer``
    blocks."""
    mapping = {ours: (theirs, False) for ours, theirs in _TOP_KEYS.items()}
    for layer in range(n_layer):
        for ours, (theirs, transpose) in _BLOCK_KEYS.items():
            mapping[f"blocks.{layer}.{ours}"] = (
                f"transformer.h.{layer}.{theirs}",
                transpose,
            )
    return mapping


def gpt_state_dict_to_hf(
    state_dict: dict[str, torch.Tensor], n_layer: int
) -> dict[str, torch.Tensor]:
    """Rename and transpose a :class:`GPT` state dict into a ``GPT2LMHeadModel`` state
    dict."""
    mapping = _key_map(n_layer)
    missing = sorted(set(mapping) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(mapping))
    if missing or unexpected:
        raise ValueError(
            f"state_dict does not match a {n_layer}-layer GPT with biases: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    converted = {}
    for ours, (theirs, transpose) in mapping.items():
        tensor = state_dict[ours]
        converted[theirs] = tensor.t().contiguous() if transpose else tensor.clone()
    return converted


def hf_state_dict_to_gpt(
    state_dict: dict[str, torch.Tensor], n_layer: int
) -> dict[str, torch.Tensor]:
    """Rename and transpose a ``GPT2LMHeadModel`` state dict into a :class:`GPT` state
    dict.

    A tied model may omit ``lm_head.weight``; it is then taken from
    ``transformer.wte.weight``.
    """
    state_dict = dict(state_dict)
    if "lm_head.weight" not in state_dict and "transformer.wte.weight" in state_dict:
        state_dict["lm_head.weight"] = state_dict["transformer.wte.weight"]
    mapping = _key_map(n_layer)
    missing = sorted(
        theirs for theirs, _ in mapping.values() if theirs not in state_dict
    )
    if missing:
        raise ValueError(
            f"state_dict is not a {n_layer}-layer GPT2LMHeadModel: missing "
            f"{missing[:5]}"
        )
    converted = {}
    for ours, (theirs, transpose) in mapping.items():
        tensor = state_dict[theirs]
        converted[ours] = tensor.t().contiguous() if transpose else tensor.clone()
    return converted


def hf_config_from_gpt(config: GPTConfig) -> GPT2Config:
    """The ``GPT2Config`` of the same shape as ``config`` (no special-token ids: our
    vocabularies differ)."""
    from transformers import GPT2Config

    if not config.bias:
        raise ValueError(
            "GPT-2 has biases in every linear layer and LayerNorm; only "
            "GPTConfig(bias=True) converts"
        )
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=4 * config.n_embd,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=config.layer_norm_eps,
        tie_word_embeddings=config.tie_weights,
        bos_token_id=None,
        eos_token_id=None,
    )


def gpt_to_hf(model: GPT) -> GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` holding copies of ``model``'s weights (same logits), in
    eval mode."""
    from transformers import GPT2LMHeadModel

    if not isinstance(model, GPT):
        raise TypeError(f"model must be a crossalign GPT, got {type(model).__name__}")
    config = model.config
    hf_model = GPT2LMHeadModel(hf_config_from_gpt(config))
    weights = gpt_state_dict_to_hf(model.state_dict(), config.n_layer)
    hf_model.load_state_dict(weights, strict=True)
    if config.tie_weights:
        hf_model.tie_weights()
    # transformers wraps to() with functools.wraps, whose type does not bind self.
    return hf_model.to(model.wte.weight.device).eval()  # type: ignore[arg-type]


def _gpt_config_from_hf(hf_config: GPT2Config, dropout: float | None) -> GPTConfig:
    """The :class:`GPTConfig` of a ``GPT2Config``, refusing GPT-2 options our GPT does
    not implement."""
    unsupported = []
    if hf_config.activation_function not in _TANH_GELUS:
        unsupported.append(
            f"activation_function={hf_config.activation_function!r} (need one of "
            f"{_TANH_GELUS})"
        )
    if hf_config.n_inner not in (None, 4 * hf_config.n_embd):
        unsupported.append(f"n_inner={hf_config.n_inner} (need 4 * n_embd)")
    if not hf_config.scale_attn_weights:
        unsupported.append("scale_attn_weights=False")
    if hf_config.scale_attn_by_inverse_layer_idx:
        unsupported.append("scale_attn_by_inverse_layer_idx=True")
    if hf_config.add_cross_attention:
        unsupported.append("add_cross_attention=True")
    if unsupported:
        raise ValueError(
            "this GPT-2 configuration cannot be converted: " + "; ".join(unsupported)
        )
    if dropout is None:
        rates = {
            float(hf_config.resid_pdrop),
            float(hf_config.embd_pdrop),
            float(hf_config.attn_pdrop),
        }
        if len(rates) != 1:
            raise ValueError(
                f"the GPT-2 dropout rates differ ({sorted(rates)}); pass dropout= to "
                "choose one"
            )
        dropout = rates.pop()
    return GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        dropout=dropout,
        bias=True,
        layer_norm_eps=hf_config.layer_norm_epsilon,
        tie_weights=bool(hf_config.tie_word_embeddings),
    )


def gpt_from_hf(hf_model: GPT2LMHeadModel, dropout: float | None = None) -> GPT:
    """A :class:`GPT` holding copies of a ``GPT2LMHeadModel``'s weights (same logits),
    in eval mode.

    ``dropout`` overrides the GPT-2 dropout rates (needed only when its three rates
    differ).
    """
    from transformers import GPT2LMHeadModel

    if not isinstance(hf_model, GPT2LMHeadModel):
        raise TypeError(
            "hf_model must be a transformers GPT2LMHeadModel, got "
            f"{type(hf_model).__name__}"
        )
    config = _gpt_config_from_hf(hf_model.config, dropout)
    model = GPT(config)
    model.load_state_dict(
        hf_state_dict_to_gpt(hf_model.state_dict(), config.n_layer), strict=True
    )
    return model.to(hf_model.lm_head.weight.device).eval()

"""Our GPT and Hugging Face's GPT2LMHeadModel give the same logits after converting
weights either way."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from crossalign.models.gpt import GPT, GPTConfig
from crossalign.models.gpt_hf import (
    gpt_from_hf,
    gpt_state_dict_to_hf,
    gpt_to_hf,
    hf_config_from_gpt,
    hf_state_dict_to_gpt,
)

CONFIG = GPTConfig(vocab_size=61, block_size=24, n_layer=3, n_head=4, n_embd=32)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with noise, so zero biases and unit LayerNorm scales
    hide no transposition."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def _hf_logits(
    hf_model: GPT2LMHeadModel, ids: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(input_ids=ids, attention_mask=mask).logits


def _batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0,
        CONFIG.vocab_size,
        (3, CONFIG.block_size),
        generator=torch.Generator().manual_seed(seed),
    )


def test_ours_to_hf_gives_the_same_logits():
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    _randomise(model, seed=1)
    hf_model = gpt_to_hf(model)
    assert isinstance(hf_model, GPT2LMHeadModel) and not hf_model.training
    ids = _batch()
    with torch.no_grad():
        ours = model(ids)
    torch.testing.assert_close(_hf_logits(hf_model, ids), ours, rtol=0, atol=1e-5)
    assert ours.abs().max() > 1.0  # the logits are not trivially small


def test_hf_to_ours_gives_the_same_logits():
    torch.manual_seed(0)
    hf_config = GPT2Config(
        vocab_size=53,
        n_positions=20,
        n_embd=48,
        n_layer=2,
        n_head=6,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf_model = GPT2LMHeadModel(hf_config).eval()
    _randomise(hf_model, seed=2)
    hf_model.tie_weights()
    model = gpt_from_hf(hf_model)
    assert model.config == GPTConfig(
        vocab_size=53, block_size=20, n_layer=2, n_head=6, n_embd=48, dropout=0.1
    )
    assert model.lm_head.weight is model.wte.weight
    ids = torch.randint(0, 53, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(ids)
    torch.testing.assert_close(ours, _hf_logits(hf_model, ids), rtol=0, atol=1e-5)


def test_round_trip_restores_every_tensor_exactly():
    model = GPT(CONFIG)
    _randomise(model, seed=4)
    back = hf_state_dict_to_gpt(
        gpt_state_dict_to_hf(model.state_dict(), CONFIG.n_layer), CONFIG.n_layer
    )
    original = model.state_dict()
    assert back.keys() == original.keys()
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor), key


def test_conv1d_weights_are_transposed_linear_weights():
    model = GPT(CONFIG)
    _randomise(model, seed=5)
    hf_weights = gpt_state_dict_to_hf(model.state_dict(), CONFIG.n_layer)
    qkv = model.blocks[1].attn.qkv.weight
    assert hf_weights["transformer.h.1.attn.c_attn.weight"].shape == (
        CONFIG.n_embd,
        3 * CONFIG.n_embd,
    )
    assert torch.equal(hf_weights["transformer.h.1.attn.c_attn.weight"], qkv.t())
    # Conv1D computes x @ W + b: check that on the fused attention input by hand.
    x = torch.randn(2, CONFIG.n_embd)
    expected = (
        x @ hf_weights["transformer.h.1.attn.c_attn.weight"]
        + hf_weights["transformer.h.1.attn.c_attn.bias"]
    )
    torch.testing.assert_close(model.blocks[1].attn.qkv(x), expected)


def test_same_logits_on_right_padded_batches_and_with_untied_heads():
    config = GPTConfig(
        vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=16, tie_weights=False
    )
    model = GPT(config).eval()
    _randomise(model, seed=6)
    assert model.lm_head.weight is not model.wte.weight
    hf_model = gpt_to_hf(model)
    assert hf_model.config.tie_word_embeddings is False
    ids = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(7))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 9:] = 0
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
    theirs = _hf_logits(hf_model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=1e-5)
    torch.testing.assert_close(
        gpt_from_hf(hf_model)(ids)[real], ours[real], rtol=0, atol=1e-5
    )


def test_hf_config_mirrors_ours():
    hf_config = hf_config_from_gpt(
        GPTConfig(
            vocab_size=10, block_size=7, n_layer=1, n_head=2, n_embd=8, dropout=0.2
        )
    )
    assert (
        hf_config.n_positions,
        hf_config.n_embd,
        hf_config.n_head,
        hf_config.n_layer,
    ) == (7, 8, 2, 1)
    assert (
        hf_config.activation_function == "gelu_new"
        and hf_config.layer_norm_epsilon == 1e-5
    )
    assert hf_config.resid_pdrop == hf_config.attn_pdrop == hf_config.embd_pdrop == 0.2


def test_unsupported_configurations_are_refused():
    with pytest.raises(ValueError, match="bias"):
        gpt_to_hf(
            GPT(
                GPTConfig(
                    vocab_size=10,
                    block_size=4,
                    n_layer=1,
                    n_head=1,
                    n_embd=8,
                    bias=False,
                )
            )
        )
    relu = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=10,
            n_positions=4,
            n_embd=8,
            n_layer=1,
            n_head=1,
            activation_function="relu",
            bos_token_id=None,
            eos_token_id=None,
        )
    )
    with pytest.raises(ValueError, match="activation_function"):
        gpt_from_hf(relu)
    uneven = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=10,
            n_positions=4,
            n_embd=8,
            n_layer=1,
            n_head=1,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
        )
    )
    with pytest.raises(ValueError, match="dropout"):
        gpt_from_hf(uneven)
    assert gpt_from_hf(uneven, dropout=0.0).config.dropout == 0.0
    with pytest.raises(TypeError):
        gpt_to_hf(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="missing"):
        gpt_state_dict_to_hf({"wte.weight": torch.zeros(2, 2)}, n_layer=1)

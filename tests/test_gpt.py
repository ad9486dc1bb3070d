"""Tests for the GPT-style decoder: causality, padding, the two inputs, and a
from-scratch reference forward."""

from __future__ import annotations

import math

import pytest
import torch

from crossalign.models.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=24)


def _model(config: GPTConfig = CONFIG, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorm parameters
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return model


def _reference_forward(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """The GPT forward pass written out with explicit loops over heads and masked
    softmax (no nn modules)."""

    def layer_norm(x, ln):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(
            var + model.config.layer_norm_eps
        ) * ln.weight + ln.bias

    def gelu_tanh(x):
        return (
            0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        )

    length, width, heads = ids.shape[1], model.config.n_embd, model.config.n_head
    head_dim = width // heads
    x = model.wte.weight[ids] + model.wpe.weight[:length]
    future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    for block in model.blocks:
        h = layer_norm(x, block.ln_1)
        qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias
        q, k, v = qkv[..., :width], qkv[..., width : 2 * width], qkv[..., 2 * width :]
        outputs = []
        for head in range(heads):
            part = slice(head * head_dim, (head + 1) * head_dim)
            scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(head_dim)
            weights = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
            outputs.append(weights @ v[..., part])
        x = (
            x
            + torch.cat(outputs, dim=-1) @ block.attn.proj.weight.T
            + block.attn.proj.bias
        )
        h = layer_norm(x, block.ln_2)
        x = (
            x
            + gelu_tanh(h @ block.mlp.fc.weight.T + block.mlp.fc.bias)
            @ block.mlp.proj.weight.T
            + block.mlp.proj.bias
        )
    return layer_norm(x, model.ln_f) @ model.wte.weight.T


def test_forward_matches_a_from_scratch_reference():
    model = _model().double()
    ids = torch.randint(
        0, CONFIG.vocab_size, (3, 11), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids), _reference_forward(model, ids), rtol=1e-10, atol=1e-10
        )


def test_predictions_never_depend_on_later_tokens():
    model = _model()
    ids = torch.randint(
        0, CONFIG.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2)
    )
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % CONFIG.vocab_size
    with torch.no_grad():
        before, after = model(ids), model(changed)
    assert torch.equal(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_causal_kernel_and_explicit_mask_agree_with_the_reference():
    # Without padding SDPA gets is_causal=True; with an all-ones attention_mask it gets
    # the explicit triangle. Both must equal the loop-by-loop reference.
    model = _model().double()
    ids = torch.randint(
        0, CONFIG.vocab_size, (2, 10), generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        reference = _reference_forward(model, ids)
        plain = model(ids)
        masked = model(ids, attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(plain, reference, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(masked, reference, rtol=1e-10, atol=1e-10)


def test_sdpa_is_told_causal_instead_of_given_a_mask_without_padding(monkeypatch):
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(
        "crossalign.models.gpt.F.scaled_dot_product_attention", recording_sdpa
    )
    model = _model()
    ids = torch.randint(0, CONFIG.vocab_size, (2, 6))
    with torch.no_grad():
        model(ids)
        assert calls == [(None, True)] * CONFIG.n_layer
        calls.clear()
        model(ids, attention_mask=torch.ones_like(ids))
    assert [is_causal for _, is_causal in calls] == [False] * CONFIG.n_layer
    assert all(mask is not None and mask.dtype == torch.bool for mask, _ in calls)


def test_inputs_embeds_is_the_same_as_input_ids():
    model = _model()
    ids = torch.randint(
        0, CONFIG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        torch.testing.assert_close(
            model(inputs_embeds=embeds), model(ids), rtol=0, atol=0
        )
    assert model.get_input_embeddings() is model.wte
    assert model.get_input_embeddings().weight.shape == (
        CONFIG.vocab_size,
        CONFIG.n_embd,
    )


def test_right_padding_does_not_change_real_positions():
    model = _model()
    lengths = [12, 5, 8]
    generator = torch.Generator().manual_seed(4)
    rows = [
        torch.randint(0, CONFIG.vocab_size, (n,), generator=generator) for n in lengths
    ]
    ids = torch.zeros(3, 12, dtype=torch.long)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = tokens
        ids[row, len(tokens) :] = 9  # arbitrary padding id: must not matter
        mask[row, : len(tokens)] = 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask)
        for row, tokens in enumerate(rows):
            alone = model(tokens[None])[0]
            torch.testing.assert_close(
                batched[row, : len(tokens)], alone, rtol=1e-5, atol=1e-5
            )
        assert torch.isfinite(batched).all()


def test_padding_mask_hides_padded_keys_in_the_middle():
    """A masked key inside the sequence is invisible: its token can change without
    effect."""
    model = _model()
    ids = torch.randint(
        0, CONFIG.vocab_size, (1, 10), generator=torch.Generator().manual_seed(5)
    )
    mask = torch.ones(1, 10, dtype=torch.long)
    mask[0, 3] = 0
    changed = ids.clone()
    changed[0, 3] = (changed[0, 3] + 1) % CONFIG.vocab_size
    with torch.no_grad():
        a, b = model(ids, attention_mask=mask), model(changed, attention_mask=mask)
    keep = torch.arange(10) != 3
    torch.testing.assert_close(a[0, keep], b[0, keep], rtol=1e-6, atol=1e-6)


def test_weights_are_tied_and_initialised_like_gpt2():
    config = GPTConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=128)
    torch.manual_seed(0)
    model = GPT(config)
    assert model.lm_head.weight is model.wte.weight
    c = config.n_embd
    per_block = (
        2 * c
        + (3 * c * c + 3 * c)
        + (c * c + c)
        + 2 * c
        + (4 * c * c + 4 * c)
        + (4 * c * c + c)
    )
    # lm_head: shared
    expected = (
        config.vocab_size * c
        + config.block_size * c
        + config.n_layer * per_block
        + 2 * c
    )
    assert model.num_parameters() == expected
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = torch.cat(
        [
            w.flatten()
            for b in model.blocks
            for w in (b.attn.proj.weight, b.mlp.proj.weight)
        ]
    )
    assert residual.std().item() == pytest.approx(
        0.02 / math.sqrt(2 * config.n_layer), rel=0.05
    )
    assert all(b.attn.qkv.bias.abs().max() == 0 for b in model.blocks)


def test_dropout_only_acts_in_training_mode():
    model = _model(
        GPTConfig(
            vocab_size=37, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.5
        )
    )
    ids = torch.randint(0, 37, (2, 8), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))
        model.train()
        assert not torch.equal(model(ids), model(ids))


def test_bad_inputs_are_refused_with_clear_errors():
    model = _model()
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=torch.zeros(1, 4, CONFIG.n_embd))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, CONFIG.block_size + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.full((1, 3), CONFIG.vocab_size))
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 4, CONFIG.n_embd + 1))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=3, n_embd=8)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(vocab_size=10, block_size=4, n_layer=0, n_head=1, n_embd=8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu_and_training_runs_there():
    from crossalign.train.language_model import perplexity, train_language_model

    model = _model()
    ids = torch.randint(
        0, CONFIG.vocab_size, (4, 12), generator=torch.Generator().manual_seed(7)
    )
    with torch.no_grad():
        on_cpu = model(ids)
        on_gpu = model.cuda()(ids.cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
    sequences = [[1, 3 + i % 5, 3 + (i + 1) % 5, 2] for i in range(64)]
    before = perplexity(model, sequences)
    train_language_model(model, sequences, steps=30, batch_size=16, lr=1e-2)
    assert next(model.parameters()).is_cuda and perplexity(model, sequences) < before

"""The vision-to-LM captioner: labels, loss, freezing, generation, stage 2, a Hugging
Face GPT-2."""

from __future__ import annotations

import copy

import pytest
import torch

from crossalign.data.vocab import Vocabulary
from crossalign.models.gpt import GPT, GPTConfig
from crossalign.models.lora import LoRALinear
from crossalign.models.prefix_lm import (
    IGNORE_INDEX,
    PrefixCaptioner,
    caption_labels,
    count_parameters,
    lm_logits,
    token_cross_entropy,
)
from crossalign.models.projector import MLPProjector
from crossalign.train.prefix import train_prefix

# A toy world: image class c has a 6-d feature (one-hot + noise) and one caption.
CLASS_CAPTIONS = [
    "red circle left",
    "blue square right",
    "red square top",
    "blue circle below",
]
VOCAB = Vocabulary.build(CLASS_CAPTIONS)
FEATURE_DIM, PREFIX_LEN = 6, 2


def _features(n: int, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    generator = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, len(CLASS_CAPTIONS), (n,), generator=generator)
    noise = 0.05 * torch.randn(n, FEATURE_DIM, generator=generator)
    features = torch.nn.functional.one_hot(classes, FEATURE_DIM).float() + noise
    return features, classes.tolist()


def _gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(vocab_size=len(VOCAB), block_size=24, n_layer=2, n_head=2, n_embd=16)
    )


def _captioner(
    lm: torch.nn.Module | None = None, prompt_ids=None, lm_dim: int = 16
) -> PrefixCaptioner:
    torch.manual_seed(1)
    projector = MLPProjector(FEATURE_DIM, lm_dim, prefix_len=PREFIX_LEN)
    return PrefixCaptioner(
        lm if lm is not None else _gpt(),
        projector,
        bos_id=VOCAB.bos_id,
        eos_id=VOCAB.eos_id,
        pad_id=VOCAB.pad_id,
        prompt_ids=prompt_ids,
    )


def test_ignore_index_is_not_a_token_id_and_labels_mask_prefix_bos_and_padding():
    assert not 0 <= IGNORE_INDEX < len(VOCAB)
    ids = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    mask = ids != 0
    labels = caption_labels(ids, mask, prefix_len=2)
    x = IGNORE_INDEX
    assert labels.tolist() == [[x, x, x, 5, 6, 3, x], [x, x, x, 7, 3, x, x]]
    # the input is not modified
    assert ids.tolist() == [
        [2, 5, 6, 3, 0],
        [2, 7, 3, 0, 0],
    ]


def test_loss_equals_hand_computed_cross_entropy_over_caption_tokens():
    captioner = _captioner(prompt_ids=[VOCAB.token_to_id("red")])
    features, _ = _features(3)
    ids, mask = VOCAB.encode_batch(["red circle left", "blue square", "top"])
    embeds, full_mask, _ = captioner.build_inputs(features, ids, mask)
    log_probs = torch.log_softmax(lm_logits(captioner.lm, embeds, full_mask), dim=-1)
    # caption position 0 (<bos>) sits after the prefix and the one prompt token
    start = PREFIX_LEN + 1
    total, count = 0.0, 0
    for row in range(3):
        length = int(mask[row].sum())
        for j in range(1, length):  # predict w_1 .. <eos> from the position before each
            total -= float(log_probs[row, start + j - 1, ids[row, j]].detach())
            count += 1
    assert count == 4 + 3 + 2
    torch.testing.assert_close(
        captioner.loss(features, ids, mask),
        torch.tensor(total / count),
        rtol=1e-5,
        atol=1e-6,
    )


def test_padding_ids_and_ignored_logits_change_nothing():
    captioner = _captioner()
    features, _ = _features(2)
    ids, mask = VOCAB.encode_batch(["red circle left", "top"])
    loss = captioner.loss(features, ids, mask)
    other_padding = ids.masked_fill(~mask, VOCAB.token_to_id("blue"))
    assert torch.equal(captioner.loss(features, other_padding, mask), loss)
    # a padded batch gives the token-weighted mean of each caption's loss computed
    # unpadded
    texts = ["red circle left", "top"]
    alone = [
        captioner.loss(features[i : i + 1], *VOCAB.encode_batch([text]))
        for i, text in enumerate(texts)
    ]
    torch.testing.assert_close(
        loss, (alone[0] * 4 + alone[1] * 2) / 6, rtol=1e-5, atol=1e-6
    )
    # logits at prefix, <bos>-predicting and padding positions are never read by the
    # loss
    embeds, full_mask, labels = captioner.build_inputs(features, ids, mask)
    logits = lm_logits(captioner.lm, embeds, full_mask)
    ignored = torch.cat(
        [labels[:, 1:] == IGNORE_INDEX, torch.ones(2, 1, dtype=torch.bool)], dim=1
    )
    scrambled = torch.where(
        ignored.unsqueeze(-1), torch.randn_like(logits) * 50, logits
    )
    assert torch.equal(
        token_cross_entropy(scrambled, labels), token_cross_entropy(logits, labels)
    )


def test_projector_step_leaves_frozen_lm_unchanged_and_without_gradients():
    lm = _gpt()
    # stale gradients from the LM's own training
    lm(torch.randint(0, len(VOCAB), (2, 5))).sum().backward()
    captioner = _captioner(lm=lm)
    lm_before = copy.deepcopy(captioner.lm.state_dict())
    projector_before = copy.deepcopy(captioner.projector.state_dict())
    features, classes = _features(16)
    result = train_prefix(
        captioner,
        features,
        [[CLASS_CAPTIONS[c]] for c in classes],
        VOCAB,
        steps=2,
        batch_size=8,
        lr=1e-2,
        warmup_steps=0,
        progress=False,
    )
    assert result.trained_parameters == count_parameters(captioner.projector)
    for name, parameter in captioner.lm.named_parameters():
        assert torch.equal(parameter, lm_before[name]), name
        assert parameter.grad is None and not parameter.requires_grad
    assert any(
        not torch.equal(p, projector_before[n])
        for n, p in captioner.projector.named_parameters()
    )
    captioner.train()
    # a frozen LM stays in eval mode
    assert captioner.projector.training and not captioner.lm.training


def test_generation_matches_a_manual_argmax_loop_and_other_methods():
    captioner = _captioner()
    features, _ = _features(3)
    greedy = captioner.generate(features, max_len=6)
    for row in range(3):
        tokens = [VOCAB.bos_id]
        expected = []
        for _ in range(6):
            ids = torch.tensor([tokens])
            mask = torch.ones_like(ids, dtype=torch.bool)
            embeds, full_mask, _ = captioner.build_inputs(
                features[row : row + 1], ids, mask
            )
            nxt = int(lm_logits(captioner.lm, embeds, full_mask)[0, -1].argmax())
            if nxt == VOCAB.eos_id:
                break
            expected.append(nxt)
            tokens.append(nxt)
        assert greedy[row] == expected
    assert captioner.generate(features, max_len=6, method="beam", beam_size=1) == greedy
    top1 = captioner.generate(
        features,
        max_len=6,
        method="sample",
        top_k=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert top1 == greedy
    sampled = captioner.generate(
        features, max_len=6, method="sample", generator=torch.Generator().manual_seed(3)
    )
    again = captioner.generate(
        features, max_len=6, method="sample", generator=torch.Generator().manual_seed(3)
    )
    assert sampled == again
    with pytest.raises(ValueError, match="method must be"):
        captioner.generate(features, method="nucleus")


def test_prompt_embeddings_follow_the_prefix():
    prompt = [VOCAB.token_to_id("red"), VOCAB.token_to_id("top")]
    captioner = _captioner(prompt_ids=prompt)
    features, _ = _features(2)
    prefix = captioner.prefix_embeddings(features)
    assert prefix.shape == (2, PREFIX_LEN + 2, 16)
    assert torch.equal(
        prefix[1, PREFIX_LEN:], captioner.lm.get_input_embeddings().weight[prompt]
    )


def test_stage_two_lora_trains_adapters_only_and_full_trains_the_lm():
    features, classes = _features(16)
    captions = [[CLASS_CAPTIONS[c]] for c in classes]
    captioner = _captioner()
    base_before = copy.deepcopy(captioner.lm.state_dict())
    trainable = captioner.set_lm_training("lora", rank=2)
    assert trainable and all(
        any(
            p is q
            for m in captioner.lm.modules()
            if isinstance(m, LoRALinear)
            for q in (m.lora_a, m.lora_b)
        )
        for p in trainable
    )
    train_prefix(
        captioner,
        features,
        captions,
        VOCAB,
        steps=3,
        batch_size=8,
        lr=1e-2,
        warmup_steps=0,
        progress=False,
    )
    for name, value in captioner.lm.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(value, base_before[name.replace(".base.", ".")]), name
    assert any(
        m.lora_b.abs().sum() > 0
        for m in captioner.lm.modules()
        if isinstance(m, LoRALinear)
    )
    full = _captioner()
    full_before = copy.deepcopy(full.lm.state_dict())
    assert len(full.set_lm_training("full")) == len(list(full.lm.parameters()))
    train_prefix(
        full,
        features,
        captions,
        VOCAB,
        steps=2,
        batch_size=8,
        lr=1e-2,
        warmup_steps=0,
        progress=False,
    )
    assert not torch.equal(
        full.lm.state_dict()["wte.weight"], full_before["wte.weight"]
    )
    with pytest.raises(ValueError, match="mode must be"):
        full.set_lm_training("half")


def _pretrain_on_repeated_captions(lm: torch.nn.Module, steps: int) -> None:
    """Teach ``lm`` the toy captions, each written twice, so that it learns to read its
    context.

    A frozen LM can only be steered by a prefix through attention it already uses; a
    randomly initialised one barely attends to anything, whatever the prefix says.
    """
    documents = [VOCAB.encode(text) * 2 for text in CLASS_CAPTIONS]
    width = max(len(d) for d in documents)
    ids = torch.tensor([d + [VOCAB.pad_id] * (width - len(d)) for d in documents])
    mask = ids != VOCAB.pad_id
    labels = ids.masked_fill(~mask, IGNORE_INDEX)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = token_cross_entropy(
            lm_logits(lm, lm.get_input_embeddings()(ids), mask), labels
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lm.zero_grad(set_to_none=True)


def test_huggingface_gpt2_as_the_frozen_lm_end_to_end():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(VOCAB),
        n_positions=24,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=VOCAB.bos_id,
        eos_token_id=VOCAB.eos_id,
    )
    lm = GPT2LMHeadModel(config)
    _pretrain_on_repeated_captions(lm, steps=60)
    before = copy.deepcopy(lm.state_dict())
    captioner = _captioner(lm=lm, lm_dim=32)
    features, classes = _features(64)
    captions = [[CLASS_CAPTIONS[c]] for c in classes]
    ids, mask = VOCAB.encode_batch([c[0] for c in captions])
    start = captioner.loss(features, ids, mask).item()
    train_prefix(
        captioner,
        features,
        captions,
        VOCAB,
        steps=60,
        batch_size=32,
        lr=1e-2,
        warmup_steps=0,
        progress=False,
    )
    end = captioner.loss(features, ids, mask).item()
    assert end < 0.6 * start
    for name, value in lm.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in lm.parameters())
    texts = captioner.caption(features[:4], VOCAB, max_len=8)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    assert all(set(t.split()) <= set(VOCAB.tokens) for t in texts)


def test_bad_inputs_are_reported():
    captioner = _captioner()
    features, _ = _features(2)
    ids, mask = VOCAB.encode_batch(["red", "top"])
    with pytest.raises(ValueError, match="start with <bos>"):
        captioner.loss(features, ids[:, 1:], mask[:, 1:])
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        captioner.loss(features, ids[:1], mask[:1])
    with pytest.raises(ValueError, match="outside the LM's vocabulary"):
        PrefixCaptioner(
            _gpt(), MLPProjector(6, 16, prefix_len=2), bos_id=99, eos_id=3, pad_id=0
        )
    with pytest.raises(ValueError, match="no image_encoder"):
        captioner.encode_images(torch.rand(1, 3, 32, 32))

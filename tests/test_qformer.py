"""The Q-Former bridge: fixed number of outputs, attention maps, the contrastive
objective, as a projector."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crossalign.data.vocab import Vocabulary
from crossalign.models.gpt import GPT, GPTConfig
from crossalign.models.prefix_lm import PrefixCaptioner
from crossalign.models.qformer import QFormer

TEXTS = ["red circle left", "blue square right", "red square top", "blue circle below"]
VOCAB = Vocabulary.build(TEXTS)


def _qformer(**kwargs) -> QFormer:
    torch.manual_seed(0)
    return QFormer(
        feature_dim=6,
        lm_dim=12,
        vocab_size=len(VOCAB),
        num_queries=3,
        dim=8,
        depth=2,
        heads=2,
        **kwargs,
    )


def test_outputs_have_one_token_per_query_whatever_the_number_of_patches():
    qformer = _qformer().eval()
    for patches in (1, 5, 11):
        features = torch.randn(2, patches, 6)
        assert qformer(features).shape == (2, 3, 12)
        attention = qformer.last_attention
        assert attention.shape == (2, 3, patches)
        torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 3))
    features = torch.randn(4, 5, 6)
    torch.testing.assert_close(
        qformer(features[1:2]), qformer(features)[1:2], rtol=1e-5, atol=1e-6
    )
    # a pooled vector is one image token
    assert qformer(torch.randn(2, 6)).shape == (
        2,
        3,
        12,
    )


def test_similarity_is_the_best_query_cosine_and_loss_is_symmetric_infonce():
    qformer = _qformer().eval()
    features = torch.randn(3, 4, 6)
    ids, mask = VOCAB.encode_batch(TEXTS[:3])
    with torch.no_grad():
        queries = F.normalize(
            qformer.query_head(qformer.query_outputs(features)), dim=-1
        )
        texts = F.normalize(qformer.text_head(qformer.text_encoder(ids, mask)), dim=-1)
    expected = torch.empty(3, 3)
    for i in range(3):
        for j in range(3):
            expected[i, j] = max(float(queries[i, q] @ texts[j]) for q in range(3))
    similarity = qformer.similarity(features, ids, mask)
    torch.testing.assert_close(similarity, expected, rtol=1e-5, atol=1e-6)
    logits = similarity.detach() / 0.07
    image_to_text = (
        -sum(float(torch.log_softmax(logits[i], 0)[i]) for i in range(3)) / 3
    )
    text_to_image = (
        -sum(float(torch.log_softmax(logits[:, i], 0)[i]) for i in range(3)) / 3
    )
    loss = qformer.contrastive_loss(features, ids, mask).detach()
    assert math.isclose(loss.item(), (image_to_text + text_to_image) / 2, rel_tol=1e-4)


def test_contrastive_training_separates_matching_pairs():
    qformer = _qformer()
    generator = torch.Generator().manual_seed(0)
    classes = torch.arange(4).repeat(4)
    noise = 0.05 * torch.randn(16, 2, 6, generator=generator)
    features = F.one_hot(classes, 6).float().unsqueeze(1).repeat(1, 2, 1) + noise
    ids, mask = VOCAB.encode_batch([TEXTS[c] for c in classes[:4]])
    optimizer = torch.optim.Adam(qformer.parameters(), lr=1e-2)
    start = qformer.contrastive_loss(features[:4], ids, mask).item()
    for _ in range(60):
        loss = qformer.contrastive_loss(features[:4], ids, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * start
    held_out = qformer.similarity(features[4:8], ids, mask)  # same classes, new noise
    assert held_out.argmax(dim=1).tolist() == [0, 1, 2, 3]


def test_qformer_is_a_projector_for_a_frozen_lm():
    torch.manual_seed(0)
    lm = GPT(
        GPTConfig(vocab_size=len(VOCAB), block_size=16, n_layer=1, n_head=2, n_embd=12)
    )
    captioner = PrefixCaptioner(
        lm, _qformer(), bos_id=VOCAB.bos_id, eos_id=VOCAB.eos_id, pad_id=VOCAB.pad_id
    )
    ids, mask = VOCAB.encode_batch(TEXTS[:2])
    loss = captioner.loss(torch.randn(2, 5, 6), ids, mask)
    loss.backward()
    assert all(p.grad is None for p in lm.parameters())
    assert (
        captioner.projector.queries.grad is not None
        and captioner.projector.queries.grad.abs().sum() > 0
    )


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="heads=3 must divide dim=8"):
        QFormer(6, 12, len(VOCAB), dim=8, heads=3)
    with pytest.raises(ValueError, match="num_queries must be a positive integer"):
        QFormer(6, 12, len(VOCAB), num_queries=0)
    with pytest.raises(ValueError, match=r"features must be \[B, N, 6\]"):
        _qformer()(torch.randn(2, 3, 5))

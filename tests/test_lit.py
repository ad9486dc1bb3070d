"""Tests of locked-text tuning (crossalign.experiments.lit) with the packaged MiniLM
encoder.

The frozen tower must come out of training bit for bit unchanged and without gradients;
cached sentence features must equal the encoder's output on each caption alone.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crossalign.experiments.compare import CompareConfig, MethodResult, prepare_data
from crossalign.experiments.lit import (
    LiTResult,
    LockedTextModel,
    both_towers_result,
    build_lit_model,
    format_lit_table,
    sentence_features,
    train_lit,
)
from crossalign.models.image_encoders import build_image_encoder
from crossalign.models.text_encoders import HFTextEncoder

TINY = CompareConfig.fast(
    image_size=32, train_size=32, test_size=4, steps=4, batch_size=16, device="cpu"
)


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    return HFTextEncoder(freeze=True)


def test_training_leaves_every_minilm_parameter_unchanged_and_without_grad(
    minilm: HFTextEncoder,
) -> None:
    before = {name: p.detach().clone() for name, p in minilm.named_parameters()}
    data = prepare_data(TINY)
    image_before = build_lit_model(TINY, minilm).image_encoder.state_dict()
    result = train_lit(TINY, data, minilm, captions_per_image=1)
    assert result.model.text_encoder is minilm
    for name, param in minilm.named_parameters():
        assert torch.equal(param, before[name]), name
        assert not param.requires_grad and param.grad is None, name
    assert not minilm.model.training
    changed = [
        k
        for k, v in result.model.image_encoder.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, image_before[k])
    ]
    assert changed, "the image tower should have been trained"
    assert len(result.losses) == TINY.steps and all(
        math.isfinite(x) for x in result.losses
    )
    for split in (result.test, result.compositional):
        # 4 images: every rank <= 4
        assert 0.0 <= split["i2t_r1"] <= 1.0 and split["t2i_r10"] == 1.0


def test_sentence_features_equal_one_caption_at_a_time(minilm: HFTextEncoder) -> None:
    tokenizer = minilm.build_tokenizer(max_len=40)
    texts = [
        "a big red circle left of a small blue square",
        "a disc",
        "there is a tiny violet rhombus at the top left",
        "a small green cross above a large white triangle, and a big cyan square is "
        "below the small green cross",
    ]
    cached = sentence_features(minilm, tokenizer, texts, batch_size=3)
    for i, text in enumerate(texts):
        ids, mask = tokenizer.encode_batch([text])
        with torch.no_grad():
            alone = minilm(ids, mask)[0]
        assert torch.allclose(cached[i], alone, atol=1e-5), text
    with pytest.raises(ValueError, match="at least one text"):
        sentence_features(minilm, tokenizer, [])


def test_locked_model_embeds_into_the_sentence_space(minilm: HFTextEncoder) -> None:
    model = build_lit_model(TINY, minilm)
    tokenizer = minilm.build_tokenizer(max_len=40)
    ids, mask = tokenizer.encode_batch(["a red circle", "a blue square"])
    features = sentence_features(minilm, tokenizer, ["a red circle", "a blue square"])
    images = torch.rand(2, 3, 32, 32)
    image_emb, text_emb, scale = model(images, features)
    assert image_emb.shape == text_emb.shape == (2, minilm.out_dim)
    assert torch.allclose(
        model.encode_text(ids, mask), F.normalize(features, dim=-1), atol=1e-5
    )
    assert torch.allclose(image_emb.norm(dim=1), torch.ones(2)) and float(
        scale.detach()
    ) == pytest.approx(1 / 0.07)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(not name.startswith("text_encoder") for name in trainable)


def test_an_unfrozen_text_tower_is_refused() -> None:
    unfrozen = HFTextEncoder(freeze=False)
    with pytest.raises(ValueError, match="frozen"):
        LockedTextModel(build_image_encoder("small_cnn", out_dim=16), unfrozen)


def test_both_towers_result_needs_the_trained_model() -> None:
    # A MethodResult without its model used to fail inside embed_texts on None.eval().
    scores = {"i2t_r1": 0.5, "t2i_r1": 0.25}
    result = MethodResult("infonce", scores, 0.5, 0.5, {}, 1.0)
    with pytest.raises(ValueError, match="both.model is None"):
        both_towers_result(result, TINY, data=None)


def test_format_lit_table() -> None:
    scores = {"i2t_r1": 0.5, "t2i_r1": 0.25}
    table = format_lit_table(
        [LiTResult("LiT", scores, {"i2t_r1": 0.125, "t2i_r1": 1.0}, 3.0)]
    )
    header, _, row = table.splitlines()
    for column in ("test i2t", "test t2i", "comp i2t", "comp t2i"):
        assert column in header
    assert row.split() == ["LiT", "0.50", "0.25", "0.12", "1.00", "3.0"]

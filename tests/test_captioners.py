"""Captioners: exact padding handling, the loss against a hand-written cross-entropy,
teacher forcing against step-by-step decoding, and the decoding searches on the
captioners' step functions."""

from __future__ import annotations

import math

import pytest
import torch

from crossalign.decoding import beam_search, beam_search_reference, greedy_decode
from crossalign.models.captioners import (
    AdditiveAttention,
    CaptionerConfig,
    ShowAttendTell,
    TransformerCaptioner,
    build_captioner,
    caption_loss,
    causal_mask,
    doubly_stochastic_penalty,
)

VOCAB, PAD, BOS, EOS = 11, 0, 2, 3
FEATURES, GRID = 6, 3


def _config(kind: str, **overrides) -> CaptionerConfig:
    values = dict(
        kind=kind,
        vocab_size=VOCAB,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
        image_encoder=None,
        feature_dim=FEATURES,
        embed_dim=8,
        hidden_dim=16,
        attention_dim=8,
        num_layers=2,
        num_heads=2,
        ff_dim=24,
        max_len=16,
        max_regions=16,
        dropout=0.0,
    )
    values.update(overrides)
    return CaptionerConfig(**values)


def _model(kind: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_captioner(_config(kind, **overrides)).double().eval()


def _features(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(
        batch,
        FEATURES,
        GRID,
        GRID,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    )


def _padded_ids() -> torch.Tensor:
    """Three captions of different lengths, right-padded: <bos> words <eos> <pad>..."""
    return torch.tensor(
        [
            [BOS, 5, 6, 7, 8, EOS],
            [BOS, 9, 4, EOS, PAD, PAD],
            [BOS, 10, EOS, PAD, PAD, PAD],
        ]
    )


KINDS = ("sat", "transformer")


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_at_real_positions_ignore_whatever_sits_in_the_padding(kind):
    model, features, ids = _model(kind), _features(), _padded_ids()
    garbage = ids.clone()
    garbage[ids == PAD] = torch.tensor([7, 1, 9, 4, 5, 8])[: int((ids == PAD).sum())]
    clean, noisy = model(features, ids), model(features, garbage)
    real = ids[:, 1:] != PAD
    # Equal up to rounding: with tokens in place of padding the SAT runs its recurrence
    # on more rows at once.
    torch.testing.assert_close(
        clean.logits[real], noisy.logits[real], rtol=1e-13, atol=1e-13
    )
    torch.testing.assert_close(
        clean.attention[real], noisy.attention[real], rtol=1e-13, atol=1e-13
    )
    assert torch.equal(
        model.loss(features, ids)[0],
        model.loss(features, torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1))[
            0
        ],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_loss_equals_an_explicit_per_token_cross_entropy(kind):
    model, features, ids = (
        _model(kind, attention_penalty=0.0),
        _features(),
        _padded_ids(),
    )
    loss, output = model.loss(features, ids)
    terms = []
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            target = int(ids[b, t + 1])
            if target == PAD:
                continue
            row = output.logits[b, t].tolist()
            log_normaliser = math.log(sum(math.exp(v) for v in row))
            terms.append(log_normaliser - row[target])
    assert len(terms) == int((ids[:, 1:] != PAD).sum()) == 10
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_caption_loss_ignores_logits_at_padded_targets():
    logits = torch.randn(3, 5, VOCAB, dtype=torch.float64)
    targets = _padded_ids()[:, 1:]
    changed = logits.clone()
    changed[targets == PAD] = 1e3 * torch.randn(
        int((targets == PAD).sum()), VOCAB, dtype=torch.float64
    )
    assert torch.equal(
        caption_loss(logits, targets, PAD), caption_loss(changed, targets, PAD)
    )
    with pytest.raises(ValueError, match="only padding"):
        caption_loss(logits, torch.zeros_like(targets), PAD)


def test_doubly_stochastic_penalty_by_hand_and_padding_free():
    attention = torch.tensor(
        [[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64
    )
    mask = torch.tensor([[True, True, False]])
    # region 0 receives 0.5 + 1.0 = 1.5, region 1 receives 0.5: ((1 - 1.5)^2 + (1 -
    # 0.5)^2) / 2
    assert doubly_stochastic_penalty(attention, mask).item() == pytest.approx(0.25)
    changed = attention.clone()
    changed[0, 2] = torch.tensor([0.3, 0.7])
    assert torch.equal(
        doubly_stochastic_penalty(attention, mask),
        doubly_stochastic_penalty(changed, mask),
    )


def test_doubly_stochastic_penalty_favours_uniform_attention_when_words_outnumber_regions():  # noqa: E501
    # 20 words over 16 regions: uniform attention gives every region 20/16 units, the
    # minimum (1 - 20/16)^2; attention on the two cells of one object, however split,
    # costs more.
    steps, regions = 20, 16
    mask = torch.ones(1, steps, dtype=torch.bool)
    uniform = torch.full((1, steps, regions), 1.0 / regions, dtype=torch.float64)
    assert doubly_stochastic_penalty(uniform, mask).item() == pytest.approx(
        (1 - steps / regions) ** 2
    )
    focused = torch.zeros(1, steps, regions, dtype=torch.float64)
    focused[..., 5], focused[..., 6] = 0.5, 0.5
    # regions 5 and 6 receive 10 units each, the other 14 none: (2 * 81 + 14) / 16
    assert doubly_stochastic_penalty(focused, mask).item() == pytest.approx(
        (2 * 81 + 14) / 16
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        random = torch.rand(
            1, steps, regions, generator=generator, dtype=torch.float64
        ).softmax(-1)
        assert doubly_stochastic_penalty(random, mask) >= doubly_stochastic_penalty(
            uniform, mask
        )


def test_sat_loss_adds_the_weighted_attention_penalty():
    features, ids = _features(), _padded_ids()
    plain, _ = _model("sat", attention_penalty=0.0).loss(features, ids)
    weighted, output = _model("sat", attention_penalty=0.7).loss(features, ids)
    penalty = doubly_stochastic_penalty(output.attention, ids[:, 1:] != PAD)
    assert weighted.item() == pytest.approx(
        plain.item() + 0.7 * penalty.item(), rel=1e-12
    )


@pytest.mark.parametrize(
    "kind, options",
    [("sat", {}), ("sat", {"attend_with_word": True}), ("transformer", {})],
)
@torch.no_grad()
def test_teacher_forcing_equals_step_by_step_decoding(kind, options):
    model, features, ids = _model(kind, **options), _features(), _padded_ids()
    output = model(features, ids)
    real = ids[:, 1:] != PAD
    state = model.init_state(features)
    for t in range(ids.shape[1] - 1):
        log_probs, state, attention = model.step(ids[:, : t + 1], state)
        # the step runs every caption; teacher forcing need not run a padded target
        rows = real[:, t]
        torch.testing.assert_close(
            log_probs[rows],
            output.logits[rows, t].log_softmax(-1),
            rtol=1e-10,
            atol=1e-10,
        )
        torch.testing.assert_close(
            attention[rows], output.attention[rows, t], rtol=1e-10, atol=1e-10
        )
    assert output.attention.shape == (3, 5, GRID * GRID)
    torch.testing.assert_close(
        output.attention.sum(-1)[real], torch.ones(int(real.sum()), dtype=torch.float64)
    )


@torch.no_grad()
def test_sat_attention_reads_the_previous_word_only_with_attend_with_word():
    # Attention at position t comes from h_{t-1}, which has read words 0..t-2; with
    # attend_with_word the query also holds word t-1, so changing that word moves it.
    ids = _padded_ids()[:1]
    changed = ids.clone()
    changed[0, 2] = 9  # the word read at position 2
    for attend_with_word in (False, True):
        model, features = _model("sat", attend_with_word=attend_with_word), _features(1)
        before, after = (
            model(features, ids).attention,
            model(features, changed).attention,
        )
        assert torch.equal(before[0, :2], after[0, :2])
        assert torch.equal(before[0, 2], after[0, 2]) != attend_with_word
        # a step later the LSTM state has read it either way
        assert not torch.equal(before[0, 3], after[0, 3])


@torch.no_grad()
def test_sat_teacher_forcing_skips_positions_past_each_captions_end():
    model, features, ids = _model("sat"), _features(), _padded_ids()
    output = model(features, ids)
    padded = ids[:, 1:] == PAD
    assert torch.equal(
        output.attention[padded],
        torch.zeros(int(padded.sum()), GRID * GRID, dtype=torch.float64),
    )
    alone = [
        model(features[b : b + 1], ids[b : b + 1, : int((ids[b] != PAD).sum())])
        for b in range(3)
    ]
    # each caption as if it were the only one, with no padding at all
    for b, single in enumerate(alone):
        n = single.logits.shape[1]
        torch.testing.assert_close(
            output.logits[b, :n], single.logits[0], rtol=1e-10, atol=1e-10
        )
        torch.testing.assert_close(
            output.attention[b, :n], single.attention[0], rtol=1e-10, atol=1e-10
        )


def test_additive_attention_matches_its_formula():
    torch.manual_seed(0)
    attention = AdditiveAttention(4, 5, 3).double()
    regions, query = (
        torch.randn(2, 7, 4, dtype=torch.float64),
        torch.randn(2, 5, dtype=torch.float64),
    )
    context, alpha = attention(regions, attention.project_regions(regions), query)
    for b in range(2):
        scores = torch.stack(
            [
                attention.score.weight[0]
                @ torch.tanh(
                    attention.region_proj(regions[b, i])
                    + attention.query_proj(query[b])
                )
                + attention.score.bias[0]
                for i in range(7)
            ]
        )
        weights = scores.exp() / scores.exp().sum()
        torch.testing.assert_close(alpha[b], weights)
        torch.testing.assert_close(context[b], (weights[:, None] * regions[b]).sum(0))


def test_causal_mask_blocks_exactly_the_future():
    mask = causal_mask(4)
    assert mask.tolist() == [[j > i for j in range(4)] for i in range(4)]


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_beam_size_one_equals_greedy(kind):
    model, features = _model(kind, seed=3), _features(5, seed=4)
    greedy = greedy_decode(
        model.step, model.init_state(features), 5, BOS, EOS, max_len=9, pad_id=PAD
    )
    beam = beam_search(
        model.step,
        model.init_state(features),
        5,
        BOS,
        EOS,
        beam_size=1,
        max_len=9,
        pad_id=PAD,
    )
    assert torch.equal(greedy.tokens, beam.tokens)
    assert torch.equal(greedy.lengths, beam.lengths)
    torch.testing.assert_close(greedy.scores, beam.scores)
    torch.testing.assert_close(greedy.attention, beam.attention)
    assert torch.equal(
        model.generate(features, beam_size=1, max_len=9).tokens, greedy.tokens
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@torch.no_grad()
def test_batched_beam_equals_the_reference_search(kind, length_penalty):
    model, features = _model(kind, seed=5), _features(4, seed=6)
    args = dict(
        batch_size=4,
        bos_id=BOS,
        eos_id=EOS,
        beam_size=3,
        max_len=8,
        length_penalty=length_penalty,
        pad_id=PAD,
        return_all=True,
    )
    batched = beam_search(model.step, model.init_state(features), **args)
    reference = beam_search_reference(model.step, model.init_state(features), **args)
    assert torch.equal(batched.tokens, reference.tokens)
    assert torch.equal(batched.lengths, reference.lengths)
    torch.testing.assert_close(batched.scores, reference.scores)
    torch.testing.assert_close(batched.attention, reference.attention)
    assert batched.attention.shape[-1] == GRID * GRID


@pytest.mark.parametrize("kind", KINDS)
@torch.no_grad()
def test_beam_search_scores_are_the_models_log_likelihood(kind):
    model, features = _model(kind, seed=7), _features(2, seed=8)
    result = model.generate(features, beam_size=3, max_len=8)
    ids = torch.full((2, result.tokens.shape[1] + 1), PAD)
    ids[:, 0] = BOS
    ids[:, 1:] = result.tokens
    log_probs = model(features, ids).logits.log_softmax(-1)
    for b in range(2):
        n = int(result.lengths[b])
        expected = sum(log_probs[b, t, ids[b, t + 1]].item() for t in range(n))
        assert result.scores[b].item() == pytest.approx(expected, rel=1e-9)


def test_captioner_on_images_with_a_frozen_encoder():
    torch.manual_seed(0)
    config = _config(
        "sat",
        image_encoder="small_cnn",
        image_kwargs={"widths": [4, 8], "out_dim": 8},
        feature_dim=None,
        freeze_encoder=True,
    )
    model = ShowAttendTell(config).train()
    assert not model.encoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    images = torch.rand(2, 3, 32, 32)
    output = model(images, _padded_ids()[:2])
    # a 32 px image halved twice: 8 x 8 regions
    assert output.attention.shape == (
        2,
        5,
        64,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_captioner_with_an_encoder_reads_its_own_regions_like_the_images(kind):
    torch.manual_seed(0)
    config = _config(
        kind,
        image_encoder="small_cnn",
        image_kwargs={"widths": [4, 8], "out_dim": 8},
        feature_dim=None,
        freeze_encoder=True,
        max_regions=64,
    )
    model = build_captioner(config).double().eval()
    images, ids = torch.rand(2, 3, 32, 32, dtype=torch.float64), _padded_ids()[:2]
    regions = model.regions(images)
    assert regions.shape == (2, 64, 8)
    from_images, from_regions = model(images, ids), model(regions, ids)
    torch.testing.assert_close(from_regions.logits, from_images.logits, rtol=0, atol=0)
    torch.testing.assert_close(
        from_regions.attention, from_images.attention, rtol=0, atol=0
    )
    with pytest.raises(
        ValueError,
        match=r"images \[B, 3, H, W\] or their regions \[B, N, 8\], got \(2, 64, 7\)",
    ):
        model(regions[..., :7], ids)


def test_a_transformer_captioner_needs_a_decoder_block():
    # With num_layers=0 the model used to build and train on the words alone (no block
    # attends to the image), then generate() failed on the missing attention map.
    with pytest.raises(ValueError, match="num_layers=0 must be >= 1"):
        TransformerCaptioner(_config("transformer", num_layers=0))


def test_config_round_trip_and_errors():
    config = _config("transformer")
    assert CaptionerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown captioner config keys"):
        CaptionerConfig.from_dict({**config.to_dict(), "hiden_dim": 3})
    with pytest.raises(ValueError, match="not a captioner"):
        build_captioner(_config("lstm"))
    with pytest.raises(ValueError, match="vocab_size"):
        build_captioner(_config("sat", vocab_size=3))
    with pytest.raises(ValueError, match="feature_dim"):
        build_captioner(_config("sat", feature_dim=None))
    with pytest.raises(ValueError, match="divisible"):
        TransformerCaptioner(_config("transformer", hidden_dim=15))
    with pytest.raises(ValueError, match="precomputed features"):
        _model("sat")(
            torch.randn(2, FEATURES + 1, 3, 3, dtype=torch.float64), _padded_ids()[:2]
        )
    with pytest.raises(ValueError, match="max_len"):
        _model("transformer").step(
            torch.full((1, 17), BOS), _model("transformer").init_state(_features(1))
        )


@pytest.mark.parametrize("kind", KINDS)
def test_several_captions_per_image_equal_repeating_the_image(kind):
    # Captions grouped by image read the regions of image j // k: the same as feeding
    # each image k times.
    model, features = _model(kind), _features(batch=2)
    # 6 captions, 3 per image
    ids = torch.cat([_padded_ids(), _padded_ids()[[2, 0, 1]]])
    shared = model(features, ids)
    repeated = model(features.repeat_interleave(3, dim=0), ids)
    assert torch.allclose(shared.logits, repeated.logits, atol=1e-12)
    assert torch.allclose(shared.attention, repeated.attention, atol=1e-12)
    # image 0 and image 1 differ
    assert shared.logits[0].sub(shared.logits[3]).abs().max() > 0
    with pytest.raises(ValueError, match="same number of captions"):
        model(features, ids[:5])


def test_sat_without_region_positions_ignores_region_order_and_with_them_does_not():
    # Soft attention and the mean-region initial state are sums over regions, so a plain
    # SAT cannot tell where a region was; the learnt position embedding makes the order
    # matter.
    ids = _padded_ids()
    features = _features()
    order = torch.randperm(GRID * GRID, generator=torch.Generator().manual_seed(3))
    # [B, N, C] regions in another order
    shuffled = features.flatten(2)[:, :, order].transpose(1, 2)
    plain, placed = _model("sat"), _model("sat", region_positions=True)
    torch.testing.assert_close(plain(shuffled, ids).logits, plain(features, ids).logits)
    assert not torch.allclose(
        placed(shuffled, ids).logits, placed(features, ids).logits
    )
    assert placed.region_pos.shape == (1, 16, FEATURES) and plain.region_pos is None
    with pytest.raises(ValueError, match="max_regions=4"):
        _model("sat", region_positions=True, max_regions=4)(features, ids)

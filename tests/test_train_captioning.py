"""Captioning experiments: config round trips, a short ShapesWorld run, checkpoints, the
Flickr8k feature-cache path end to end on the generated fixture, and the
``crossalign caption`` command."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from flickr8k_fixtures import make_spec, write_karpathy

from crossalign.cli import main
from crossalign.data.build import (
    build_caption_dataset,
    build_vocabulary,
)
from crossalign.data.collate import batch_inputs
from crossalign.data.encode import encode_dataset
from crossalign.data.feature_cache import (
    cache_flickr8k_features,
    feature_encoder_id,
    load_feature_cache,
)
from crossalign.data.flickr8k import Flickr8k
from crossalign.evaluation import (
    evaluate_captioner,
    generate_captions,
)
from crossalign.metrics.captioning import caption_metrics, tokenize_caption
from crossalign.metrics.semantic import semantic_accuracy
from crossalign.models.captioners import ShowAttendTell
from crossalign.models.image_encoders import build_image_encoder
from crossalign.train.captioning import (
    CaptionExperimentConfig,
    _step_captions,
    build_captioner_for,
    default_caption_config_path,
    load_caption_config,
    load_captioner,
    save_caption_config,
    train_captioner,
)
from crossalign.train.checkpoint import CONFIG_FILE, resolve_checkpoint
from crossalign.utils import seed_everything

TINY = {
    "seed": 1,
    "data": {"name": "shapes", "image_size": 32, "train_size": 128, "test_size": 12},
    "model": {
        "kind": "sat",
        "image_kwargs": {"widths": [8, 16], "out_dim": 8},
        "embed_dim": 16,
        "hidden_dim": 32,
        "attention_dim": 16,
        "dropout": 0.0,
    },
    "train": {
        "steps": 40,
        "batch_size": 32,
        "lr": 0.01,
        "warmup_steps": 2,
        "progress": False,
        "device": "cpu",
    },
    "eval": {"beam_size": 2},
}


def test_default_config_round_trips_through_yaml_and_json(tmp_path):
    config = load_caption_config(default_caption_config_path())
    assert (
        config.data.name == "shapes"
        and config.model.kind == "sat"
        and config.eval.beam_size == 3
    )
    save_caption_config(config, tmp_path / "copy.yaml")
    assert load_caption_config(tmp_path / "copy.yaml") == config
    (tmp_path / "copy.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    assert load_caption_config(tmp_path / "copy.json") == config
    changed = config.override(
        ["train.steps=7", "model.kind=transformer", "eval.beam_size=5"]
    )
    assert (changed.train.steps, changed.model.kind, changed.eval.beam_size) == (
        7,
        "transformer",
        5,
    )


def test_config_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"hiden_dim": 3}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml.*hiden_dim"):
        load_caption_config(bad)
    bad.write_text(yaml.safe_dump({"train": {"steps": "many"}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.steps must be of type int"):
        load_caption_config(bad)
    with pytest.raises(ValueError, match="section must be one of"):
        CaptionExperimentConfig().override(["optimizer.lr=1"])
    with pytest.raises(FileNotFoundError):
        load_caption_config(tmp_path / "missing.yaml")


def test_data_max_len_is_the_one_caption_length(tmp_path):
    """``data.max_len`` cuts the training captions, sizes the Transformer's position
    table and bounds decoding (``decode_len``, one less: ``<bos>`` is not written);
    the model keys an experiment derives are refused with where they come from, and
    left out of a saved config."""
    config = CaptionExperimentConfig.from_dict(TINY).override(
        ["data.max_len=9", "model.kind=transformer"]
    )
    assert config.data.decode_len == 8
    assert "max_len" not in config.to_dict()["model"]
    assert "max_len" not in config.to_dict()["eval"]
    train_set = build_caption_dataset(config, "train")
    tokenizer = build_vocabulary(train_set)
    model = build_captioner_for(config, tokenizer, train_set)
    assert model.word_pos.shape[1] == 9 and model.config.max_len == 9
    captions = model.generate(
        batch_inputs([train_set[0]]), beam_size=1, max_len=config.data.decode_len
    )
    assert captions.tokens.shape[1] <= 8
    for key, source in [("max_len", "data.max_len"), ("vocab_size", "vocabulary")]:
        with pytest.raises(ValueError, match=rf"model\.{key} .*{source}"):
            CaptionExperimentConfig.from_dict({"model": {key: 12}})
    with pytest.raises(ValueError, match=r"eval.*max_len"):
        CaptionExperimentConfig.from_dict({"eval": {"max_len": 12}})
    save_caption_config(config, tmp_path / "saved.yaml")
    assert load_caption_config(tmp_path / "saved.yaml") == config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = CaptionExperimentConfig.from_dict(TINY)
    config.train.output_dir = str(tmp_path_factory.mktemp("caption_run"))
    return train_captioner(config)


def test_training_lowers_the_loss_well_below_chance(tiny_run):
    losses = [entry["loss"] for entry in tiny_run.history]
    chance = torch.log(torch.tensor(float(len(tiny_run.tokenizer)))).item()
    assert len(losses) == 40
    assert losses[0] > 0.8 * chance
    assert sum(losses[-5:]) / 5 < 0.75 * chance


def test_a_stale_gradient_on_the_frozen_encoder_leaves_clipped_steps_alone(monkeypatch):
    """The captioner clips the norm of the gradients it trains. A gradient left on the
    frozen, pretrained encoder (here planted on purpose, large) must not shrink the
    decoder's steps: both runs give the same losses and weights."""
    import crossalign.train.captioning as captioning

    config = CaptionExperimentConfig.from_dict(TINY).override(
        [
            "train.steps=6",
            "train.encoder_pretrain_steps=3",
            "model.freeze_encoder=true",
            "train.clip_grad_norm=0.5",
        ]
    )
    clean = train_captioner(config)
    pretrain = captioning.pretrain_on_scene_labels

    def pretrain_and_leave_gradients(encoder, *args, **kwargs):
        result = pretrain(encoder, *args, **kwargs)
        for parameter in encoder.parameters():
            parameter.grad = torch.full_like(parameter, 1e3)
        return result

    monkeypatch.setattr(
        captioning, "pretrain_on_scene_labels", pretrain_and_leave_gradients
    )
    stale = train_captioner(config)
    assert stale.history == clean.history
    for a, b in zip(stale.model.parameters(), clean.model.parameters()):
        assert torch.equal(a, b)


def test_several_captions_per_image_train_on_each_images_first_captions(monkeypatch):
    # The step's captions are the first k of every image, grouped by image, and the loss
    # sees k per image.
    config = CaptionExperimentConfig.from_dict(TINY).override(
        ["train.steps=2", "train.batch_size=4", "train.captions_per_image=3"]
    )
    seen: list[tuple[int, int]] = []
    original = ShowAttendTell.loss

    def recording_loss(self, inputs, input_ids):
        seen.append((inputs.shape[0], input_ids.shape[0]))
        return original(self, inputs, input_ids)

    monkeypatch.setattr(ShowAttendTell, "loss", recording_loss)
    train_captioner(config)
    assert seen == [(4, 12), (4, 12)]
    train_set = build_caption_dataset(config, "train")
    items = [train_set[i] for i in (5, 9)]
    assert (
        _step_captions(None, items, 3)
        == items[0]["captions"][:3] + items[1]["captions"][:3]
    )
    with pytest.raises(ValueError, match="captions_per_image=6"):
        _step_captions(None, items, 6)
    with pytest.raises(ValueError, match="captions_per_image"):
        train_captioner(config.override(["train.captions_per_image=0"]))


def test_encoder_pretraining_runs_before_captioning_and_a_frozen_encoder_then_stays_fixed(  # noqa: E501
    monkeypatch,
):
    # The encoder at the first captioning step is compared with the one train_captioner
    # builds (same seed, same construction): pretraining must have moved it, and a run
    # without pretraining must not (which shows the comparison rebuilds the very same
    # initial weights).
    # the encoder's weights at every captioning step
    steps: list[dict[str, torch.Tensor]] = []
    original = ShowAttendTell.loss

    def recording_loss(self, inputs, input_ids):
        steps.append({k: v.clone() for k, v in self.encoder.state_dict().items()})
        return original(self, inputs, input_ids)

    monkeypatch.setattr(ShowAttendTell, "loss", recording_loss)
    base = CaptionExperimentConfig.from_dict(TINY).override(
        ["train.steps=3", "model.freeze_encoder=true"]
    )
    results = [
        train_captioner(base.override([f"train.encoder_pretrain_steps={n}"]))
        for n in (0, 4)
    ]
    snapshots = [steps[0], steps[3]]  # the first captioning step of each run
    seed_everything(base.seed)
    train_set = build_caption_dataset(base, "train")
    initial = build_captioner_for(
        base, build_vocabulary(train_set), train_set
    ).encoder.state_dict()
    floats = [k for k, v in initial.items() if v.is_floating_point()]
    # no pretraining: untouched
    assert all(torch.equal(snapshots[0][k], initial[k]) for k in floats)
    # pretrained before captioning
    assert not all(torch.equal(snapshots[1][k], initial[k]) for k in floats)
    run = results[1]
    assert (
        len(run.pretrain_history) == 4
        and run.pretrain_seconds > 0
        and len(run.history) == 3
    )
    assert results[0].pretrain_history == [] and results[0].pretrain_seconds == 0.0
    # then frozen
    assert all(
        torch.equal(v, run.model.encoder.state_dict()[k])
        for k, v in snapshots[1].items()
    )
    assert not any(p.requires_grad for p in run.model.encoder.parameters())
    with pytest.raises(ValueError, match="encoder_pretrain_steps=-1"):
        train_captioner(base.override(["train.encoder_pretrain_steps=-1"]))
    with pytest.raises(ValueError, match="train.encoder_pretrain_labels"):
        train_captioner(base.override(["train.encoder_pretrain_labels=[shapes]"]))


def test_a_frozen_encoder_encodes_the_training_images_once_and_trains_the_same(
    monkeypatch,
):
    # the dimensions of what the captioner reads at each step
    inputs_seen: list[int] = []
    original = ShowAttendTell.loss

    def recording_loss(self, inputs, input_ids):
        inputs_seen.append(inputs.dim())
        return original(self, inputs, input_ids)

    monkeypatch.setattr(ShowAttendTell, "loss", recording_loss)
    base = CaptionExperimentConfig.from_dict(TINY).override(
        ["train.steps=6", "model.freeze_encoder=true", "train.encoder_pretrain_steps=3"]
    )
    cached = train_captioner(base)
    assert inputs_seen == [3] * 6  # regions [B, N, C], not images
    images = train_captioner(base.override(["train.cache_frozen_regions=false"]))
    assert inputs_seen[6:] == [4] * 6
    torch.testing.assert_close(
        torch.tensor([h["loss"] for h in cached.history]),
        torch.tensor([h["loss"] for h in images.history]),
        rtol=1e-5,
        atol=1e-6,
    )
    unfrozen = train_captioner(
        base.override(["model.freeze_encoder=false", "train.encoder_pretrain_steps=0"])
    )
    # a trained encoder is never cached
    assert inputs_seen[12:] == [4] * 6 and len(unfrozen.history) == 6


def test_frozen_regions_are_encoded_per_image_whatever_the_batch():
    """What train.cache_frozen_regions trains on: encode_dataset over the captioner's
    regions, in eval mode, gives each image the regions it gets alone, and leaves the
    captioner training with its frozen encoder in eval mode."""
    config = CaptionExperimentConfig.from_dict(TINY).override(
        ["model.freeze_encoder=true"]
    )
    dataset = build_caption_dataset(config, "test")
    model = build_captioner_for(config, build_vocabulary(dataset), dataset).train()
    regions = encode_dataset(
        model.regions, dataset, batch_size=5, modules=[model], dtype=None
    )
    assert (
        regions.shape == (12, 64, 16) and model.training and not model.encoder.training
    )
    torch.testing.assert_close(
        regions, model.regions(dataset.render(range(12))), rtol=1e-5, atol=1e-6
    )


def test_a_checkpoint_written_with_derived_model_keys_still_loads(tiny_run, tmp_path):
    """Checkpoints written before the derived model keys left the experiment config
    (vocab_size, ids, max_len) load, with the model built from the saved captioner."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(resolve_checkpoint(tiny_run.checkpoint), old)
    saved = json.loads((old / CONFIG_FILE).read_text(encoding="utf-8"))
    saved["experiment"]["model"].update(saved["captioner"])
    (old / CONFIG_FILE).write_text(json.dumps(saved), encoding="utf-8")
    model, _, config = load_captioner(old)
    expected, _, expected_config = load_captioner(tiny_run.checkpoint)
    assert config == expected_config
    for a, b in zip(model.state_dict().values(), expected.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_rebuilds_the_same_captioner(tiny_run):
    model, tokenizer, config = load_captioner(tiny_run.checkpoint)
    assert config == tiny_run.config and tokenizer == tiny_run.tokenizer
    images = build_caption_dataset(config, "test").render(range(6))
    for beam_size in (1, 3):
        expected = tiny_run.model.generate(images, beam_size=beam_size, max_len=12)
        got = model.generate(images, beam_size=beam_size, max_len=12)
        assert torch.equal(expected.tokens, got.tokens)


def test_evaluation_scores_the_decoded_captions(tiny_run):
    test = build_caption_dataset(tiny_run.config, "test")
    evaluation = evaluate_captioner(
        tiny_run.model, test, tiny_run.tokenizer, beam_size=2, max_len=12, batch_size=5
    )
    decoded = tiny_run.tokenizer.decode_batch(
        tiny_run.model.generate(test.render(range(12)), beam_size=2, max_len=12).tokens
    )
    assert evaluation.captions == decoded
    assert evaluation.references == [test.captions(i) for i in range(12)]
    expected = caption_metrics(
        [" ".join(tokenize_caption(c)) for c in decoded],
        [[" ".join(tokenize_caption(r)) for r in test.captions(i)] for i in range(12)],
    )
    assert {k: evaluation.metrics[k] for k in expected} == expected
    assert evaluation.metrics["semantic"] == semantic_accuracy(
        decoded, test.scenes(range(12))
    )


def test_ground_truth_captions_score_perfectly_as_a_check_of_the_metrics():
    test = build_caption_dataset(CaptionExperimentConfig.from_dict(TINY), "test")
    assert (
        semantic_accuracy(
            [test.captions(i)[0] for i in range(12)], test.scenes(range(12))
        )
        == 1.0
    )


@pytest.fixture(scope="module")
def flickr_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("flickr8k")
    write_karpathy(root, make_spec(n_train=12, n_val=2, n_test=4))
    return root


def test_flickr8k_feature_cache_holds_the_frozen_resnet_grid(flickr_root, tmp_path):
    paths = cache_flickr8k_features(
        flickr_root,
        tmp_path,
        splits=("test",),
        pretrained=False,
        image_size=64,
        seed=5,
        progress=False,
        device="cpu",
    )
    features, metadata = load_feature_cache(
        paths["test"], expected_encoder_id=feature_encoder_id("resnet50", False, 64, 5)
    )
    assert features.dtype == torch.float16 and tuple(features.shape) == (4, 2048, 2, 2)
    seed_everything(5)
    encoder = build_image_encoder("resnet50", pretrained=False, trainable=False).eval()
    images = torch.stack(
        [
            item["image"]
            for item in Flickr8k(flickr_root, "test", image_size=64, progress=False)
        ]
    )
    with torch.no_grad():
        direct = encoder.forward_grid(images)
    torch.testing.assert_close(features.float(), direct, rtol=2e-3, atol=2e-3)
    assert (
        metadata["image_ids"] == Flickr8k(flickr_root, "test", progress=False).image_ids
    )
    stamp = paths["test"].stat().st_mtime_ns
    cache_flickr8k_features(
        flickr_root,
        tmp_path,
        splits=("test",),
        pretrained=False,
        image_size=64,
        seed=5,
        progress=False,
    )
    assert paths["test"].stat().st_mtime_ns == stamp  # reused, not recomputed


def test_flickr8k_training_from_the_cache_end_to_end(flickr_root, tmp_path):
    config = CaptionExperimentConfig.from_dict(
        {
            "seed": 5,
            "data": {
                "name": "flickr8k",
                "root": str(flickr_root),
                "image_size": 64,
                "feature_cache": str(tmp_path / "cache"),
                "pretrained_encoder": False,
            },
            "model": {
                "kind": "transformer",
                "image_encoder": None,
                "hidden_dim": 16,
                "num_heads": 2,
                "ff_dim": 32,
                "num_layers": 1,
                "dropout": 0.0,
            },
            "train": {
                "steps": 15,
                "batch_size": 4,
                "lr": 0.01,
                "warmup_steps": 1,
                "progress": False,
                "device": "cpu",
                "output_dir": str(tmp_path / "run"),
            },
            "eval": {"beam_size": 2},
        }
    )
    result = train_captioner(config)
    assert result.model.encoder is None and result.model.feature_dim == 2048
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    test = build_caption_dataset(config, "test")
    assert len(test) == 4 and sorted(
        p.name for p in (tmp_path / "cache").iterdir() if p.suffix == ".json"
    ) == [
        f"flickr8k_{split}_{feature_encoder_id('resnet50', False, 64, 5)}.json"
        for split in ("test", "train")
    ]
    evaluation = evaluate_captioner(
        result.model, test, result.tokenizer, beam_size=2, max_len=12
    )
    assert len(evaluation.captions) == 4 and evaluation.references == test.captions
    assert (
        0.0 <= evaluation.metrics["BLEU-4"] <= 1.0
        and "semantic" not in evaluation.metrics
    )
    model, tokenizer, _ = load_captioner(result.checkpoint)
    captions, _ = generate_captions(model, test, tokenizer, beam_size=2, max_len=12)
    assert captions == evaluation.captions


def test_cli_caption_train_and_evaluate(tmp_path, capsys):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(
        yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 3}}),
        encoding="utf-8",
    )
    assert (
        main(
            [
                "caption",
                "train",
                "--config",
                str(config_path),
                "--output-dir",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "trained to step 3" in out and "BLEU-4" in out and "semantic" in out
    metrics_path = tmp_path / "metrics.json"
    assert (
        main(
            [
                "caption",
                "evaluate",
                str(tmp_path / "run"),
                "--size",
                "6",
                "--beam-size",
                "1",
                "--show",
                "2",
                "--json",
                str(metrics_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        out.count("(reference: ") == 2 and "test split (6 images, beam size 1)" in out
    )
    model, tokenizer, config = load_captioner(tmp_path / "run")
    test = build_caption_dataset(config, "test", size=6)
    expected = evaluate_captioner(
        model, test, tokenizer, beam_size=1, max_len=config.data.decode_len
    )
    assert json.loads(metrics_path.read_text()) == pytest.approx(expected.metrics)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["caption", "evaluate", "no_such_run"], "not a crossalign checkpoint"),
        (["caption", "train", "--config", "missing.yaml"], "does not exist"),
        (["caption", "train", "--set", "train.steps"], "section.key=value"),
    ],
)
def test_cli_caption_refuses_bad_input_with_one_line(
    argv, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err

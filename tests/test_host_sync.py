"""No training loop reads a value back from the device between log intervals.

Each loop of the package runs ``n`` and ``2 n`` steps with ``log_every`` equal to the
step count, and the values read back to the host are counted (see
``tests/host_reads.py``). What the loop reads once (building data, a final
evaluation, the one read-back of the history) is the same for both runs; a read per
step would make the longer run read ``n`` more. So the counts must be equal, and
small.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from host_reads import count_host_reads
from test_experiments import TINY as COMPARE_TINY
from test_fusion_tasks import TINY as FUSION_TINY
from test_train import tiny_config
from test_train_captioning import TINY as CAPTION_TINY

STEPS = 4


def _dual_encoder(steps, tmp_path):
    from crossalign.train.trainer import train

    config = tiny_config(tmp_path, steps=steps, batch_size=8, grad_accum=2)
    config.train.log_every = steps
    return train(config).history


def _captioner(steps, tmp_path):
    from crossalign.train.captioning import CaptionExperimentConfig, train_captioner

    config = CaptionExperimentConfig.from_dict(CAPTION_TINY).override(
        [f"train.steps={steps}", f"train.log_every={steps}"]
    )
    return train_captioner(config).history


def _sequences():
    generator = torch.Generator().manual_seed(1)
    return [
        [1, *torch.randint(3, 15, (n,), generator=generator).tolist(), 2]
        for n in range(2, 12)
    ]


def _language_model(steps, tmp_path):
    from crossalign.models.gpt import GPT, GPTConfig
    from crossalign.train.language_model import train_language_model

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=15, block_size=16, n_layer=1, n_head=2, n_embd=16))
    sequences = _sequences()
    return train_language_model(
        gpt, sequences, steps=steps, batch_size=4, log_every=steps
    ).losses


def _prefix(steps, tmp_path):
    from crossalign.data.vocab import Vocabulary
    from crossalign.models.gpt import GPT, GPTConfig
    from crossalign.models.prefix_lm import PrefixCaptioner
    from crossalign.models.projector import MLPProjector
    from crossalign.train.prefix import train_prefix

    texts = ["red circle left", "blue square right", "red square top"]
    vocab = Vocabulary.build(texts)
    torch.manual_seed(0)
    lm = GPT(
        GPTConfig(vocab_size=len(vocab), block_size=16, n_layer=1, n_head=2, n_embd=8)
    )
    captioner = PrefixCaptioner(
        lm,
        MLPProjector(6, 8, prefix_len=2),
        bos_id=vocab.bos_id,
        eos_id=vocab.eos_id,
        pad_id=vocab.pad_id,
    )
    features = torch.randn(12, 6)
    captions = [[texts[i % 3]] for i in range(12)]
    result = train_prefix(
        captioner,
        features,
        captions,
        vocab,
        steps=steps,
        batch_size=4,
        warmup_steps=1,
        log_every=steps,
        progress=False,
    )
    return result.history


def _encoder_pretraining(steps, tmp_path):
    from crossalign.data.shapes import ShapesWorld
    from crossalign.models.image_encoders import SmallCNN
    from crossalign.train.encoder_pretraining import pretrain_on_scene_labels

    world = ShapesWorld("train", size=32, image_size=32, seed=0)
    torch.manual_seed(0)
    encoder = SmallCNN(widths=(8, 16), downsample="maxpool")
    return pretrain_on_scene_labels(
        encoder, world, steps=steps, batch_size=8, warmup_steps=1, log_every=steps
    ).history


def _comparison(steps, tmp_path):
    from crossalign.experiments.compare import prepare_data, train_method

    config = dataclasses.replace(COMPARE_TINY, steps=steps, log_every=steps)
    return train_method("hard_negatives", config, prepare_data(config)).losses


def _fusion(steps, tmp_path):
    from crossalign.experiments.fusion_tasks import FusionTaskConfig, train_fusion

    config = FusionTaskConfig(
        **{**FUSION_TINY, "pretrain_steps": steps, "steps": steps, "log_every": steps}
    )
    return train_fusion("gated", "matching", config).losses


LOOPS = {
    "dual encoder": _dual_encoder,
    "captioner": _captioner,
    "language model": _language_model,
    "prefix": _prefix,
    "encoder pretraining": _encoder_pretraining,
    "comparison runner": _comparison,
    "fusion": _fusion,
}


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_loop_reads_nothing_back_per_step(loop, tmp_path):
    counts = []
    for steps in (STEPS, 2 * STEPS):
        with count_host_reads() as reads:
            history = LOOPS[loop](steps, tmp_path / str(steps))
        assert len(history) >= steps  # every step was recorded all the same
        counts.append(reads)
    short, long = counts
    assert long.count == short.count, Counter(long.calls) - Counter(short.calls)

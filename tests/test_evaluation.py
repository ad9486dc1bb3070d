"""Embedding data sets and scoring retrieval, checked with hand-made models whose
answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossalign.data.shapes import ShapesWorld, caption_words
from crossalign.data.vocab import Vocabulary
from crossalign.evaluation import embed_images, embed_texts, evaluate_retrieval
from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig

N_IMAGES = 12


class TextIdTokenizer:
    """Encodes each known text as one token, its position in ``texts``; records every
    call."""

    def __init__(self, texts: list[str]):
        self.ids = {text: i for i, text in enumerate(texts)}
        self.batch_sizes: list[int] = []
        self.max_lens: list[int | None] = []

    def encode_batch(self, texts, max_len=None):
        self.batch_sizes.append(len(texts))
        self.max_lens.append(max_len)
        ids = torch.tensor([[self.ids[text]] for text in texts])
        return ids, torch.ones_like(ids, dtype=torch.bool)


class OracleModel:
    """Embeds image ``i`` as the one-hot ``e_i`` and each caption as
    ``e_{target of its image}``.

    Images are recognised by nearest neighbour among the reference renders, so the
    oracle does not depend on the order in which it is shown them. With the identity
    target it is a perfect retriever.
    """

    def __init__(self, dataset: ShapesWorld, target=lambda image: image):
        self.references = dataset.render(np.arange(len(dataset))).flatten(1)
        _, owner = dataset.caption_image_index()
        self.text_target = torch.tensor([target(int(image)) for image in owner])
        self.dim = len(dataset)
        self.training = True
        self.modes: list[bool] = []

    def eval(self):
        self.training = False
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        index = torch.cdist(images.flatten(1), self.references).argmin(dim=1)
        return F.one_hot(index, self.dim).double()

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        self.modes.append(self.training)
        return F.one_hot(self.text_target[input_ids[:, 0]], self.dim).double()


class ConstantModel(OracleModel):
    """Maps every image and every caption to the same unit vector: all scores tie."""

    def encode_image(self, images):
        return torch.ones(len(images), 4) / 2

    def encode_text(self, input_ids, attention_mask):
        return torch.ones(len(input_ids), 4) / 2


@pytest.fixture(scope="module")
def world():
    dataset = ShapesWorld("test", size=N_IMAGES, image_size=32, seed=5)
    texts, owner = dataset.caption_image_index()
    owners_of = {}
    for text, image in zip(texts, owner.tolist()):
        owners_of.setdefault(text, set()).add(image)
    assert all(len(images) == 1 for images in owners_of.values()), (
        "the oracle needs captions unique to one image"
    )
    return dataset, texts, owner


def test_oracle_gets_perfect_recall_both_ways(world):
    dataset, texts, _ = world
    metrics = evaluate_retrieval(
        OracleModel(dataset), dataset, TextIdTokenizer(texts), batch_size=5
    )
    for direction in ("i2t", "t2i"):
        assert metrics[f"{direction}_r1"] == metrics[f"{direction}_r10"] == 1.0
        assert (
            metrics[f"{direction}_median_rank"]
            == metrics[f"{direction}_mean_rank"]
            == 1.0
        )


def test_partly_wrong_oracle_gives_the_hand_computed_metrics(world):
    """Captions of images 0, 3, 6, 9 point at the next image; everything else is right.

    Text to image: the 40 right captions rank 1; a wrong caption scores 0 with every
    image but the next one, and ties count against it, so it ranks 12. Image to text:
    images 2, 5, 8, 11 rank 1; images 1, 4, 7, 10 tie with the 5 captions of the image
    before them (rank 6); images 0, 3, 6, 9 score 0 with all 60 captions (rank 56).
    """
    dataset, texts, _ = world
    oracle = OracleModel(
        dataset, target=lambda image: image + 1 if image % 3 == 0 else image
    )
    metrics = evaluate_retrieval(oracle, dataset, TextIdTokenizer(texts), batch_size=5)
    expected = {
        "t2i_r1": 40 / 60,
        "t2i_r5": 40 / 60,
        "t2i_r10": 40 / 60,
        "t2i_median_rank": 1.0,
        "t2i_mean_rank": (40 * 1 + 20 * 12) / 60,
        "i2t_r1": 4 / 12,
        "i2t_r5": 4 / 12,
        "i2t_r10": 8 / 12,
        "i2t_median_rank": 6.0,
        "i2t_mean_rank": (4 * 1 + 4 * 6 + 4 * 56) / 12,
    }
    assert metrics == pytest.approx(expected)


def test_constant_model_gets_the_worst_ranks(world):
    dataset, texts, _ = world
    metrics = evaluate_retrieval(
        ConstantModel(dataset), dataset, TextIdTokenizer(texts)
    )
    worst_i2t = 5 * N_IMAGES - 5 + 1
    assert metrics == pytest.approx(
        {
            "i2t_r1": 0.0,
            "i2t_r5": 0.0,
            "i2t_r10": 0.0,
            "i2t_median_rank": worst_i2t,
            "i2t_mean_rank": worst_i2t,
            "t2i_r1": 0.0,
            "t2i_r5": 0.0,
            "t2i_r10": 0.0,
            "t2i_median_rank": N_IMAGES,
            "t2i_mean_rank": N_IMAGES,
        }
    )


@pytest.mark.parametrize("batch_size", [1, 5, 12, 256])
def test_embed_images_returns_rows_in_index_order_in_float32_eval_mode(
    world, batch_size
):
    dataset, _, _ = world
    oracle = OracleModel(dataset)
    embeddings = embed_images(oracle, dataset, batch_size=batch_size)
    assert embeddings.dtype == torch.float32
    assert torch.equal(embeddings, torch.eye(N_IMAGES))
    assert oracle.modes and not any(oracle.modes)


@pytest.mark.parametrize("batch_size", [1, 7, 60, 512])
def test_embed_texts_is_independent_of_batch_size(world, batch_size):
    dataset, texts, owner = world
    oracle, tokenizer = OracleModel(dataset), TextIdTokenizer(texts)
    embeddings = embed_texts(oracle, texts, tokenizer, batch_size=batch_size, max_len=9)
    assert embeddings.dtype == torch.float32
    assert torch.equal(embeddings, F.one_hot(owner, N_IMAGES).float())
    full, rest = divmod(len(texts), batch_size)
    assert tokenizer.batch_sizes == [batch_size] * full + ([rest] if rest else [])
    assert set(tokenizer.max_lens) == {9}
    assert not any(oracle.modes)


def test_evaluate_retrieval_passes_max_len_to_the_tokenizer(world):
    dataset, texts, _ = world
    tokenizer = TextIdTokenizer(texts)
    evaluate_retrieval(OracleModel(dataset), dataset, tokenizer, max_len=17)
    assert tokenizer.max_lens and set(tokenizer.max_lens) == {17}


def test_real_dual_encoder_embeddings_do_not_depend_on_batching(world):
    """Captions of different lengths are padded differently per batch; the GRU must skip
    padding."""
    dataset, texts, _ = world
    vocab = Vocabulary.build(caption_words())
    torch.manual_seed(0)
    model = DualEncoder(
        DualEncoderConfig(
            image_kwargs={"widths": [4, 8], "out_dim": 8},
            text_kwargs={
                "vocab_size": len(vocab),
                "pad_id": vocab.pad_id,
                "embed_dim": 8,
                "hidden_dim": 8,
            },
            embed_dim=8,
        )
    )
    one_by_one = embed_texts(model, texts, vocab, batch_size=1)
    torch.testing.assert_close(
        embed_texts(model, texts, vocab, batch_size=7), one_by_one, rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        embed_images(model, dataset, batch_size=5),
        embed_images(model, dataset, batch_size=1),
        rtol=1e-5,
        atol=1e-6,
    )
    # embedding ran in eval mode (batch-independent) and gave the model its mode back
    assert model.training

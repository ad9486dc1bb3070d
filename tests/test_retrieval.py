"""Retrieval metrics against a sort-based brute force reference, hand-computed cases and
errors."""

from __future__ import annotations

import statistics

import pytest
import torch

from crossalign.metrics import (
    format_retrieval,
    ranks_image_to_text,
    ranks_text_to_image,
    retrieval_metrics,
)


def _sorted_position(scores: list[float], is_positive: list[bool]) -> int:
    """1-based position of the first positive when sorting by score, negatives first
    among equals."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], is_positive[j]))
    return next(position for position, j in enumerate(order, start=1) if is_positive[j])


def brute_force_ranks(
    image: torch.Tensor, text: torch.Tensor, owner: list[int]
) -> tuple[list[int], list[int]]:
    """Image-to-text and text-to-image ranks from a full score matrix built with Python
    loops."""
    images, texts = image.double().tolist(), text.double().tolist()
    scores = [[sum(a * b for a, b in zip(u, v)) for v in texts] for u in images]
    i2t = [
        _sorted_position(scores[i], [owner[j] == i for j in range(len(texts))])
        for i in range(len(images))
    ]
    t2i = [
        _sorted_position(
            [scores[i][j] for i in range(len(images))],
            [owner[j] == i for i in range(len(images))],
        )
        for j in range(len(texts))
    ]
    return i2t, t2i


def brute_force_metrics(
    i2t: list[int], t2i: list[int], ks=(1, 5, 10)
) -> dict[str, float]:
    """R@K, median and mean rank from rank lists, with the statistics module."""
    metrics: dict[str, float] = {}
    for prefix, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            metrics[f"{prefix}_r{k}"] = sum(r <= k for r in ranks) / len(ranks)
        metrics[f"{prefix}_median_rank"] = float(statistics.median(ranks))
        metrics[f"{prefix}_mean_rank"] = statistics.mean(ranks)
    return metrics


def random_captioning(n_img: int, seed: int, max_captions: int = 7) -> list[int]:
    """A shuffled caption-to-image map where image i has between 1 and max_captions
    captions."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, max_captions + 1, (n_img,), generator=gen)
    owner = torch.repeat_interleave(torch.arange(n_img), counts)
    return owner[torch.randperm(owner.numel(), generator=gen)].tolist()


def continuous_embeddings(
    n_img: int, n_txt: int, d: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, L2-normalised Gaussian embeddings (ties have probability zero)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(n_img, d, generator=gen), dim=1)
    text = torch.nn.functional.normalize(torch.randn(n_txt, d, generator=gen), dim=1)
    return image, text


def tied_embeddings(
    n_img: int, n_txt: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Small-integer embeddings (exact dot products, many equal scores) with duplicated
    rows."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(-1, 2, (n_img, 3), generator=gen).float()
    text = torch.randint(-1, 2, (n_txt, 3), generator=gen).float()
    image[1::4] = image[0]
    text[2::3] = text[0]
    return image, text


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 13, 1024])
def test_continuous_random_data_matches_brute_force(chunk_size: int) -> None:
    owner = random_captioning(13, seed=0)
    image, text = continuous_embeddings(13, len(owner), 16, seed=1)
    i2t, t2i = brute_force_ranks(image, text, owner)
    assert (
        ranks_image_to_text(image, text, torch.tensor(owner), chunk_size).tolist()
        == i2t
    )
    assert (
        ranks_text_to_image(image, text, torch.tensor(owner), chunk_size).tolist()
        == t2i
    )
    got = retrieval_metrics(image, text, torch.tensor(owner), chunk_size=chunk_size)
    assert got == pytest.approx(brute_force_metrics(i2t, t2i), rel=1e-12)
    # fmt: skip
    assert list(got) == [
        "i2t_r1",
        "i2t_r5",
        "i2t_r10",
        "i2t_median_rank",
        "i2t_mean_rank",
        "t2i_r1",
        "t2i_r5",
        "t2i_r10",
        "t2i_median_rank",
        "t2i_mean_rank",
    ]


@pytest.mark.parametrize(
    ("n_img", "seed", "chunk_size"), [(7, 2, 3), (20, 3, 6), (31, 4, 8), (31, 5, 1000)]
)
def test_exact_ties_match_brute_force(n_img: int, seed: int, chunk_size: int) -> None:
    owner = random_captioning(n_img, seed=seed)
    image, text = tied_embeddings(n_img, len(owner), seed=seed)
    i2t, t2i = brute_force_ranks(image, text, owner)
    assert ranks_image_to_text(image, text, owner, chunk_size).tolist() == i2t
    assert ranks_text_to_image(image, text, owner, chunk_size).tolist() == t2i
    got = retrieval_metrics(image, text, owner, ks=(1, 3, 10), chunk_size=chunk_size)
    assert got == pytest.approx(brute_force_metrics(i2t, t2i, ks=(1, 3, 10)), rel=1e-12)


def test_hand_computed_example_with_ties() -> None:
    """Three images, four captions (image 0 has two); every tie is spelled out below.

    Scores (rows: images, columns: captions c0..c3 owned by images 0, 0, 1, 2):
        I0: 2 0 1 0   best positive 2, no negative >= 2               -> rank 1
        I1: 0 1 1 3   positive 1; c1 (tie) and c3 are >= 1            -> rank 3
        I2: 2 1 2 3   positive 3, nothing >= 3                        -> rank 1
    Text to image, per column: c0 2 vs I2 tie -> 2; c1 0 vs 1, 1 -> 3; c2 1 vs I0 tie,
    I2 -> 3; c3 3 vs I1 tie -> 2.
    """
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
    owner = torch.tensor([0, 0, 1, 2])
    for chunk_size in (1, 2, 3):
        assert ranks_image_to_text(image, text, owner, chunk_size).tolist() == [1, 3, 1]
        assert ranks_text_to_image(image, text, owner, chunk_size).tolist() == [
            2,
            3,
            3,
            2,
        ]
    got = retrieval_metrics(image, text, owner, ks=(1, 2), chunk_size=2)
    assert got == pytest.approx(
        # fmt: skip
        {
            "i2t_r1": 2 / 3,
            "i2t_r2": 2 / 3,
            "i2t_median_rank": 1.0,
            "i2t_mean_rank": 5 / 3,
            "t2i_r1": 0.0,
            "t2i_r2": 0.5,
            "t2i_median_rank": 2.5,
            "t2i_mean_rank": 2.5,
        }
    )


def test_perfect_model_scores_perfectly() -> None:
    owner = random_captioning(6, seed=6)
    image = torch.eye(6)
    text = image[torch.tensor(owner)]
    got = retrieval_metrics(image, text, owner, chunk_size=4)
    for prefix in ("i2t", "t2i"):
        assert (
            got[f"{prefix}_r1"] == 1.0
            and got[f"{prefix}_median_rank"] == 1.0
            and got[f"{prefix}_mean_rank"] == 1.0
        )


def test_constant_embeddings_get_the_worst_rank_not_a_perfect_one() -> None:
    """A collapsed model (every embedding the same vector) must rank every positive
    last."""
    owner = random_captioning(5, seed=7)
    n_txt = len(owner)
    image = torch.full((5, 8), 0.25)
    text = torch.full((n_txt, 8), 0.25)
    captions_per_image = [owner.count(i) for i in range(5)]
    i2t = ranks_image_to_text(image, text, owner, chunk_size=2).tolist()
    assert i2t == [n_txt - count + 1 for count in captions_per_image]
    assert ranks_text_to_image(image, text, owner, chunk_size=3).tolist() == [5] * n_txt
    got = retrieval_metrics(image, text, owner, ks=(1,))
    assert got["i2t_r1"] == 0.0 and got["t2i_r1"] == 0.0
    assert got["t2i_median_rank"] == 5.0


def test_low_precision_inputs_are_ranked_in_float32() -> None:
    owner = random_captioning(9, seed=8)
    image, text = continuous_embeddings(9, len(owner), 8, seed=9)
    for dtype in (torch.float16, torch.bfloat16):
        low_image, low_text = image.to(dtype), text.to(dtype)
        expected = brute_force_ranks(low_image.float(), low_text.float(), owner)
        got = (
            ranks_image_to_text(low_image, low_text, owner, chunk_size=4).tolist(),
            ranks_text_to_image(low_image, low_text, owner, chunk_size=4).tolist(),
        )
        assert got == expected


def test_autocast_region_does_not_lower_the_score_precision() -> None:
    owner = random_captioning(40, seed=10)
    image, text = continuous_embeddings(40, len(owner), 64, seed=11)
    expected = (
        ranks_text_to_image(image, text, owner).tolist(),
        ranks_image_to_text(image, text, owner).tolist(),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = (
            ranks_text_to_image(image, text, owner).tolist(),
            ranks_image_to_text(image, text, owner).tolist(),
        )
    assert got == expected


def test_format_retrieval_table() -> None:
    # fmt: skip
    metrics = {
        "i2t_r1": 2 / 3,
        "i2t_r2": 2 / 3,
        "i2t_median_rank": 1.0,
        "i2t_mean_rank": 5 / 3,
        "t2i_r1": 0.0,
        "t2i_r2": 0.5,
        "t2i_median_rank": 2.5,
        "t2i_mean_rank": 2.5,
    }
    lines = format_retrieval(metrics).splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["R@1%", "R@2%", "median", "rank", "mean", "rank"]
    assert lines[1].split() == ["image->text", "66.67", "66.67", "1.0", "1.67"]
    assert lines[2].split() == ["text->image", "0.00", "50.00", "2.5", "2.50"]
    with pytest.raises(ValueError, match="lacks"):
        format_retrieval({"i2t_r1": 0.5})
    with pytest.raises(ValueError, match="no 'i2t_r<K>' key"):
        format_retrieval({})


@pytest.mark.parametrize(
    ("image", "text", "owner", "error", "message"),
    [
        (
            torch.zeros(3),
            torch.zeros(3, 2),
            [0, 1, 2],
            ValueError,
            "image_emb must be 2-D",
        ),
        (
            torch.zeros(3, 2),
            torch.zeros(3, 4),
            [0, 1, 2],
            ValueError,
            "same embedding size",
        ),
        (
            torch.zeros(0, 2),
            torch.zeros(3, 2),
            [0, 1, 2],
            ValueError,
            "image_emb is empty",
        ),
        (
            torch.zeros(3, 2, dtype=torch.long),
            torch.zeros(3, 2),
            [0, 1, 2],
            TypeError,
            "image_emb must be a floating",
        ),
        (
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            [0, 1],
            ValueError,
            r"one image index per caption \(3\)",
        ),
        (torch.zeros(3, 2), torch.zeros(3, 2), [[0, 1, 2]], ValueError, "must be 1-D"),
        (
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            [0.0, 1.0, 2.0],
            TypeError,
            "integer image indices",
        ),
        (
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            [0, 3, 2],
            ValueError,
            r"text_to_image\[1\] = 3 is not a valid",
        ),
        (
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            [0, 1, -1],
            ValueError,
            r"text_to_image\[2\] = -1 is not a valid",
        ),
        (
            torch.zeros(4, 2),
            torch.zeros(3, 2),
            [0, 2, 2],
            ValueError,
            "image 1, 3 has no caption",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(image, text, owner, error, message: str) -> None:
    with pytest.raises(error, match=message):
        retrieval_metrics(image, text, owner)


def test_non_finite_embeddings_and_bad_options_raise() -> None:
    image, text = torch.zeros(3, 2), torch.zeros(3, 2)
    text[1, 0] = float("nan")
    with pytest.raises(ValueError, match="text_emb row 1 contains NaN"):
        ranks_text_to_image(image, text, [0, 1, 2])
    text[1, 0] = 0.0
    for chunk_size in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            ranks_image_to_text(image, text, [0, 1, 2], chunk_size=chunk_size)
    for ks in ((), (0,), (1, "5")):
        with pytest.raises(ValueError, match="ks"):
            retrieval_metrics(image, text, [0, 1, 2], ks=ks)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ranks_equal_cpu_ranks() -> None:
    owner = random_captioning(300, seed=12)
    image, text = tied_embeddings(300, len(owner), seed=13)
    image, text = image.half(), text.half()
    for rank_fn in (ranks_image_to_text, ranks_text_to_image):
        cpu = rank_fn(image, text, owner, chunk_size=64)
        cuda = rank_fn(
            image.cuda(), text.cuda(), torch.tensor(owner).cuda(), chunk_size=64
        )
        assert cuda.device.type == "cuda"
        assert torch.equal(cuda.cpu(), cpu)

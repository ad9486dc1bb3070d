"""Locked-text tuning (LiT, Zhai et al. 2022, with the roles swapped): train an image
tower into a frozen sentence space.

The text tower is the pretrained MiniLM-L6 sentence encoder (Reimers & Gurevych 2019),
frozen entirely: no parameter of it changes and none receives a gradient. Its caption
embeddings are therefore fixed, so they are computed once (:func:`sentence_features`)
and training only runs the image tower (the default recipe's SmallCNN, from scratch) and
a linear projection into the 384-dimensional sentence space, with the symmetric InfoNCE
loss and a learnt temperature.

:func:`compare_lit` sets this against training both towers, which on a CPU means the
default comparison's text tower from scratch
(:data:`~crossalign.experiments.compare.COMPARISON_TEXT_TOWER`; fine-tuning MiniLM is
too slow there), with the same budget, on the standard test split and on the
compositional split (colour-shape pairs never seen in training).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from crossalign.data.batches import EpochBatches
from crossalign.data.encode import encode_in_batches
from crossalign.data.shapes import ShapesWorld
from crossalign.evaluation import embed_texts
from crossalign.experiments.compare import (
    CompareConfig,
    ComparisonData,
    MethodResult,
    optimise,
    prepare_data,
    train_method,
)
from crossalign.losses import clip_loss
from crossalign.metrics import retrieval_metrics
from crossalign.models.dual_encoder import DualEncoder
from crossalign.models.image_encoders import ImageEncoder, build_image_encoder
from crossalign.models.text_encoders import HFTextEncoder
from crossalign.utils import seed_everything, select_device

__all__ = [
    "LiTFeatures",
    "LiTResult",
    "LockedTextModel",
    "both_towers_result",
    "build_lit_model",
    "compare_lit",
    "format_lit_table",
    "lit_features",
    "sentence_features",
    "train_lit",
]


class LockedTextModel(nn.Module):
    """An image tower trained into the space of a frozen sentence encoder.

    ``encode_image`` = normalise(projection(image_encoder(images))), a vector of the
    text encoder's width; ``encode_text`` = normalise(frozen text encoder(tokens)). The
    text encoder must be frozen (``HFTextEncoder(freeze=True)``): it stays in eval mode
    and without gradients.
    """

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_encoder: HFTextEncoder,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        if not getattr(text_encoder, "freeze", False) or any(
            p.requires_grad for p in text_encoder.parameters()
        ):
            raise ValueError(
                "text_encoder must be frozen: build it with HFTextEncoder(freeze=True)"
            )
        self.image_encoder = image_encoder
        self.image_projection = nn.Linear(
            image_encoder.out_dim, text_encoder.out_dim, bias=False
        )
        self.text_encoder = text_encoder
        self.max_logit_scale = max_logit_scale
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / init_temperature))
        )

    @property
    def logit_scale(self) -> torch.Tensor:
        """1 / temperature, clamped at ``max_logit_scale``."""
        return self.log_logit_scale.clamp(max=math.log(self.max_logit_scale)).exp()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings [B, text width] from images [B, 3, H, W] in [0,
        1]."""
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    @torch.no_grad()
    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Unit-length sentence embeddings of the frozen text encoder."""
        return F.normalize(self.text_encoder(input_ids, attention_mask), dim=-1)

    def forward(
        self, images: torch.Tensor, text_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings, normalised cached text features, logit scale): the inputs
        of the CLIP loss."""
        return (
            self.encode_image(images),
            F.normalize(text_features, dim=-1),
            self.logit_scale,
        )


def build_lit_model(
    config: CompareConfig, text_encoder: HFTextEncoder | None = None
) -> LockedTextModel:
    """The LiT model: the default recipe's image tower (from scratch) and the frozen
    MiniLM sentence encoder."""
    image = config.experiment().model
    encoder = text_encoder if text_encoder is not None else HFTextEncoder(freeze=True)
    return LockedTextModel(
        build_image_encoder(image.image_encoder, **image.image_kwargs),
        encoder,
        init_temperature=image.init_temperature,
    )


@torch.inference_mode()
def sentence_features(
    text_encoder: nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 128,
    max_len: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The frozen encoder's pooled vectors [N, D] of ``texts`` (not normalised),
    computed once to be cached.

    Texts are encoded in batches of similar length (sorted by character count, results
    put back in the input order), which saves most of the work spent on padding.
    """
    if len(texts) == 0:
        raise ValueError("sentence_features needs at least one text")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = tokenizer.encode_batch(
                [texts[i] for i in rows], max_len=max_len
            )
            yield ids.to(device), mask.to(device)

    in_length_order = encode_in_batches(
        text_encoder,
        batches(),
        len(texts),
        modules=[text_encoder],
        desc="sentence features",
    )
    features = torch.empty_like(in_length_order)
    features[order] = in_length_order
    return features


@dataclass
class LiTResult:
    """Retrieval of one model on the test and compositional splits, and what training
    cost."""

    name: str
    test: dict[str, float]
    compositional: dict[str, float]
    seconds: float
    feature_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)


def _compositional(config: CompareConfig) -> ShapesWorld:
    return ShapesWorld(
        "compositional",
        size=config.test_size,
        image_size=config.image_size,
        seed=config.seed,
    )


@torch.inference_mode()
def _retrieval(
    model: DualEncoder | LockedTextModel,
    images: torch.Tensor,
    text_emb: torch.Tensor,
    owner: torch.Tensor,
) -> dict[str, float]:
    model.eval()
    image_emb = torch.cat(
        [model.encode_image(chunk).float() for chunk in images.split(256)]
    )
    return retrieval_metrics(image_emb, text_emb, owner)


@dataclass
class LiTFeatures:
    """Frozen sentence features, computed once: training captions, test and
    compositional captions.

    ``train`` is [N, C, D] (the first C captions of each training image), ``test`` and
    ``compositional`` are unit-length [5 * N_split, D] in the order of
    ``caption_image_index()``; ``seconds`` is the time it took to compute them.
    """

    train: torch.Tensor
    test: torch.Tensor
    compositional: torch.Tensor
    compositional_images: torch.Tensor
    compositional_owner: torch.Tensor
    seconds: float


def lit_features(
    config: CompareConfig,
    data: ComparisonData,
    text_encoder: nn.Module,
    tokenizer,
    captions_per_image: int = 5,
) -> LiTFeatures:
    """Embed the training, test and compositional captions with the frozen
    ``text_encoder``, once.

    Only the first ``captions_per_image`` captions of each training image are embedded
    (on a CPU MiniLM manages about a hundred captions a second on one core); test and
    compositional splits always get all five.
    """
    per_image = len(data.train_captions[0])
    if not 1 <= captions_per_image <= per_image:
        raise ValueError(
            f"captions_per_image={captions_per_image} must be between 1 and {per_image}"
        )
    device = select_device(config.device)
    started = time.perf_counter()
    captions = [
        text for texts in data.train_captions for text in texts[:captions_per_image]
    ]
    train = sentence_features(
        text_encoder, tokenizer, captions, max_len=config.max_len, device=device
    )
    test = sentence_features(
        text_encoder, tokenizer, data.test_texts, max_len=config.max_len, device=device
    )
    compositional = _compositional(config)
    comp_texts, comp_owner = compositional.caption_image_index()
    comp = sentence_features(
        text_encoder, tokenizer, comp_texts, max_len=config.max_len, device=device
    )
    return LiTFeatures(
        train=train.reshape(len(data.train_captions), captions_per_image, -1),
        test=F.normalize(test, dim=-1),
        compositional=F.normalize(comp, dim=-1),
        compositional_images=compositional.render(range(len(compositional))),
        compositional_owner=comp_owner,
        seconds=time.perf_counter() - started,
    )


def train_lit(
    config: CompareConfig,
    data: ComparisonData | None = None,
    text_encoder: HFTextEncoder | None = None,
    captions_per_image: int = 5,
    features: LiTFeatures | None = None,
) -> LiTResult:
    """Train the image tower into the frozen MiniLM space with ``config``'s budget;
    score test and compositional R@K.

    The caption embeddings are computed once by :func:`lit_features` (or passed in as
    ``features``, made with the same config, data and encoder); the optimisation never
    runs the text encoder. ``captions_per_image`` is passed to :func:`lit_features`.
    """
    data = data or prepare_data(config)
    device = select_device(config.device)
    seed_everything(config.seed)
    model = build_lit_model(config, text_encoder).to(device)
    if features is None:
        tokenizer = model.text_encoder.build_tokenizer(max_len=config.max_len)
        features = lit_features(
            config, data, model.text_encoder, tokenizer, captions_per_image
        )
    per_image = features.train.shape[1]
    # resident on the device: a step copies nothing from the host but its indices
    train_images, train_texts = data.train_images.to(device), features.train.to(device)

    batches = EpochBatches(
        len(train_images),
        config.batch_size,
        config.seed,
        hint="lower CompareConfig.batch_size",
    )

    def loss_at(step: int) -> torch.Tensor:
        images = batches(step).to(device, non_blocking=True)
        choices = batches.choices(step, per_image).to(device, non_blocking=True)
        image_emb, text_emb, scale = model(
            train_images[images], train_texts[images, choices]
        )
        return clip_loss(image_emb, text_emb, scale)

    started = time.perf_counter()
    losses = optimise(model, loss_at, config.experiment().train, device, desc="lit")
    seconds = time.perf_counter() - started
    return LiTResult(
        name="LiT: frozen MiniLM text",
        test=_retrieval(
            model,
            data.test_images.to(device),
            features.test.to(device),
            data.test_owner,
        ),
        compositional=_retrieval(
            model,
            features.compositional_images.to(device),
            features.compositional.to(device),
            features.compositional_owner,
        ),
        seconds=seconds,
        feature_seconds=features.seconds,
        losses=losses,
        model=model,
    )


def compare_lit(
    config: CompareConfig | None = None,
    data: ComparisonData | None = None,
    text_encoder: HFTextEncoder | None = None,
    captions_per_image: int = 5,
    both_towers: MethodResult | None = None,
) -> list[LiTResult]:
    """LiT (frozen MiniLM) against both towers trained (text tower from scratch), same
    budget and seed.

    ``captions_per_image`` limits the captions LiT trains on (see :func:`train_lit`);
    the from-scratch model trains on all five, as its text tower costs nothing to run.
    ``both_towers`` reuses an ``infonce`` result of the same config instead of training
    it again.
    """
    config = config or CompareConfig.fast()
    data = data or prepare_data(config)
    lit = train_lit(config, data, text_encoder, captions_per_image)
    both = (
        both_towers
        if both_towers is not None
        else train_method("infonce", config, data)
    )
    return [lit, both_towers_result(both, config, data)]


def both_towers_result(
    both: MethodResult, config: CompareConfig, data: ComparisonData
) -> LiTResult:
    """Score a dual encoder trained by :func:`train_method` on the compositional split
    too, as a :class:`LiTResult`."""
    model = both.model
    if model is None:
        raise ValueError(
            f"both.model is None: result {both.name!r} kept no model to score on the "
            "compositional split; pass the MethodResult that train_method returned"
        )
    compositional = _compositional(config)
    comp_texts, comp_owner = compositional.caption_image_index()
    device = select_device(config.device)
    comp_text_emb = embed_texts(
        model, comp_texts, data.tokenizer, device=device, max_len=config.max_len
    )
    tower_name = "conv" if config.text_tower == "conv" else "GRU"
    return LiTResult(
        name=f"both towers trained ({tower_name})",
        test=both.retrieval,
        compositional=_retrieval(
            model,
            compositional.render(range(len(compositional))).to(device),
            comp_text_emb.to(device),
            comp_owner,
        ),
        seconds=both.seconds,
        losses=both.losses,
        model=model,
    )


def format_lit_table(results: Sequence[LiTResult]) -> str:
    """R@1 image->text and text->image on the test and compositional splits, one row per
    model."""
    if not results:
        raise ValueError("format_lit_table needs at least one LiTResult")
    columns = ("test i2t", "test t2i", "comp i2t", "comp t2i")
    cells = "  ".join(f"{column:>8}" for column in columns)
    header = f"{'model':<28}  {cells}  {'time s':>6}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.name:<28}  {r.test['i2t_r1']:>8.2f}  {r.test['t2i_r1']:>8.2f}  "
            f"{r.compositional['i2t_r1']:>8.2f}  {r.compositional['t2i_r1']:>8.2f}  "
            f"{r.seconds:>6.1f}"
        )
    return "\n".join(lines)

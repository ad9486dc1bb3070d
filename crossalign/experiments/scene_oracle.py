"""An image tower handed the answer: it reads the scene graph instead of the pixels.

Relation-swap accuracy (does the image score "the circle is left of the square" above
"the circle is right of the square"?) needs both towers: the image tower must see which
object is left of which, and the text tower must read which object the caption puts on
the left. When the score is low, which tower is to blame? Replace the image tower by one
that is *given* every object's shape, colour, size and centre
(:class:`SceneGraphEncoder`) and train again with the same text tower, loss, data and
budget (:func:`train_with_scene_oracle`): whatever is still wrong cannot be the image
tower's fault, so it is the text tower's (or the data's).

The encoder is a Deep Sets model (Zaheer et al. 2017): one MLP per object, summed over
the objects, so it sees each object's attributes *with* its position and does not depend
on the order of the objects. It cannot read images; it exists only for this diagnosis
(``benchmarks/relation_swap_towers.py``).

The same question arises for captioning: when a captioner states a false relation, did
the CNN fail to see where the objects are, or did the decoder fail to compare them?
:func:`train_captioner_with_scene_oracle` trains the configured captioner on the scene
graphs themselves (:class:`SceneGraphCaptions`: one region per object slot, holding its
attributes and centre) with the same decoder, captions, steps and seed
(``benchmarks/caption_relations.py``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from crossalign.data.build import build_caption_dataset
from crossalign.data.shapes import COLOURS, SHAPES, SIZES, ShapesWorld
from crossalign.experiments.compare import (
    CompareConfig,
    ComparisonData,
    MethodResult,
    prepare_data,
    train_method,
)
from crossalign.experiments.methods import AlignmentMethod
from crossalign.train.captioning import (
    CaptionExperimentConfig,
    CaptionTrainResult,
    train_captioner,
)

__all__ = [
    "MAX_SCENE_OBJECTS",
    "SCENE_FEATURES",
    "SceneGraphCaptions",
    "SceneGraphEncoder",
    "oracle_caption_config",
    "oracle_caption_dataset",
    "scene_features",
    "train_captioner_with_scene_oracle",
    "train_with_scene_oracle",
    "with_scene_inputs",
]

#: Object slots per scene (ShapesWorld draws 1-3 objects).
MAX_SCENE_OBJECTS = 3
#: Features of one slot: one-hot shape, colour and size, centre x and y in [-1, 1],
# present flag.
SCENE_FEATURES = len(SHAPES) + len(COLOURS) + len(SIZES) + 3


def scene_features(world: ShapesWorld) -> torch.Tensor:
    """Every scene of ``world`` as ``[N, MAX_SCENE_OBJECTS, SCENE_FEATURES]``; absent
    objects are all zeros.

    A slot holds one-hot shape, colour and size, then the centre (x right, y down,
    mapped from [0, 1] to [-1, 1]) and a 1 marking a real object, in the scene graph's
    object order.
    """
    if not isinstance(world, ShapesWorld):
        raise TypeError(
            "scene_features needs a ShapesWorld (it reads scene graphs), got "
            f"{type(world).__name__}"
        )
    features = torch.zeros(len(world), MAX_SCENE_OBJECTS, SCENE_FEATURES)
    colour_at, size_at, place_at = (
        len(SHAPES),
        len(SHAPES) + len(COLOURS),
        len(SHAPES) + len(COLOURS) + len(SIZES),
    )
    for row, scene in enumerate(world.scenes(range(len(world)))):
        for slot, obj in enumerate(scene.objects):
            features[row, slot, SHAPES.index(obj.shape)] = 1.0
            features[row, slot, colour_at + COLOURS.index(obj.colour)] = 1.0
            features[row, slot, size_at + SIZES.index(obj.size)] = 1.0
            features[row, slot, place_at : place_at + 3] = torch.tensor(
                [2 * obj.x - 1, 2 * obj.y - 1, 1.0]
            )
    return features


class SceneGraphEncoder(nn.Module):
    """Deep Sets over object slots: ``sum_k present_k * MLP(slot_k)`` ->
    ``[B, out_dim]``.

    Input: ``[B, MAX_SCENE_OBJECTS, SCENE_FEATURES]`` from :func:`scene_features` (the
    last feature marks real objects; empty slots contribute nothing).
    """

    def __init__(self, out_dim: int = 256, hidden_dim: int = 256) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.config: dict[str, Any] = {
            "name": "scene_graph",
            "out_dim": out_dim,
            "hidden_dim": hidden_dim,
        }
        self.mlp = nn.Sequential(
            nn.Linear(SCENE_FEATURES, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, scenes: torch.Tensor) -> torch.Tensor:
        """Sum the per-object vectors of the real objects of each scene."""
        if scenes.dim() != 3 or scenes.shape[-1] != SCENE_FEATURES:
            raise ValueError(
                f"scenes must have shape [B, objects, {SCENE_FEATURES}] (see "
                f"scene_features), got {tuple(scenes.shape)}"
            )
        return (self.mlp(scenes) * scenes[..., -1:]).sum(dim=1)


def with_scene_inputs(
    config: CompareConfig,
    data: ComparisonData,
    encode: Callable[[ShapesWorld], torch.Tensor],
) -> ComparisonData:
    """A copy of ``data`` whose training and test "images" are ``encode(split)`` of the
    same ShapesWorld splits: what an image tower that reads scene graphs is fed.

    Captions, tokens, swap pairs and everything else are shared with ``data``, so a
    tower trained on the copy sees exactly the batches the pixel tower sees.
    ``encode`` is :func:`scene_features` for the Deep Sets oracle, or the packed graphs
    of :mod:`crossalign.experiments.scene_graph_attention`.
    """
    test_set = ShapesWorld(
        "test", size=config.test_size, image_size=config.image_size, seed=config.seed
    )
    if len(test_set) != len(data.test_images) or len(data.train_set) != len(
        data.train_images
    ):
        raise ValueError(
            "data must come from prepare_data with the same config (split sizes differ)"
        )
    return dataclasses.replace(
        data, train_images=encode(data.train_set), test_images=encode(test_set)
    )


def train_with_scene_oracle(
    name: str | AlignmentMethod,
    config: CompareConfig,
    data: ComparisonData | None = None,
) -> MethodResult:
    """Train method ``name`` exactly as
    :func:`~crossalign.experiments.compare.train_method` does, but with a
    :class:`SceneGraphEncoder` in place of the image tower, fed the scene graphs.

    Same text tower, batches, steps, optimiser and seed; the test scores (retrieval,
    swap accuracies, geometry) are computed on the same test split, from its scene
    graphs.
    """
    data = data or prepare_data(config)
    scenes = with_scene_inputs(config, data, scene_features)
    out_dim = config.experiment().model.image_kwargs.get("out_dim", 256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = SceneGraphEncoder(out_dim=out_dim)
    result = train_method(name, config, scenes, image_encoder=encoder)
    if data.negatives is None:
        # keep the tokenised swaps for the caller's next run
        data.negatives = scenes.negatives
    return result


class SceneGraphCaptions(ShapesWorld):
    """A ShapesWorld split whose items hold the scene graph instead of the image.

    Items are
    ``{"features": [MAX_SCENE_OBJECTS, SCENE_FEATURES], "captions", "index"}``: the rows
    of :func:`scene_features`, which a captioner built with ``image_encoder=None`` and
    ``feature_dim=SCENE_FEATURES`` reads as its regions (one per object slot). Scenes,
    captions and everything else are those of the ShapesWorld built with the same
    arguments, so the semantic scores of
    :func:`~crossalign.train.captioning.evaluate_captioner` apply unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.features = scene_features(self)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        idx = self._check_indices(indices)
        captions = self._captions_of(idx)
        return [
            {"features": self.features[i], "captions": captions[row], "index": int(i)}
            for row, i in enumerate(idx)
        ]


def _require_shapes(config: CaptionExperimentConfig) -> None:
    if config.data.name != "shapes":
        raise ValueError(
            "the scene-graph oracle needs data.name='shapes' (scene graphs), got "
            f"{config.data.name!r}"
        )


def oracle_caption_config(config: CaptionExperimentConfig) -> CaptionExperimentConfig:
    """``config`` with the image encoder replaced by scene-graph regions; decoder and
    training unchanged.

    No image encoder (so no encoder pretraining), regions ``SCENE_FEATURES`` wide, and
    no region position embedding in Show, Attend and Tell: an object slot's index says
    nothing about where the object is (its centre is in the features).
    """
    _require_shapes(config)
    oracle = copy.deepcopy(config)
    oracle.model.image_encoder, oracle.model.image_kwargs = None, {}
    (
        oracle.model.feature_dim,
        oracle.model.freeze_encoder,
        oracle.model.region_positions,
    ) = SCENE_FEATURES, False, False
    oracle.train.encoder_pretrain_steps = 0
    return oracle


def train_captioner_with_scene_oracle(
    config: CaptionExperimentConfig,
) -> CaptionTrainResult:
    """Train ``config``'s captioner exactly as
    :func:`~crossalign.train.captioning.train_captioner` does, but on the training
    split's scene graphs (:class:`SceneGraphCaptions`) instead of its images.

    Evaluate it on ``oracle_caption_dataset(config, "test")``. The returned result's
    ``config`` is the oracle's (:func:`oracle_caption_config`).
    """
    oracle = oracle_caption_config(config)
    return train_captioner(oracle, train_set=oracle_caption_dataset(oracle, "train"))


def oracle_caption_dataset(
    config: CaptionExperimentConfig, split: str, size: int | None = None
) -> SceneGraphCaptions:
    """The scene-graph twin of ``build_caption_dataset(config, split, size)``: same
    scenes, same captions."""
    _require_shapes(config)
    world = build_caption_dataset(config, split, size)
    if not isinstance(world, ShapesWorld):
        raise TypeError(
            f"data.name='shapes' gave a {type(world).__name__}, not a ShapesWorld"
        )
    return SceneGraphCaptions(
        world.split,
        size=len(world),
        image_size=world.image_size,
        seed=world.seed,
        noise=world.noise,
    )

"""A graph attention image tower: relations carried by the scene graph's edges, not by
the objects' coordinates.

The Deep Sets oracle (:class:`~crossalign.experiments.scene_oracle.SceneGraphEncoder`)
is given every object's attributes *and centre* and sums one vector per object; it never
compares two objects, yet can still answer "is the circle left of the square?" because
each object's vector carries its own coordinates. Here the image tower is a graph
attention network (Velickovic et al. 2018) over the scene graph
(:class:`~crossalign.models.graph_attention.SceneGraphAttentionEncoder`), and the
point is made sharp by what the nodes are *not* told:

- **nodes** hold an object's shape, colour and size (one-hot) and a presence flag, but
  no position (:func:`scene_graph_inputs`; ``positions=True`` adds the centre back, for
  the variant with both);
- **edges** hold the spatial relations of the scene graph
  (:func:`~crossalign.data.shapes.spatial_relations`). An ordered pair of objects can
  satisfy one horizontal relation ("left of", "right of") and one vertical one
  ("above", "below") at once, so an edge type is the *pair* of relations it carries:
  ``type = 3 * h + v`` with ``h`` = 0 (neither), 1 (left of), 2 (right of) and ``v`` =
  0 (neither), 1 (above), 2 (below); type 0 is "no edge", and
  :data:`EDGE_TYPES` lists the relations of every type.

Whatever the network knows about where objects are, it must have read along an edge.
The ablation ``edges=False`` (the same network with every edge dropped) is a Deep Sets
model of position-free objects: it cannot tell "A left of B" from "B left of A", so its
relation-swap accuracy measures what the edges carry. (Lone objects, whose captions
name a region of the image, "at the top left", are beyond both position-free variants:
a graph with one node has no edges.)

:func:`train_with_graph_attention` trains it exactly as
:func:`~crossalign.experiments.scene_oracle.train_with_scene_oracle` trains the oracle
(same text tower, batches, steps, optimiser and seed, through
:func:`~crossalign.experiments.compare.train_method`);
:func:`compare_scene_towers` trains the CNN, the oracle, the GAT and the GAT without
edges under one :class:`~crossalign.experiments.compare.CompareConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch

from crossalign.data.shapes import COLOURS, SHAPES, SIZES, ShapesWorld
from crossalign.experiments.compare import (
    CompareConfig,
    ComparisonData,
    MethodResult,
    prepare_data,
    train_method,
)
from crossalign.experiments.methods import AlignmentMethod
from crossalign.experiments.scene_oracle import (
    MAX_SCENE_OBJECTS,
    scene_features,
    train_with_scene_oracle,
    with_scene_inputs,
)
from crossalign.models.graph_attention import SceneGraphAttentionEncoder, pack_graphs

__all__ = [
    "EDGE_TYPES",
    "NODE_FEATURES",
    "NUM_EDGE_TYPES",
    "SCENE_TOWER_ROWS",
    "compare_scene_towers",
    "edge_type",
    "graph_attention_encoder",
    "scene_graph_inputs",
    "train_with_graph_attention",
]

_HORIZONTAL: tuple[str | None, ...] = (None, "left of", "right of")
_VERTICAL: tuple[str | None, ...] = (None, "above", "below")
#: The relations each edge type carries: ``EDGE_TYPES[3 * h + v]`` holds
# ``_HORIZONTAL[h]`` and ``_VERTICAL[v]`` (when not None); ``EDGE_TYPES[0] == ()``.
EDGE_TYPES: tuple[tuple[str, ...], ...] = tuple(
    tuple(r for r in (h, v) if r is not None) for h in _HORIZONTAL for v in _VERTICAL
)
#: Edge types 1..NUM_EDGE_TYPES (0 = no edge).
NUM_EDGE_TYPES = len(EDGE_TYPES) - 1
#: Features of a node without its position: one-hot shape, colour and size, presence.
NODE_FEATURES = len(SHAPES) + len(COLOURS) + len(SIZES) + 1
#: Labels of :func:`compare_scene_towers`'s rows, in order.
SCENE_TOWER_ROWS = ("CNN", "Deep Sets oracle", "GAT", "GAT, no edges")


def edge_type(relations: Iterable[str]) -> int:
    """The edge type of an ordered pair of objects that satisfies ``relations`` (at most
    one horizontal and one vertical relation); 0 for none."""
    relations = list(relations)
    horizontal = [r for r in relations if r in _HORIZONTAL]
    vertical = [r for r in relations if r in _VERTICAL]
    if len(horizontal) + len(vertical) != len(relations):
        raise ValueError(
            f"relations={relations!r}: each must be one of "
            f"{[r for r in _HORIZONTAL + _VERTICAL if r]}"
        )
    if len(horizontal) > 1 or len(vertical) > 1:
        raise ValueError(
            f"relations={relations!r}: a pair of objects has at most one horizontal "
            "and one vertical relation"
        )
    h = _HORIZONTAL.index(horizontal[0]) if horizontal else 0
    v = _VERTICAL.index(vertical[0]) if vertical else 0
    return 3 * h + v


def scene_graph_inputs(
    world: ShapesWorld, positions: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every scene of ``world`` as node features and typed edges.

    Returns ``nodes [N, MAX_SCENE_OBJECTS, F]`` and ``edges [N, MAX_SCENE_OBJECTS,
    MAX_SCENE_OBJECTS]`` (long), in the scene graph's object order. A node holds the
    object's one-hot shape, colour and size and a final presence flag (``F =``
    :data:`NODE_FEATURES`); ``positions=True`` keeps its centre too, exactly the
    oracle's :func:`~crossalign.experiments.scene_oracle.scene_features` (``F =
    NODE_FEATURES + 2``). ``edges[n, i, j]`` is the :func:`edge_type` of the relations
    ``objects[i] <relation> objects[j]`` listed in scene ``n``'s graph; absent objects
    are zero rows with no edges.
    """
    features = scene_features(world)  # checks that world is a ShapesWorld
    nodes = (
        features
        if positions
        else torch.cat([features[..., : NODE_FEATURES - 1], features[..., -1:]], -1)
    )
    edges = torch.zeros(
        len(world), MAX_SCENE_OBJECTS, MAX_SCENE_OBJECTS, dtype=torch.long
    )
    for row, scene in enumerate(world.scenes(range(len(world)))):
        held: dict[tuple[int, int], list[str]] = {}
        for fact in scene.relations:
            held.setdefault((fact.subject, fact.object), []).append(fact.relation)
        for (i, j), relations in held.items():
            edges[row, i, j] = edge_type(relations)
    return nodes, edges


def graph_attention_encoder(
    out_dim: int, positions: bool = False, **encoder_kwargs: Any
) -> SceneGraphAttentionEncoder:
    """A :class:`SceneGraphAttentionEncoder` sized for :func:`scene_graph_inputs`
    (``encoder_kwargs``: ``hidden_dim``, ``layers``, ``heads``, ``pool``, ``edges``)."""
    for fixed in ("node_features", "edge_types", "out_dim"):
        if fixed in encoder_kwargs:
            raise ValueError(
                f"{fixed}={encoder_kwargs[fixed]!r} is set by the scene graph inputs "
                "and the model config; do not pass it"
            )
    return SceneGraphAttentionEncoder(
        node_features=NODE_FEATURES + (2 if positions else 0),
        edge_types=NUM_EDGE_TYPES,
        out_dim=out_dim,
        **encoder_kwargs,
    )


def train_with_graph_attention(
    name: str | AlignmentMethod,
    config: CompareConfig,
    data: ComparisonData | None = None,
    positions: bool = False,
    **encoder_kwargs: Any,
) -> MethodResult:
    """Train method ``name`` exactly as
    :func:`~crossalign.experiments.compare.train_method` does, with a
    :class:`SceneGraphAttentionEncoder` in place of the image tower, fed the packed
    scene graphs (:func:`scene_graph_inputs`, then
    :func:`~crossalign.models.graph_attention.pack_graphs`).

    Same text tower, batches, steps, optimiser and seed as the CNN and the Deep Sets
    oracle; scores on the same test split, from its scene graphs. ``edges=False`` (an
    encoder keyword) is the ablation without edges; ``positions=True`` gives the nodes
    their centres as well. ``data`` (from :func:`prepare_data` with ``config``) is left
    unchanged, apart from keeping the tokenised hard negatives for the next run.
    """
    data = data or prepare_data(config)
    graphs = with_scene_inputs(
        config, data, lambda world: pack_graphs(*scene_graph_inputs(world, positions))
    )
    out_dim = config.experiment().model.image_kwargs.get("out_dim", 256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = graph_attention_encoder(out_dim, positions, **encoder_kwargs)
    result = train_method(name, config, graphs, image_encoder=encoder)
    if data.negatives is None:
        data.negatives = graphs.negatives
    return result


def compare_scene_towers(
    config: CompareConfig | None = None,
    data: ComparisonData | None = None,
    method: str = "hard_negatives",
    cnn: bool = True,
    **encoder_kwargs: Any,
) -> list[MethodResult]:
    """Train ``method`` with four image towers under one budget and seed, one result
    each, named by :data:`SCENE_TOWER_ROWS`: the CNN on pixels (only when ``cnn``), the
    Deep Sets oracle (attributes and centres, no edges), the GAT (attributes and typed
    relation edges, no centres) and the same GAT without edges.

    The data are prepared once (or passed in, from :func:`prepare_data` with the same
    config) and shared; ``encoder_kwargs`` size both GATs. Print the rows with
    :func:`~crossalign.experiments.compare.format_table`.
    """
    if "edges" in encoder_kwargs:
        raise ValueError(
            f"edges={encoder_kwargs['edges']!r}: compare_scene_towers trains the GAT "
            "both with and without edges; do not pass it"
        )
    config = config or CompareConfig.fast()
    data = data or prepare_data(config)
    runners = (
        lambda: train_method(method, config, data),
        lambda: train_with_scene_oracle(method, config, data),
        lambda: train_with_graph_attention(method, config, data, **encoder_kwargs),
        lambda: train_with_graph_attention(
            method, config, data, edges=False, **encoder_kwargs
        ),
    )
    return [
        dataclasses.replace(run(), name=label)
        for label, run in zip(SCENE_TOWER_ROWS, runners)
        if cnn or label != "CNN"
    ]

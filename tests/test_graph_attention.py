"""Graph attention over scene graphs: the typed layer against a loop-by-loop float64
reference, its symmetries and masking, what the edges carry, the ShapesWorld graph
inputs against the scene graphs, and training through the comparison runner."""

from __future__ import annotations

import math

import pytest
import torch

from crossalign.data.shapes import COLOURS, RELATIONS, SHAPES, SIZES, ShapesWorld
from crossalign.experiments.compare import CompareConfig, prepare_data
from crossalign.experiments.scene_graph_attention import (
    EDGE_TYPES,
    NODE_FEATURES,
    NUM_EDGE_TYPES,
    SCENE_TOWER_ROWS,
    compare_scene_towers,
    edge_type,
    graph_attention_encoder,
    scene_graph_inputs,
    train_with_graph_attention,
)
from crossalign.experiments.scene_oracle import MAX_SCENE_OBJECTS, scene_features
from crossalign.models.graph_attention import (
    SceneGraphAttentionEncoder,
    TypedGraphAttention,
    pack_graphs,
    unpack_graphs,
)

TYPES = 5


def _random_layer(dim: int = 8, heads: int = 2) -> TypedGraphAttention:
    """A float64 layer whose every parameter (edge tables and norms included) is
    random, so that no term of the equations hides behind a zero initialisation."""
    torch.manual_seed(0)
    layer = TypedGraphAttention(dim, heads, TYPES).double()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_(0.0, 0.5)
    return layer.requires_grad_(False)


def _random_graph(
    batch: int = 3, k: int = 4, dim: int = 8, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    nodes = torch.randn(batch, k, dim, generator=generator, dtype=torch.float64)
    edges = torch.randint(0, TYPES + 1, (batch, k, k), generator=generator)
    present = torch.ones(batch, k, dtype=torch.bool)
    present[0, -1] = False
    present[1, 1:] = False  # a lone node
    return nodes, edges, present


def _layer_norm(
    x: list[float], weight: torch.Tensor, bias: torch.Tensor
) -> list[float]:
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)
    return [
        (v - mean) / math.sqrt(var + 1e-5) * float(weight[n]) + float(bias[n])
        for n, v in enumerate(x)
    ]


def _affine(
    matrix: torch.Tensor, bias: torch.Tensor | None, x: list[float]
) -> list[float]:
    return [
        sum(float(matrix[r, c]) * x[c] for c in range(len(x)))
        + (float(bias[r]) if bias is not None else 0.0)
        for r in range(matrix.shape[0])
    ]


def _reference_layer(
    layer: TypedGraphAttention,
    nodes: torch.Tensor,
    edges: torch.Tensor,
    present: torch.Tensor,
) -> torch.Tensor:
    """The layer's equations node by node, head by head, with an explicit softmax over
    the neighbours (plain Python floats)."""
    batch, k, dim = nodes.shape
    heads, width = layer.heads, layer.head_dim
    out = torch.zeros(batch, k, dim, dtype=torch.float64)
    for b in range(batch):
        z = [
            _affine(layer.project.weight, None, nodes[b, j].tolist()) for j in range(k)
        ]
        for i in range(k):
            if not present[b, i]:
                continue
            neighbours = [
                (j, TYPES + 1 if j == i else int(edges[b, i, j]))
                for j in range(k)
                if present[b, j] and (j == i or edges[b, i, j] != 0)
            ]
            message = [0.0] * dim
            for h in range(heads):
                part = slice(h * width, (h + 1) * width)
                logits = []
                for j, t in neighbours:
                    score = sum(
                        float(layer.attend_dst[h, c]) * z[i][part][c]
                        + float(layer.attend_src[h, c]) * z[j][part][c]
                        for c in range(width)
                    )
                    score = score if score > 0 else 0.2 * score
                    logits.append(score + float(layer.edge_bias.weight[t, h]))
                top = max(logits)
                weights = [math.exp(v - top) for v in logits]
                total = sum(weights)
                for (j, t), w in zip(neighbours, weights):
                    for c in range(width):
                        message[h * width + c] += (w / total) * (
                            z[j][h * width + c]
                            + float(layer.edge_value.weight[t, h * width + c])
                        )
            mixed = _affine(layer.out.weight, layer.out.bias, message)
            u = _layer_norm(
                [a + m for a, m in zip(nodes[b, i].tolist(), mixed)],
                layer.norm_attention.weight,
                layer.norm_attention.bias,
            )
            first, second = layer.mlp[0], layer.mlp[2]
            hidden = [
                0.5 * v * (1 + math.erf(v / math.sqrt(2)))
                for v in _affine(first.weight, first.bias, u)
            ]
            mlp = _affine(second.weight, second.bias, hidden)
            out[b, i] = torch.tensor(
                _layer_norm(
                    [a + m for a, m in zip(u, mlp)],
                    layer.norm_mlp.weight,
                    layer.norm_mlp.bias,
                )
            )
    return out


def test_layer_matches_a_loop_by_loop_reference():
    layer = _random_layer()
    nodes, edges, present = _random_graph()
    with torch.no_grad():
        got = layer(nodes, edges, present)
    assert torch.allclose(
        got, _reference_layer(layer, nodes, edges, present), atol=1e-10
    )
    assert got[~present].abs().max() == 0


def test_attention_rows_are_softmaxes_over_the_neighbours_only():
    layer = _random_layer()
    nodes, edges, present = _random_graph()
    with torch.no_grad():
        types = layer.neighbours(edges, present)
        z = layer.project(nodes).unflatten(-1, (layer.heads, layer.head_dim))
        alpha, _ = layer.attention(z, types)
    assert torch.allclose(alpha.sum(-1), torch.ones_like(alpha[..., 0]))
    assert (alpha[(types == 0)[:, None].expand_as(alpha)] == 0).all()
    assert (types.diagonal(dim1=1, dim2=2) == TYPES + 1).all()
    # a present node never reads an absent one
    assert (types[0, :, -1][:-1] == 0).all() and (types[1, 0, 1:] == 0).all()


def test_layer_is_permutation_equivariant():
    layer = _random_layer()
    nodes, edges, present = _random_graph()
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = layer(nodes, edges, present)
        permuted = layer(nodes[:, perm], edges[:, perm][:, :, perm], present[:, perm])
    assert torch.allclose(permuted, out[:, perm], atol=1e-12)


def _encoder(**kwargs) -> SceneGraphAttentionEncoder:
    torch.manual_seed(0)
    encoder = SceneGraphAttentionEncoder(
        node_features=6, edge_types=TYPES, out_dim=5, hidden_dim=8, heads=2, **kwargs
    ).double()
    with torch.no_grad():
        for layer in encoder.layers:
            layer.edge_bias.weight.normal_()
    return encoder


def _random_scenes(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    nodes = torch.randn(4, 3, 6, generator=generator, dtype=torch.float64)
    nodes[..., -1] = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]])
    edges = torch.randint(1, TYPES + 1, (4, 3, 3), generator=generator)
    return nodes, edges


def test_pooled_encoder_is_permutation_invariant():
    encoder = _encoder()
    nodes, edges = _random_scenes()
    perm = torch.tensor([1, 2, 0])
    with torch.no_grad():
        out = encoder.encode(nodes, edges)
        again = encoder.encode(nodes[:, perm], edges[:, perm][:, :, perm])
        packed = encoder(pack_graphs(nodes, edges))
    assert out.shape == (4, 5)
    assert torch.allclose(again, out, atol=1e-12)
    assert torch.equal(packed, out)
    assert out[3].abs().max() == 0  # an empty scene


def test_absent_nodes_change_nothing_not_even_as_nan():
    layer = _random_layer()
    nodes, edges, present = _random_graph()
    junk_nodes, junk_edges = nodes.clone(), edges.clone()
    junk_nodes[~present] = float("nan")
    absent_pair = ~(present[:, :, None] & present[:, None, :])
    junk_edges[absent_pair] = TYPES  # edges to and from absent nodes
    with torch.no_grad():
        assert torch.equal(
            layer(junk_nodes, junk_edges, present), layer(nodes, edges, present)
        )
    encoder = _encoder(pool="mean")
    scenes, scene_edges = _random_scenes()
    junk_scenes, junk_scene_edges = scenes.clone(), scene_edges.clone()
    gone = scenes[..., -1] == 0
    junk_scenes[gone] = float("nan")
    junk_scenes[..., -1][gone] = 0.0
    junk_scene_edges[:, :, 1:][gone[:, None, 1:].expand(-1, 3, -1)] = 1
    with torch.no_grad():
        out = encoder.encode(scenes, scene_edges)
        assert torch.equal(encoder.encode(junk_scenes, junk_scene_edges), out)
        # mean pooling = sum over the present nodes / their number
        states = encoder.node_states(scenes, scene_edges)
    count = (~gone).sum(1, keepdim=True).clamp(min=1)
    assert torch.allclose(out, states.sum(1) / count)


def test_an_edges_type_reaches_exactly_the_node_that_reads_along_it():
    layer = _random_layer()
    nodes, edges, present = _random_graph()
    changed = edges.clone()
    changed[2, 0, 1] = edges[2, 0, 1] % TYPES + 1  # another non-zero type
    with torch.no_grad():
        before, after = layer(nodes, edges, present), layer(nodes, changed, present)
    assert (after[2, 0] - before[2, 0]).abs().max() > 1e-3
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[2, 0] = False
    assert torch.equal(after[keep], before[keep])  # one layer: only node 0 of scene 2


def _two_objects(left: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A red circle (node 0) and a blue square (node 1), without positions; object
    ``left`` is left of the other."""
    nodes = torch.zeros(1, 3, NODE_FEATURES)
    colour_at, size_at = len(SHAPES), len(SHAPES) + len(COLOURS)
    for slot, (shape, colour) in enumerate((("circle", "red"), ("square", "blue"))):
        nodes[0, slot, SHAPES.index(shape)] = 1.0
        nodes[0, slot, colour_at + COLOURS.index(colour)] = 1.0
        nodes[0, slot, size_at + SIZES.index("small")] = 1.0
        nodes[0, slot, -1] = 1.0
    edges = torch.zeros(1, 3, 3, dtype=torch.long)
    edges[0, left, 1 - left] = edge_type(["left of"])
    edges[0, 1 - left, left] = edge_type(["right of"])
    return nodes, edges


@pytest.mark.parametrize("layers", [1, 2])
def test_only_edges_tell_a_left_of_b_from_b_left_of_a(layers):
    circle_left, square_left = _two_objects(0), _two_objects(1)
    assert torch.equal(circle_left[0], square_left[0])  # same nodes, mirrored edges
    torch.manual_seed(0)
    with_edges = graph_attention_encoder(32, layers=layers, hidden_dim=16)
    without = graph_attention_encoder(32, layers=layers, hidden_dim=16, edges=False)
    without.load_state_dict(with_edges.state_dict())  # the very same weights
    with torch.no_grad():
        assert torch.equal(
            without(pack_graphs(*circle_left)), without(pack_graphs(*square_left))
        )
        a, b = (
            with_edges(pack_graphs(*circle_left)),
            with_edges(pack_graphs(*square_left)),
        )
    assert (a - b).abs().max() > 1e-3


def test_edge_types_code_every_combination_of_relations():
    assert EDGE_TYPES[0] == () and NUM_EDGE_TYPES == 8
    assert {r for t in EDGE_TYPES for r in t} == set(RELATIONS)
    for code, relations in enumerate(EDGE_TYPES):
        assert edge_type(relations) == code == edge_type(reversed(relations))
    for bad in (["left of", "right of"], ["above", "below"], ["inside"]):
        with pytest.raises(ValueError, match="relations"):
            edge_type(bad)


def test_scene_graph_inputs_match_the_scene_graphs():
    world = ShapesWorld("test", size=60, image_size=32, seed=3)
    nodes, edges = scene_graph_inputs(world)
    with_positions, same_edges = scene_graph_inputs(world, positions=True)
    features = scene_features(world)
    assert nodes.shape == (60, MAX_SCENE_OBJECTS, NODE_FEATURES)
    assert edges.shape == (60, MAX_SCENE_OBJECTS, MAX_SCENE_OBJECTS)
    assert torch.equal(with_positions, features) and torch.equal(same_edges, edges)
    assert torch.equal(nodes[..., :-1], features[..., : NODE_FEATURES - 1])
    assert torch.equal(nodes[..., -1], features[..., -1])
    compound = 0
    for row, scene in enumerate(world.scenes(range(60))):
        count = len(scene.objects)
        assert (edges[row, count:] == 0).all() and (edges[row, :, count:] == 0).all()
        assert (edges[row].diagonal() == 0).all()
        coded = 0
        for i in range(count):
            for j in range(count):
                held = set(EDGE_TYPES[int(edges[row, i, j])])
                assert held == {r for r in RELATIONS if scene.holds(i, r, j)}
                coded += len(held)
                compound += len(held) == 2
        assert coded == len(scene.relations)
    assert compound > 0  # pairs that are, say, left of and above each other exist
    with pytest.raises(TypeError, match="ShapesWorld"):
        scene_graph_inputs([1, 2])


def test_packing_round_trips_and_rejects_what_it_cannot_hold():
    nodes, edges = _random_scenes()
    got_nodes, got_edges = unpack_graphs(pack_graphs(nodes, edges))
    assert torch.equal(got_edges, edges)
    assert torch.equal(got_nodes, nodes)  # the nodes' dtype is kept
    with pytest.raises(ValueError, match="exact in torch.float16"):
        pack_graphs(nodes.half(), edges + 2048)  # 2049 is not a float16
    bad = pack_graphs(nodes, edges)
    bad[0, 0, -1] = 0.5
    with pytest.raises(ValueError, match="integer edge types"):
        unpack_graphs(bad)
    with pytest.raises(ValueError, match="edges"):
        pack_graphs(nodes, edges.double())
    with pytest.raises(ValueError, match="packed"):
        _encoder()(torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match="heads"):
        TypedGraphAttention(10, 4, TYPES)
    with pytest.raises(ValueError, match="edges must hold types"):
        TypedGraphAttention(8, 2, TYPES)(
            torch.zeros(1, 2, 8),
            torch.full((1, 2, 2), TYPES + 1),
            torch.ones(1, 2, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="pool"):
        _encoder(pool="max")


def test_training_runs_through_the_comparison_and_the_ablation_drops_the_edges():
    config = CompareConfig.fast(train_size=64, test_size=16, steps=3, batch_size=16)
    data = prepare_data(config)
    pixels = data.train_images.clone()
    result = train_with_graph_attention("hard_negatives", config, data, hidden_dim=32)
    encoder = result.model.image_encoder
    assert isinstance(encoder, SceneGraphAttentionEncoder)
    assert encoder.config["edges"] and encoder.config["hidden_dim"] == 32
    assert len(result.losses) == 3 and all(math.isfinite(v) for v in result.losses)
    assert all(math.isfinite(v) for v in result.retrieval.values())
    assert 0.0 <= result.relation_swap <= 1.0 and 0.0 <= result.attribute_swap <= 1.0
    assert torch.equal(data.train_images, pixels) and data.negatives is not None
    rows = compare_scene_towers(config, data, hidden_dim=32)
    assert [row.name for row in rows] == list(SCENE_TOWER_ROWS)
    assert rows[2].losses == result.losses  # the same seeded run
    assert not rows[3].model.image_encoder.config["edges"]
    assert all(math.isfinite(row.relation_swap) for row in rows)
    with pytest.raises(ValueError, match="edges"):
        compare_scene_towers(config, data, edges=False)

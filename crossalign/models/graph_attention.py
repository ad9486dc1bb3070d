"""Graph attention over a scene graph: objects are nodes, spatial relations are typed
edges.

A Deep Sets image tower (``sum_k MLP(object_k)``) sees every object alone: it can only
know that the red circle is left of the blue square if each object's *position* is in
its own features. A graph attention network (GAT, Velickovic et al. 2018) lets objects
read each other along the edges of the scene graph, so the relation can be carried by
the edges instead: "the red circle, which is left of a blue square".

:class:`TypedGraphAttention` is one layer. Node ``i`` attends to its neighbours
``N(i)`` (the nodes ``j`` it has an edge to, plus itself through a self-loop). Every
edge has a type ``t_ij`` (an integer; 0 means "no edge"; the self-loop gets a type of
its own, ``T + 1`` for ``T`` edge types), and each type owns a learned scalar per head
added to the attention logit and a learned vector added to the message. With ``H``
heads of width ``d_h = d / H`` and ``z_j = W h_j`` split into heads ``z_j^h``::

    e_ij^h = LeakyReLU_0.2(a_dst^h . z_i^h + a_src^h . z_j^h) + b^h[t_ij]
    alpha_ij^h = exp(e_ij^h) / sum_{k in N(i)} exp(e_ik^h)        (softmax over N(i))
    m_i^h = sum_{j in N(i)} alpha_ij^h (z_j^h + v^h[t_ij])
    u_i = LayerNorm(h_i + W_o [m_i^1; ...; m_i^H])                 (residual + norm)
    h_i' = present_i * LayerNorm(u_i + MLP(u_i))

The first line is GAT's additive attention plus an edge-type bias (the typed
counterpart of the relative-position bias of Shaw et al. 2018); the value embedding
``v[t]`` puts the type into what is sent, not only into how much of it is sent, so a
node learns "*I am left of* something red" and not merely "something red matters to
me". Absent nodes (padding) are never attended to and leave the layer as zeros, so they
cannot change what present nodes compute.

:class:`SceneGraphAttentionEncoder` stacks the layers between an input projection and a
per-node readout MLP, and pools the present nodes (sum or mean) into ``[B, out_dim]``:
with every edge removed it is exactly a Deep Sets model of the node features. Because a
dual encoder's image tower receives one tensor per batch, scenes travel *packed*
(:func:`pack_graphs`): ``[B, K, F + K]``, row ``k`` holding node ``k``'s ``F`` features
followed by the types of its ``K`` outgoing edges (small integers stored exactly as
floats).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "POOLS",
    "SceneGraphAttentionEncoder",
    "TypedGraphAttention",
    "pack_graphs",
    "unpack_graphs",
]

#: Values of ``SceneGraphAttentionEncoder(pool=...)``.
POOLS = ("sum", "mean")
#: Slope of the LeakyReLU in the attention logits (Velickovic et al. 2018).
NEGATIVE_SLOPE = 0.2


def _check_graph(
    nodes: torch.Tensor, edges: torch.Tensor, present: torch.Tensor, width: int
) -> None:
    """Raise a ``ValueError`` naming the first argument of a layer call with a wrong
    shape or type."""
    if nodes.dim() != 3 or nodes.shape[-1] != width:
        raise ValueError(
            f"nodes must have shape [B, K, {width}], got {tuple(nodes.shape)}"
        )
    batch, k = nodes.shape[:2]
    if edges.shape != (batch, k, k) or edges.dtype != torch.long:
        raise ValueError(
            f"edges must be a long tensor of shape [B, K, K] = {(batch, k, k)}, got "
            f"{edges.dtype} {tuple(edges.shape)}"
        )
    if present.shape != (batch, k) or present.dtype != torch.bool:
        raise ValueError(
            f"present must be a bool tensor of shape [B, K] = {(batch, k)}, got "
            f"{present.dtype} {tuple(present.shape)}"
        )


def _zero_absent(nodes: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``nodes [B, K, D]`` with the rows of absent nodes replaced by zeros (a
    replacement, not a product, so that not even NaN padding can leak through)."""
    return torch.where(present[..., None], nodes, torch.zeros_like(nodes))


class TypedGraphAttention(nn.Module):
    """One multi-head graph attention layer with typed edges, residual connections and
    layer norms (equations in the module docstring).

    Args:
        dim: width ``d`` of the node states (input and output).
        heads: number of attention heads ``H``; must divide ``dim``.
        edge_types: number ``T`` of edge types; edges are coded ``1..T`` (0 = none).
        mlp_ratio: width of the node-wise MLP, as a multiple of ``dim``.

    ``forward(nodes [B, K, d], edges [B, K, K] long, present [B, K] bool)`` returns
    the new node states ``[B, K, d]`` (zeros at absent nodes); ``edges[b, i, j]`` is
    the type of the edge along which node ``i`` reads node ``j``. The diagonal of
    ``edges`` is ignored: every present node reads itself through the self-loop type
    ``T + 1``.
    """

    def __init__(
        self, dim: int, heads: int, edge_types: int, mlp_ratio: float = 2.0
    ) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(
                f"heads={heads} must be >= 1 and divide dim={dim} (each head gets "
                "dim / heads features)"
            )
        if edge_types < 1:
            raise ValueError(f"edge_types={edge_types} must be >= 1")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio={mlp_ratio} must be > 0")
        self.dim, self.heads, self.edge_types = dim, heads, edge_types
        self.head_dim = dim // heads
        self.self_loop = edge_types + 1
        self.project = nn.Linear(dim, dim, bias=False)  # W
        self.attend_dst = nn.Parameter(torch.empty(heads, self.head_dim))  # a_dst
        self.attend_src = nn.Parameter(torch.empty(heads, self.head_dim))  # a_src
        # Row t: the type-t bias b[t] (one per head) and value v[t]; row 0 ("no edge")
        # is never read, since such pairs are masked out of the softmax.
        self.edge_bias = nn.Embedding(edge_types + 2, heads)
        self.edge_value = nn.Embedding(edge_types + 2, dim)
        self.out = nn.Linear(dim, dim)  # W_o
        self.norm_attention = nn.LayerNorm(dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        )
        self.norm_mlp = nn.LayerNorm(dim)
        nn.init.xavier_uniform_(self.attend_dst)
        nn.init.xavier_uniform_(self.attend_src)
        nn.init.zeros_(self.edge_bias.weight)
        nn.init.normal_(self.edge_value.weight, std=0.1)

    def neighbours(self, edges: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Edge types with self-loops on the diagonal and 0 wherever node ``i`` may not
        read node ``j`` (no edge, or either node absent): ``[B, K, K]`` long.

        Absent nodes keep only their self-loop, so every softmax row has at least one
        entry and stays finite; their outputs are zeroed afterwards.
        """
        k = edges.shape[-1]
        both = present[:, :, None] & present[:, None, :]
        types = torch.where(both, edges, torch.zeros_like(edges))
        diagonal = torch.eye(k, dtype=torch.bool, device=edges.device)
        return torch.where(diagonal, torch.full_like(types, self.self_loop), types)

    def attention(
        self, z: torch.Tensor, types: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights ``alpha`` ``[B, H, K, K]`` (row ``i`` sums to 1 over
        ``N(i)``) and the read messages ``m`` ``[B, K, H, d_h]`` of projected nodes
        ``z`` ``[B, K, H, d_h]``."""
        dst = (z * self.attend_dst).sum(-1).transpose(1, 2)  # [B, H, K]: a_dst . z_i
        src = (z * self.attend_src).sum(-1).transpose(1, 2)  # [B, H, K]: a_src . z_j
        logits = F.leaky_relu(dst[..., :, None] + src[..., None, :], NEGATIVE_SLOPE)
        logits = logits + self.edge_bias(types).permute(0, 3, 1, 2)
        logits = logits.masked_fill((types == 0)[:, None], float("-inf"))
        alpha = torch.softmax(logits, dim=-1)
        values = self.edge_value(types).unflatten(-1, (self.heads, self.head_dim))
        messages = torch.einsum("bhij,bjhd->bihd", alpha, z) + torch.einsum(
            "bhij,bijhd->bihd", alpha, values
        )
        return alpha, messages

    def forward(
        self, nodes: torch.Tensor, edges: torch.Tensor, present: torch.Tensor
    ) -> torch.Tensor:
        """One round of message passing; see the class docstring for the shapes."""
        _check_graph(nodes, edges, present, self.dim)
        if edges.numel() and (edges.min() < 0 or edges.max() > self.edge_types):
            raise ValueError(
                f"edges must hold types in [0, {self.edge_types}] (0 = no edge), got "
                f"values in [{int(edges.min())}, {int(edges.max())}]"
            )
        nodes = _zero_absent(nodes, present)
        z = self.project(nodes).unflatten(-1, (self.heads, self.head_dim))
        _, messages = self.attention(z, self.neighbours(edges, present))
        read = self.norm_attention(nodes + self.out(messages.flatten(-2)))
        return _zero_absent(self.norm_mlp(read + self.mlp(read)), present)


def pack_graphs(nodes: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Put node features ``[B, K, F]`` and edge types ``[B, K, K]`` into one tensor
    ``[B, K, F + K]`` of the nodes' dtype: row ``k`` is node ``k``'s features, then
    ``edges[:, k]``.

    Edge types are small non-negative integers, which a float holds exactly; the
    packed tensor can therefore go wherever an image batch goes (indexing, ``.to``)
    and :func:`unpack_graphs` recovers both parts unchanged.
    """
    if nodes.dim() != 3:
        raise ValueError(f"nodes must have shape [B, K, F], got {tuple(nodes.shape)}")
    batch, k = nodes.shape[:2]
    if edges.shape != (batch, k, k):
        raise ValueError(
            f"edges must have shape [B, K, K] = {(batch, k, k)} to match nodes, got "
            f"{tuple(edges.shape)}"
        )
    if not nodes.is_floating_point():
        raise ValueError(f"nodes must be floating point, got {nodes.dtype}")
    exact = round(2 / torch.finfo(nodes.dtype).eps)  # integers beyond are rounded
    if edges.is_floating_point() or (edges < 0).any() or (edges > exact).any():
        raise ValueError(
            f"edges must hold integer types in [0, {exact}] (exact in {nodes.dtype}), "
            f"got {edges.dtype} values in [{edges.min()}, {edges.max()}]"
        )
    return torch.cat([nodes, edges.to(nodes.dtype)], dim=-1)


def unpack_graphs(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a :func:`pack_graphs` tensor ``[B, K, F + K]`` back into node features
    ``[B, K, F]`` and long edge types ``[B, K, K]``."""
    if packed.dim() != 3 or packed.shape[-1] <= packed.shape[1]:
        raise ValueError(
            "packed must have shape [B, K, F + K] with F >= 1 (see pack_graphs), got "
            f"{tuple(packed.shape)}"
        )
    k = packed.shape[1]
    codes = packed[..., -k:]
    edges = codes.round().long()
    if not torch.equal(edges.to(codes.dtype), codes):
        raise ValueError(
            "the last K columns of packed must be integer edge types (see pack_graphs)"
        )
    return packed[..., :-k], edges


class SceneGraphAttentionEncoder(nn.Module):
    """A scene graph -> ``[B, out_dim]``: input projection, ``layers``
    :class:`TypedGraphAttention` layers, a per-node readout MLP, and a sum (or mean)
    over the present nodes.

    Args:
        node_features: width ``F`` of a node's features; the last one must be 1 for a
            real node and 0 for padding (the presence flag).
        edge_types: number ``T`` of edge types (codes ``1..T``, 0 = no edge).
        out_dim: width of the output (the image tower's ``out_dim``).
        hidden_dim: width of the node states; ``heads`` must divide it.
        layers: number of attention layers (0 gives a Deep Sets model).
        heads: attention heads per layer.
        pool: ``"sum"`` (keeps the number of objects, as the Deep Sets oracle does)
            or ``"mean"``.
        edges: ``False`` drops every edge before the first layer (the ablation): each
            node then reads only itself, and the encoder is a Deep Sets model of the
            node features, whatever the packed input says.

    ``forward(packed)`` reads :func:`pack_graphs` tensors ``[B, K, F + K]``;
    :meth:`encode` takes the node features and edge types separately. Empty scenes
    give zeros.
    """

    def __init__(
        self,
        node_features: int,
        edge_types: int,
        out_dim: int = 256,
        hidden_dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        pool: str = "sum",
        edges: bool = True,
    ) -> None:
        super().__init__()
        if node_features < 1:
            raise ValueError(f"node_features={node_features} must be >= 1")
        if out_dim < 1 or hidden_dim < 1:
            raise ValueError(
                f"out_dim={out_dim} and hidden_dim={hidden_dim} must be >= 1"
            )
        if layers < 0:
            raise ValueError(f"layers={layers} must be >= 0")
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r} must be one of {POOLS}")
        self.out_dim, self.node_features, self.pool = out_dim, node_features, pool
        self.use_edges = edges
        self.config: dict[str, Any] = {
            "name": "scene_graph_attention",
            "node_features": node_features,
            "edge_types": edge_types,
            "out_dim": out_dim,
            "hidden_dim": hidden_dim,
            "layers": layers,
            "heads": heads,
            "pool": pool,
            "edges": edges,
        }
        self.embed = nn.Linear(node_features, hidden_dim)
        self.layers = nn.ModuleList(
            TypedGraphAttention(hidden_dim, heads, edge_types) for _ in range(layers)
        )
        self.readout = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
        )

    @staticmethod
    def present(nodes: torch.Tensor) -> torch.Tensor:
        """Which nodes are real, ``[B, K]`` bool: those whose presence flag (the last
        feature) is above 0.5."""
        return nodes[..., -1] > 0.5

    def node_states(self, nodes: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """The readout of every node after message passing, ``[B, K, out_dim]`` (zeros
        at absent nodes)."""
        if nodes.dim() != 3 or nodes.shape[-1] != self.node_features:
            raise ValueError(
                f"nodes must have shape [B, K, {self.node_features}], got "
                f"{tuple(nodes.shape)}"
            )
        present = self.present(nodes)
        if not self.use_edges:
            edges = torch.zeros_like(edges)
        h = self.embed(_zero_absent(nodes, present))
        for layer in self.layers:
            h = layer(h, edges, present)
        return _zero_absent(self.readout(h), present)

    def encode(self, nodes: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """Pool the node states of node features ``[B, K, F]`` and edge types
        ``[B, K, K]`` into ``[B, out_dim]``."""
        states = self.node_states(nodes, edges)
        pooled = states.sum(dim=1)
        if self.pool == "mean":
            count = self.present(nodes).sum(dim=1, keepdim=True).clamp(min=1)
            pooled = pooled / count
        return pooled

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        """Encode a batch of packed scene graphs ``[B, K, F + K]`` (see
        :func:`pack_graphs`)."""
        k = packed.shape[1] if packed.dim() == 3 else 0
        if packed.dim() != 3 or packed.shape[-1] != self.node_features + k:
            raise ValueError(
                f"packed must have shape [B, K, {self.node_features} + K] (see "
                f"pack_graphs), got {tuple(packed.shape)}"
            )
        return self.encode(*unpack_graphs(packed))

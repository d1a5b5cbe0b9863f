"""Graph HyperNetworks: a graph neural network over the network's computation graph embeds every operation,
and each convolution's weights are decoded from its node's embedding.

Zhang, Ren & Urtasun, "Graph HyperNetworks for Neural Architecture Search" (ICLR 2019). SMASH (see
:mod:`edgenas.estimators.hypernet`) conditions the weight generator on a flat encoding of the architecture;
a GHN instead builds the computation graph of the whole main network (every operation a node, every tensor
flowing between two operations an edge), gives each node an embedding of its operation type, propagates
along the graph with gated (GRU) updates, and decodes each parametric node's weights from its final
embedding with one decoder shared by all nodes. The node's place in the network (which cell, which edge,
what feeds it and what it feeds) enters only through the graph, never as a position code.

The graph of an NB201 network here: a stem node; per cell, its three intermediate sum nodes (NB201's nodes
1-3, node 0 being the previous cell's output) and one node per edge carrying the edge's op; a residual
reduction node between stages; a classifier node. Edges whose op is ``none`` carry no tensor, so their
node is cut off from the graph. Propagation follows the GHN paper's forward-backward scheme: the nodes are
visited in topological order (then in reverse), each receiving the sum of its predecessors' (successors')
transformed embeddings through a GRU cell; ``rounds`` such sweeps. Nodes of one topological level are
updated together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgenas.spaces.nb201 import EDGES

NODE_TYPES = ("stem", "sum", "reduction", "classifier")


class NB201Graph:
    """The fixed skeleton of an NB201 network's computation graph (nodes, directed edges, topological levels).

    Node ``edge_node[cell][e]`` is edge ``e``'s op node in ``cell``; its type (and whether it is connected)
    depends on the architecture, the rest does not."""

    def __init__(self, n_cells: int, cells_per_stage: int) -> None:
        types: list[str] = []
        links: list[tuple[int, int]] = []

        def node(kind: str) -> int:
            types.append(kind)
            return len(types) - 1

        out = node("stem")
        self.edge_node: list[list[int]] = []
        for cell in range(n_cells):
            if cell and cell % cells_per_stage == 0:
                red = node("reduction")
                links.append((out, red))
                out = red
            sums = [out] + [node("sum") for _ in range(3)]
            ops = []
            for i, j in EDGES:
                op = node("op")
                links += [(sums[i], op), (op, sums[j])]
                ops.append(op)
            self.edge_node.append(ops)
            out = sums[3]
        links.append((out, node("classifier")))
        self.types, self.links = types, links
        self.n = len(types)
        depth = [0] * self.n  # longest path from the stem, by Kahn's topological sort
        indegree = [0] * self.n
        for _, v in links:
            indegree[v] += 1
        ready = [v for v in range(self.n) if not indegree[v]]
        while ready:
            u = ready.pop()
            for uu, v in links:
                if uu == u:
                    depth[v] = max(depth[v], depth[u] + 1)
                    indegree[v] -= 1
                    if not indegree[v]:
                        ready.append(v)
        self.levels = [[v for v in range(self.n) if depth[v] == d] for d in range(max(depth) + 1)]


class GraphEncoder(nn.Module):
    """Node embeddings by gated forward-backward propagation, decoded into one generator code per edge op node.

    ``forward(ops)`` takes the six edge ops of the (shared) cell and returns ``(n_cells, 6, out)``."""

    def __init__(self, op_names: Sequence[str], n_cells: int, cells_per_stage: int, hidden: int, out: int,
                 rounds: int = 1) -> None:
        super().__init__()
        self.graph = NB201Graph(n_cells, cells_per_stage)
        self.kinds = list(NODE_TYPES) + [f"op:{op}" for op in op_names]
        self.rounds = rounds
        self.embed = nn.Embedding(len(self.kinds), hidden)
        self.message_fwd, self.message_bwd = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.update_fwd, self.update_bwd = nn.GRUCell(hidden, hidden), nn.GRUCell(hidden, hidden)
        self.decoder = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))
        g = self.graph
        self.register_buffer("_links", torch.tensor(g.links, dtype=torch.long), persistent=False)
        self.register_buffer("_op_nodes", torch.tensor(g.edge_node, dtype=torch.long), persistent=False)

    def adjacency(self, ops: Sequence[str]) -> torch.Tensor:
        """``A[v, u] = 1`` when a tensor flows from node u to node v (``none`` edges carry none)."""
        g = self.graph
        dev = self._links.device
        cut = torch.zeros(g.n, dtype=torch.bool, device=dev)
        dead = [e for e, op in enumerate(ops) if op == "none"]
        if dead:
            cut[self._op_nodes[:, dead].reshape(-1)] = True
        u, v = self._links[:, 0], self._links[:, 1]
        keep = ~(cut[u] | cut[v])
        a = torch.zeros(g.n, g.n, device=dev)
        a[v[keep], u[keep]] = 1.0
        return a

    def node_types(self, ops: Sequence[str]) -> torch.Tensor:
        g = self.graph
        kinds = [self.kinds.index(t) if t != "op" else 0 for t in g.types]
        for cell_nodes in g.edge_node:
            for e, v in enumerate(cell_nodes):
                kinds[v] = self.kinds.index(f"op:{ops[e]}")
        return torch.tensor(kinds, dtype=torch.long, device=self._links.device)

    def embeddings(self, ops: Sequence[str]) -> torch.Tensor:
        """The final embedding of every node, ``(n_nodes, hidden)``."""
        a = self.adjacency(ops)
        h = self.embed(self.node_types(ops))
        levels = [torch.tensor(lv, dtype=torch.long, device=h.device) for lv in self.graph.levels]
        for _ in range(self.rounds):
            for order, adj, message, update in ((levels[1:], a, self.message_fwd, self.update_fwd),
                                                (levels[-2::-1], a.T, self.message_bwd, self.update_bwd)):
                for idx in order:
                    m = adj[idx] @ message(h)
                    h = h.index_copy(0, idx, update(m, h[idx]))
        return h

    def forward(self, ops: Sequence[str]) -> torch.Tensor:
        h = self.embeddings(ops)
        return self.decoder(h[self._op_nodes.reshape(-1)]).view(*self._op_nodes.shape, -1)

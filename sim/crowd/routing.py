"""Routing tables: one shortest-path tree toward each destination in use.

Walkers do not search paths. Each destination (a viewing stretch, an origin, an
activity place) is a set of nodes; one Dijkstra run from that set over the *reversed*
walking graph (scipy.sparse.csgraph) gives, for every node, the distance to the nearest
node of the set and the next node on the way, hence the next edge. A walker at a node
looks up ``next_edge[destination, node]``: one NumPy gather for all walkers at once.
The tables are rebuilt when the set of open edges changes (a closure starts or ends).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from sim.crowd.walkgraph import WalkGraph

__all__ = ["RoutingTables", "shortest_open_edges", "walk_matrix"]


def shortest_open_edges(graph: WalkGraph, open_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shortest open edge of each ordered pair of nodes (a sparse matrix would sum
    parallel edges), as sorted keys ``u * n_nodes + v`` and their edge ids."""
    edges = np.flatnonzero(open_edges)
    key = graph.eu[edges] * graph.n_nodes + graph.ev[edges]
    order = np.lexsort((graph.length[edges], key))
    key, edges = key[order], edges[order]
    keep = np.ones(len(key), dtype=bool)
    keep[1:] = key[1:] != key[:-1]
    return key[keep], edges[keep]


def walk_matrix(graph: WalkGraph, open_edges: np.ndarray, *, reverse: bool = False) -> csr_matrix:
    """Sparse matrix of walking lengths over the open edges (``reverse``: transposed, for
    distances *to* a node)."""
    _, edges = shortest_open_edges(graph, open_edges)
    u, v = (graph.ev, graph.eu) if reverse else (graph.eu, graph.ev)
    n = graph.n_nodes
    return csr_matrix((graph.length[edges], (u[edges], v[edges])), shape=(n, n))


class RoutingTables:
    """Next edge and remaining distance toward every destination, from every node.

    Parameters
    ----------
    graph
        The walking graph.
    destinations
        Node sets, one per destination; a walker has arrived when it stands on any of
        them.

    Attributes
    ----------
    next_edge
        ``(n_destinations, n_nodes)`` int32: edge to take from a node, ``-1`` at the
        destination itself or where it cannot be reached.
    dist
        ``(n_destinations, n_nodes)`` float32: walking distance (m), ``inf`` if
        unreachable.
    """

    def __init__(self, graph: WalkGraph, destinations: Sequence[np.ndarray]) -> None:
        self.graph = graph
        self.destinations = [np.unique(np.asarray(d, dtype=np.int64)) for d in destinations]
        shape = (len(self.destinations), graph.n_nodes)
        self.next_edge = np.full(shape, -1, dtype=np.int32)
        self.dist = np.full(shape, np.inf, dtype=np.float32)
        self.rebuilds = 0

    def rebuild(self, open_edges: np.ndarray) -> None:
        """Recompute every tree over the edges where `open_edges` is true."""
        g = self.graph
        key, edges = shortest_open_edges(g, open_edges)
        reverse = walk_matrix(g, open_edges, reverse=True)
        singles = [i for i, d in enumerate(self.destinations) if len(d) == 1]
        if singles:
            src = np.array([self.destinations[i][0] for i in singles])
            dist, pred = dijkstra(reverse, indices=src, return_predecessors=True)
            self._store(np.array(singles), dist, pred, key, edges)
        for i, d in enumerate(self.destinations):
            if len(d) > 1:
                dist, pred, _ = dijkstra(
                    reverse, indices=d, return_predecessors=True, min_only=True
                )
                self._store(np.array([i]), dist[None, :], pred[None, :], key, edges)
        self.rebuilds += 1

    def _store(
        self,
        rows: np.ndarray,
        dist: np.ndarray,
        pred: np.ndarray,
        key: np.ndarray,
        edges: np.ndarray,
    ) -> None:
        n = self.graph.n_nodes
        nodes = np.broadcast_to(np.arange(n), pred.shape)
        has = pred >= 0
        want = nodes[has].astype(np.int64) * n + pred[has]
        hit = np.searchsorted(key, want)
        nxt = np.full(pred.shape, -1, dtype=np.int32)
        nxt[has] = edges[hit]
        self.next_edge[rows] = nxt
        self.dist[rows] = dist.astype(np.float32)

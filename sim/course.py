"""The event course on the street graph: waypoints joined by shortest walking paths.

A course gives every spot along the race a kilometre mark, which the crowd uses to
choose viewing spots and the zones use to cut course segments.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from sim.errors import ScenarioError
from sim.scenario import RouteConfig, Scenario
from sim.streets import Streets, to_metres

__all__ = ["Course", "build_course"]


@dataclass(frozen=True, eq=False)
class Course:
    """The course as an ordered walk over the street graph.

    Attributes
    ----------
    route
        The scenario's route section it was built from.
    waypoint_node
        Node index each waypoint snapped to.
    waypoint_snap_m
        Distance from each waypoint to that node.
    nodes
        Node indices along the course, in order (consecutive repeats removed).
    edges
        Edge indices along the course, in order; ``len(edges) == len(nodes) - 1``.
    cum_m
        Distance from the start at each entry of ``nodes``.
    waypoint_km
        Kilometre mark of each waypoint on the course.
    """

    route: RouteConfig
    waypoint_node: np.ndarray
    waypoint_snap_m: np.ndarray
    nodes: np.ndarray
    edges: np.ndarray
    cum_m: np.ndarray
    waypoint_km: np.ndarray

    @property
    def length_m(self) -> float:
        """Total length of the course in metres."""
        return float(self.cum_m[-1])

    def km_at(self, streets: Streets, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Kilometre mark of the course node nearest to each point (metres, EPSG:31370)."""
        tree = cKDTree(np.column_stack([streets.x[self.nodes], streets.y[self.nodes]]))
        _, nearest = tree.query(np.column_stack([np.ravel(x), np.ravel(y)]))
        return self.cum_m[nearest] / 1000.0

    def summary(self) -> dict[str, object]:
        """Course length and the kilometre mark of each named waypoint."""
        return {
            "name": self.route.name,
            "length_km": round(self.length_m / 1000.0, 3),
            "waypoints": [
                {
                    "name": w.name,
                    "kind": w.kind,
                    "km": round(float(km), 3),
                    "published_km": w.km,
                    "snap_m": round(float(s), 1),
                }
                for w, km, s in zip(
                    self.route.waypoints, self.waypoint_km, self.waypoint_snap_m, strict=True
                )
            ],
        }


def build_course(
    streets: Streets, route: RouteConfig, *, scenario: Scenario | None = None
) -> Course:
    """Chain shortest walking paths between consecutive waypoints of `route`.

    Parameters
    ----------
    streets
        The prepared street graph.
    route
        Ordered waypoints (``[route]`` of the scenario).
    scenario
        Used only to name the scenario file in error messages.

    Raises
    ------
    ScenarioError
        A waypoint lies farther than ``route.max_snap_m`` from any street node, or two
        consecutive waypoints are not connected.
    """
    where = scenario.where if scenario is not None else (lambda key: key)
    lon = np.array([w.lon for w in route.waypoints])
    lat = np.array([w.lat for w in route.waypoints])
    wx, wy = to_metres(lon, lat)
    snap_node, snap_m = streets.nearest_node(wx, wy)
    for i, (w, dist) in enumerate(zip(route.waypoints, snap_m, strict=True)):
        if dist > route.max_snap_m:
            raise ScenarioError(
                f"{where(f'route.waypoints[{i}]')} ({w.name!r} at {w.lat}, {w.lon}) lies "
                f"{dist:.0f} m from the nearest street of {streets.source.describe()}; "
                f"allowed up to route.max_snap_m = {route.max_snap_m:g} m. Move the waypoint "
                "onto a street inside the street data, or load data that covers it."
            )

    graph, edge_of = _length_matrix(streets)
    nodes: list[int] = [int(snap_node[0])]
    for i in range(1, len(snap_node)):
        src, dst = int(snap_node[i - 1]), int(snap_node[i])
        if src == dst:
            continue
        _, pred = dijkstra(graph, indices=src, return_predecessors=True)
        if pred[dst] < 0:
            raise ScenarioError(
                f"{where(f'route.waypoints[{i}]')} ({route.waypoints[i].name!r}) cannot be "
                f"reached on foot from waypoint {i - 1} in the street graph"
            )
        leg = [dst]
        while leg[-1] != src:
            leg.append(int(pred[leg[-1]]))
        nodes.extend(reversed(leg[:-1]))
    node_arr = np.asarray(nodes, dtype=np.int64)
    edges = np.array(
        [edge_of[(a, b)] for a, b in itertools.pairwise(node_arr)],
        dtype=np.int64,
    )
    cum = np.concatenate([[0.0], np.cumsum(streets.length[edges])])
    # the km of a waypoint is at the first visit of its node at or after the previous one
    waypoint_km = np.empty(len(snap_node))
    pos = 0
    for i, node in enumerate(snap_node):
        pos = pos + int(np.argmax(node_arr[pos:] == node))
        waypoint_km[i] = cum[pos] / 1000.0
    return Course(
        route=route,
        waypoint_node=snap_node,
        waypoint_snap_m=snap_m,
        nodes=node_arr,
        edges=edges,
        cum_m=cum,
        waypoint_km=waypoint_km,
    )


def _length_matrix(streets: Streets) -> tuple[csr_matrix, dict[tuple[int, int], int]]:
    """Sparse matrix of the shortest edge between each pair of nodes, and that edge."""
    order = np.argsort(-streets.length)  # shorter parallel edges overwrite longer ones
    edge_of = {
        (int(u), int(v)): int(e)
        for e, u, v in zip(order, streets.edge_u[order], streets.edge_v[order], strict=True)
    }
    keys = np.array(list(edge_of.keys()), dtype=np.int64).reshape(-1, 2)
    vals = np.array(list(edge_of.values()), dtype=np.int64)
    n = streets.n_nodes
    matrix = csr_matrix((streets.length[vals], (keys[:, 0], keys[:, 1])), shape=(n, n))
    return matrix, edge_of

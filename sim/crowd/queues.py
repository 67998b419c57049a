"""Queues: who is still held at a node, for how long, and where the worst queues are.

A walker is *held* when it is waiting at a node for the next edge of its route (state
``waiting``: queued at the end of its edge, or at a node it stepped onto). At the end of a
run these people are what a planner asks about first: how many never got through, how
long the longest of them has waited and at which places the queues stand. Queues are
gathered by street node (both sidewalk copies of a split course node are one place) and
named by the street most of them queue for.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from sim.crowd.walkgraph import WalkGraph
from sim.streets import Streets, to_lonlat

__all__ = ["held_at_nodes"]


def held_at_nodes(
    held: np.ndarray,
    edge: np.ndarray,
    node: np.ndarray,
    since: np.ndarray,
    want: np.ndarray,
    *,
    graph: WalkGraph,
    streets: Streets,
    now_s: float,
    top: int = 10,
) -> dict[str, Any]:
    """Count the people held at nodes and list the `top` longest queues by place.

    Parameters
    ----------
    held
        Boolean mask of the people held at a node now (waiting for their next edge).
    edge, node
        Per person: the internal edge it is on (``-1`` when at a node) and its node when
        off an edge. A held walker on an edge is queued at the edge's far end.
    since
        When each person started waiting (seconds after the start).
    want
        The internal edge each walker queues for (``-1``: not decided yet).
    graph, streets
        The walking graph and the street graph it was built from (ids, names, places).
    now_s
        Seconds after the start now (the end of the run).
    top
        How many queues to list, longest first (ties: the longer wait first, then the
        street node id).

    Returns
    -------
    dict
        ``held`` (people), ``longest_wait_s`` and ``queues``: one entry per place with its
        OSM ``node`` id, ``x``/``y`` (EPSG:31370 m), ``lat``/``lon``, ``street`` (``""``
        when the graph has no name there), ``held`` and ``longest_wait_s``.
    """
    if top < 0:
        raise ValueError(f"top must be 0 or more, got {top}")
    rows = np.flatnonzero(held)
    if len(rows) == 0:
        return {"held": 0, "longest_wait_s": 0.0, "queues": []}
    on = edge[rows]
    at = np.where(on >= 0, graph.ev[np.maximum(on, 0)], node[rows]).astype(np.int64)
    place = graph.node_street[at].astype(np.int64)
    wait = np.maximum(now_s - since[rows], 0.0)
    places, which, count = np.unique(place, return_inverse=True, return_counts=True)
    longest = np.zeros(len(places))
    np.maximum.at(longest, which, wait)
    order = np.lexsort((streets.node_id[places], -longest, -count))[:top]
    queues = []
    for k in order.tolist():
        i = int(places[k])
        lon, lat = to_lonlat(streets.x[i], streets.y[i])
        queues.append(
            {
                "node": int(streets.node_id[i]),
                "x": round(float(streets.x[i]), 1),
                "y": round(float(streets.y[i]), 1),
                "lat": round(float(np.ravel(lat)[0]), 6),
                "lon": round(float(np.ravel(lon)[0]), 6),
                "street": _street_name(rows[which == k], at[which == k], want, graph, streets),
                "held": int(count[k]),
                "longest_wait_s": round(float(longest[k]), 1),
            }
        )
    return {
        "held": len(rows),
        "longest_wait_s": round(float(wait.max()), 1),
        "queues": queues,
    }


def _street_name(
    rows: np.ndarray, at: np.ndarray, want: np.ndarray, graph: WalkGraph, streets: Streets
) -> str:
    """The street most of a queue waits for, else the most common named street at its
    node ("" when nothing there has a name)."""
    wanted = want[rows]
    street = graph.street_edge[wanted[wanted >= 0]]
    names = [streets.name[s] for s in street[street >= 0].tolist() if streets.name[s]]
    if not names:
        touching = np.flatnonzero(np.isin(graph.eu, at) | np.isin(graph.ev, at))
        street = graph.street_edge[touching]
        names = [streets.name[s] for s in street[street >= 0].tolist() if streets.name[s]]
    if not names:
        return ""
    counts = Counter(names)
    best = max(counts.values())
    return min(name for name, c in counts.items() if c == best)  # ties: deterministic

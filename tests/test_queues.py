"""Queues at the end: people held at nodes, the longest wait and the worst queues by place."""

from __future__ import annotations

import numpy as np
import pytest

from sim.crowd import CrowdModel
from sim.crowd.model import WAITING
from sim.crowd.queues import held_at_nodes
from tests.test_crowd import node_index, tiny_scenario, tiny_world


def test_queues_are_counted_by_street_node_and_named_by_the_street_wanted() -> None:
    scenario, streets, course = tiny_world(tiny_scenario())
    model = CrowdModel(scenario, streets, course, seed=1)
    g = model.graph
    c, n = node_index(streets, 2), node_index(streets, 4)
    into_c = np.flatnonzero(g.ev == c)[0]  # an edge ending at the centre
    c_to_n = np.flatnonzero((g.node_street[g.eu] == c) & (g.node_street[g.ev] == n))[0]
    n_to_c = np.flatnonzero((g.eu == n) & (g.node_street[g.ev] == c))[0]
    # 0-2 at the centre (0 queued at the end of an edge), 3 at North, 4 not held
    held = np.array([True, True, True, True, False])
    edge = np.array([into_c, -1, -1, -1, into_c])
    node = np.array([0, c, c, n, 0])
    since = np.array([100.0, 40.0, 290.0, 10.0, 0.0])
    want = np.array([c_to_n, c_to_n, -1, n_to_c, -1])
    out = held_at_nodes(
        held, edge, node, since, want, graph=g, streets=streets, now_s=300.0, top=10
    )
    assert out["held"] == 4
    assert out["longest_wait_s"] == 290.0
    first, second = out["queues"]
    assert first["node"] == 2 and first["held"] == 3
    assert first["longest_wait_s"] == 260.0
    assert first["street"] == "Rue Nord"  # the street two of the three queue for
    assert second["node"] == 4 and second["held"] == 1 and second["longest_wait_s"] == 290.0
    assert second["street"] == "Rue Nord"
    assert first["x"] == round(float(streets.x[c]), 1)
    assert abs(first["lat"] - 50.84) < 1e-4 and abs(first["lon"] - 4.36) < 1e-4
    # only the worst queue
    one = held_at_nodes(held, edge, node, since, want, graph=g, streets=streets, now_s=300.0, top=1)
    assert [q["node"] for q in one["queues"]] == [2] and one["held"] == 4
    # nobody held
    none = held_at_nodes(
        np.zeros(5, dtype=bool), edge, node, since, want, graph=g, streets=streets, now_s=300.0
    )
    assert none == {"held": 0, "longest_wait_s": 0.0, "queues": []}
    with pytest.raises(ValueError, match="top must be 0 or more, got -1"):
        held_at_nodes(held, edge, node, since, want, graph=g, streets=streets, now_s=0.0, top=-1)


def test_the_manifest_figures_name_a_walker_held_to_the_end() -> None:
    """A walker held at the start by a full sidewalk (and too patient to detour) is in
    the summary's queues at the end, with its whole wait."""
    scenario, streets, course = tiny_world(tiny_scenario(reroute_patience_s=3600.0))
    model = CrowdModel(scenario, streets, course, seed=1)
    model._next_group = len(model.groups)  # no arrivals: one walker placed by hand
    g, p, r = model.graph, model.people, model.routes
    w = node_index(streets, 1)
    dest = model._o0
    route = int(r.next_edge[dest, w])
    model.occ[g.seg[route]] = model.seg_cap[g.seg[route]]
    p.state[0], p.node[0], p.edge[0], p.dest[0], p.want[0] = WAITING, w, -1, dest, -1
    model._activate(np.array([0]))
    for _ in range(120):
        model.step()
    held = model.summary()["held_at_end"]
    assert held["held"] == model.state_counts()["waiting"] == 1
    assert held["longest_wait_s"] == 120.0
    assert held["queues"] == [
        {
            "node": 1,
            "x": round(float(streets.x[w]), 1),
            "y": round(float(streets.y[w]), 1),
            "lat": held["queues"][0]["lat"],
            "lon": held["queues"][0]["lon"],
            "street": "Boulevard Test",
            "held": 1,
            "longest_wait_s": 120.0,
        }
    ]

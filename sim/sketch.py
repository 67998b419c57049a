"""The built-in offline Brussels sketch: a made-up street network, NOT the real city.

The sketch lets every feature of crowdsim run without a data file or network access.
It is generated, not mapped: the event course is the given waypoints joined by straight
lines, and around it lies a jittered square grid of invented streets ("Sketch street R12",
"Sketch avenue C5", footway diagonals). Only the waypoints sit at real Brussels places
(WGS84); every other street, junction and distance away from the course is fiction.
Results computed on the sketch say nothing about the real streets of Brussels.

The graph looks like one from ``osmnx.graph_from_xml`` (``crs="epsg:4326"``, nodes with
``x``/``y``/``street_count``, both directions of every edge with ``osmid``, ``highway``,
``name``, ``length``, ``oneway``, ``reversed``) and carries ``sketch=True``. The layout is
drawn in Belgian Lambert 72 (EPSG:31370, metres), so waypoints should lie in or near Belgium.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import networkx as nx
import numpy as np
from osmnx.distance import great_circle
from pyproj import Transformer
from scipy.spatial import KDTree

__all__ = ["DEFAULT_WAYPOINTS", "build_sketch", "waypoint_nodes"]

#: Approximate 2019 Tour de France team-time-trial course (stage 2), as (name, lat, lon).
DEFAULT_WAYPOINTS: tuple[tuple[str, float, float], ...] = (
    ("Palais Royal", 50.8417, 4.3620),
    ("Rue Belliard", 50.8386, 4.3770),
    ("Cinquantenaire arcade", 50.8399, 4.3929),
    ("Avenue de Tervueren", 50.8318, 4.4230),
    ("Parc de Woluwe", 50.8260, 4.4390),
    ("Boulevard du Souverain", 50.8165, 4.4245),
    ("Hermann-Debroux", 50.8128, 4.4085),
    ("Chaussée de La Hulpe", 50.8005, 4.3985),
    ("Avenue Franklin Roosevelt", 50.8060, 4.3920),
    ("Avenue de Diane", 50.8045, 4.3745),
    ("Bois de la Cambre", 50.8100, 4.3770),
    ("Boulevard Général Jacques", 50.8205, 4.3880),
    ("Boulevard Louis Schmidt", 50.8300, 4.3990),
    ("Rond-point Montgomery", 50.8383, 4.4078),
    ("Boulevard Brand Whitlock", 50.8455, 4.4045),
    ("Boulevard Auguste Reyers", 50.8520, 4.3995),
    ("Boulevard Lambermont / Parc Josaphat", 50.8630, 4.3850),
    ("Pont Van Praet", 50.8850, 4.3690),
    ("Avenue des Croix du Feu", 50.8905, 4.3590),
    ("Atomium", 50.8949, 4.3416),
)

_L72 = Transformer.from_crs("EPSG:4326", "EPSG:31370", always_xy=True)
_COURSE_STEP_M = 100.0  # spacing of the nodes along the course
_SNAP_M = 0.5  # course anchors (waypoints, self-crossings) closer than this are merged
_MAX_GRID_NODES = 400_000


def build_sketch(  # noqa: C901 - the recipe of the offline city, step by step, read top to bottom
    waypoints: Sequence[tuple[str, float, float]] = DEFAULT_WAYPOINTS,
    *,
    spacing_m: float = 200.0,
    margin_m: float = 1500.0,
    seed: int | np.random.Generator = 0,
) -> nx.MultiDiGraph:
    """Generate the offline sketch street network around an event course.

    Parameters
    ----------
    waypoints
        The course as ``(name, lat, lon)`` in WGS84 degrees, in riding order (at least 2).
        Consecutive waypoints are joined by a straight "primary" street named after the
        destination waypoint plus `` (sketch)``, with a node every ~100 m and a node
        exactly at each waypoint; where the course crosses itself, it gets a junction
        (a stretch ridden twice along the same line gets two parallel streets).
    spacing_m
        Spacing of the surrounding street grid, in metres (> 0).
    margin_m
        How far the grid extends beyond the course's bounding box, in metres (>= 0).
    seed
        Seed or generator for the grid's jitter, removed streets and footway diagonals.

    Returns
    -------
    networkx.MultiDiGraph
        Strongly connected, osmnx-style, WGS84 graph with ``graph["sketch"] is True``.

    Raises
    ------
    ValueError
        If `waypoints`, `spacing_m` or `margin_m` is invalid; the message names which.
    """
    names, latlon = _check_waypoints(waypoints)
    if not (math.isfinite(spacing_m) and spacing_m > 0):
        raise ValueError(f"spacing_m must be a positive number of metres, got {spacing_m!r}")
    if not (math.isfinite(margin_m) and margin_m >= 0):
        raise ValueError(f"margin_m must be a number of metres >= 0, got {margin_m!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    wxy = np.column_stack(_L72.transform(latlon[:, 1], latlon[:, 0]))
    if not np.isfinite(wxy).all():
        raise ValueError("waypoints: cannot place them in Belgian Lambert 72; use Belgian points")
    cxy, course_edges, exact = _course(wxy, names, latlon)
    if not course_edges:
        raise ValueError("waypoints: all lie at the same place; the course needs a length")
    seg_a, seg_b = wxy[:-1], wxy[1:]

    # The grid: jittered nodes, rows and columns of streets, a few footway diagonals.
    lo, hi = wxy.min(axis=0) - margin_m, wxy.max(axis=0) + margin_m
    ncol, nrow = (np.ceil((hi - lo) / spacing_m).astype(int) + 1).tolist()
    if nrow * ncol > _MAX_GRID_NODES:
        raise ValueError(
            f"spacing_m={spacing_m} and margin_m={margin_m} give a {nrow}x{ncol} grid; "
            "increase spacing_m, reduce margin_m or shorten the course"
        )
    ii, jj = np.mgrid[0:nrow, 0:ncol]
    gxy = lo + np.column_stack([jj.ravel(), ii.ravel()]) * spacing_m
    gxy += rng.uniform(-0.15, 0.15, gxy.shape) * spacing_m
    idx = np.arange(nrow * ncol).reshape(nrow, ncol)
    a_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    kinds: list[str] = []
    labels: list[str] = []

    def add(a: np.ndarray, b: np.ndarray, kind: str, label: str) -> None:
        a_parts.append(a.ravel())
        b_parts.append(b.ravel())
        kinds.extend([kind] * a.size)
        labels.extend([label] * a.size)

    for i in range(nrow):
        kind, word = ("secondary", "avenue") if i % 5 == 0 else ("residential", "street")
        add(idx[i, :-1], idx[i, 1:], kind, f"Sketch {word} R{i}")
    for j in range(ncol):
        kind, word = ("secondary", "avenue") if j % 5 == 0 else ("residential", "street")
        add(idx[:-1, j], idx[1:, j], kind, f"Sketch {word} C{j}")
    cells = np.flatnonzero(rng.random((nrow - 1) * (ncol - 1)) < 0.03)
    flip = rng.random(cells.size) < 0.5
    ci, cj = np.divmod(cells, ncol - 1)
    for k, (i, j, f) in enumerate(zip(ci.tolist(), cj.tolist(), flip.tolist(), strict=True)):
        a, b = (idx[i, j + 1], idx[i + 1, j]) if f else (idx[i, j], idx[i + 1, j + 1])
        add(np.array([a]), np.array([b]), "footway", f"Sketch footway F{k}")
    ga, gb = np.concatenate(a_parts), np.concatenate(b_parts)

    # Keep the course clear: no grid node within 10% of spacing, no grid street across it.
    near = _seg_distance(gxy, seg_a, seg_b) < 0.1 * spacing_m
    keep = ~near[ga] & ~near[gb] & ~_crosses(gxy[ga], gxy[gb], seg_a, seg_b)
    edges = np.flatnonzero(keep)
    # Remove ~5% of the grid streets at random, never one of a random spanning forest.
    grid = nx.Graph()
    grid.add_weighted_edges_from(zip(ga[edges], gb[edges], rng.random(edges.size), strict=True))
    tree = {frozenset(e) for e in nx.minimum_spanning_edges(grid, data=False)}
    spare = [k for k in edges.tolist() if frozenset((ga[k], gb[k])) not in tree]
    drop = rng.choice(spare, size=min(len(spare), round(0.05 * edges.size)), replace=False)
    edges = np.setdiff1d(edges, drop)

    # Stitch: each course node to the grid nodes within 0.75 * spacing (else the nearest).
    free, pairs = np.flatnonzero(~near), []
    if free.size:
        kd = KDTree(gxy[free])
        nearest, ball = kd.query(cxy)[1], kd.query_ball_point(cxy, 0.75 * spacing_m)
        pairs = sorted({(c, int(free[g])) for c, gs in enumerate(ball) for g in [*gs, nearest[c]]})
    sc, sg = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    start = cxy[sc] + 0.01 * (gxy[sg] - cxy[sc])  # a stitch may touch the course at its end
    clear = ~_crosses(start, gxy[sg], seg_a, seg_b)
    sc, sg = sc[clear], sg[clear]

    # Assemble: course nodes 0..n-1, grid node g becomes n + g.
    n = len(cxy)
    allxy = np.r_[cxy, gxy]
    lon, lat = map(np.asarray, _L72.transform(allxy[:, 0], allxy[:, 1], direction="INVERSE"))
    for node, (la, lo_) in exact.items():
        lat[node], lon[node] = la, lo_
    und = [(u, v, "primary", name) for u, v, name in course_edges]
    und += [(n + int(ga[k]), n + int(gb[k]), kinds[k], labels[k]) for k in edges.tolist()]
    und += [(int(c), n + int(g), "residential", "Sketch link") for c, g in zip(sc, sg, strict=True)]
    u = np.array([e[0] for e in und])
    v = np.array([e[1] for e in und])
    length = great_circle(lat[u], lon[u], lat[v], lon[v])
    G = nx.MultiDiGraph(crs="epsg:4326", sketch=True, name="crowdsim offline Brussels sketch")
    used = np.unique(np.r_[np.arange(n), u, v])
    G.add_nodes_from((int(k), {"y": float(lat[k]), "x": float(lon[k])}) for k in used)
    for osmid, ((a, b, hw, name), d) in enumerate(zip(und, length.tolist(), strict=True), 1):
        attrs = {"osmid": osmid, "highway": hw, "name": name, "oneway": False, "length": d}
        G.add_edge(a, b, key=0, **attrs, reversed=False)
        G.add_edge(b, a, key=0, **attrs, reversed=True)
    G.remove_nodes_from(set(G) - nx.descendants(G, 0) - {0})  # pieces cut off by the course
    for node in G:
        G.nodes[node]["street_count"] = len(set(G.successors(node)))
    return G


def waypoint_nodes(
    graph: nx.MultiDiGraph, waypoints: Sequence[tuple[str, float, float]]
) -> list[int]:
    """Return the id of the node lying at each waypoint (within 1 m).

    Parameters
    ----------
    graph
        A sketch from :func:`build_sketch`, in WGS84 or projected (its ``crs``).
    waypoints
        ``(name, lat, lon)`` in WGS84 degrees.

    Returns
    -------
    list of int
        One node id per waypoint, in order.

    Raises
    ------
    ValueError
        If a waypoint is invalid or has no node within 1 m.
    """
    names, latlon = _check_waypoints(waypoints, minimum=1)
    ids = np.array(list(graph.nodes))
    x = np.array([graph.nodes[k]["x"] for k in ids])
    y = np.array([graph.nodes[k]["y"] for k in ids])
    crs = str(graph.graph.get("crs", "epsg:4326"))
    if crs.lower() == "epsg:4326":
        dist = great_circle(latlon[:, 0, None], latlon[:, 1, None], y[None], x[None])
    else:
        to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        px, py = map(np.asarray, to_crs.transform(latlon[:, 1], latlon[:, 0]))
        dist = np.hypot(x[None] - px[:, None], y[None] - py[:, None])
    best = dist.argmin(axis=1)
    for k, name in enumerate(names):
        if dist[k, best[k]] > 1.0:
            raise ValueError(f"waypoints[{k}] ({name!r}): no graph node within 1 m")
    return [int(ids[b]) for b in best]


def _check_waypoints(
    waypoints: Sequence[tuple[str, float, float]], minimum: int = 2
) -> tuple[list[str], np.ndarray]:
    """Validate ``(name, lat, lon)`` waypoints; return their names and an (n, 2) lat/lon array."""
    if isinstance(waypoints, str | bytes) or len(waypoints) < minimum:
        raise ValueError(f"waypoints: need at least {minimum} (name, lat, lon) tuples")
    names, rows = [], []
    for k, wp in enumerate(waypoints):
        try:
            name, lat, lon = wp
            lat, lon = float(lat), float(lon)
        except (TypeError, ValueError):
            raise ValueError(f"waypoints[{k}]: expected (name, lat, lon), got {wp!r}") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # also rejects NaN
            raise ValueError(f"waypoints[{k}] ({name!r}): lat {lat} / lon {lon} out of range")
        names.append(str(name))
        rows.append((lat, lon))
    return names, np.array(rows)


def _course(  # noqa: C901 - the sketch's course, one branch per kind of waypoint
    wxy: np.ndarray, names: list[str], latlon: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int, str]], dict[int, tuple[float, float]]]:
    """Densify the course; return node xy, edges (u, v, name) and {waypoint node: (lat, lon)}."""
    anchors: list[np.ndarray] = []

    def anchor(p: np.ndarray) -> int:
        for k, q in enumerate(anchors):
            if np.hypot(*(p - q)) < _SNAP_M:
                return k
        anchors.append(p)
        return len(anchors) - 1

    wid = [anchor(p) for p in wxy]
    exact = {w: (float(la), float(lo)) for w, (la, lo) in zip(wid, latlon, strict=True)}
    cuts = [[(0.0, wid[i]), (1.0, wid[i + 1])] for i in range(len(wxy) - 1)]
    for i in range(len(cuts)):
        for j in range(i + 2, len(cuts)):
            r, s, d = wxy[i + 1] - wxy[i], wxy[j + 1] - wxy[j], wxy[j] - wxy[i]
            den = _cross(r, s)
            if abs(den) <= 1e-9 * np.hypot(*r) * np.hypot(*s):
                continue  # parallel (or degenerate): no junction
            t, w = _cross(d, s) / den, _cross(d, r) / den
            if 0 <= t <= 1 and 0 <= w <= 1:
                k = anchor(wxy[i] + t * r)
                cuts[i].append((t, k))
                cuts[j].append((w, k))
    pts, edges = list(anchors), []
    for i, cut in enumerate(cuts):
        label = f"{names[i + 1]} (sketch)"
        seq = [k for _, k in sorted(cut)]
        for a, b in itertools.pairwise(seq):
            if a == b:
                continue
            steps = max(1, math.ceil(np.hypot(*(pts[b] - pts[a])) / _COURSE_STEP_M))
            chain = [a]
            for s in range(1, steps):
                pts.append(pts[a] + (pts[b] - pts[a]) * s / steps)
                chain.append(len(pts) - 1)
            chain.append(b)
            edges += [(p, q, label) for p, q in itertools.pairwise(chain)]
    return np.array(pts), edges, exact


def _seg_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each point p (n, 2) to the nearest segment a->b (m, 2)."""
    ab = (b - a)[None]
    ap = p[:, None] - a[None]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(axis=1)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """2-D cross product of vectors stored in the last axis."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _crosses(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each segment p->q (n, 2) meets (touching counts) any segment a->b (m, 2)."""
    p, q, a, b = p[:, None], q[:, None], a[None], b[None]
    pq, ab = q - p, b - a
    across = np.sign(_cross(pq, a - p)) * np.sign(_cross(pq, b - p)) <= 0
    return (across & (np.sign(_cross(ab, p - a)) * np.sign(_cross(ab, q - a)) <= 0)).any(axis=1)

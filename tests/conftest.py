"""Shared fixtures: the real OpenStreetMap extracts (skipped when absent) and small scenarios."""

from __future__ import annotations

import copy
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
#: ../shared/data beside the repository (CROWDSIM_DATA overrides).
DATA = Path(os.environ.get("CROWDSIM_DATA", REPO.parent / "shared" / "data"))
SCENARIOS = REPO / "scenarios"

PENTAGON = "brussels_pentagon_walk_2013-01-01.osm.bz2"
REGION = "brussels_region_walk_2013-01-01.osm.bz2"
REGION_PBF = "brussels_region_2013-01-01.osm.pbf"
CITY_DRIVE = "brussels_city_drive_2026-01-12.graphml.gz"


def data_file(name: str) -> Path:
    """Path of a file in ../shared/data, or skip the test saying why."""
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"needs the OpenStreetMap extract {path} (../shared/data is absent)")
    if name == REGION:
        _prepare_streets_once(path)
    return path


def _prepare_streets_once(path: Path) -> None:
    """Put the prepared graph of `path` in the session's street cache, once and under a
    lock: the region takes about a minute to prepare, and two xdist workers needing it at
    the same time would otherwise both do it (whoever comes second reads the cache)."""
    from sim.streets import streets_from_file

    cache = Path(os.environ["CROWDSIM_CACHE"])  # the session's (_private_cache)
    done = cache / f"{path.name}.prepared"
    if done.exists():
        return
    with open(cache / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            streets_from_file(path, cache_dir=cache)
            done.touch()


# ----------------------------------------------------------------------------- shared runs
# Expensive results (a street cache, finished runs) are made once per test session and
# shared read-only. `make test` runs the suite on two pytest-xdist workers, each its own
# session: `shared_folder` makes such a folder once for all of them (the first worker to
# need it builds it under a lock; the others wait and reuse it).


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temporary folder, or under xdist the one all its workers share."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-N/, above the worker's own pytest-N/popen-gwK/
    root = base / "shared"
    root.mkdir(exist_ok=True)
    return root


def shared_folder(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """``name`` in the shared temporary folder, made by ``build(path)`` once per test run.

    ``build`` gets a path that does not exist yet and must create it. A build that
    failed is tried again by the next caller (and fails the same way, in its own test).
    """
    root = _shared_root(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the street cache of the test session out of the user's ~/.cache (one cache for
    all xdist workers: entries are written atomically, so a real extract is prepared once)."""
    cache = _shared_root(tmp_path_factory) / "crowdsim-cache"
    cache.mkdir(exist_ok=True)
    os.environ["CROWDSIM_CACHE"] = str(cache)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, _private_cache: None) -> Path:
    """The smoke scenario run once per test run (under a minute); its folder is read-only.

    Tests that change files work on a copy (``shutil.copytree(smoke_run, tmp_path / ...)``).
    """
    from sim.scenario import load_scenario
    from validation.scoring import run_validated

    def build(out: Path) -> None:
        run_validated(load_scenario(SCENARIOS / "smoke.toml"), out, progress=False)

    return shared_folder(tmp_path_factory, "smoke", build)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``, keep the tests of a module that share a module-scoped
    fixture on one worker (one xdist_group per module), so that the fixture is made once;
    other tests are handed out one by one. A test's own xdist_group mark wins."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group") is not None:
            continue
        scopes = {d[-1].scope for n in info.names_closure if (d := info.name2fixturedefs.get(n))}
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


# ----------------------------------------------------------------------------- scenarios

MINIMAL: dict[str, Any] = {
    "name": "tiny",
    "event": {"name": "test", "date": "2019-07-07", "start": "13:00", "end": "14:00"},
    "streets": {"source": "sketch"},
    "route": {
        "name": "three points",
        "waypoints": [
            {"name": "A", "lat": 50.8417, "lon": 4.3620, "kind": "start"},
            {"name": "B", "lat": 50.8399, "lon": 4.3929},
            {"name": "C", "lat": 50.8383, "lon": 4.4078, "kind": "finish"},
        ],
    },
}


@pytest.fixture
def minimal() -> dict[str, Any]:
    """A small valid scenario as a dict (deep copy: tests may change it)."""
    return copy.deepcopy(MINIMAL)


#: Start of the small estimator worlds' record periods (UTC).
T0 = pd.Timestamp("2019-07-07T10:00:00+00:00")


def operator_records(minutes, device, cell_id, procedure=None) -> pd.DataFrame:
    """Operator records from lists; `minutes` after :data:`T0`, every outcome ok."""
    from sim.network.records import RECORD_COLUMNS

    n = len(device)
    return pd.DataFrame(
        {
            "time": T0 + pd.to_timedelta(np.asarray(minutes, dtype=float), unit="min"),
            "device": np.asarray(device, dtype=np.uint64),
            "cell_id": np.asarray(cell_id, dtype=np.int64),
            "procedure": procedure or ["service_request"] * n,
            "outcome": ["ok"] * n,
        }
    ).astype(RECORD_COLUMNS)

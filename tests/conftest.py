"""Shared fixtures: the real OpenStreetMap extracts (skipped when absent) and small scenarios."""

from __future__ import annotations

import copy
import os
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
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the street cache of the test session out of the user's ~/.cache."""
    os.environ["CROWDSIM_CACHE"] = str(tmp_path_factory.mktemp("crowdsim-cache"))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, _private_cache: None) -> Path:
    """The smoke scenario run once per test session (about 10 s); its folder is read-only.

    Tests that change files work on a copy (``shutil.copytree(smoke_run, tmp_path / ...)``).
    """
    from sim.scenario import load_scenario
    from validation.scoring import run_validated

    out = tmp_path_factory.mktemp("smoke") / "run"
    run_validated(load_scenario(SCENARIOS / "smoke.toml"), out, progress=False)
    return out


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

"""Benchmark: street loading from the real region extracts, first load vs the prepared cache.

Run by hand: ``python benchmarks/bench_streets.py``. Needs ../shared/data. The last line of
output is one JSON object (seconds as ``*_s``, memory as ``*_mb``, ratios as ``ratio_*``).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from sim.streets import streets_from_file

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = {
    "region_walk": DATA / "brussels_region_walk_2013-01-01.osm.bz2",
    "region_pbf": DATA / "brussels_region_2013-01-01.osm.pbf",
}


def main() -> dict[str, float]:
    """Load each file twice into a fresh cache and time both loads."""
    figures: dict[str, float] = {}
    for label, path in FILES.items():
        if not path.is_file():
            sys.exit(f"needs {path} (../shared/data)")
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            first = streets_from_file(path, cache_dir=cache)
            t1 = time.perf_counter()
            again = streets_from_file(path, cache_dir=cache)
            t2 = time.perf_counter()
        assert again.source.cached and again.n_edges == first.n_edges
        print(f"{label}: {first.n_nodes} nodes, {first.n_edges} edges, "
              f"first {t1 - t0:.2f} s, cached {t2 - t1:.3f} s")  # fmt: skip
        figures[f"{label}_first_load_s"] = round(t1 - t0, 3)
        figures[f"{label}_cached_load_s"] = round(t2 - t1, 3)
        figures[f"ratio_{label}_cache_speedup"] = round((t1 - t0) / (t2 - t1), 1)
    figures["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


if __name__ == "__main__":
    print(json.dumps(main()))

"""Benchmark of a whole run, end to end (issue #14); run by hand, never as a timed test.

Runs a scenario (default ``tdf2019_ttt``) the way ``crowdsim run`` does, every stage with
the scoring, once as the streaming run (crowd and network on one clock) and once on the
earlier batch path (the crowd, then a replay of it for the network, the estimators from
the records read back), each in its own process, side by side in one call. Peak memory
is each process's maximum resident set (``ru_maxrss`` of the child, as ``/usr/bin/time
-v`` reports it). Full-size runs peak at several GB: run one benchmark at a time.

Prints each run's stage timings, then one JSON object on its last line: ``stream_s``,
``batch_s``, ``stream_peak_mb``, ``batch_peak_mb``, ``ratio_time`` and ``ratio_memory``
(stream / batch), the process's peak after each stage (``<path>_peak_after_mb``: which
stage sets the peak), the simulation's split (``simulate_*_s``) and the targets (150 s,
4 GB on a quiet 2-core machine).

Usage: ``python benchmarks/bench_run.py [SCENARIO] [--only stream|batch] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET_S = 150.0
TARGET_MB = 4096.0

#: What one child runs: the scenario with every stage, on one path, into a folder.
CHILD = """
import json, sys, time
from sim.run import run_scenario
from sim.scenario import load_scenario
from validation.scoring import score_run
scenario, out, stream = sys.argv[1], sys.argv[2], sys.argv[3] == "stream"
t0 = time.perf_counter()
result = run_scenario(load_scenario(scenario), out, progress=False, scorer=score_run,
                      stream=stream, overwrite=True)
m = result.manifest
print(json.dumps({"wall_s": time.perf_counter() - t0, "status": m["status"],
                  "timings_s": m["timings_s"],
                  "peak_after_mb": {k: r.get("peak_rss_mb") for k, r in m["stages"].items()},
                  "simulate": m.get("part_timings_s", {}).get("simulate", {})}))
"""


def run_child(scenario: Path, out: Path, path: str) -> dict:
    """Run one path in a child process; its wall time, peak RSS and manifest timings."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    t0 = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(scenario), str(out), path],
        stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if child.returncode != 0:
        raise SystemExit(f"bench_run: the {path} run failed (exit {child.returncode})")
    report = json.loads(output.strip().splitlines()[-1])
    report["process_s"] = wall
    report["peak_mb"] = usage.ru_maxrss / 1024.0  # kilobytes on Linux
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", type=Path,
                        default=REPO / "scenarios" / "tdf2019_ttt.toml")  # fmt: skip
    parser.add_argument("--only", choices=["stream", "batch"], default=None)
    parser.add_argument("--keep", type=Path, default=None, help="write the runs here")
    args = parser.parse_args()
    paths = [args.only] if args.only else ["stream", "batch"]
    with tempfile.TemporaryDirectory(prefix="bench_run_") as tmp:
        base = args.keep or Path(tmp)
        runs = {}
        for path in paths:
            runs[path] = run_child(args.scenario.resolve(), base / path, path)
            print(f"{path}: {runs[path]['process_s']:.1f} s, {runs[path]['peak_mb']:.0f} MB, "
                  f"stages {runs[path]['timings_s']}, peak MB after each stage "
                  f"{runs[path]['peak_after_mb']}", flush=True)  # fmt: skip
    result: dict[str, object] = {"scenario": args.scenario.stem}
    for path, run in runs.items():
        result[f"{path}_s"] = round(run["process_s"], 1)
        result[f"{path}_peak_mb"] = round(run["peak_mb"])
        result[f"{path}_peak_after_mb"] = run["peak_after_mb"]
    if "stream" in runs:
        for part, seconds in runs["stream"]["simulate"].items():
            result[f"simulate_{part}"] = seconds
        result["target_s"] = TARGET_S
        result["target_mb"] = TARGET_MB
    if len(runs) == 2:
        result["ratio_time"] = round(runs["stream"]["process_s"] / runs["batch"]["process_s"], 3)
        result["ratio_memory"] = round(runs["stream"]["peak_mb"] / runs["batch"]["peak_mb"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

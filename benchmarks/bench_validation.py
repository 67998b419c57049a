"""Benchmark of validation and the report (issue #6); run by hand, never as a timed test.

Times what a run's last two stages call (``validation.metrics.write_metrics`` and
``sim.report.write_report``, the same functions) on a finished run folder of the full
team-time-trial scenario (``scenarios/tdf2019_ttt.toml``): the metrics against the truth,
then every figure, the animation and ``report.html``. Without ``--run`` it first makes
that folder with ``crowdsim run`` in a separate process (not timed). Rebuilding the run's
streets and course from the cache is not timed either (``context_s``): the run has them
in memory when these stages start.

Prints the report's own per-part seconds to stderr, and one JSON object on its last
line: ``wall_s`` (validation + report), ``validation_s``, ``report_s``, ``report_<part>_s``,
``cpu_s``, ``validation_cpu_s``, ``report_cpu_s`` (user + system CPU of this process
in those stages: on a shared machine the wall time also holds the waiting),
``context_s``, ``peak_mem_mb`` (of this process) and the run's size.

Usage: ``python benchmarks/bench_validation.py [--run DIR] [--scenario FILE]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from sim.report import load_run_context, write_report
from validation.metrics import write_metrics

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent / "scenarios" / "tdf2019_ttt.toml"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0


def make_run(scenario: Path, out: Path) -> None:
    """Run `scenario` into `out` with the ``crowdsim`` command (another process)."""
    print(f"making the run folder {out} from {scenario} (not timed) ...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", str(scenario), "--out", str(out), "--quiet"],
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="an existing run folder")
    parser.add_argument("--scenario", type=Path, default=SCENARIO, help="scenario to run")
    args = parser.parse_args()
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="bench_validation_")) / "run"
        make_run(args.scenario, run)

    t0 = time.perf_counter()
    ctx = load_run_context(run)
    context_s = time.perf_counter() - t0

    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    _, summary = write_metrics(run, kwd_max_bins=12)  # as the run's validation stage does
    t1 = time.perf_counter()
    cpu1 = _cpu_s()
    written = write_report(ctx, streets=ctx.streets, course=ctx.course)
    t2 = time.perf_counter()
    cpu2 = _cpu_s()

    parts = written.seconds
    print(f"validation: metrics of {len(summary['metrics'])} methods", file=sys.stderr)
    print(f"report: {len(written.files)} files; parts (s): {json.dumps(parts)}", file=sys.stderr)
    figures = {
        "run": str(run),
        "scenario": ctx.scenario.name,
        "wall_s": round(t2 - t0, 2),
        "validation_s": round(t1 - t0, 2),
        "report_s": round(t2 - t1, 2),
        "cpu_s": round(cpu2 - cpu0, 2),
        "validation_cpu_s": round(cpu1 - cpu0, 2),
        "report_cpu_s": round(cpu2 - cpu1, 2),
        "context_s": round(context_s, 2),
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "estimate_rows": _rows(run / "estimates.parquet"),
        "truth_zone_rows": _rows(run / "truth_zones.parquet"),
        "truth_edge_rows": _rows(run / "truth_edges.parquet"),
        "report_html_mb": round((run / "report.html").stat().st_size / 2**20, 1),
    }
    figures.update({f"report_{name}_s": value for name, value in parts.items()})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

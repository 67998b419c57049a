"""Error bounds: TOML specs saying how large an estimation error may be, and their check.

Shipped specs live in ``validation/bounds/*.toml``.

A spec file holds one or more bounds::

    [[bound]]
    scenario = "smoke"          # the scenario's `name`; a run of another scenario is an error
    method = "voronoi"          # an estimator of the run
    zone_system = "area"        # grid, segment or area
    metric = "mape"             # a name of validation.metrics.METRICS
    max = 0.35                  # the metric must be <= max ...
    min = 0.5                   # ... and/or >= min (at least one of the two)
    window = ["14:15", "15:00"] # optional: only bins inside this local-time window
    floor = 30                  # optional: truth floor of the relative metrics (people)
    kwd_stride = 5              # optional: every how many bins the KWD is computed
    quantile = 0.9              # optional, for several runs (replications), see below
    note = "why this bound"     # optional, shown nowhere but kept with the bound

Several runs. Given several run folders (replications of one scenario), a bound is
checked on a summary of the metric over the runs: with ``quantile = q`` the
``q``-quantile of the runs' values is held against ``max`` and the ``(1 - q)``-quantile
against ``min`` (``q = 0.9``: nine runs in ten must be within the bound, roughly).
Without ``quantile`` every run must be within (the worst run is held against the bound).
With one run, ``quantile`` changes nothing. A metric that cannot be measured (e.g. a
MAPE with no zone-bin above the floor) fails its bound.

:func:`check_bounds` returns one :class:`BoundResult` per bound; ``crowdsim validate``
prints them and :func:`assert_bounds` raises ``AssertionError`` for pytest.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sim.errors import CrowdsimError
from sim.io import read_toml
from sim.runfolder import open_run
from validation.metrics import (
    DEFAULT_FLOOR,
    DEFAULT_KWD_STRIDE,
    GRID_ONLY,
    METRICS,
    Joined,
    join_run,
    score,
    tile_centroids,
    window_mask,
)

__all__ = [
    "Bound",
    "BoundResult",
    "BoundsInputError",
    "BoundsSpec",
    "BoundsSpecError",
    "assert_bounds",
    "check_bounds",
    "format_results",
    "load_bounds",
]

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class BoundsSpecError(CrowdsimError, ValueError):
    """A bounds spec file is unreadable or holds a value that is not allowed."""


class BoundsInputError(CrowdsimError, ValueError):
    """A bound does not fit the run it is checked on (other scenario, unknown method)."""


class Bound(BaseModel):
    """One error bound (see the module docstring for the keys)."""

    # a NaN or infinite limit would make the bound fail (or hold) whatever is measured
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    scenario: str = Field(min_length=1)
    method: str = Field(min_length=1)
    zone_system: Literal["grid", "segment", "area"]
    metric: str
    max: float | None = None
    min: float | None = None
    window: tuple[str, str] | None = None
    floor: float = Field(DEFAULT_FLOOR, ge=0)
    kwd_stride: int = Field(DEFAULT_KWD_STRIDE, ge=1)
    quantile: float | None = Field(None, gt=0, le=1)
    note: str | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(METRICS)}")
        return value

    @field_validator("window")
    @classmethod
    def _window_times(cls, value: tuple[str, str] | None) -> tuple[str, str] | None:
        if value is None:
            return None
        for v in value:
            if not _HHMM.match(v):
                raise ValueError(f"window times are local 'HH:MM', got {v!r}")
        if value[1] <= value[0]:
            raise ValueError(f"window {list(value)}: the end must be after the start")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Bound:
        if self.max is None and self.min is None:
            raise ValueError("a bound needs max, min or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.metric in GRID_ONLY and self.zone_system != "grid":
            raise ValueError(f"metric {self.metric!r} exists for zone_system 'grid' only")
        return self

    @property
    def label(self) -> str:
        """Short name: scenario method/system metric [window] <= max / >= min."""
        window = f" [{self.window[0]}-{self.window[1]}]" if self.window else ""
        q = f" q{self.quantile:g}" if self.quantile is not None else ""
        limits = []
        if self.min is not None:
            limits.append(f">= {self.min:g}")
        if self.max is not None:
            limits.append(f"<= {self.max:g}")
        return (
            f"{self.scenario} {self.method}/{self.zone_system} {self.metric}{window}{q} "
            + " and ".join(limits)
        )


class BoundsSpec(BaseModel):
    """A bounds file: a list of ``[[bound]]`` tables."""

    model_config = ConfigDict(extra="forbid")

    bound: list[Bound] = Field(min_length=1)
    source: Path | None = Field(None, exclude=True)


def load_bounds(path: str | os.PathLike[str]) -> BoundsSpec:
    """Read and validate a bounds spec file.

    Raises
    ------
    BoundsSpecError
        The file is missing, is not TOML, or a key is missing, unknown or wrong; the
        message names the file and the key (e.g. ``bound[2].metric``).
    """
    path = Path(path)
    data = read_toml(path, error=BoundsSpecError, what="bounds file")
    if "source" in data:
        raise BoundsSpecError(f"{path}: source: unknown key; the file holds [[bound]] tables")
    try:
        spec = BoundsSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            problems.append(f"{path}: {loc.lstrip('.') or '(top)'}: {err['msg']}")
        raise BoundsSpecError(
            "\n".join(problems) + "\nThe keys of a bound: see validation/checks.py."
        ) from None
    return spec.model_copy(update={"source": path})


@dataclass(frozen=True)
class BoundResult:
    """A bound, what was measured on each run, and whether it holds."""

    bound: Bound
    values: list[float]
    high: float  # summary held against max
    low: float  # summary held against min
    passed: bool
    runs: list[str] = field(default_factory=list)

    @property
    def measured(self) -> str:
        """The measured value(s) as text."""
        if math.isnan(self.high) or math.isnan(self.low):
            return "n/a"
        if self.high == self.low or self.bound.min is None:
            return f"{self.high:.4g}"
        if self.bound.max is None:
            return f"{self.low:.4g}"
        return f"{self.low:.4g}..{self.high:.4g}"


class _RunScores:
    """One run folder joined once, scored on demand (memoised per bound options)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        # a run still running, interrupted, failed or mixed is refused here, naming which
        run = open_run(run_dir, purpose="validate")
        self.scenario = run.scenario.name
        self.timezone = run.scenario.event.timezone
        self._joins: dict[tuple[str, str], Joined] | None = None
        self._centroids: dict[str, tuple[float, float]] | None = None
        self._memo: dict[tuple[Any, ...], dict[str, tuple[float, int]]] = {}

    @property
    def joins(self) -> dict[tuple[str, str], Joined]:
        if self._joins is None:
            self._joins = {(j.method, j.system): j for j in join_run(self.run_dir)}
        return self._joins

    def value(self, bound: Bound, where: str) -> float:
        key = (bound.method, bound.zone_system)
        if key not in self.joins:
            have = sorted({f"{m}/{s}" for m, s in self.joins})
            raise BoundsInputError(
                f"{where}: run {self.run_dir} has no estimates of method {bound.method!r} on "
                f"zone system {bound.zone_system!r}; it has {', '.join(have) or 'none'}"
            )
        kwd = bound.metric in GRID_ONLY
        memo_key = (key, bound.window, bound.floor, bound.kwd_stride if kwd else None)
        if memo_key not in self._memo:
            joined = self.joins[key]
            if bound.window is not None:
                joined = joined.select_bins(
                    window_mask(
                        joined.bins, bound.window, timezone=self.timezone, bin_s=joined.bin_s
                    )
                )
            if kwd and self._centroids is None:
                self._centroids = tile_centroids(self.run_dir)
            values, _, _ = score(
                joined,
                floor=bound.floor,
                kwd_stride=bound.kwd_stride,
                centroids=self._centroids if kwd else None,
            )
            self._memo[memo_key] = values
        return self._memo[memo_key].get(bound.metric, (math.nan, 0))[0]


def _as_spec(spec: BoundsSpec | str | os.PathLike[str]) -> BoundsSpec:
    return spec if isinstance(spec, BoundsSpec) else load_bounds(spec)


def _as_runs(run_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(run_dirs, str | os.PathLike):
        return [Path(run_dirs)]
    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise BoundsInputError("no run folder given")
    return runs


def check_bounds(
    run_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    spec: BoundsSpec | str | os.PathLike[str],
) -> list[BoundResult]:
    """Measure every bound of `spec` on the run folder(s) and say which hold.

    Parameters
    ----------
    run_dirs
        One run folder, or several runs (replications) of the same scenario.
    spec
        A :class:`BoundsSpec` or the path of a bounds TOML file.

    Returns
    -------
    list of BoundResult
        One per bound, in the order of the spec.

    Raises
    ------
    BoundsSpecError
        The spec file is bad.
    BoundsInputError
        A bound names another scenario than a run's, or a method the run did not estimate.
    RunFolderError
        A run folder is missing, lacks a file, or did not finish (running, interrupted,
        failed) or is mixed (:func:`sim.runfolder.open_run`).
    """
    spec = _as_spec(spec)
    runs = [_RunScores(r) for r in _as_runs(run_dirs)]
    where_file = str(spec.source) if spec.source else "bounds"
    results = []
    for i, bound in enumerate(spec.bound):
        where = f"{where_file}: bound[{i}]"
        for run in runs:
            if run.scenario != bound.scenario:
                raise BoundsInputError(
                    f"{where}: scenario = {bound.scenario!r}, but run {run.run_dir} is of "
                    f"scenario {run.scenario!r}. Check the bounds file matching the run."
                )
        values = [run.value(bound, where) for run in runs]
        arr = np.asarray(values, dtype=float)
        if np.isnan(arr).any():
            high = low = math.nan
        elif bound.quantile is None:
            high, low = float(arr.max()), float(arr.min())
        else:
            high = float(np.quantile(arr, bound.quantile))
            low = float(np.quantile(arr, 1.0 - bound.quantile))
        passed = not math.isnan(high)
        if passed and bound.max is not None:
            passed = high <= bound.max
        if passed and bound.min is not None:
            passed = low >= bound.min
        results.append(
            BoundResult(
                bound=bound,
                values=values,
                high=high,
                low=low,
                passed=passed,
                runs=[str(r.run_dir) for r in runs],
            )
        )
    return results


def format_results(results: Sequence[BoundResult]) -> str:
    """A plain-text table: bound, measured, pass/fail; and a closing count."""
    header = ("bound", "measured", "result")
    rows = [(r.bound.label, r.measured, "pass" if r.passed else "FAIL") for r in results]
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} of {len(results)} bounds hold" +
                 (f", {failed} fail" if failed else ""))  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def assert_bounds(
    run_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    spec: BoundsSpec | str | os.PathLike[str],
) -> list[BoundResult]:
    """Check `spec` on the run(s) for pytest; raise ``AssertionError`` naming failing bounds.

    Returns
    -------
    list of BoundResult
        When every bound holds.

    Raises
    ------
    AssertionError
        At least one bound fails; the message lists each with its measured value.
    """
    results = check_bounds(run_dir, spec)
    failing = [r for r in results if not r.passed]
    if failing:
        raise AssertionError(
            f"{len(failing)} of {len(results)} error bounds fail:\n"
            + "\n".join(f"  {r.bound.label}: measured {r.measured}" for r in failing)
        )
    return results

"""A sweep file: its model, and the runs it expands to (points x replications)."""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sim.errors import CrowdsimError, ScenarioError
from sim.io import read_toml
from sim.scenario import (
    Scenario,
    describe_error,
    load_scenario,
    merge_tables,
    parse_scenario,
)
from validation.metrics import GRID_ONLY, METRICS, SYSTEMS

__all__ = [
    "ID_COLUMNS",
    "RESERVED",
    "RESULT_COLUMNS",
    "SummarySpec",
    "Sweep",
    "SweepError",
    "SweepResult",
    "SweepRun",
    "SweepSpec",
    "load_sweep",
]


#: Columns of ``sweep_metrics.parquet`` before the parameter columns, and after them.
ID_COLUMNS = ("run_id", "point", "replication")
RESULT_COLUMNS = ("status", "error", "method", "zone_system", "metric", "value", "n")
#: Scenario keys a sweep may not change: the sweep's own `seed` and `replications` set them.
RESERVED = ("seed",)


class SweepError(CrowdsimError, ValueError):
    """A sweep file is unreadable or describes runs that cannot be made."""


class SummarySpec(BaseModel):
    """What the summary figure shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: str | None = Field(None, description="the varied parameter on the x axis")
    metrics: list[str] = Field(
        default_factory=lambda: ["area/mape", "grid/kwd_mean_m"],
        min_length=1,
        description="'zone_system/metric' per panel row",
    )

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for item in value:
            system, _, metric = item.partition("/")
            if system not in SYSTEMS or metric not in METRICS:
                raise ValueError(
                    f"{item!r}: needs 'zone_system/metric' with a zone system of "
                    f"{', '.join(SYSTEMS)} and a metric of {', '.join(METRICS)}"
                )
            if metric in GRID_ONLY and system != "grid":
                raise ValueError(f"{item!r}: metric {metric!r} exists for 'grid' only")
        return value


class SweepSpec(BaseModel):
    """A sweep file as written (see the module docstring for the keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    base: str = Field(min_length=1, description="base scenario, relative to the sweep file")
    seed: int | None = Field(None, ge=0, description="root seed; default: the base's seed")
    replications: int = Field(1, ge=1, le=100_000)
    mode: Literal["grid", "list"] = "grid"
    seeds: Literal["common", "independent"] = "common"
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")
    vary: dict[str, list[Any]] = Field(default_factory=dict)
    summary: SummarySpec = Field(default_factory=SummarySpec)


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: a parameter point, a replication, its seeds and its scenario."""

    run_id: str
    point: int
    replication: int
    params: dict[str, Any]
    seed: int
    spawn_key: tuple[int, ...]
    scenario: Scenario


@dataclass(frozen=True)
class Sweep:
    """A loaded, checked sweep: its spec, the base scenario, the points and the runs."""

    spec: SweepSpec
    source: Path
    base: Path
    seed: int
    parameters: dict[str, list[Any]]
    points: list[dict[str, Any]]
    runs: list[SweepRun]


@dataclass
class SweepResult:
    """What a sweep did: its folder, table, state and which runs ran, were reused, failed."""

    out_dir: Path
    table: pd.DataFrame
    state: dict[str, Any]
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read and check a sweep file; build the scenario of every point.

    Parameters
    ----------
    path
        The sweep TOML file.

    Returns
    -------
    Sweep
        The points (in grid or list order) and the runs (point by point, replications
        within), each run with its validated scenario and seeds.

    Raises
    ------
    SweepError
        The file is missing or not TOML; a key is unknown or wrong; the base scenario
        is missing or invalid; a parameter path does not exist in the base scenario; a
        parameter has no values; or a point gives an invalid scenario. The message
        names the sweep file and the key.
    """
    path = Path(path)
    data = read_toml(path, error=SweepError, what="sweep file")
    vary = data.get("vary", {})
    if not isinstance(vary, dict):
        raise SweepError(f"{path}: vary: needs a table of 'parameter.path' = [values]")
    data["vary"] = _flatten_vary(vary, path)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{path}: {describe_error(err, root=SweepSpec)}" for err in exc.errors()]
        raise SweepError(
            "\n".join(problems) + "\nThe keys of a sweep file: see validation/sweep.py."
        ) from None
    return _build(spec, path)


def _flatten_vary(table: dict[str, Any], path: Path, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [..]}}`` and ``{"a.b": [..]}`` alike become ``{"a.b": [..]}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_vary(value, path, prefix=f"{name}."))
        elif not isinstance(value, list):
            raise SweepError(
                f"{path}: vary.{name}: needs a list of values, e.g. [0.2, 0.4], got {value!r}"
            )
        elif not value:
            raise SweepError(f"{path}: vary.{name}: empty list of values; give at least one")
        else:
            out[name] = value
    return out


def _build(spec: SweepSpec, path: Path) -> Sweep:
    base_path = (path.parent / spec.base).resolve()
    if not base_path.is_file():
        raise SweepError(
            f"{path}: base: no scenario file {spec.base!r} (looked for {base_path}; a relative "
            "path is relative to the sweep file's folder)"
        )
    try:
        base = load_scenario(base_path)
    except ScenarioError as exc:
        raise SweepError(f"{path}: base: the base scenario is not valid: {exc}") from None
    for key in RESERVED:
        if key in spec.overrides or key in spec.vary:
            raise SweepError(
                f"{path}: {key}: a sweep sets the seed of its runs itself (its `seed` key and "
                "`replications`); remove it from [set] and [vary]"
            )
    data = merge_tables(base.model_dump(mode="json", exclude_none=True), spec.overrides)
    try:
        with_set = parse_scenario(data, source=base_path)
    except ScenarioError as exc:
        raise SweepError(f"{path}: set: the base with these changes is not valid: {exc}") from None
    for name in spec.vary:
        _check_path(with_set, name, where=f"{path}: vary.{name}")
    points = _points(spec, path)
    if spec.summary.x is not None and spec.summary.x not in spec.vary:
        raise SweepError(
            f"{path}: summary.x: {spec.summary.x!r} is not a varied parameter; varied: "
            f"{', '.join(spec.vary) or 'none'}"
        )
    seed = with_set.seed if spec.seed is None else spec.seed
    runs = []
    for p, params in enumerate(points):
        point_data = copy.deepcopy(data)
        for name, value in params.items():
            _set_path(point_data, name, value)
        point_data["seed"] = seed
        try:
            scenario = parse_scenario(point_data, source=base_path)
        except ScenarioError as exc:
            raise SweepError(
                f"{path}: vary: point {p} ({_label(params)}) is not a valid scenario: {exc}"
            ) from None
        for r in range(spec.replications):
            key = (r,) if spec.seeds == "common" else (p, r)
            runs.append(
                SweepRun(
                    run_id=f"p{p:03d}-r{r:03d}",
                    point=p,
                    replication=r,
                    params=params,
                    seed=seed,
                    spawn_key=key,
                    scenario=scenario,
                )
            )
    return Sweep(
        spec=spec,
        source=path,
        base=base_path,
        seed=seed,
        parameters=dict(spec.vary),
        points=points,
        runs=runs,
    )


def _points(spec: SweepSpec, path: Path) -> list[dict[str, Any]]:
    names = list(spec.vary)
    if not names:
        return [{}]  # replications of the base only
    values = [spec.vary[n] for n in names]
    if spec.mode == "grid":
        combos: Iterable[tuple[Any, ...]] = itertools.product(*values)
    else:
        lengths = {n: len(v) for n, v in spec.vary.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n}: {k}" for n, k in lengths.items())
            raise SweepError(
                f"{path}: vary: mode = 'list' pairs the i-th values of every parameter, so "
                f"every list needs the same length ({shown}); or use mode = 'grid'"
            )
        combos = zip(*values, strict=True)
    return [dict(zip(names, combo, strict=True)) for combo in combos]


def _check_path(scenario: Scenario, name: str, *, where: str) -> None:
    """Raise SweepError unless `name` is a path to an existing value of `scenario`."""
    node: Any = scenario
    done: list[str] = []
    for part in name.split("."):
        here = ".".join(done) or "(top level)"
        if isinstance(node, BaseModel):
            fields = type(node).model_fields
            if part not in fields:
                raise SweepError(
                    f"{where}: unknown parameter path: {here} has no key {part!r}; allowed "
                    f"keys there: {', '.join(fields)}"
                )
            node = getattr(node, part)
        elif isinstance(node, dict):
            if part not in node:
                raise SweepError(
                    f"{where}: unknown parameter path: {here} has no key {part!r} in the base "
                    f"scenario; it has {', '.join(map(str, node)) or 'none'}"
                )
            node = node[part]
        elif isinstance(node, list | tuple):
            if not part.isdigit() or int(part) >= len(node):
                raise SweepError(
                    f"{where}: unknown parameter path: {here} is a list of {len(node)} in the "
                    f"base scenario; index it with 0..{len(node) - 1}, got {part!r}"
                )
            node = node[int(part)]
        elif node is None:
            raise SweepError(
                f"{where}: {here} is not set in the base scenario; set the whole table in "
                f"[set] first, or vary {here!r} itself with tables as values"
            )
        else:
            raise SweepError(f"{where}: {here} is a single value ({node!r}), not a table")
        done.append(part)


def _set_path(data: dict[str, Any], name: str, value: Any) -> None:
    parts = name.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = copy.deepcopy(value)
    else:
        node[last] = copy.deepcopy(value)


def _label(params: dict[str, Any]) -> str:
    if not params:
        return "base"
    return ", ".join(f"{n.rsplit('.', 1)[-1]}={_short(v)}" for n, v in params.items())


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)

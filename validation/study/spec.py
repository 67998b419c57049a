"""A study file and its variants file: what runs, which estimator variants, checked first."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.errors import CrowdsimError
from sim.io import read_toml
from sim.scenario import EstimatorsConfig, Scenario, describe_error
from validation.sweep import Sweep, SweepError, load_sweep

__all__ = [
    "LABEL_PATTERN",
    "Study",
    "StudyError",
    "StudyScenario",
    "StudySpec",
    "Variant",
    "load_study",
    "load_variants",
    "variant_config",
]

#: Labels name folders and table rows: a letter or digit, then letters, digits, ``_.+-``.
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$"


class StudyError(CrowdsimError, ValueError):
    """A study or variants file is unreadable, or describes a comparison that cannot run."""


class Variant(BaseModel):
    """One estimator variant: a method with options, one row of the study's tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(pattern=LABEL_PATTERN, description="row name (also a folder name)")
    method: str = Field(min_length=1, description="a method of sim.estimate.ESTIMATORS")
    options: dict[str, Any] = Field(
        default_factory=dict, description="[estimators] keys that differ from the run's"
    )
    description: str = ""


class _VariantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: list[Variant] = Field(min_length=1)


class StudyScenario(BaseModel):
    """One scenario of a study: a sweep (base scenario and replications) and its name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=LABEL_PATTERN, description="folder and table name")
    title: str = Field(min_length=1, description="how the page names it")
    sweep: str = Field(min_length=1, description="sweep file, relative to the study file")
    workers: int | None = Field(
        None, ge=1, le=256, description="local processes for its runs (default: one per core)"
    )


class StudySpec(BaseModel):
    """A study file as written (see :mod:`validation.study`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    variants: str = Field(min_length=1, description="variants file, relative to the study file")
    scenario: list[StudyScenario] = Field(min_length=1)
    floor: float = Field(30.0, ge=0, le=1e6, description="truth floor of the relative errors")
    kwd_max_bins: int = Field(12, ge=1, le=10_000, description="KWD on at most this many bins")


@dataclass(frozen=True)
class Study:
    """A loaded, checked study: its spec, the variants and each scenario's sweep."""

    spec: StudySpec
    source: Path
    variants_file: Path
    variants: list[Variant]
    sweeps: dict[str, Sweep]


def load_variants(path: str | os.PathLike[str]) -> list[Variant]:
    """Read and check a variants file.

    Parameters
    ----------
    path
        A TOML file of ``[[variant]]`` tables (label, method, options, description).

    Returns
    -------
    list of Variant
        In file order.

    Raises
    ------
    StudyError
        The file is missing or not TOML; a key is unknown; a label is malformed or used
        twice; a method is not an estimator; an option is not a key of ``[estimators]``.
        The message names the file, the variant and the key, and what is allowed.
    """
    from sim.estimate import ESTIMATORS

    path = Path(path)
    data = read_toml(path, error=StudyError, what="variants file")
    try:
        variants = _VariantsFile.model_validate(data).variant
    except ValidationError as exc:
        problems = [f"{path}: {describe_error(e, root=_VariantsFile)}" for e in exc.errors()]
        raise StudyError(
            "\n".join(problems) + "\nA variants file holds [[variant]] tables with label, "
            "method, options (a table of [estimators] keys) and description."
        ) from None
    allowed = [k for k in EstimatorsConfig.model_fields if k != "methods"]
    seen: set[str] = set()
    for i, variant in enumerate(variants):
        where = f"{path}: variant[{i}] ({variant.label!r})"
        if variant.label in seen:
            raise StudyError(f"{where}: label is used twice; labels name the rows of the tables")
        seen.add(variant.label)
        if variant.method not in ESTIMATORS:
            raise StudyError(
                f"{where}: method {variant.method!r} is not an estimator; allowed: "
                f"{', '.join(ESTIMATORS)}"
            )
        for key in variant.options:
            if key == "methods":
                raise StudyError(
                    f"{where}: options.methods: a variant runs one method, its `method`; "
                    "remove `methods` from options"
                )
            if key not in allowed:
                raise StudyError(
                    f"{where}: options.{key}: unknown key of [estimators]; allowed keys: "
                    f"{', '.join(allowed)}"
                )
    return variants


def variant_config(
    base: EstimatorsConfig, variant: Variant, *, where: str = "variant"
) -> EstimatorsConfig:
    """The ``[estimators]`` of a run with `variant`'s method and options in place.

    Raises
    ------
    StudyError
        An option's value is not allowed (the message names `where`, the key and why).
    """
    data = base.model_dump(mode="json", exclude_none=True)
    data.update(variant.options)
    data["methods"] = [variant.method]
    try:
        return EstimatorsConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            named = {**err, "loc": ("method",) if loc[:1] == ("methods",) else ("options", *loc)}
            problems.append(f"{where}: {describe_error(named, root=EstimatorsConfig)}")
        raise StudyError("\n".join(problems)) from None


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read and check a study file, its variants file and every scenario's sweep.

    Every variant is checked against every scenario's ``[estimators]`` before anything
    runs, so a bad option fails in seconds, not after the first runs.

    Raises
    ------
    StudyError
        The study file is missing, not TOML or has a bad key; a scenario name is used
        twice; the variants file or a sweep file is bad (its message is included).
    """
    path = Path(path)
    data = read_toml(path, error=StudyError, what="study file")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{path}: {describe_error(e, root=StudySpec)}" for e in exc.errors()]
        raise StudyError(
            "\n".join(problems) + "\nThe keys of a study file: see validation/study/__init__.py."
        ) from None
    names = [s.name for s in spec.scenario]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise StudyError(f"{path}: scenario[{i}].name {name!r} is used twice")
    variants_file = (path.parent / spec.variants).resolve()
    if not variants_file.is_file():
        raise StudyError(
            f"{path}: variants: no file {spec.variants!r} (looked for {variants_file}; a "
            "relative path is relative to the study file's folder)"
        )
    variants = load_variants(variants_file)
    sweeps: dict[str, Sweep] = {}
    for i, entry in enumerate(spec.scenario):
        sweep_file = (path.parent / entry.sweep).resolve()
        if not sweep_file.is_file():
            raise StudyError(
                f"{path}: scenario[{i}].sweep: no file {entry.sweep!r} (looked for "
                f"{sweep_file}; relative to the study file's folder)"
            )
        try:
            sweep = load_sweep(sweep_file)
        except SweepError as exc:
            raise StudyError(f"{path}: scenario[{i}] ({entry.name}): {exc}") from None
        for run in {run.point: run for run in sweep.runs}.values():  # one per point
            _check_variants(variants, run.scenario, variants_file, entry.name)
        sweeps[entry.name] = sweep
    return Study(
        spec=spec, source=path, variants_file=variants_file, variants=variants, sweeps=sweeps
    )


def _check_variants(
    variants: list[Variant], scenario: Scenario, variants_file: Path, name: str
) -> None:
    for i, variant in enumerate(variants):
        where = f"{variants_file}: variant[{i}] ({variant.label!r}) on scenario {name!r}"
        variant_config(scenario.estimators, variant, where=where)

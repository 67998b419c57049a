"""Writing the estimators' tables, atomically: the internal one and the published one.

The file names are defined here, once, for every reader (validation, the report, the
run folder): :data:`INTERNAL_ESTIMATES_FILE` is the operator's own table before release
(scored by validation), :data:`PUBLISHED_ESTIMATES_FILE` what would leave the operator
(:mod:`sim.estimate.privacy`).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from sim.estimate.base import ESTIMATE_COLUMNS, EstimateInputError
from sim.io import atomic_path

__all__ = [
    "INTERNAL_ESTIMATES_FILE",
    "PUBLISHED_ESTIMATES_FILE",
    "write_estimates",
    "write_release",
]

#: The operator's table before release: every zone system, suppressed values kept.
INTERNAL_ESTIMATES_FILE = "estimates_internal.parquet"
#: The published table: one zone system, nothing left of a suppressed zone-bin.
PUBLISHED_ESTIMATES_FILE = "estimates.parquet"


def _check(table: pd.DataFrame, what: str) -> None:
    if list(table.columns) != list(ESTIMATE_COLUMNS):
        raise EstimateInputError(
            f"{what}: columns must be {', '.join(ESTIMATE_COLUMNS)} in this order; "
            f"got {', '.join(map(str, table.columns))}"
        )


def write_estimates(table: pd.DataFrame, dest: str | os.PathLike[str]) -> Path:
    """Check that `table` has the estimate columns and write it as Parquet at `dest`.

    The file appears only when complete (:func:`sim.io.atomic_path`). Columns, in order:
    method, zone_system, zone, bin (start of the bin, UTC), estimate, lower, upper (people;
    NaN in a published table where suppressed), suppressed (below the privacy
    threshold), mode (realtime or batch).

    Raises
    ------
    EstimateInputError
        A column is missing or extra.
    """
    _check(table, "estimates")
    with atomic_path(dest) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(dest)


def write_release(
    internal: pd.DataFrame, published: pd.DataFrame, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write the internal and the published tables into `out_dir`; both or neither appear.

    Raises
    ------
    EstimateInputError
        A table lacks the estimate columns (checked before anything is written).
    """
    _check(internal, INTERNAL_ESTIMATES_FILE)
    _check(published, PUBLISHED_ESTIMATES_FILE)
    out = Path(out_dir)
    paths = [out / INTERNAL_ESTIMATES_FILE, out / PUBLISHED_ESTIMATES_FILE]
    with ExitStack() as stack:  # both files are renamed into place only if both wrote
        for table, dest in zip((internal, published), paths, strict=True):
            tmp = stack.enter_context(atomic_path(dest))
            table.to_parquet(tmp, index=False)
    return paths

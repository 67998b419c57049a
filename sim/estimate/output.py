"""Writing ``estimates.parquet``: the estimators' one output table, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from sim.estimate.base import ESTIMATE_COLUMNS, EstimateInputError
from sim.io import atomic_path

__all__ = ["write_estimates"]


def write_estimates(table: pd.DataFrame, dest: str | os.PathLike[str]) -> Path:
    """Check that `table` has the estimate columns and write it as Parquet at `dest`.

    The file appears only when complete (:func:`sim.io.atomic_path`). Columns, in order:
    method, zone_system, zone, bin (start of the bin, UTC), estimate, lower, upper (people),
    suppressed (below the privacy threshold: marked, kept), mode (realtime or batch).

    Raises
    ------
    EstimateInputError
        A column is missing or extra.
    """
    if list(table.columns) != list(ESTIMATE_COLUMNS):
        raise EstimateInputError(
            f"estimates: columns must be {', '.join(ESTIMATE_COLUMNS)} in this order; "
            f"got {', '.join(map(str, table.columns))}"
        )
    with atomic_path(dest) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(dest)

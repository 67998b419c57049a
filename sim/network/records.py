"""The operator's records: the only traffic data an estimator may read (DESIGN §1).

``records.parquet`` has one row per network-visible procedure: when, which pseudonymous
device, on which cell, what, and how it ended. ``cell_load.parquet`` has per-cell
per-minute counters. Nothing here says where a person truly is or who they are.
"""

from __future__ import annotations

import pandas as pd

from sim.errors import CrowdsimError

__all__ = [
    "COUNTER_COLUMNS",
    "OUTCOMES",
    "PROCEDURES",
    "RECORD_COLUMNS",
    "RecordsError",
    "empty_records",
    "validate_records",
]

#: Network-visible procedures (3GPP names, shortened).
PROCEDURES = (
    "attach", "detach", "tau", "periodic_tau", "service_request", "handover",
    "paging_response", "call", "sms",
)  # fmt: skip
#: How a procedure ended.
OUTCOMES = ("ok", "rejected", "dropped")
#: Columns of a records table and their dtypes.
RECORD_COLUMNS: dict[str, object] = {
    "time": "datetime64[ns, UTC]",
    "device": "uint64",
    "cell_id": "int64",
    "procedure": pd.CategoricalDtype(PROCEDURES),
    "outcome": pd.CategoricalDtype(OUTCOMES),
}
#: Columns of the per-cell per-minute counters.
COUNTER_COLUMNS: dict[str, object] = {
    "minute": "datetime64[ns, UTC]",
    "cell_id": "int64",
    "connected_users": "int64",
    "rejections": "int64",
    "messages": "int64",
    "queue_delay_ms": "float64",
    **{f"messages_{p}": "int64" for p in PROCEDURES},
}


class RecordsError(CrowdsimError, ValueError):
    """A records table does not have the operator-record form."""


def empty_records() -> pd.DataFrame:
    """A records table with no rows and the right columns."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in RECORD_COLUMNS.items()})


def validate_records(records: pd.DataFrame, *, where: str = "records") -> pd.DataFrame:
    """Check that `records` has exactly the record columns, with their dtypes.

    Raises
    ------
    RecordsError
        A column is missing or extra (an extra column could leak what an operator cannot
        see), or a value does not fit its dtype.
    """
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    extra = [c for c in records.columns if c not in RECORD_COLUMNS]
    if missing or extra:
        raise RecordsError(
            f"{where}: columns must be exactly {', '.join(RECORD_COLUMNS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; not operator-visible: {', '.join(map(str, extra))}" if extra else "")
        )
    try:
        out = records.astype(RECORD_COLUMNS)
    except (ValueError, TypeError) as exc:
        raise RecordsError(f"{where}: a value does not fit its column: {exc}") from None
    for column in ("procedure", "outcome"):
        unknown = out[column].isna() & records[column].notna()
        if unknown.any():
            value = records[column][unknown].iloc[0]
            raise RecordsError(
                f"{where}: row {int(unknown.to_numpy().nonzero()[0][0])}, column {column}: "
                f"{value!r} is not one of {', '.join(_categories(column))}"
            )
    return out


def _categories(column: str) -> list[str]:
    """The values allowed in a categorical column of the records."""
    dtype = RECORD_COLUMNS[column]
    assert isinstance(dtype, pd.CategoricalDtype), column
    return [str(c) for c in dtype.categories]

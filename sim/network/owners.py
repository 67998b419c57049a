"""Who carries which pseudonymous device: the truth multi-SIM deduplication is scored on.

An operator sees devices; a person carrying two phones of its network appears twice in
the records, under two pseudonyms that move together. The simulation knows the owner of
every phone, so this module writes ``truth_devices.parquet``: one row per pseudonymous
device of the records (the estimating operator's phones seen on a local day), with the
person carrying it and whether that person's other phone is in the records too.

This is ground truth, on the world's side of the operator wall: nothing under
``sim/estimate`` reads it (``tests/test_dedup.py`` checks). It joins the records on
``device``, because it uses the same keyed pseudonyms (:mod:`sim.network.pseudonyms`)
with the run's secret.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sim.network.pseudonyms import pseudonymise

__all__ = ["DEVICE_TRUTH_COLUMNS", "device_truth", "write_device_truth"]

#: Columns of ``truth_devices.parquet`` and their dtypes.
DEVICE_TRUTH_COLUMNS: dict[str, str] = {
    "device": "uint64",  # the pseudonym, as in records.parquet
    "day": "object",  # local date (ISO) the pseudonym belongs to
    "person": "int64",  # row of the person in the crowd
    "phones": "int8",  # phones the person carries, on every operator
    "twin": "bool",  # the person's other phone is in this day's records too
    "second": "bool",  # twin, and this is the later of the two (one per twin pair)
}


def device_truth(
    device: np.ndarray,
    times: pd.DatetimeIndex,
    owner: np.ndarray,
    phones: np.ndarray,
    *,
    secret: bytes,
    timezone: str,
) -> pd.DataFrame:
    """The owner of every pseudonymous device of the records.

    Parameters
    ----------
    device
        Internal index of each record's device (into `owner`), as the records were made.
    times
        Time of each record, time-zone-aware.
    owner
        Person carrying each of the operator's devices.
    phones
        Phones (all operators) per person, indexed by person.
    secret, timezone
        The run's pseudonym secret and the event's time zone: the records' pseudonyms.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DEVICE_TRUTH_COLUMNS`, one row per (local day, device) with records,
        sorted by day and person.
    """
    device = np.asarray(device, dtype=np.int64)
    times = pd.DatetimeIndex(times)
    ids = pseudonymise(device, times, secret=secret, timezone=timezone)
    day = times.tz_convert(timezone).strftime("%Y-%m-%d").to_numpy(dtype=object)
    frame = pd.DataFrame({"device": ids, "day": day, "index": device})
    frame = frame.drop_duplicates(["day", "index"])
    person = np.asarray(owner, dtype=np.int64)[frame["index"].to_numpy()]
    frame = frame.assign(person=person).sort_values(["day", "person", "index"], kind="stable")
    same = frame.groupby(["day", "person"], sort=False)["index"]
    rank = same.cumcount().to_numpy()
    seen = same.transform("size").to_numpy()
    return pd.DataFrame(
        {
            "device": frame["device"].to_numpy(dtype=np.uint64),
            "day": frame["day"].to_numpy(dtype=object),
            "person": frame["person"].to_numpy(dtype=np.int64),
            "phones": np.asarray(phones)[frame["person"].to_numpy()].astype(np.int8),
            "twin": seen > 1,
            "second": rank > 0,
        }
    ).reset_index(drop=True)


def write_device_truth(frame: pd.DataFrame, dest: Path) -> Path:
    """Write :func:`device_truth`'s table to `dest` atomically; return the path."""
    from sim.io import atomic_path

    with atomic_path(dest) as tmp:
        frame.to_parquet(tmp, index=False)
    return dest

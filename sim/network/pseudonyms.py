"""Pseudonymous device ids that cannot be linked across days (DESIGN §3, Records).

An operator that shares records replaces each subscriber id by a pseudonym that changes
every local day, so that one phone's movements on two days cannot be joined. Here the
pseudonym of device ``i`` on local day ``d`` is the first 8 bytes of the keyed hash

    BLAKE2b(key = K_d, message = i as 8 little-endian bytes)

with a day key ``K_d = BLAKE2b(key = S, message = d as ISO date)`` derived from one
32-byte secret ``S`` drawn from the run's generator. Why a keyed hash: the earlier
pseudonym, a public invertible 64-bit mixer applied to ``i XOR salt_d``, could be undone
by anyone (invert the mixer, read ``salt_d XOR i``; with small indices the salt and then
the index fall out, and two days' ids link). A keyed pseudo-random function reveals
nothing about ``i`` or about another day's ids without the key. Why derive the day keys:
a day's key then depends only on the secret and the date, not on which other days the
run covers, and the secret is still drawn from the run's seed (same seed, same ids).

The day is the *local* day of the event's time zone (midnight in Brussels, not UTC).
Within one day, distinct devices get distinct ids: a 64-bit collision among the
devices of a day (probability about ``n^2 / 2^65``, 1e-9 for 200,000 devices) is
detected and raised rather than silently merging two phones.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

__all__ = ["SECRET_BYTES", "day_key", "draw_secret", "pseudonymise"]

#: Length of the run's pseudonym secret (BLAKE2b accepts keys up to 64 bytes).
SECRET_BYTES = 32


def draw_secret(rng: np.random.Generator) -> bytes:
    """The run's pseudonym secret: `SECRET_BYTES` bytes from the network's generator."""
    return rng.bytes(SECRET_BYTES)


def day_key(secret: bytes, day: str) -> bytes:
    """The key of local day `day` (ISO date, ``"2019-07-07"``), derived from `secret`."""
    if not 16 <= len(secret) <= 64:
        raise ValueError(f"pseudonym secret has {len(secret)} bytes; need 16 to 64")
    return hashlib.blake2b(day.encode("ascii"), key=secret, person=b"crowdsim-day").digest()


def pseudonymise(  # noqa: C901 - input checks, then one keyed hash per (day, device)
    device: np.ndarray,
    times: pd.DatetimeIndex | pd.Series,
    *,
    secret: bytes,
    timezone: str,
) -> np.ndarray:
    """Pseudonymous uint64 id of each record's device, rotating at local midnight.

    Parameters
    ----------
    device
        Internal device index of each record (non-negative integers).
    times
        Time of each record, time-zone-aware.
    secret
        The run's secret (:func:`draw_secret`).
    timezone
        IANA time zone whose local days the ids follow (the scenario's ``event.timezone``).

    Returns
    -------
    numpy.ndarray
        uint64 ids, one per record: equal for one device within a local day, unrelated
        across days and devices.

    Raises
    ------
    ValueError
        Negative device indices, lengths that differ, naive times, or (practically never)
        two devices of one day hashing to the same id.
    """
    device = np.asarray(device, dtype=np.int64)
    times = pd.DatetimeIndex(times)
    if len(device) != len(times):
        raise ValueError(f"pseudonymise: {len(device)} devices but {len(times)} times")
    if len(device) == 0:
        return np.zeros(0, dtype=np.uint64)
    if times.tz is None:
        raise ValueError("pseudonymise: times must be time-zone-aware (UTC or local)")
    if (device < 0).any():
        raise ValueError("pseudonymise: device indices must be >= 0")
    local = times.tz_convert(timezone).tz_localize(None).to_numpy()
    local_day = local.astype("datetime64[D]").astype(np.int64)
    if (device >= 1 << 40).any():
        raise ValueError("pseudonymise: device indices must be < 2**40")
    # one int64 key per (day, device); device indices are dense, so a table indexed by
    # key finds the distinct pairs without sorting the records (millions in a full run)
    day0 = int(local_day.min())
    span = (int(local_day.max()) - day0 + 1) * (int(device.max()) + 1)
    if span <= 4 * len(device) + (1 << 20):
        key = (local_day - day0) * (int(device.max()) + 1) + device
        seen = np.zeros(span, dtype=bool)
        seen[key] = True
        keyed = np.flatnonzero(seen)
        slot = np.zeros(span, dtype=np.int64)
        slot[keyed] = np.arange(len(keyed))
        inverse = slot[key]
        pairs = np.column_stack(
            [day0 + keyed // (int(device.max()) + 1), keyed % (int(device.max()) + 1)]
        )
    else:
        keyed, inverse = np.unique((local_day << 40) | device, return_inverse=True)
        pairs = np.column_stack([keyed >> 40, keyed & ((1 << 40) - 1)])
    ids = np.empty(len(pairs), dtype=np.uint64)
    keys: dict[int, bytes] = {}
    for k, (day, dev) in enumerate(pairs.tolist()):
        key = keys.get(day)
        if key is None:
            iso = (np.datetime64(0, "D") + np.timedelta64(day, "D")).astype(str)
            key = keys[day] = day_key(secret, iso)
        digest = hashlib.blake2b(int(dev).to_bytes(8, "little"), key=key, digest_size=8).digest()
        ids[k] = int.from_bytes(digest, "little")
    # distinct devices of one day must keep distinct ids
    for day in np.unique(pairs[:, 0]):
        of_day = ids[pairs[:, 0] == day]
        if len(np.unique(of_day)) != len(of_day):
            raise ValueError(
                "pseudonymise: two devices of one day got the same id; draw another secret"
            )
    return ids[np.asarray(inverse).ravel()]

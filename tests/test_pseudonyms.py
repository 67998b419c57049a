"""Pseudonyms cannot be linked across days; the day follows the event's time zone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.network.pseudonyms import day_key, draw_secret, pseudonymise

M64 = (1 << 64) - 1


def old_mix64(z: int) -> int:
    """The former pseudonym: the public SplitMix64 finaliser (a bijection)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _unshift(z: int, shift: int) -> int:
    """Inverse of ``z ^ (z >> shift)`` on 64 bits."""
    out = z
    for _ in range(64 // shift + 1):
        out = z ^ (out >> shift)
    return out


def unmix64(z: int) -> int:
    """Inverse of :func:`old_mix64`: anyone can compute it, no key needed."""
    z = _unshift(z, 31)
    z = (z * pow(0x94D049BB133111EB, -1, 1 << 64)) & M64
    z = _unshift(z, 27)
    z = (z * pow(0xBF58476D1CE4E5B9, -1, 1 << 64)) & M64
    return _unshift(z, 30)


def old_pseudonyms(device: np.ndarray, salt: int) -> list[int]:
    """The former scheme: mix64(device index XOR the day's salt)."""
    return [old_mix64(int(d) ^ salt) for d in device]


def link_attack(day1: list[int], day2: list[int], *, min_support: int = 3) -> dict[int, int]:
    """Link ids of two days from the ids alone (the attack of the issue).

    Unmixing gives ``salt_d XOR index``; for a device seen on both days the XOR of its two
    unmixed ids is ``salt_1 XOR salt_2``, the same for every device. The attack looks for
    the offset that maps the most day-1 values onto day-2 values and, if it is supported
    by at least `min_support` devices, links every pair it maps. Returns {id1: id2}.
    """
    z1 = [unmix64(v) for v in day1]
    z2 = [unmix64(v) for v in day2]
    back2 = dict(zip(z2, day2, strict=True))
    best, support = None, 0
    for a in z1[:20]:
        for b in z2:
            d = a ^ b
            n = sum((x ^ d) in back2 for x in z1)
            if n > support:
                best, support = d, n
    if best is None or support < min_support:
        return {}
    return {v: back2[x ^ best] for x, v in zip(z1, day1, strict=True) if (x ^ best) in back2}


def two_days(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Device indices present on day 1 and day 2 (most devices on both)."""
    n = 300
    day1 = np.sort(rng.choice(n, size=240, replace=False))
    day2 = np.sort(rng.choice(n, size=240, replace=False))
    return day1, day2


def test_the_attack_links_the_old_pseudonyms() -> None:
    """Demonstration that the attack is real: on the former scheme it links every device."""
    rng = np.random.default_rng(5)
    d1, d2 = two_days(rng)
    s1, s2 = (int(x) for x in rng.integers(0, 2**63, size=2, dtype=np.uint64))
    ids1, ids2 = old_pseudonyms(d1, s1), old_pseudonyms(d2, s2)
    links = link_attack(ids1, ids2)
    truth = {i1: i2 for i1, a in zip(ids1, d1, strict=True)
             for i2, b in zip(ids2, d2, strict=True) if a == b}  # fmt: skip
    assert len(truth) > 150
    assert links == truth  # every device on both days linked, all correctly


def test_the_attack_fails_on_keyed_pseudonyms() -> None:
    rng = np.random.default_rng(5)
    d1, d2 = two_days(rng)
    secret = draw_secret(np.random.default_rng(11))
    t1 = pd.DatetimeIndex([pd.Timestamp("2019-07-06 12:00", tz="Europe/Brussels")] * len(d1))
    t2 = pd.DatetimeIndex([pd.Timestamp("2019-07-07 12:00", tz="Europe/Brussels")] * len(d2))
    ids1 = pseudonymise(d1, t1, secret=secret, timezone="Europe/Brussels").tolist()
    ids2 = pseudonymise(d2, t2, secret=secret, timezone="Europe/Brussels").tolist()
    assert len(set(ids1)) == len(d1) and not set(ids1) & set(ids2)
    assert link_attack(ids1, ids2) == {}  # no structure: nothing linked
    # nor with a looser attacker: whatever it links is right no more often than chance
    loose = link_attack(ids1, ids2, min_support=1)
    index1 = dict(zip(ids1, d1, strict=True))
    index2 = dict(zip(ids2, d2, strict=True))
    assert sum(index1[a] == index2[b] for a, b in loose.items()) <= 1
    # the ids carry no trace of the index: low bits are not the device's
    assert not set(ids1) & set(range(1000))


def test_pseudonyms_rotate_at_local_midnight_of_the_event_time_zone() -> None:
    secret = draw_secret(np.random.default_rng(1))
    # 23:30 and 00:30 local time in Tokyo: two local days, but one UTC day (14:30, 15:30)
    times = pd.DatetimeIndex(["2019-07-06 23:30", "2019-07-07 00:30"]).tz_localize("Asia/Tokyo")
    tokyo = pseudonymise(np.array([7, 7]), times, secret=secret, timezone="Asia/Tokyo")
    utc = pseudonymise(np.array([7, 7]), times, secret=secret, timezone="UTC")
    assert tokyo[0] != tokyo[1]
    assert utc[0] == utc[1]
    # same seed, same ids; another seed, other ids
    again = pseudonymise(np.array([7, 7]), times, secret=draw_secret(np.random.default_rng(1)),
                         timezone="Asia/Tokyo")  # fmt: skip
    np.testing.assert_array_equal(tokyo, again)
    other = pseudonymise(np.array([7, 7]), times, secret=draw_secret(np.random.default_rng(2)),
                         timezone="Asia/Tokyo")  # fmt: skip
    assert not set(tokyo.tolist()) & set(other.tolist())


def test_day_keys_depend_on_the_date_only() -> None:
    secret = bytes(range(32))
    assert day_key(secret, "2019-07-07") == day_key(secret, "2019-07-07")
    assert day_key(secret, "2019-07-07") != day_key(secret, "2019-07-08")


@pytest.mark.parametrize(
    ("device", "times", "match"),
    [
        (np.array([1, 2]), pd.DatetimeIndex(["2019-07-07"], tz="UTC"), "2 devices but 1 times"),
        (np.array([1]), pd.DatetimeIndex(["2019-07-07"]), "time-zone-aware"),
        (np.array([-1]), pd.DatetimeIndex(["2019-07-07"], tz="UTC"), ">= 0"),
    ],
)
def test_bad_input_is_refused(device: np.ndarray, times: pd.DatetimeIndex, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pseudonymise(device, times, secret=bytes(32), timezone="UTC")


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 to 64"):
        day_key(b"short", "2019-07-07")

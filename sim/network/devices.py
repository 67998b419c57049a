"""Phones: who carries how many, of which operator, and how heavily they use them.

Each person gets 0, 1 or 2 devices (DESIGN §3: ownership about 0.9, a second device about
0.1), an operator by market share, and an activity class. Foreign visitors roam: their
phones attach to a domestic network, split among operators by market share (assumption:
roaming agreements in proportion to size). Only the estimating operator's devices are
simulated in full; the others exist only as people this operator does not see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ACTIVITY_CLASSES", "Devices", "assign_devices"]

#: Activity classes and the share of devices in each (assumption: a heavy-tailed mix).
ACTIVITY_CLASSES = ("light", "medium", "heavy")
DEFAULT_ACTIVITY_SHARES = (0.3, 0.5, 0.2)


@dataclass(frozen=True, eq=False)
class Devices:
    """All devices of all operators; arrays indexed by device.

    Attributes
    ----------
    owner
        Index of the person carrying the device.
    operator
        Index into ``operators``.
    roaming
        The device belongs to a foreign visitor (inbound roamer).
    activity
        Index into :data:`ACTIVITY_CLASSES`.
    operators
        Operator names, in the order of the scenario's market shares.
    """

    owner: np.ndarray
    operator: np.ndarray
    roaming: np.ndarray
    activity: np.ndarray
    operators: tuple[str, ...]

    def of(self, operator: str) -> np.ndarray:
        """Indices of the devices of `operator`."""
        return np.flatnonzero(self.operator == self.operators.index(operator))

    def __len__(self) -> int:
        """Number of phones."""
        return len(self.owner)


def assign_devices(
    n_people: int,
    *,
    rng: np.random.Generator,
    market_shares: dict[str, float],
    ownership: float = 0.9,
    second_device: float = 0.1,
    foreign: np.ndarray | None = None,
    activity_shares: tuple[float, ...] = DEFAULT_ACTIVITY_SHARES,
) -> Devices:
    """Give each of `n_people` people 0, 1 or 2 devices.

    Parameters
    ----------
    n_people
        Number of people (devices refer to them by index).
    rng
        The network subsystem's generator.
    market_shares
        Operator -> share; shares summing to less than 1 leave the rest to operators not
        named (their devices are dropped: this operator never sees them either).
    ownership, second_device
        Probability of carrying a phone, and of a second one given the first.
    foreign
        Per person, whether they are a foreign visitor (their devices roam).
    activity_shares
        Share of devices in each activity class.
    """
    if not 0 <= ownership <= 1 or not 0 <= second_device <= 1:
        raise ValueError("ownership and second_device are probabilities in [0, 1]")
    has = rng.random(n_people) < ownership
    two = has & (rng.random(n_people) < second_device)
    owner = np.concatenate([np.flatnonzero(has), np.flatnonzero(two)]).astype(np.int64)
    owner.sort(kind="stable")
    names = tuple(market_shares)
    shares = np.array([market_shares[n] for n in names], dtype=float)
    others = max(0.0, 1.0 - shares.sum())
    draw = rng.choice(
        len(names) + 1, size=len(owner), p=np.append(shares, others) / (shares.sum() + others)
    )
    keep = draw < len(names)
    owner, operator = owner[keep], draw[keep].astype(np.int16)
    roaming = (
        np.zeros(len(owner), dtype=bool) if foreign is None else np.asarray(foreign, bool)[owner]
    )
    act = np.asarray(activity_shares, dtype=float)
    activity = rng.choice(len(act), size=len(owner), p=act / act.sum()).astype(np.int8)
    return Devices(owner=owner, operator=operator, roaming=roaming, activity=activity,
                   operators=names)  # fmt: skip

"""Persons among the operator's devices: the fixed factor and deduplication against the truth.

An operator that counts devices must turn them into people. The fixed factor divides by a
belief in phones per person; multi-SIM deduplication (:mod:`sim.estimate.dedup`) gives each
device a probability p of being one of a person's two phones of the operator and counts
it as ``1 - p / 2`` persons. Both imply a number of distinct people among the devices of
the records, and ``truth_devices.parquet`` (who carries each device) gives the true one:

- ``persons_fixed``: what the fixed factor implies, ``N (1 - prior / 2)``, with N the
  devices and prior the a-priori twin probability ``2 q s / (1 + q)`` from the operator's
  beliefs (second-phone share q, market share s). (Dividing N by ``s * phones`` people
  and multiplying by the share of people with at least one phone of the operator,
  ``o s (1 + q (1 - s))``, gives exactly this.)
- ``persons_dedup``: the sum of ``1 - p / 2`` (from the run's ``duplicity.parquet``,
  or computed here from the records when the run had deduplication off);
- ``persons_true``: distinct people among the devices; ``error_*`` relative to it;
- how well p tells twins: the Brier score of p against "this device's owner has another
  device in the records", beside that of the prior alone (``brier_prior``: what knowing
  nothing scores), and the mean p of twins and of the others.

:func:`dedup_effect` re-runs the estimators of a run folder with deduplication off and on
and scores both against the zone truth (MAPE, bias, MAE per method and zone system): the
zone-bin view of the same question.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import RunFolderError
from sim.estimate.dedup import DUPLICITY_FILE, duplicity, twin_prior
from sim.io import read_table
from sim.runfolder import NETWORK_PLAN, RECORDS, TRUTH_DEVICES, read_manifest

__all__ = ["dedup_effect", "score_persons"]

#: Metrics of :func:`dedup_effect`.
EFFECT_METRICS = ("mape", "bias", "mae")


def _beliefs(run: Path) -> tuple[float, float, dict[str, Any]]:
    """The operator's market share (with its error) and second-phone share, from the run."""
    from sim.network.plan import NetworkPlan

    plan = NetworkPlan.from_json(run / NETWORK_PLAN)
    estimators = read_manifest(run).get("scenario", {}).get("estimators", {}) or {}
    share = plan.market_share * (1.0 + float(estimators.get("share_error", 0.0)))
    second = float(estimators.get("second_device", 0.1))
    return share, second, estimators


def score_persons(
    run_dir: str | os.PathLike[str], *, compute: bool = True
) -> dict[str, Any] | None:
    """Persons among the run's devices: truth, fixed factor and deduplication (module doc).

    Parameters
    ----------
    run_dir
        A run folder with ``truth_devices.parquet`` (None is returned for a run from
        before it was written).
    compute
        When the run has no ``duplicity.parquet`` (deduplication was off), compute the
        probabilities here from its records; False leaves the deduplication figures out.

    Raises
    ------
    RunFolderError
        The truth names devices the records do not have, or a table is unreadable.
    """
    run = Path(run_dir)
    if not (run / TRUTH_DEVICES).is_file():
        return None
    truth = read_table(
        run / TRUTH_DEVICES, required=("device", "person", "twin", "second"), error=RunFolderError
    )
    if truth["device"].duplicated().any():
        raise RunFolderError(f"{run / TRUTH_DEVICES}: a device appears twice")
    share, second, _ = _beliefs(run)
    prior = twin_prior(market_share=min(share, 1.0), second_device=second)
    n = len(truth)
    twin = truth["twin"].to_numpy(bool)
    true_persons = int(n - truth["second"].sum())
    fixed = n * (1.0 - prior / 2.0)
    out: dict[str, Any] = {
        "devices": n,
        "twin_devices_true": int(twin.sum()),
        "persons_true": true_persons,
        "prior": round(prior, 6),
        "persons_fixed": round(fixed, 2),
        "error_fixed": _relative(fixed, true_persons),
        "brier_prior": _round(float(((prior - twin) ** 2).mean())) if n else None,
    }
    p, source, seconds = _probabilities(run, truth, prior=prior, compute=compute)
    if p is None:
        return out
    persons = float((1.0 - p / 2.0).sum())
    out.update(
        {
            "dedup_source": source,
            "dedup_seconds": seconds,
            "persons_dedup": round(persons, 2),
            "error_dedup": _relative(persons, true_persons),
            "brier_dedup": _round(float(((p - twin) ** 2).mean())) if n else None,
            "mean_p_twins": _round(float(p[twin].mean())) if twin.any() else None,
            "mean_p_others": _round(float(p[~twin].mean())) if (~twin).any() else None,
        }
    )
    return out


def _probabilities(
    run: Path, truth: pd.DataFrame, *, prior: float, compute: bool
) -> tuple[np.ndarray | None, str | None, float | None]:
    """Each truth device's duplicity: from the run's table, or computed from its records."""
    if (run / DUPLICITY_FILE).is_file():
        table = read_table(
            run / DUPLICITY_FILE, required=("device", "probability"), error=RunFolderError
        )
        source, seconds = DUPLICITY_FILE, None
    elif compute:
        from sim.network.plan import NetworkPlan

        records = read_table(run / RECORDS, required=("device",), error=RunFolderError)
        t0 = time.perf_counter()
        result = duplicity(records, NetworkPlan.from_json(run / NETWORK_PLAN), prior=prior)
        seconds = round(time.perf_counter() - t0, 3)
        table, source = result.table(), "computed from records.parquet"
    else:
        return None, None, None
    found = pd.Index(table["device"].to_numpy(np.uint64)).get_indexer(
        truth["device"].to_numpy(np.uint64)
    )
    if (found < 0).any():
        raise RunFolderError(
            f"{run}: {int((found < 0).sum())} device(s) of {TRUTH_DEVICES} have no duplicity "
            f"({source}); the two come from different runs"
        )
    return table["probability"].to_numpy(np.float64)[found], source, seconds


def dedup_effect(
    run_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    systems: Sequence[str] = ("grid", "segment", "area"),
    mode: str | None = None,
) -> pd.DataFrame:
    """Zone-bin error of people with deduplication off and on, on one run's records.

    Re-runs the estimators of the run's scenario (``[estimators]`` as written, `methods`
    if given; `mode` overrides its ``mode``) on its records and zones, once with ``dedup``
    off and once on, and scores both against ``truth_zones.parquet`` as validation does.

    Returns
    -------
    pandas.DataFrame
        One row per method, zone system and metric (:data:`EFFECT_METRICS`): ``off``,
        ``on`` and ``change`` (on - off), plus ``seconds_off`` / ``seconds_on`` of the
        estimation.
    """
    import geopandas as gpd

    from sim.estimate import period_bins, run_estimators
    from sim.network.plan import NetworkPlan
    from sim.scenario import EstimatorsConfig
    from validation.metrics import DEFAULT_FLOOR, _join_one, _read_parquet, _zone_lists, score

    run = Path(run_dir)
    manifest = read_manifest(run)
    scenario = manifest.get("scenario", {})
    config = EstimatorsConfig.model_validate(scenario.get("estimators", {}))
    wanted = [m for m in (methods or config.methods) if m != "presence"]
    if not wanted:
        raise RunFolderError("dedup_effect: no spatial method to score (presence has no truth)")
    plan = NetworkPlan.from_json(run / NETWORK_PLAN)
    records = pd.read_parquet(run / RECORDS)
    zones = {s: gpd.read_file(run / "zones.gpkg", layer=s).assign(system=s) for s in systems}
    bin_s = float(scenario.get("zones", {}).get("bin_s", 60.0))
    bins = period_bins(plan, bin_s=bin_s)
    truth = _read_parquet(run / "truth_zones.parquet")
    truth = truth.assign(
        bin=pd.to_datetime(truth["time"], utc=True) - pd.Timedelta(seconds=bin_s),
        system=truth["system"].astype("category"),
        zone=truth["zone"].astype("category"),
    )
    zone_lists = _zone_lists(run)
    rows: list[dict[str, Any]] = []
    scored: dict[bool, dict[tuple[str, str], dict[str, float]]] = {}
    seconds: dict[bool, float] = {}
    for on in (False, True):
        cfg = config.model_copy(
            update={"methods": wanted, "dedup": on, "mode": mode or config.mode}
        )
        t0 = time.perf_counter()
        table = run_estimators(
            records, plan, zones, bins, cfg, random_state=0, mode=cfg.mode,
            share_error=cfg.share_error, phones_error=cfg.phones_error,
        )  # fmt: skip
        seconds[on] = time.perf_counter() - t0
        table = table.assign(
            method=table["method"].astype("category"),
            zone_system=table["zone_system"].astype("category"),
            zone=table["zone"].astype("category"),
        )
        scored[on] = {}
        for method in wanted:
            for system in systems:
                est = table[(table["method"] == method) & (table["zone_system"] == system)]
                if est.empty:
                    continue
                joined = _join_one(method, system, est, truth, zone_lists.get(system, []), bin_s)
                values, _, _ = score(joined, floor=DEFAULT_FLOOR, centroids=None)
                scored[on][(method, system)] = {m: values[m][0] for m in EFFECT_METRICS}
    for key, off in scored[False].items():
        on_ = scored[True].get(key, {})
        for metric in EFFECT_METRICS:
            a, b = off.get(metric, np.nan), on_.get(metric, np.nan)
            rows.append(
                {"method": key[0], "zone_system": key[1], "metric": metric, "off": a, "on": b,
                 "change": b - a, "seconds_off": round(seconds[False], 2),
                 "seconds_on": round(seconds[True], 2)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _relative(value: float, truth: int) -> float | None:
    return _round((value - truth) / truth) if truth else None


def _round(value: float) -> float:
    return round(float(value), 6)

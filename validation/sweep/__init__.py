"""Replications and sweeps: one scenario run many times, over parameter values and seeds.

A sweep file (TOML) names a base scenario, what to change in it for every run, which
parameters to vary and how many replications (seeds) each parameter point gets::

    name = "smoke_market_share"
    base = "../smoke.toml"        # relative to this file
    seed = 2019                   # root SeedSequence of the sweep (default: the base's seed)
    replications = 3              # runs per parameter point, each with its own seeds
    mode = "grid"                 # grid: every combination; list: the i-th values together
    seeds = "common"              # common: replication r has the same seeds at every point

    [set]                         # fixed changes for every run; tables merge like `extends`
    output.report = false

    [vary]                        # parameter path -> its values
    "network.market_shares.proximus" = [0.2, 0.4]
    "estimators.privacy_threshold" = [0, 30]

    [summary]                     # the summary figure (optional)
    x = "network.market_shares.proximus"     # default: the first varied parameter
    metrics = ["area/mape", "grid/kwd_mean_m"]

A parameter path is a dotted path into the scenario (``closures.0.start`` indexes a
list); it must exist in the base scenario, and every point must give a valid scenario,
both checked before anything runs.

Seeds. The sweep's root is ``SeedSequence(seed)``; replication ``r`` runs with the child
``SeedSequence(seed, spawn_key=(r,))`` (``seeds = "common"``, the default: the points of
one replication share their crowd, so differences between points come from the
parameters, not from another crowd: common random numbers) or
``SeedSequence(seed, spawn_key=(point, r))`` (``seeds = "independent"``). Each run
spawns its subsystems (crowd, network, estimators) from that child
(:func:`sim.run.seed_sequences`). The seeds of a run depend only on its point and
replication, never on the order in which runs finish, so a sweep gives the same tables
in local processes and on a Dask cluster. A run's manifest records ``seed`` and
``seed_spawn_key``; :func:`reproduce_run` runs it again from its folder alone.

The output folder::

    DIR/sweep.json              the sweep, its points and every run's status and error,
                                rewritten (atomically) after each finished run
    DIR/runs/<run_id>/          one ordinary run folder per run (p000-r000, ...)
    DIR/sweep_metrics.parquet   one row per run x method x zone system x metric, with the
                                parameter values as columns (a failed run: one row with
                                its error and no metric)
    DIR/sweep_summary.png       error vs parameter: median over replications, band from
                                the lowest to the highest replication, each run a dot

Resuming. Running a sweep into a folder that already holds some of its runs skips every
run whose folder :func:`sim.runfolder.open_run` accepts (status ``ok``, every file as the
run wrote it) for the same resolved scenario and seeds; the others (unfinished, failed,
damaged, or of other parameter values) are run again. The sweep holds the lock of DIR,
so a second sweep into it is refused, and its local workers die with it. A failing run is
recorded with its error and the other runs go on. With a Dask scheduler the workers
must be able to import crowdsim and write to DIR at the same path (a shared folder), and
should run one task at a time each (``dask worker ADDRESS --nthreads 1``): a run is
NumPy-bound and draws figures with matplotlib, whose pyplot is not thread-safe.

Modules (the sections of one file before): :mod:`.spec` the sweep file and its runs,
:mod:`.running` locking, resuming and running them, :mod:`.results` the table and the
figure, :mod:`.reproducing` one run again from its folder.
"""

from validation.sweep.reproducing import reproduce_run
from validation.sweep.results import plot_sweep, sweep_table
from validation.sweep.running import run_sweep
from validation.sweep.spec import Sweep, SweepError, SweepResult, SweepRun, SweepSpec, load_sweep

__all__ = [
    "Sweep",
    "SweepError",
    "SweepResult",
    "SweepRun",
    "SweepSpec",
    "load_sweep",
    "plot_sweep",
    "reproduce_run",
    "run_sweep",
    "sweep_table",
]

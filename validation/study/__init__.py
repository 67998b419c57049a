"""The estimator study: every estimator variant on the same runs, over seeds, one page.

A study file (TOML) names its variants file and, per scenario, a sweep that replicates
it over seeds (:mod:`validation.sweep`)::

    name = "estimators"
    variants = "variants.toml"      # relative to this file
    floor = 30                      # truth floor of the relative errors (people)
    kwd_max_bins = 12               # the KWD on at most this many bins per run

    [[scenario]]
    name = "ttt"                    # folder and table name
    title = "Team time trial"       # how the page names it
    sweep = "ttt_sweep.toml"        # base scenario and replications
    workers = 1                     # local processes for its runs (memory)

A variants file holds one ``[[variant]]`` per row of the tables::

    [[variant]]
    label = "em"                    # row name (letters, digits, _.+-)
    method = "em"                   # a method of sim.estimate.ESTIMATORS
    options = { mode = "batch" }    # [estimators] keys that differ from the run's
    description = "..."

Every option is checked against every scenario's ``[estimators]`` before anything runs;
an unknown key or method is an error naming the file, the variant and what is allowed.

What runs, and what runs again. The expensive part (crowd and network -> records) runs
once per seed, in the scenario's sweep folder ``DIR/<scenario>/runs/<run_id>/``; a
second call reuses every finished run (status ``ok``, files as written), so it only
estimates and scores again. For each run and variant the estimators run again from the
run's operator files (:mod:`.estimating`) with the run's own seed stream, and are scored
with :func:`validation.metrics.compute_tables`. A flat spread of the true total over the
grid tiles gives the reference KWD of Ricciato & Coluccia (2020).

The output::

    DIR/<scenario>/              the scenario's sweep folder (sweep.json, runs/)
    DIR/study_metrics.parquet    one row per scenario x run x variant x zone system x metric
    DIR/study_summary.parquet    median, quartiles, min, max over seeds (:mod:`.summary`)
    DIR/study_zones.parquet      per segment and area: peaks, their times and errors
    DIR/study_bins.parquet       per bin: true and estimated totals, KWD
    DIR/study_runs.parquet       per run: status, seconds, rejected share
    DIR/study.json               the variants and every run's record
    DOCS/estimators.md           the page (:mod:`.page`), figures in DOCS/figures/
    README.md                    the summary table between the study's markers

Modules: :mod:`.spec` the files, :mod:`.estimating` the variants on one run,
:mod:`.summary` over seeds, :mod:`.figures`, :mod:`.page`, :mod:`.running`.
"""

from validation.study.estimating import FLAT, score_variants
from validation.study.page import README_BEGIN, README_END
from validation.study.running import PAGE, StudyResult, run_study
from validation.study.spec import (
    Study,
    StudyError,
    StudyScenario,
    StudySpec,
    Variant,
    load_study,
    load_variants,
    variant_config,
)
from validation.study.summary import HEADLINE, Winner, summarise, winners

__all__ = [
    "FLAT",
    "HEADLINE",
    "PAGE",
    "README_BEGIN",
    "README_END",
    "Study",
    "StudyError",
    "StudyResult",
    "StudyScenario",
    "StudySpec",
    "Variant",
    "Winner",
    "load_study",
    "load_variants",
    "run_study",
    "score_variants",
    "summarise",
    "variant_config",
    "winners",
]

"""Validation of crowdsim runs: metrics, error bounds, replications and sweeps.

Only this package sees both sides of the operator wall (truth and estimates). It
imports :mod:`sim`, never the reverse: a scored run starts here (:func:`run_validated`).
"""

from validation.checks import assert_bounds, check_bounds, load_bounds
from validation.metrics import compute_metrics, write_metrics
from validation.scoring import run_validated, score_run

__all__ = [
    "assert_bounds",
    "check_bounds",
    "compute_metrics",
    "load_bounds",
    "run_validated",
    "score_run",
    "write_metrics",
]

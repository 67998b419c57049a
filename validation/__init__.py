"""Validation of crowdsim runs: metrics, error bounds, replications and sweeps.

Only this package sees both sides of the operator wall (truth and estimates).
"""

from validation.checks import assert_bounds, check_bounds, load_bounds
from validation.metrics import compute_metrics, write_metrics

__all__ = ["assert_bounds", "check_bounds", "compute_metrics", "load_bounds", "write_metrics"]

"""Validation of crowdsim runs: metrics, error bounds, replications and sweeps.

Only this package sees both sides of the operator wall (truth and estimates).
"""

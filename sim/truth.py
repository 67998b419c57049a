"""Moved to :mod:`sim.crowd.truth` (beside the crowd it records); kept so old imports work."""

from sim.crowd.truth import TruthRecorder

__all__ = ["TruthRecorder"]

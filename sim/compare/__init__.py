"""What changed between two runs, for planners: ``crowdsim compare RUN_A RUN_B``.

Planners rehearse a decision by running a baseline (A) and a variant (B) that differs in
that one decision. This module reads both run folders and puts side by side, for A, B
and B − A: peak density and time at Fruin level of service E or F per course segment and
named area; the ten densest places; walking time from the stations to the course and
across the course at each crossing point; people who found no spot; signalling load and
rejections of the cells near the course; and each estimator's error. The answer is one
long table (``compare.parquet``: measure, place, run_a, run_b, difference, unit) and a
map coloured by the difference (``compare_map.png``).

Modules: :mod:`.comparison` opens both runs (through :mod:`sim.runfolder`) and gathers
the measures; :mod:`.measures` has one function per kind of measure; :mod:`.walking` the
walking times; :mod:`.figure` the map.

Walking times are computed, not read: the streets and course are rebuilt from each run's
``scenario.toml`` and manifest (the street cache makes this cheap), and shortest walks
run on the walk graph as the crowd sees it (:mod:`sim.crowd.walkgraph`): the course is a
barrier crossable only at crossing points while it is closed. Both runs must be on the
same streets, or edge-by-edge differences would mean nothing.

Definitions (the ``measure`` column):

- *peak density* of a zone: the highest bin-mean density (persons/m²) of any street
  segment touching it (``truth_edges.parquet``); *time at LOS E or F*: minutes in which
  at least one street touching it was at Fruin level E or F.
- *densest places*: the ``worst`` street segments by peak density in either run, named.
- *walk from station to course*: from each spectator origin of kind ``station`` to the
  nearest course sidewalk, with the closures in force at the first team's start;
  *walk across the course*: from a street node about ``ACROSS_OFFSET_M`` on one side of
  the course near each crossing point (of either run) to one as far on the other side,
  with the course closed; both at ``FREE_SPEED_MPS`` (Weidmann's free speed), so they
  are distances in minutes, free of crowding.
- *rejections* and *signalling messages*: summed over the cells within ``near_course_m``
  of the course, and within ``near_point_m`` of its start, check points and finish; per
  cell also the peak of RRC-connected users (``cell_load.parquet``).
- the crowd outcomes (turned away, unreachable, ...) from the run's manifest; the
  estimators' metrics from ``metrics.parquet``.
"""

from sim.runfolder import RunFolder

from .comparison import (
    REQUIRED_FILES,
    Comparison,
    compare_runs,
    format_table,
    open_run,
    write_comparison,
)
from .figure import plot_comparison
from .measures import COLUMNS, METRICS, OUTCOMES
from .walking import ACROSS_OFFSET_M, FREE_SPEED_MPS

__all__ = [
    "ACROSS_OFFSET_M",
    "COLUMNS",
    "FREE_SPEED_MPS",
    "METRICS",
    "OUTCOMES",
    "REQUIRED_FILES",
    "Comparison",
    "RunFolder",
    "compare_runs",
    "format_table",
    "open_run",
    "plot_comparison",
    "write_comparison",
]

"""The run report: figures and one self-contained ``report.html`` in the run folder.

The report is for the three kinds of reader of DESIGN: planners see the crowd on the
map, its densities and levels of service and the worst places; researchers see every
method against the truth (maps at the peak, time series with intervals, scatter, error
over time, the signalling load behind the estimates); everyone sees first which street
source the run used, because a run on the offline sketch must never be mistaken for one
on the real city. Figures are PNGs (and one animated GIF) drawn with matplotlib's Agg
backend, written atomically beside the tables and embedded in the page as base64.

Modules: :mod:`.figures` lists every figure (file, section, caption, how to draw it) and
prepares what they share; :mod:`.write` draws them and writes the page; :mod:`.tables`
reads the run folder once, on local time; :mod:`.maps` draws maps and the animation;
:mod:`.charts` the charts over time and against the truth; :mod:`.crowding` densities and
levels of service; :mod:`.sections` the tables beside the figures; :mod:`.page` the HTML;
:mod:`.context` reopens a finished run; :mod:`.geopackage` writes ``course.gpkg``.
"""

from .context import FinishedRun, load_run_context
from .figures import FIGURES, Figure, chosen_times
from .geopackage import write_course_geopackage
from .maps import plot_course_map
from .write import ReportWritten, RunView, write_report

__all__ = [
    "FIGURES",
    "Figure",
    "FinishedRun",
    "ReportWritten",
    "RunView",
    "chosen_times",
    "load_run_context",
    "plot_course_map",
    "write_course_geopackage",
    "write_report",
]

"""The crisis-centre screen: a map dashboard of a run in the browser.

``crowdsim serve RUN_DIR [RUN_DIR_B]`` shows a finished run (or a baseline beside a
variant); ``crowdsim live SCENARIO`` runs a scenario as a stream and shows each simulated
minute as it is computed. Modules: :mod:`.data` (a run as zones x bins arrays, finished or
live), :mod:`.alerts` (alerts as a crisis centre sets them, matched against the truth),
:mod:`.app` (the page: Panel widgets and Bokeh maps), :mod:`.tiles` (the grid's tiles
as one image on the map), :mod:`.serve` (the server and the live feed). Panel and Bokeh
are imported only by the page and the server.
"""

from sim.dashboard.alerts import AlertScore, density_thresholds, episodes, score_alerts
from sim.dashboard.data import RunData

__all__ = ["AlertScore", "RunData", "density_thresholds", "episodes", "score_alerts"]

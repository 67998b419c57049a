"""The dashboard's page: a map with a clock, layers, a zone's series and alerts.

One :class:`Dashboard` per browser session, over one or two :class:`RunData` (a
baseline and a variant). It is built from Panel widgets and Bokeh figures, whose
JavaScript is installed with the Python packages, so the page loads nothing from the
internet (web map tiles only when the user switches them on).

A step of the clock takes one column of the pre-aggregated arrays. The tiles are one
RGBA image whose pixels are the tiles (:mod:`.tiles`), coloured here with NumPy, so the
browser receives one image (and the tiles' values, for hover) per map and repaints one
picture instead of thousands of rectangles; course segments and named areas are
patches whose ``value`` and ``alpha`` columns are replaced.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import panel as pn
from bokeh.events import Event, Tap
from bokeh.models import (  # type: ignore[attr-defined]  # (Bokeh's stubs miss these two)
    ColorBar,
    ColumnDataSource,
    CustomJS,
    CustomJSHover,
    HoverTool,
    LinearColorMapper,
    LogColorMapper,
    Span,
    TapTool,
    WMTSTileSource,
)
from bokeh.palettes import RdBu11, YlOrRd9
from bokeh.plotting import figure
from bokeh.transform import transform

from sim.dashboard.alerts import AlertScore, score_alerts, score_zone_alerts
from sim.dashboard.data import LOS_LEVELS, RunData, ZoneSeries, interval_note
from sim.dashboard.tiles import TileImage, colour_index, hex_rgb, pack_rgba

__all__ = ["LAYERS", "SYSTEM_LABELS", "Dashboard", "layer_values", "zone_rgba"]

#: What the zones show.
LAYERS = ("estimate", "truth", "difference", "alerts")
SYSTEM_LABELS = {
    "grid": "tiles (published view)",
    "segment": "course segments (internal table)",
    "area": "named areas (internal table)",
}
OVERLAYS = ("course", "cell load per site", "levels of service", "web map (online)")
#: Simulated minutes per second of the player: (interval in ms, bins per step).
SPEEDS = {
    "1 min/s": (1000, 1),
    "5 min/s": (200, 1),
    "15 min/s": (200, 3),
    "30 min/s": (200, 6),
    "60 min/s": (250, 15),
}
PEOPLE_PALETTE = YlOrRd9[::-1][2:]  # light (few) to dark (many); the palest two vanish on grey
DIFF_PALETTE = RdBu11  # low to high: blue (estimate below the truth, or B below A) to red
#: Alert states of a zone at one bin (layer "alerts").
ALERT_STATES = ("none", "alert and true", "false alert", "missed")
ALERT_COLOURS = ("#ffffff", "#b2182b", "#f4a582", "#5e3c99")
#: A suppressed zone: a light grey veil over the streets, not a colour of the scale.
SUPPRESSED = "#9a9a9a"
SUPPRESSED_ALPHA = 0.3
LOS_COLOURS = ("#1a9850", "#a6d96a", "#e6c619", "#fd8d3c", "#e31a1c", "#800026")
METHOD_COLOURS = {"presence": "#9467bd", "voronoi": "#1f77b4", "bayes": "#ff7f0e", "em": "#2ca02c"}
OSM_TILES = "https://tile.openstreetmap.org/{Z}/{X}/{Y}.png"
#: Hover text of a zone's value: NaN is a suppressed (withheld) zone-bin.
_VALUE_JS = "return isNaN(value) ? 'suppressed' : value.toFixed(1)"
#: Hover over the tiles' image: only where a pixel is a tile (its zone id not empty).
_ON_A_TILE_JS = "return cb_data.value != null && cb_data.value !== ''"


def layer_values(
    series: ZoneSeries,
    layer: str,
    method: str,
    t: int,
    *,
    thresholds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Value and opacity of each zone of `series` at bin `t` for `layer`.

    ``estimate``: the method's estimate (NaN = suppressed, drawn grey); ``truth``;
    ``difference``: estimate minus truth (NaN where suppressed); ``alerts``: the state
    code of :data:`ALERT_STATES` against `thresholds` (people per zone). Zones with
    under one person on both sides are not drawn (opacity 0).
    """
    n = series.n
    truth = series.truth_matrix()[:, t].astype(np.float64)
    has = method in series.estimate
    est = series.matrix(method)[:, t].astype(np.float64) if has else np.full(n, np.nan)
    hidden = series.matrix(method, "suppressed")[:, t] if has else np.zeros(n, bool)
    if layer == "truth":
        value = truth
        alpha = np.where(truth >= 1.0, 0.75, 0.0)
    elif layer == "estimate":
        value = est
        alpha = np.where(hidden, SUPPRESSED_ALPHA, np.where(est >= 1.0, 0.75, 0.0))
    elif layer == "difference":
        value = est - truth
        shown = (np.nan_to_num(est) >= 1.0) | (truth >= 1.0)
        alpha = np.where(hidden, SUPPRESSED_ALPHA, np.where(shown, 0.75, 0.0))
    elif layer == "alerts":
        limit = np.full(n, np.inf) if thresholds is None else thresholds
        with np.errstate(invalid="ignore"):
            on_est = est >= limit
            on_truth = truth >= limit
        value = np.select([on_est & on_truth, on_est, on_truth], [1.0, 2.0, 3.0], default=0.0)
        alpha = np.where(value > 0, 0.8, 0.0)
    else:
        raise ValueError(f"layer {layer!r}: allowed {', '.join(LAYERS)}")
    return value, alpha


def zone_rgba(value: np.ndarray, alpha: np.ndarray, mapper: Any) -> np.ndarray:
    """Each zone's colour as the uint32 RGBA pixel of the tiles' image.

    The colour is `mapper`'s (a Bokeh ``LogColorMapper`` or ``LinearColorMapper``: its
    palette, bounds and NaN colour), so the image reads right against the colour bar
    drawn from the same mapper; `alpha` is the opacity (0: transparent, no colour).
    """
    palette = hex_rgb(list(mapper.palette))
    index = colour_index(
        value,
        len(palette),
        low=float(mapper.low),
        high=float(mapper.high),
        log=isinstance(mapper, LogColorMapper),
    )
    rgb = palette[np.maximum(index, 0)]
    rgb[index < 0] = hex_rgb([mapper.nan_color])[0]
    shown = np.asarray(alpha, dtype=np.float64) > 0
    return np.where(shown, pack_rgba(rgb, alpha), 0).astype("<u4")


@dataclass(eq=False)
class _ZoneLayer:
    """One zone system drawn on one map: its source and renderer.

    The grid is one image (`tiles` places its pixels; None while there is no tile
    yet); other systems are patches. `n` is the number of zones drawn.
    """

    source: ColumnDataSource
    renderer: Any
    image: bool = False
    tiles: TileImage | None = None
    n: int = 0


#: Columns of the tiles' image source (one row: the image).
_IMAGE_COLUMNS = ("image", "value", "zone", "x", "y", "dw", "dh")


class RunMap:
    """One map: the streets, one run's zones (or a difference), sites and course."""

    def __init__(
        self,
        data: RunData,
        *,
        title: str,
        on_tap: Callable[[str, int], None],
        x_range: Any = None,
        y_range: Any = None,
        width: int = 760,
        height: int = 620,
    ) -> None:
        self.data = data
        self.on_tap = on_tap
        options: dict[str, Any] = {}
        if x_range is not None:
            options.update(x_range=x_range, y_range=y_range)
        self.fig = figure(
            title=title,
            x_axis_type="mercator",
            y_axis_type="mercator",
            match_aspect=True,
            tools="pan,wheel_zoom,box_zoom,reset,save",
            active_scroll="wheel_zoom",
            width=width,
            height=height,
            **options,
        )
        self.fig.grid.visible = False
        self.fig.background_fill_color = "#fbfbf8"
        # the streets as one line broken by NaN: one stroke for tens of thousands of
        # segments (a segment glyph strokes each one: seconds per redraw on a region)
        self.streets = ColumnDataSource({"x": [], "y": []})
        self.fig.line(
            "x", "y", source=self.streets, line_color="#b9b9b9", line_width=0.6, level="image"
        )
        self.people = LogColorMapper(palette=PEOPLE_PALETTE, low=1, high=100, nan_color=SUPPRESSED)
        self.diff = LinearColorMapper(palette=DIFF_PALETTE, low=-50, high=50, nan_color=SUPPRESSED)
        self.alerts = LinearColorMapper(
            palette=ALERT_COLOURS, low=-0.5, high=3.5, nan_color="#808080"
        )
        self.mapper: Any = self.people
        self.bar = ColorBar(color_mapper=self.people, width=12, title="people")
        self.fig.add_layout(self.bar, "right")
        self.zones: dict[str, _ZoneLayer] = {}
        # levels of service: one broken line per level A..F (one stroke each), wider the worse
        self.los = [ColumnDataSource({"x": [], "y": []}) for _ in LOS_COLOURS]
        self.los_renderers = [
            self.fig.line(
                "x",
                "y",
                source=src,
                line_color=colour,
                line_width=1.5 + k,
                visible=False,
                name=f"los {LOS_LEVELS[k]}",
            )
            for k, (src, colour) in enumerate(zip(self.los, LOS_COLOURS, strict=True))
        ]
        self.course = ColumnDataSource({"xs": [], "ys": []})
        self.course_renderer = self.fig.multi_line(
            "xs", "ys", source=self.course, line_color="#1f3b73", line_width=3, line_alpha=0.8
        )
        self.waypoints = ColumnDataSource({"x": [], "y": [], "name": [], "km": [], "size": []})
        self.waypoint_renderer = self.fig.scatter(
            "x",
            "y",
            source=self.waypoints,
            size="size",
            marker="circle",
            fill_color="white",
            line_color="#1f3b73",
            line_width=2,
        )
        self.sites = ColumnDataSource(
            {
                "x": [],
                "y": [],
                "site": [],
                "connected": [],
                "rejections": [],
                "size": [],
                "colour": [],
            }
        )
        self.site_renderer = self.fig.scatter(
            "x",
            "y",
            source=self.sites,
            size="size",
            fill_color="colour",
            fill_alpha=0.6,
            line_color="#333333",
            line_width=0.5,
            visible=False,
        )
        self.fig.add_tools(
            HoverTool(
                renderers=[self.site_renderer],
                tooltips=[
                    ("site", "@site"),
                    ("connected users", "@connected{0}"),
                    ("rejections", "@rejections{0}"),
                ],
            ),
            HoverTool(renderers=[self.waypoint_renderer], tooltips=[("", "@name (km @km{0.0})")]),
        )
        self.highlight = ColumnDataSource({"xs": [], "ys": []})
        self.fig.multi_line(
            "xs", "ys", source=self.highlight, line_color="black", line_width=3, name="highlight"
        )
        self.tiles: Any = None
        # a click on the map: the tile under it (the tiles' image has no glyphs to tap)
        self.fig.on_event(Tap, self._tap_point)
        self.static_version = -1
        self.refresh_static()

    # ------------------------------------------------------------------ static parts
    def refresh_static(self) -> None:
        """(Re)draw what changes only when the data do: streets, course, sites, zones."""
        data = self.data
        with data.lock:
            if data.streets is not None and not len(self.streets.data["x"]):
                s = data.streets
                x, y = _broken_line(s, s.drawn)
                self.streets.data = {"x": x, "y": y}
            if data.course is not None and not len(self.course.data["xs"]):
                c = data.course
                self.course.data = {"xs": c.xs, "ys": c.ys}
                w = c.waypoints
                self.waypoints.data = {
                    "x": w["x"].to_numpy(),
                    "y": w["y"].to_numpy(),
                    "name": w["name"].tolist(),
                    "km": w["km"].to_numpy(),
                    # start, finish and check points stand out; the course's other
                    # waypoints (where it turns) are small
                    "size": np.where(w["kind"].to_numpy() == "via", 4.0, 10.0),
                }
            for name, layer in self.zones.items():
                series = data.systems.get(name)
                if series is not None and layer.n != series.n:
                    self._redraw_zones(layer, series)
            self.static_version = data.version

    def zone_layer(self, system: str) -> _ZoneLayer | None:
        """The renderer of `system`'s zones, made on first use (None: not loaded yet)."""
        if system in self.zones:
            return self.zones[system]
        series = self.data.systems.get(system)
        if series is None:
            return None
        if system == "grid":
            layer = self._tile_layer(series)
            self.zones[system] = layer
            return layer
        with self.data.lock:
            source = ColumnDataSource(self._zone_columns(series))
        style: dict[str, Any] = {
            "fill_color": transform("value", self.mapper),
            "fill_alpha": "alpha",
            "line_color": "#555555",
            "line_alpha": 0.6,
            "selection_fill_alpha": "alpha",
            "nonselection_fill_alpha": "alpha",
            "selection_line_color": None,
            "nonselection_line_alpha": 0.6,
        }
        renderer = self.fig.patches("xs", "ys", source=source, **style)
        renderer.level = "underlay"  # above the streets, beneath course, sites and streets' levels
        self.fig.add_tools(_zone_hover(renderer), TapTool(renderers=[renderer]))
        source.selected.on_change("indices", self._tapped(system, source))
        layer = _ZoneLayer(source, renderer, n=series.n)
        self.zones[system] = layer
        return layer

    def _tile_layer(self, series: ZoneSeries) -> _ZoneLayer:
        """The grid's tiles as one RGBA image, with hover on its pixels."""
        source = ColumnDataSource({k: [] for k in _IMAGE_COLUMNS})
        renderer = self.fig.image_rgba(
            image="image", x="x", y="y", dw="dw", dh="dh", source=source, name="zones grid"
        )
        renderer.level = "underlay"  # above the streets, beneath course, sites and streets' levels
        self.fig.add_tools(_zone_hover(renderer, filters={"@zone": CustomJS(code=_ON_A_TILE_JS)}))
        layer = _ZoneLayer(source, renderer, image=True)
        self._redraw_zones(layer, series)
        return layer

    def _redraw_zones(self, layer: _ZoneLayer, series: ZoneSeries) -> None:
        """Give `layer` the zones `series` has now (a live run names new ones)."""
        with self.data.lock:
            n = series.n
            if not layer.image:
                layer.source.data = self._zone_columns(series)
            elif n == 0:
                layer.tiles = None
                layer.source.data = {k: [] for k in _IMAGE_COLUMNS}
            else:
                ids = series.ids[:n]
                tiles = TileImage.from_ids(ids, float(self.data.scenario.zones.grid_m))
                _check_tiles(tiles, series)
                layer.tiles = tiles
                layer.source.data = {
                    "image": [tiles.spread(np.zeros(n, dtype="<u4"), fill=0)],
                    "value": [tiles.spread(np.full(n, np.nan, dtype=np.float32), fill=np.nan)],
                    "zone": [tiles.zone_image(ids)],
                    "x": [tiles.x],
                    "y": [tiles.y],
                    "dw": [tiles.dw],
                    "dh": [tiles.dh],
                }
        layer.n = n

    def tile_at(self, x: float, y: float) -> int | None:
        """Row (in the grid's series) of the tile under map point (`x`, `y`), or None."""
        layer = self.zones.get("grid")
        if layer is None or layer.tiles is None:
            return None
        return layer.tiles.tile_at(x, y)

    def _tap_point(self, event: Event) -> None:
        """A click on the map: choose the tile under it when the tiles are shown."""
        layer = self.zones.get("grid")
        if not isinstance(event, Tap) or event.x is None or event.y is None:
            return
        if layer is None or not layer.renderer.visible:
            return
        row = self.tile_at(float(event.x), float(event.y))
        if row is not None:
            self.on_tap("grid", row)

    def _tapped(self, system: str, source: ColumnDataSource) -> Callable[..., None]:
        def handler(attr: str, old: Any, new: Sequence[int]) -> None:
            if new:
                self.on_tap(system, int(new[0]))
                source.selected.indices = []  # the highlight shows the choice, on every map

        return handler

    @staticmethod
    def _zone_columns(series: ZoneSeries) -> dict[str, Any]:
        n = series.n
        columns: dict[str, Any] = {
            "zone": list(series.ids),
            "value": np.full(n, np.nan),
            "alpha": np.zeros(n),
        }
        columns["xs"] = list(series.map_xs)
        columns["ys"] = list(series.map_ys)
        return columns

    # ------------------------------------------------------------------ per step
    def show_system(self, system: str) -> None:
        """Show `system`'s zones only."""
        layer = self.zone_layer(system)
        for name, other in self.zones.items():
            other.renderer.visible = other is layer and name == system

    def set_mapper(self, layer: str, high: float, *, title: str | None = None) -> None:
        """Colour scale of `layer`: people (log), difference (diverging) or alert states."""
        if layer == "difference":
            self.diff.update(low=-high, high=high)
            mapper: Any = self.diff
            self.bar.title = title or "estimate − truth (people)"
        elif layer == "alerts":
            mapper = self.alerts
            self.bar.title = "alerts"
        else:
            self.people.update(high=max(high, 2.0))
            mapper = self.people
            self.bar.title = "people" if layer == "truth" else "people (grey: suppressed)"
        if mapper is not self.mapper:
            self.mapper = mapper
            self.bar.color_mapper = mapper
            for zone in self.zones.values():
                if not zone.image:  # the tiles' image is coloured here, per step
                    zone.renderer.glyph.fill_color = transform("value", mapper)
        self.bar.visible = layer != "alerts"

    def set_zone_values(self, system: str, value: np.ndarray, alpha: np.ndarray) -> None:
        """Replace the colour values of `system`'s zones (one array each)."""
        layer = self.zone_layer(system)
        if layer is None:
            return
        if layer.n != len(value):
            self._redraw_zones(layer, self.data.systems[system])
        if layer.n != len(value):
            raise ValueError(f"{len(value)} values for the {layer.n} zones of {system!r}")
        # float32: half the bytes per step (a tile's count needs no more)
        value32 = np.asarray(value, dtype=np.float32)
        if not layer.image:
            layer.source.data.update({"value": value32, "alpha": alpha.astype(np.float32)})
            return
        if layer.tiles is None:
            return
        rgba = zone_rgba(value, alpha, self.mapper)
        layer.source.data.update(
            {
                "image": [layer.tiles.spread(rgba, fill=0)],
                "value": [layer.tiles.spread(value32, fill=np.nan)],
            }
        )

    def set_sites(self, t: int, *, visible: bool) -> None:
        """Cell load and rejections per site at bin `t`."""
        self.site_renderer.visible = visible
        if not visible:
            return
        sites = self.data.sites
        with self.data.lock:
            connected, rejected = sites.at(t)
            if sites.site_ids is None:
                return
            if len(self.sites.data["x"]) != len(connected):
                self.sites.data = {
                    "x": sites.site_x,
                    "y": sites.site_y,
                    "site": sites.site_ids.astype(str),
                    "connected": connected,
                    "rejections": rejected,
                    "size": np.zeros(len(connected)),
                    "colour": ["#3182bd"] * len(connected),
                }
        size = 4.0 + 2.0 * np.sqrt(connected)
        colour = np.where(rejected > 0, "#d7301f", "#3182bd").tolist()
        self.sites.data.update(
            {"connected": connected, "rejections": rejected, "size": size, "colour": colour}
        )

    def set_los(self, t: int, *, visible: bool) -> None:
        """The streets' levels of service at bin `t`: every street with somebody on it.

        Coloured A (green) to F (dark red), and drawn wider the worse the level.
        """
        for renderer in self.los_renderers:
            renderer.visible = visible
        data = self.data
        if not visible or data.los is None or data.streets is None:
            for src in self.los:
                if len(src.data["x"]):
                    src.data = {"x": [], "y": []}
            return
        edge, level, _ = data.los.at(t)
        for k, src in enumerate(self.los):
            x, y = _broken_line(data.streets, edge[level == k])
            src.data = {"x": x, "y": y}

    def set_web_tiles(self, on: bool) -> None:
        """Web map tiles beneath (made only when first asked for: no request before)."""
        if on and self.tiles is None:
            self.tiles = self.fig.add_tile(
                WMTSTileSource(url=OSM_TILES, attribution="© OpenStreetMap contributors")
            )
            self.tiles.alpha = 0.6
        if self.tiles is not None:
            self.tiles.visible = on

    def set_highlight(self, system: str | None, row: int | None) -> None:
        """Outline the chosen zone."""
        series = self.data.systems.get(system) if system else None
        if series is None or row is None or row >= series.n:
            self.highlight.data = {"xs": [], "ys": []}
            return
        self.highlight.data = {"xs": [series.map_xs[row]], "ys": [series.map_ys[row]]}


class Dashboard:
    """The page of one browser session over one run, or a baseline and a variant.

    Parameters
    ----------
    runs
        One or two runs (A, the baseline, first). Two runs must share zones and bins.
    live
        The live feed, when the page follows a run as it goes (``crowdsim live``).
    """

    def __init__(self, runs: Sequence[RunData], *, live: Any = None) -> None:
        if not 1 <= len(runs) <= 2:
            raise ValueError(f"{len(runs)} runs: the dashboard shows one run or two")
        self.runs = list(runs)
        self.live = live
        a = self.runs[0]
        if len(self.runs) == 2:
            _check_pair(a, self.runs[1])
        self.selected: tuple[str, str] | None = None  # (system, zone id)
        self._alert_cache: dict[tuple[Any, ...], Any] = {}
        last = max(a.n_filled - 1, 0)
        self.time = pn.widgets.IntSlider(
            label="bin",
            start=0,
            end=max(last, 1),
            value=0,
            width=420,
            disabled=bool(a.n_filled < 2),
        )
        self.player = pn.widgets.Player(
            start=0,
            end=max(last, 1),
            value=0,
            interval=1000,
            loop_policy="once",
            width=300,
            height=60,
            show_loop_controls=False,
            scale_buttons=0.7,
            visible_buttons=["first", "previous", "pause", "play", "next", "last"],
        )
        self.speed = pn.widgets.Select(
            label="speed", options=list(SPEEDS), value="1 min/s", width=120
        )
        self.clock = pn.pane.HTML("", width=420)
        self.layer = pn.widgets.RadioButtonGroup(
            label="layer", options=list(LAYERS), value="estimate", color="primary"
        )
        self.method = pn.widgets.Select(label="method", options=a.methods or ["-"], width=140)
        self.system = pn.widgets.Select(
            label="zones",
            options={v: k for k, v in SYSTEM_LABELS.items() if k == "grid"},
            value="grid",
            width=260,
        )
        self.overlays = pn.widgets.CheckBoxGroup(
            label="overlays", options=list(OVERLAYS), value=["course"], inline=False
        )
        self.view = pn.widgets.RadioButtonGroup(
            label="runs",
            options=["A", "B", "A beside B", "B − A"],
            value="A beside B",
            visible=len(self.runs) == 2,
        )
        self.alert_kind = pn.widgets.RadioButtonGroup(
            label="alert", options=["density", "this zone"], value="density"
        )
        self.density = pn.widgets.FloatInput(
            label="alert density (people per m² of zone)",
            value=self._default_density(),
            step=0.005,
            start=0.0001,
            width=240,
        )
        self.zone_limit = pn.widgets.FloatInput(
            label="alert level of this zone (people)", value=100.0, step=10, start=1.0, width=240
        )
        self.tolerance = pn.widgets.IntInput(
            label="on time within (minutes)", value=5, start=0, end=120, width=240
        )
        self.alert_text = pn.pane.Markdown("", width=420)
        self.zone_text = pn.pane.Markdown("Click a zone on the map for its series.", width=760)
        self.status = pn.pane.Markdown("", width=420)
        # two maps side by side must fit a screen beside the controls
        size = (
            {"width": 760, "height": 620} if len(self.runs) == 1 else {"width": 560, "height": 520}
        )
        self.maps = [RunMap(a, title=f"A: {a.label}", on_tap=self._tap_on(a), **size)]
        if len(self.runs) == 2:
            first = self.maps[0].fig
            b = self.runs[1]
            linked: dict[str, Any] = {"x_range": first.x_range, "y_range": first.y_range, **size}
            self.maps.append(RunMap(b, title=f"B: {b.label}", on_tap=self._tap_on(b), **linked))
            self.maps.append(
                RunMap(a, title="B − A (variant minus baseline)", on_tap=self._tap_on(a), **linked)
            )
        self.series = self._series_figure()
        self._wire()
        self.layout = self._layout()
        self._extras_seen = False
        self._refresh_systems()
        self.redraw()
        self._update_series()
        self._update_alerts()

    # ------------------------------------------------------------------ layout
    def _layout(self) -> pn.viewable.Viewable:
        a = self.runs[0]
        title = "crowdsim · " + html.escape(a.label)
        if len(self.runs) == 2:
            title += " vs " + html.escape(self.runs[1].label)
        controls = pn.Column(
            pn.pane.HTML(f"<h3 style='margin:4px 0'>{title}</h3>"),
            self.clock,
            self.time,
            pn.Row(self.player, self.speed),
            pn.pane.Markdown("**Layer**"),
            self.layer,
            pn.Row(self.method, self.system),
            self.view,
            pn.pane.Markdown("**Overlays**"),
            self.overlays,
            pn.pane.Markdown("**Alerts**"),
            self.alert_kind,
            self.density,
            self.zone_limit,
            self.tolerance,
            self.alert_text,
            self.status,
            width=440,
        )
        self.map_row = pn.Row(*[pn.pane.Bokeh(m.fig) for m in self.maps])
        main = pn.Column(self.map_row, self.zone_text, pn.pane.Bokeh(self.series))
        self._apply_view()
        return pn.Row(controls, main)

    def _series_figure(self) -> Any:
        a = self.runs[0]
        fig = figure(
            height=300,
            width=760,
            x_axis_type="datetime",
            tools="pan,wheel_zoom,box_zoom,reset",
            title="the chosen zone",
            y_axis_label="people",
        )
        times = a.local_times()
        empty = np.full(len(times), np.nan)
        self.series_source = ColumnDataSource(
            {
                "t": times,
                "truth": empty,
                "estimate": empty,
                "lower": empty,
                "upper": empty,
                "suppressed": empty,
                "truth_b": empty,
                "estimate_b": empty,
            }
        )
        src = self.series_source
        self.band = fig.varea(
            "t",
            "lower",
            "upper",
            source=src,
            fill_alpha=0.25,
            fill_color="#1f77b4",
            legend_label="interval",
        )
        self.est_line = fig.line(
            "t", "estimate", source=src, line_width=2, color="#1f77b4", legend_label="estimate (A)"
        )
        fig.line("t", "truth", source=src, line_width=2, color="black", legend_label="truth (A)")
        fig.scatter(
            "t",
            "suppressed",
            source=src,
            marker="square",
            size=4,
            color="#777777",
            legend_label="suppressed (no value published)",
        )
        if len(self.runs) == 2:
            fig.line(
                "t",
                "truth_b",
                source=src,
                line_width=1.5,
                color="black",
                line_dash="dashed",
                legend_label="truth (B)",
            )
            fig.line(
                "t",
                "estimate_b",
                source=src,
                line_width=1.5,
                color="#1f77b4",
                line_dash="dashed",
                legend_label="estimate (B)",
            )
        self.onsets = ColumnDataSource({"t": [], "y": [], "colour": []})
        fig.scatter("t", "y", source=self.onsets, marker="triangle", size=10, color="colour")
        self.now_span = Span(
            location=0, dimension="height", line_color="#444444", line_dash="dotted"
        )
        self.limit_span = Span(
            location=0, dimension="width", line_color="#b2182b", line_dash="dashed", visible=False
        )
        fig.add_layout(self.now_span)
        fig.add_layout(self.limit_span)
        fig.legend.label_text_font_size = "8pt"
        fig.add_layout(fig.legend[0], "right")  # beside the plot: the lines stay readable
        return fig

    # ------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        self.time.param.watch(self._on_time, "value")
        self.player.param.watch(self._on_player, "value")
        self.speed.param.watch(self._on_speed, "value")
        for choice in (self.layer, self.method, self.system):
            choice.param.watch(self._on_layer, "value")
        self.overlays.param.watch(self._on_overlays, "value")
        self.view.param.watch(lambda e: self._apply_view(), "value")
        for setting in (self.alert_kind, self.density, self.zone_limit, self.tolerance):
            setting.param.watch(self._on_alerts, "value")

    def _on_time(self, event: Any) -> None:
        if self.player.value != event.new:
            self.player.value = event.new
        self.redraw()

    def _on_player(self, event: Any) -> None:
        if self.time.value != event.new:
            self.time.value = event.new

    def _on_speed(self, event: Any) -> None:
        interval, step = SPEEDS[event.new]
        self.player.param.update(interval=interval, step=step)

    def _on_layer(self, event: Any) -> None:
        self.redraw()
        self._update_series()

    def _on_overlays(self, event: Any) -> None:
        for m in self.maps:
            m.set_web_tiles("web map (online)" in self.overlays.value)
        self.redraw()

    def _on_alerts(self, event: Any) -> None:
        self._update_alerts()
        self._update_series()
        if self.layer.value == "alerts":
            self.redraw()

    def _tap_on(self, data: RunData) -> Callable[[str, int], None]:
        """What a click on a map of `data` does: choose its zone, found by id in run A."""

        def tap(system: str, row: int) -> None:
            if data is self.runs[0]:
                self._on_tap(system, row)
                return
            mine, a = data.systems.get(system), self.runs[0].systems.get(system)
            if mine is None or a is None or row >= mine.n:
                return
            row_a = a.index.get(mine.ids[row])
            if row_a is not None:  # a zone run A lacks has no series to show
                self._on_tap(system, row_a)

        return tap

    def _on_tap(self, system: str, row: int) -> None:
        series = self.runs[0].systems.get(system)
        if series is None or row >= series.n:
            return
        self.selected = (system, series.ids[row])
        for m in self.maps:
            s = m.data.systems.get(system)
            m.set_highlight(system, s.index.get(series.ids[row]) if s else None)
        self._update_series()
        self._update_alerts()

    def _apply_view(self) -> None:
        if len(self.maps) < 3:
            return
        a, b, diff = (m.fig for m in self.maps)
        choice = self.view.value
        a.visible = choice in ("A", "A beside B")
        b.visible = choice in ("B", "A beside B")
        diff.visible = choice == "B − A"
        self.redraw()

    # ------------------------------------------------------------------ drawing
    @property
    def t(self) -> int:
        """The bin on the clock."""
        return int(self.time.value or 0)

    def thresholds(self, series: ZoneSeries) -> np.ndarray:
        """The alert level of each zone of `series` (people)."""
        if self.alert_kind.value == "density":
            return series.area_m2[: series.n] * float(self.density.value or 0.0)
        limit = np.full(series.n, np.inf)
        if self.selected is not None and self.selected[0] == series.system:
            row = series.index.get(self.selected[1])
            if row is not None:
                limit[row] = float(self.zone_limit.value or 0.0)
        return limit

    def redraw(self) -> None:
        """Draw bin :attr:`t` on every visible map."""
        a = self.runs[0]
        t = min(self.t, max(a.n_filled - 1, 0))
        system, layer, method = self.system.value, self.layer.value, self.method.value
        overlays = set(self.overlays.value)
        self.clock.object = self._clock_html(t)
        self.now_span.location = a.local_times()[t].value / 1e6
        for k, m in enumerate(self.maps):
            if not m.fig.visible:
                continue
            if m.static_version != m.data.version:
                m.refresh_static()
            series = m.data.systems.get(system)
            if series is None:
                continue
            m.show_system(system)
            if k == 2:  # B − A
                value, alpha, high = self._difference_ab(system, layer, method, t)
                what = "truth" if layer == "truth" else f"{method} estimate"
                m.set_mapper("difference", high, title=f"B − A: {what} (people)")
            else:
                with m.data.lock:
                    value, alpha = layer_values(
                        series, layer, method, t, thresholds=self.thresholds(series)
                    )
                m.set_mapper(layer, self._scale(m.data, system, layer, method))
            m.set_zone_values(system, value, alpha)
            m.set_sites(t, visible="cell load per site" in overlays and k < 2)
            m.set_los(t, visible="levels of service" in overlays and k < 2)
            m.course_renderer.visible = "course" in overlays
            m.waypoint_renderer.visible = "course" in overlays

    def _clock_html(self, t: int) -> str:
        a = self.runs[0]
        local = a.bins[t].tz_convert(a.timezone)
        text = (
            f"<div style='font-size:34px;font-weight:bold;font-family:monospace'>{local:%H:%M}"
            f"</div><div>{local:%A %d %B %Y} ({a.timezone}) · bin {t + 1} of {len(a.bins)} "
            f"({a.bin_s / 60:g} min)</div>"
        )
        if a.live:
            note = "live run" if self.live is None else html.escape(self.live.describe())
            text += f"<div style='color:#b2182b'>{note}</div>"
        return text

    def _scale(self, data: RunData, system: str, layer: str, method: str) -> float:
        """Top of the colour scale, fixed in time: the run's highest value of the layer.

        For the difference, the 99th percentile of |estimate - truth| over the published
        zone-bins: the gaps are heavy-tailed (on the full team time trial's tiles median
        43, 99th percentile 1,300, 99.9th 3,900 people), and a scale set by the last few
        tiles at the finish left every other tile near white. At most 1% saturate.
        """
        key = ("scale", id(data), data.version, system, layer, method)
        if key not in self._alert_cache:
            series = data.systems[system]
            with data.lock:
                truth = series.truth_matrix()[:, : data.n_filled]
                top = float(np.nanmax(truth)) if truth.size else 1.0
                if method in series.estimate:
                    est = series.matrix(method)[:, : data.n_filled]
                    if layer == "difference":
                        gap = np.abs(est - truth)
                        top = float(np.nanpercentile(gap, 99.0)) if np.isfinite(gap).any() else 1.0
                    elif np.isfinite(est).any():
                        top = max(top, float(np.nanmax(est)))
            self._alert_cache[key] = max(top, 1.0)
        return float(self._alert_cache[key])

    def _difference_ab(
        self, system: str, layer: str, method: str, t: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Variant minus baseline of `layer` per zone of A (NaN where B lacks the zone)."""
        a, b = self.runs
        sa, sb = a.systems[system], b.systems.get(system)
        what = "truth" if layer == "truth" else "estimate"
        va, _ = layer_values(sa, what, method, t)
        value = np.full(sa.n, np.nan)
        if sb is not None:
            vb, _ = layer_values(sb, what, method, t)
            rows = sb.rows_of(sa.ids)
            ok = rows >= 0
            value[ok] = vb[rows[ok]] - va[ok]
        alpha = np.where(np.nan_to_num(np.abs(value)) >= 1.0, 0.75, 0.0)
        alpha[np.isnan(value)] = 0.35
        high = max(self._scale(a, system, what, method), 1.0) / 4.0
        return value, alpha, high

    # ------------------------------------------------------------------ the chosen zone
    def _update_series(self) -> None:
        a = self.runs[0]
        method = self.method.value
        if self.selected is None:
            return
        system, zone = self.selected
        series = a.systems.get(system)
        row = series.index.get(zone) if series is not None else None
        if series is None or row is None:
            return
        n = len(a.bins)
        with a.lock:
            truth = series.truth_matrix()[row].astype(float).copy()
            truth[a.n_filled :] = np.nan
            has = method in series.estimate
            est = series.matrix(method)[row].astype(float) if has else np.full(n, np.nan)
            lo = series.matrix(method, "lower")[row].astype(float) if has else np.full(n, np.nan)
            hi = series.matrix(method, "upper")[row].astype(float) if has else np.full(n, np.nan)
            hidden = series.matrix(method, "suppressed")[row] if has else np.zeros(n, bool)
        columns: dict[str, Any] = {
            "truth": truth,
            "estimate": est,
            "lower": lo,
            "upper": hi,
            "suppressed": np.where(hidden, 0.0, np.nan),
        }
        if len(self.runs) == 2:
            b = self.runs[1]
            sb = b.systems.get(system)
            rb = sb.index.get(zone) if sb is not None else None
            with b.lock:
                columns["truth_b"] = (
                    sb.truth_matrix()[rb].astype(float)
                    if sb is not None and rb is not None
                    else np.full(n, np.nan)
                )
                columns["estimate_b"] = (
                    sb.matrix(method)[rb].astype(float)
                    if sb is not None and rb is not None and method in sb.estimate
                    else np.full(n, np.nan)
                )
        self.series_source.data.update(columns)
        colour = METHOD_COLOURS.get(method, "#1f77b4")
        self.est_line.glyph.line_color = colour
        self.band.glyph.fill_color = colour
        limit = float(self.thresholds(series)[row])
        self.limit_span.visible = bool(np.isfinite(limit))
        if np.isfinite(limit):
            self.limit_span.location = limit
            score = score_alerts(est, truth, limit, tolerance=self._tolerance_bins())
            times = a.local_times()
            self.onsets.data = {
                "t": [*times[score.truth_onsets], *times[score.estimate_onsets]],
                "y": [limit] * (len(score.truth_onsets) + len(score.estimate_onsets)),
                "colour": ["black"] * len(score.truth_onsets)
                + [colour] * len(score.estimate_onsets),
            }
        else:
            self.onsets.data = {"t": [], "y": [], "colour": []}
        self.series.title.text = f"{SYSTEM_LABELS[system]}: {zone} · {method}"
        self._update_zone_text()

    def _update_zone_text(self) -> None:
        if self.selected is None:
            return
        a = self.runs[0]
        system, zone = self.selected
        series = a.systems[system]
        row = series.index[zone]
        t = min(self.t, max(a.n_filled - 1, 0))
        method = self.method.value
        with a.lock:
            truth = float(series.truth_matrix()[row, t])
            if method in series.estimate:
                est = float(series.matrix(method)[row, t])
                lo = float(series.matrix(method, "lower")[row, t])
                hi = float(series.matrix(method, "upper")[row, t])
                hidden = bool(series.matrix(method, "suppressed")[row, t])
            else:
                est, lo, hi, hidden = np.nan, np.nan, np.nan, False
        if hidden:
            shown = (
                f"**suppressed**: the operator publishes no value (fewer than the "
                f"threshold of {a.scenario.estimators.privacy_threshold} people, or to "
                "protect a neighbour)"
            )
        elif np.isnan(est):
            shown = "no estimate"
        else:
            shown = f"**{est:,.0f}** (interval {lo:,.0f} to {hi:,.0f})"
        area = series.area_m2[row]
        self.zone_text.object = (
            f"**{zone}** ({SYSTEM_LABELS[system]}, {area / 1e4:,.2f} ha) at **{a.clock(t)}**: "
            f"truth **{truth:,.0f}**; {method} estimate {shown}.  \n"
            f"The interval is the {interval_note(a.interval_facts.get(method))}."
        )

    # ------------------------------------------------------------------ alerts
    def _tolerance_bins(self) -> int:
        return int(np.ceil(float(self.tolerance.value or 0) * 60.0 / self.runs[0].bin_s))

    def _update_alerts(self) -> None:
        a = self.runs[0]
        system, method = self.system.value, self.method.value
        series = a.systems.get(system)
        if series is None or method not in series.estimate:
            self.alert_text.object = ""
            return
        with a.lock:
            filled = a.n_filled
            thresholds = self.thresholds(series)
            total, per_zone = score_zone_alerts(
                series.matrix(method)[:, :filled],
                series.truth_matrix()[:, :filled],
                thresholds,
                tolerance=self._tolerance_bins(),
            )
        how = (
            f"density ≥ {self.density.value:g} people/m² in each zone"
            if self.alert_kind.value == "density"
            else (
                f"{self.selected[1]} ≥ {self.zone_limit.value:g} people"
                if self.selected
                else "choose a zone on the map"
            )
        )
        self.alert_text.object = _alert_summary(
            total, len(per_zone), how, method, self.tolerance.value, a.bin_s / 60.0
        )

    def _default_density(self) -> float:
        """Half the highest density the truth reaches in a tile (rounded), or 0.01."""
        grid = self.runs[0].systems.get("grid")
        if grid is None or not grid.n:
            return 0.01
        with self.runs[0].lock:
            peak = grid.truth_matrix().max(axis=1) / np.maximum(grid.area_m2[: grid.n], 1.0)
        top = float(peak.max()) / 2 if peak.size else 0.0
        if top <= 0:
            return 0.01
        digits = -int(np.floor(np.log10(top)))
        return float(round(top, digits))

    # ------------------------------------------------------------------ live
    def _refresh_systems(self) -> None:
        """Offer the zone systems the data have (the internal ones load in the background)."""
        a = self.runs[0]
        options = {SYSTEM_LABELS[s]: s for s in SYSTEM_LABELS if s in a.systems}
        if options != self.system.options:
            self.system.options = options
        methods = a.methods or ["-"]
        if methods != self.method.options:
            self.method.options = methods
            if self.method.value not in methods:
                self.method.value = methods[0]

    def poll(self) -> None:
        """Follow new data: a live run's new bins, or the internal systems once loaded."""
        a = self.runs[0]
        self._refresh_systems()
        last = max(a.n_filled - 1, 0)
        at, end = self.t, int(self.time.end or 0)
        follow = at >= end - 1 or at == 0
        changed = False
        if a.n_filled >= 2 and self.time.end != last:
            self.time.param.update(end=last, disabled=False)
            self.player.end = last
            changed = True
        if follow and a.live and self.time.value != last:
            self.time.value = last  # redraws
        elif changed or any(m.static_version != m.data.version for m in self.maps):
            self.redraw()
            self._update_alerts()
            self._update_series()
        if self.live is not None:
            self.status.object = self.live.status_markdown()


def _broken_line(streets: Any, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Street `edges` as one line broken by NaN (x0 x1 NaN x0 x1 NaN ...), float32."""
    n = len(edges)
    x = np.full(3 * n, np.nan, dtype=np.float32)
    y = np.full(3 * n, np.nan, dtype=np.float32)
    x[0::3], x[1::3] = streets.x0[edges], streets.x1[edges]
    y[0::3], y[1::3] = streets.y0[edges], streets.y1[edges]
    return x, y


def _zone_hover(renderer: Any, **options: Any) -> HoverTool:
    """Hover over a zone system's renderer: the zone and its value (or "suppressed")."""
    return HoverTool(
        renderers=[renderer],
        tooltips=[("zone", "@zone"), ("value", "@value{custom}")],
        formatters={"@value": CustomJSHover(code=_VALUE_JS)},
        **options,
    )


def _check_tiles(tiles: TileImage, series: ZoneSeries) -> None:
    """The tiles' pixels must sit on the tiles' outlines (the zones file's, or a live run's).

    A tile id names its cell only with the scenario's tile size: a zones file made with
    another size would put every pixel beside its tile, silently.
    """
    w, h = tiles.dw / tiles.nx, tiles.dh / tiles.ny
    for row in {0, series.n // 2, series.n - 1}:
        x, y = tiles.centre(row)
        ring_x, ring_y = series.map_xs[row], series.map_ys[row]
        mid_x, mid_y = (ring_x.min() + ring_x.max()) / 2, (ring_y.min() + ring_y.max()) / 2
        if abs(x - mid_x) > w / 2 or abs(y - mid_y) > h / 2:
            raise ValueError(
                f"tile {series.ids[row]!r}: its outline is {abs(x - mid_x):.0f} m, "
                f"{abs(y - mid_y):.0f} m (Web Mercator) from the cell its id names with "
                f"the scenario's zones.grid_m; the zones were made with another tile size"
            )


def _check_pair(a: RunData, b: RunData) -> None:
    """Two runs side by side need the same bins and zone tiles' size."""
    from sim.errors import RunFolderError

    if len(a.bins) != len(b.bins) or a.bin_s != b.bin_s or (a.bins != b.bins).any():
        raise RunFolderError(
            f"{b.path}: its bins ({b.bins[0]} to {b.bins[-1]}, {b.bin_s:g} s) are not those of "
            f"{a.path} ({a.bins[0]} to {a.bins[-1]}, {a.bin_s:g} s); a baseline and a variant "
            "must cover the same period in the same bins"
        )
    if a.scenario.zones.grid_m != b.scenario.zones.grid_m:
        raise RunFolderError(
            f"{b.path}: tiles of {b.scenario.zones.grid_m:g} m, {a.path}: "
            f"{a.scenario.zones.grid_m:g} m; compare runs on the same tiles"
        )


def _alert_summary(
    total: AlertScore, zones: int, how: str, method: str, minutes: Any, bin_min: float
) -> str:
    delays = total.delays * bin_min
    late = f"; median delay of the detected {np.median(delays):g} min" if len(delays) else ""
    return (
        f"Alert when {how} ({method} against the truth; on time within {minutes} min):  \n"
        f"truth crossed **{total.truth_alerts}** times in {zones} zones; the estimate "
        f"raised **{total.on_time}** on time, **{total.late}** late, missed "
        f"**{total.missed}**, and raised **{total.false}** false alerts{late}."
    )

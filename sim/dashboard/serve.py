"""Serving the dashboard: a finished run (``crowdsim serve``) or a run as it goes (``live``).

The page is a Panel application on a Bokeh server bound to one address (127.0.0.1 by
default); its JavaScript and styles come from the installed packages through the
server's own static routes, so it works with no internet.

``live`` runs the scenario in a background thread with ``on_minute`` (the streaming run,
:mod:`sim.stream`): each frame is put into the shared :class:`RunData` (under its
lock) by the run's thread, and every browser session looks for new bins twice a second
in its own periodic callback, which is where Bokeh models may be changed safely. When
the run has finished, the sessions switch to the finished run folder (every layer).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sim.dashboard.data import RunData
from sim.errors import CrowdsimError

__all__ = [
    "LiveFeed",
    "check_port",
    "dashboard_app",
    "load_runs",
    "serve",
    "streaming_available",
]

#: Milliseconds between two looks of a session for new data.
POLL_MS_LIVE = 500
POLL_MS = 1000


def load_runs(run_dirs: Sequence[str | Path]) -> list[RunData]:
    """Open one or two finished run folders for the dashboard.

    Raises
    ------
    RunFolderError
        A folder is not a finished run, or a file the dashboard reads is missing.
    CrowdsimError
        Not one or two folders.
    """
    if not 1 <= len(run_dirs) <= 2:
        raise CrowdsimError(
            f"{len(run_dirs)} run folders: serve shows one run, or a baseline and a variant"
        )
    runs = [RunData.from_run(path) for path in run_dirs]
    if len(runs) == 2:
        from sim.dashboard.app import _check_pair

        _check_pair(*runs)
    return runs


def streaming_available() -> bool:
    """Whether this crowdsim has the streaming run (:mod:`sim.stream`) ``live`` needs."""
    return importlib.util.find_spec("sim.stream") is not None


class LiveFeed:
    """A scenario running in a background thread, its frames put into one :class:`RunData`.

    Parameters
    ----------
    data
        The empty run (:meth:`RunData.for_scenario`).
    out_dir
        The run folder the run writes (the map is read from it once written).
    runner
        Runs the scenario, calling its argument with each frame
        (``lambda on_minute: run_scenario(..., on_minute=on_minute)``).
    """

    def __init__(
        self, data: RunData, out_dir: Path, runner: Callable[[Callable[[Any], None]], Any]
    ):
        self.data = data
        self.out_dir = Path(out_dir)
        self.runner = runner
        self.state = "starting"
        self.error: str | None = None
        self.final: RunData | None = None
        self.frames = 0
        self.started = time.perf_counter()
        self.seconds: float | None = None
        self.thread = threading.Thread(target=self._run, name="crowdsim-live", daemon=True)

    def start(self) -> LiveFeed:
        """Start the run."""
        self.thread.start()
        return self

    def on_minute(self, frame: Any) -> None:
        """Take one frame (called from the run's thread)."""
        self.state = "running"
        self.data.append_frame(frame)
        self.frames += 1
        if self.data.course is None or self.data.sites.site_of_cell is None:
            self.data.attach_folder(self.out_dir)

    def _run(self) -> None:
        try:
            self.runner(self.on_minute)
        except BaseException as exc:  # shown on the page; the thread ends
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            return
        finally:
            self.seconds = time.perf_counter() - self.started
        self.state = "finishing"
        try:
            self.final = RunData.from_run(self.out_dir)
        except CrowdsimError as exc:
            self.error = f"the finished folder cannot be shown: {exc}"
        self.state = "finished"

    def describe(self) -> str:
        """One line for the clock: the run's progress, or how it ended."""
        progress = self.data.progress
        if self.state == "failed":
            return f"the run failed: {self.error}"
        if self.state in ("finishing", "finished"):
            took = f" in {self.seconds:,.0f} s" if self.seconds is not None else ""
            return f"run finished{took}; {self.out_dir}"
        if progress is None:
            return "preparing the run (streets, crowd, network)…"
        describe = getattr(progress, "describe", None)
        text = describe() if callable(describe) else str(progress)
        if getattr(progress, "fraction", 0.0) >= 1.0:
            text += " · every minute streamed; the run writes its tables, scores them and "
            text += "draws the report, then this page shows the finished run"
        return text

    def status_markdown(self) -> str:
        """The run's state for the side panel."""
        return f"**Live run** ({self.state}, {self.frames} bins so far): {self.describe()}"


def dashboard_app(
    runs: Sequence[RunData] = (), *, live: LiveFeed | None = None
) -> Callable[[], Any]:
    """The Panel application: a new :class:`Dashboard` for each browser session."""
    import panel as pn

    from sim.dashboard.app import Dashboard

    def session() -> Any:
        holder = pn.Column()
        shown: dict[str, Any] = {}

        def show(data: Sequence[RunData], feed: LiveFeed | None) -> None:
            dash = Dashboard(data, live=feed)
            shown["dash"] = dash
            holder[:] = [dash.layout]

        def poll() -> None:
            dash = shown["dash"]
            if live is not None and live.final is not None and dash.runs[0] is not live.final:
                show([live.final], live)
                return
            dash.poll()
            done = live is None or live.state in ("finished", "failed")
            if done and all(r.wait_extras(timeout=0) for r in dash.runs):
                dash.poll()
                callback.stop()

        show(list(runs) if live is None else [live.data], live)
        callback = pn.state.add_periodic_callback(poll, period=POLL_MS_LIVE if live else POLL_MS)
        return holder

    return session


def check_port(address: str, port: int) -> None:
    """Raise :class:`CrowdsimError` when `port` on `address` cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CrowdsimError(
            f"--address {address}: not an address of this machine ({exc})"
        ) from None
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as exc:
            raise CrowdsimError(
                f"--port {port} on {address}: cannot listen there ({exc.strerror or exc}); "
                "choose another --port"
            ) from None


def serve(
    app: Callable[[], Any],
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    show: bool = True,
    title: str = "crowdsim",
) -> None:
    """Serve `app` until interrupted (Ctrl-C), at ``http://ADDRESS:PORT/``.

    Raises
    ------
    CrowdsimError
        The port cannot be bound (in use, or not allowed).
    """
    import panel as pn

    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    check_port(address, port)
    try:
        server = pn.serve(
            app,
            port=port,
            address=address,
            show=False,
            start=False,
            title=title,
            websocket_origin=origins,
            verbose=False,
        )
    except OSError as exc:
        raise CrowdsimError(
            f"--port {port} on {address}: cannot listen there ({exc.strerror or exc}); choose "
            "another --port"
        ) from None
    url = f"http://{address}:{port}/"
    print(f"crowdsim dashboard at {url} (Ctrl-C stops it)", flush=True)
    if show:
        import webbrowser

        server.io_loop.add_callback(webbrowser.open, url)
    try:
        server.start()
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()

"""Draw a run's figures and write ``report.html``; hand back what was written.

The report reads a run (its scenario, folder, stages and facts) and never writes into it:
:func:`write_report` returns a :class:`ReportWritten`, and the caller (the run's report
stage, or a redraw of a finished run) records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sim.io import write_text

from .figures import FIGURES, Drawing
from .page import Section, render_page
from .sections import AFTER, head
from .tables import read_manifest_source

if TYPE_CHECKING:
    from sim.course import Course
    from sim.scenario import Scenario
    from sim.streets import Streets

__all__ = ["ReportWritten", "RunView", "write_report"]


class RunView(Protocol):
    """What the report reads of a run: a running one or a finished folder alike."""

    @property
    def scenario(self) -> Scenario:
        """The resolved scenario."""

    @property
    def out_dir(self) -> Path:
        """The run folder."""

    @property
    def stages(self) -> Mapping[str, Mapping[str, Any]]:
        """Each stage's status and note, in the order they ran."""

    @property
    def facts(self) -> Mapping[str, Any]:
        """What the stages recorded (the validation's floor, among others)."""


@dataclass(frozen=True)
class ReportWritten:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    files
        Every file written: the figures drawn, then ``report.html``.
    facts
        For the manifest: the figures drawn, the method the animation shows, the peak.
    seconds
        Seconds per part (reading, each figure, the page): they vary from run to run, so
        they are not facts.
    """

    files: list[Path]
    facts: dict[str, Any]
    seconds: dict[str, float]


def write_report(run: RunView, *, streets: Streets | None, course: Course | None) -> ReportWritten:
    """Draw every figure of `run` and write its ``report.html``.

    Parameters
    ----------
    run
        The run: a :class:`sim.run.RunContext` during a run, or
        :func:`sim.report.load_run_context` of a finished folder.
    streets, course
        The run's streets and course (None: maps fall back on ``course.gpkg`` and the
        zone grid, and the figures needing the street graph are listed as not drawn).

    Returns
    -------
    ReportWritten
        The files, the facts for the manifest and the seconds per part.
    """
    out = run.out_dir
    d = Drawing.prepare(run.scenario, out, streets=streets, course=course, facts=run.facts)
    paths: dict[str, Path | None] = {}
    for figure in FIGURES:
        draw = figure.draw
        if draw is None:  # an earlier stage's figure: shown when it is there
            paths[figure.file] = out / figure.file if (out / figure.file).is_file() else None
        else:
            name = Path(figure.file).stem
            paths[figure.file] = d.timed(name, partial(draw, d, out / figure.file))
    source = (
        streets.source.describe()
        if streets is not None
        else read_manifest_source(out) or "unknown: no street data was loaded"
    )
    page = d.timed(
        "html",
        lambda: render_page(
            title=run.scenario.name,
            source=source,
            head=head(run.scenario, run.stages),
            sections=_sections(d, paths),
        ),
    )
    drawn = [p for f in FIGURES if f.draw is not None and (p := paths[f.file]) is not None]
    return ReportWritten(
        files=[*drawn, write_text(page, out / "report.html")],
        facts={
            "figures": sorted(p.name for p in drawn),
            "gif_method": d.method,
            "peak": None if d.peak is None else d.peak.isoformat(),
        },
        seconds=d.seconds,
    )


def _sections(d: Drawing, paths: Mapping[str, Path | None]) -> list[Section]:
    """One section per anchor of :data:`FIGURES`, in order, with its text after."""
    sections: dict[str, Section] = {}
    for figure in FIGURES:
        section = sections.get(figure.anchor)
        if section is None:
            section = sections[figure.anchor] = Section(figure.anchor, figure.heading, [])
        section.figures.append((paths[figure.file], figure.caption(d)))
    for anchor, after in AFTER.items():
        sections[anchor].after = after(d)
    return list(sections.values())

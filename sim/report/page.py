"""The HTML page of the report: one self-contained file, figures embedded as base64.

The page's first line is the street source, so a run on the offline sketch cannot be
mistaken for one on the real city; then one section per figure, each with its heading,
so a reader (or a test) finds every figure by its section.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["Section", "figure_html", "render_page", "table_html"]

_MIME = {".png": "image/png", ".gif": "image/gif"}
_STYLE = (
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;"
    "padding:2px 8px;text-align:left}td.n{text-align:right}th{background:#f3f3f3}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:0.9em;color:#444}"
    "p.source{background:#fff4d6;border:1px solid #e0c060;padding:0.4em 0.6em}"
    "section{border-top:1px solid #ddd;margin-top:1.5em}"
)


@dataclass
class Section:
    """One section of the page: a heading, figures (file, caption), HTML before and after.

    A figure whose file is None is listed as not drawn, with `missing` saying why.
    """

    anchor: str
    heading: str
    figures: list[tuple[Path | None, str]]
    intro: str = ""
    after: str = ""
    missing: str = "not drawn: the run has no data for it"


def figure_html(path: Path, caption: str) -> str:
    """An ``<figure>`` with the file embedded (PNG or GIF) and its caption."""
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f"<figure id='fig-{html.escape(path.stem)}'><img src='data:{mime};base64,{data}' "
        f"alt='{html.escape(caption, quote=True)}'>"
        f"<figcaption>{html.escape(caption)} <small>({html.escape(path.name)})</small>"
        "</figcaption></figure>"
    )


def table_html(frame: pd.DataFrame, *, caption: str = "", table_id: str = "") -> str:
    """A plain HTML table of `frame` (already formatted as text); numbers right-aligned."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            text = html.escape(str(value))
            numeric = text.replace(",", "").replace(".", "").replace("-", "").replace("%", "")
            cls = " class='n'" if numeric.strip().isdigit() else ""
            cells.append(f"<td{cls}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ident = f" id='{html.escape(table_id)}'" if table_id else ""
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table{ident}>{cap}<tr>{head}</tr>{''.join(rows)}</table>"


#: How to open the run in the interactive dashboard (this page is its static summary).
INTERACTIVE_HTML = (
    "<p class='interactive'><strong>Interactive view:</strong> run <code>crowdsim serve "
    "RUN_FOLDER</code> on the folder holding this report, then open "
    "<a href='http://127.0.0.1:5006/'>http://127.0.0.1:5006/</a>: the map minute by "
    "minute with every estimate, the truth, their difference, cell load, levels of "
    "service, each zone's series and alerts. It works offline.</p>"
)


def render_page(
    *, title: str, source: str, head: Sequence[str], sections: Sequence[Section]
) -> str:
    """The whole page: the source line first, the head paragraphs, contents, sections."""
    toc = "".join(f"<li><a href='#{s.anchor}'>{html.escape(s.heading)}</a></li>" for s in sections)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>crowdsim report: {html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<p class='source'><strong>Street source:</strong> {html.escape(source)}</p>",
        INTERACTIVE_HTML,
        *head,
        f"<h2>Contents</h2><ol>{toc}</ol>",
    ]
    for s in sections:
        parts.append(f"<section id='{s.anchor}'><h2>{html.escape(s.heading)}</h2>{s.intro}")
        for path, caption in s.figures:
            if path is not None and path.is_file():
                parts.append(figure_html(path, caption))
            else:
                parts.append(f"<p><em>{html.escape(caption)}: {html.escape(s.missing)}.</em></p>")
        parts.append(f"{s.after}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)

"""One-file HTML report: headings, paragraphs, interactive plotly figures and tables in a single .html file.

plotly.js is embedded once in the page head (``plotly.offline.get_plotlyjs()``), so the file opens offline in any
browser; each figure is a ``<div>`` from ``Figure.to_html(full_html=False, include_plotlyjs=False)``. Used by the
Streamlit app's Report view and by the notebooks.
"""
from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import pandas as pd

from .files import atomic_path

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #eee}
table.report{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}
table.report th,table.report td{border:1px solid #ddd;padding:3px 7px;text-align:right}
table.report th{background:#f5f5f5}table.report td:first-child{text-align:left}
.meta{color:#666;font-size:.9em}.caption{color:#444;font-size:.9em;margin:.2em 0 .6em}
.scroll{max-height:480px;overflow:auto;display:inline-block;max-width:100%}
"""


@dataclass
class ReportSection:
    """A section of the report: a heading, paragraphs, figures (with optional captions) and named tables."""

    heading: str
    text: Union[str, Sequence[str]] = ""
    figures: Sequence[Any] = field(default_factory=list)  # plotly Figures, or (caption, Figure) pairs
    tables: Sequence[tuple[str, pd.DataFrame]] = field(default_factory=list)


def _paragraphs(text: Union[str, Sequence[str]]) -> str:
    parts = [text] if isinstance(text, str) else list(text)
    return "".join(f"<p>{html.escape(p)}</p>" for p in parts if p)


def table_html(df: pd.DataFrame, max_rows: Optional[int] = None, float_format: str = "{:.4g}") -> str:
    """A DataFrame as an HTML table (numbers with 4 significant digits), scrollable when long."""
    d = df if max_rows is None else df.head(max_rows)
    body = d.to_html(index=False, classes="report", border=0, na_rep="–",
                     float_format=lambda v: float_format.format(v), escape=True)
    note = ("" if max_rows is None or len(df) <= max_rows
            else f"<p class='caption'>first {max_rows} of {len(df)} rows</p>")
    return f"<div class='scroll'>{body}</div>{note}"


def figure_html(fig: Any) -> str:
    """One plotly figure as an embeddable ``<div>`` (plotly.js not included)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


def build_html_report(title: str, sections: Sequence[ReportSection], *, subtitle: str = "",
                      metadata: Optional[Mapping[str, Any]] = None, max_table_rows: Optional[int] = None,
                      include_plotlyjs: bool = True) -> str:
    """Return the whole report as one HTML string (plotly.js embedded once when ``include_plotlyjs``)."""
    if not isinstance(title, str) or not title.strip():
        raise ValueError("the report needs a non-empty title")
    head_js = ""
    if include_plotlyjs:
        from plotly.offline import get_plotlyjs

        head_js = f"<script type='text/javascript'>{get_plotlyjs()}</script>"
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>{html.escape(title)}</title><style>{_CSS}</style>{head_js}</head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    out.append(f"<p class='meta'>{html.escape(subtitle)}{' — ' if subtitle else ''}generated {stamp}</p>")
    if metadata:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                       for k, v in metadata.items())
        out.append(f"<table class='report'><tbody>{rows}</tbody></table>")
    for sec in sections:
        out.append(f"<h2>{html.escape(sec.heading)}</h2>")
        out.append(_paragraphs(sec.text))
        for item in sec.figures:
            caption, fig = item if isinstance(item, tuple) else ("", item)
            out.append(figure_html(fig))
            if caption:
                out.append(f"<p class='caption'>{html.escape(caption)}</p>")
        for name, df in sec.tables:
            out.append(f"<h3>{html.escape(name)}</h3>")
            out.append(table_html(df, max_table_rows))
    out.append("</body></html>")
    return "\n".join(out)


def write_html_report(path: Union[str, Path], title: str, sections: Sequence[ReportSection], *,
                      overwrite: bool = False, **options: Any) -> Path:
    """Write :func:`build_html_report` to ``path`` (never replacing an existing file unless ``overwrite``)."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"report path {path} should end in .html")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(build_html_report(title, sections, **options), encoding="utf-8")
    return path

"""The Report page and the HTML report."""
from __future__ import annotations

import pandas as pd
import pytest
from app_helpers import goto


def test_report_lists_every_figure_and_table(app, analysis):
    goto(app, "Report")
    text = " ".join(m.value for m in app.markdown)
    for name in ("alpha_along_depth", "alpha_heatmap", "alpha_histogram", "allocation_curves"):
        assert f"`{name}`" in text
    ok = analysis["alpha"].dropna().sort_values()
    typical = analysis.loc[ok.index[len(ok) // 2], "longname"]  # the median-α matrix is the ESD view's default
    assert f"`esd_{typical}`" in text and f"`ks_{typical}`" in text
    assert f"`analysis` — {len(analysis)} rows" in text
    assert "`role_summary` — 7 rows" in text
    assert "`allocation_AlphaPruning` — 210 rows" in text
    # the count above the lists is the number of tables listed (and in the HTML file)
    listed = [m.value for m in app.markdown if " rows" in m.value]
    count = [c.value for c in app.caption if "interactive figures and" in c.value][0]
    assert f"and {len(listed)} tables" in count, (count, listed)


def test_html_report_is_one_self_contained_file(tmp_path):
    import plotly.graph_objects as go

    from spectra.html_report import ReportSection, build_html_report, write_html_report

    figs = [go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name="first")), go.Figure(go.Bar(x=["a"], y=[1]))]
    table = pd.DataFrame({"name": ["<b>x</b>"], "alpha": [3.14159265]})
    sections = [ReportSection("Spectra & fits", "α < 2 means over-trained", [("caption one", figs[0])],
                              [("metrics", table)]), ReportSection("More", "", [figs[1]])]
    html = build_html_report("My <report>", sections, metadata={"model": "builtin"})
    assert html.count("Plotly.newPlot") == 2  # one per figure
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()[:200]) == 1  # plotly.js embedded exactly once
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html  # table text escaped
    assert "3.142" in html and "My &lt;report&gt;" in html and "Spectra &amp; fits" in html
    assert "α &lt; 2 means over-trained" in html and "caption one" in html
    path = write_html_report(tmp_path / "r.html", "t", sections)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(FileExistsError):
        write_html_report(path, "t", sections)
    with pytest.raises(ValueError, match=".html"):
        write_html_report(tmp_path / "r.txt", "t", sections)

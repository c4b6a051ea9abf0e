"""pruning.evaluation.lmeval: lm-evaluation-harness on the in-memory model, the offline task YAMLs over the shared
data, the CLIs' --tasks / --eval-tasks, and lm-eval imported only when tasks are asked for.

The per-example check scores LAMBADA and PIQA examples independently (token log-likelihoods summed by hand from one
float64 forward per example) and compares them with lm-eval's own per-example records (``log_samples``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pruning.__main__ import main as pruning_main
from pruning.report import read_report
from spectra import config

pytest.importorskip("lm_eval")

from pruning.evaluation import lmeval

SHARED = config.REPO_ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "lambada-openai-test.jsonl").is_file(),
                                reason="shared data folder not present")
N = 4  # documents per task


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("SPL_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from spectra.models import load_model

    return load_model(str(tiny_dir))


def _by_hand(lm, context: str, continuation: str) -> tuple[float, bool]:
    """log p(continuation | context) summed over its tokens (float64 log-softmax of one forward) and whether every
    continuation token is the argmax; tokens of the continuation = those of context+continuation after the
    context's (trailing spaces of the context moved to the continuation, as lm-eval does)."""
    stripped = context.rstrip()
    continuation, context = context[len(stripped):] + continuation, stripped
    tok = lm.tokenizer
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(context + continuation, add_special_tokens=False)["input_ids"][len(ctx):]
    seq = ctx + cont
    with torch.no_grad():
        logits = lm.model(torch.tensor([seq[:-1]])).logits[0].double()
    ll, greedy = 0.0, True
    for j, target in enumerate(cont):
        row = logits[len(ctx) - 1 + j]
        ll += float(row[target] - torch.logsumexp(row, 0))
        greedy &= int(row.argmax()) == target
    return ll, greedy


def test_per_example_loglikelihoods_equal_a_hand_sum(tiny):
    res = lmeval.evaluate_tasks(tiny.model, tiny.tokenizer, ["lambada_openai", "piqa"], limit=N, batch_size=3,
                                log_samples=True)
    texts = [json.loads(line)["text"] for line in (SHARED / "lambada-openai-test.jsonl").open()][:N]
    samples = sorted(res.samples["lambada_openai"], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(N))  # --limit N = lm-eval's first N documents
    greedy = []
    for text, s in zip(texts, samples):
        context, word = text.rsplit(" ", 1)
        ll, g = _by_hand(tiny, context, " " + word)
        assert s["resps"][0][0][0] == pytest.approx(ll, rel=1e-4)
        assert s["resps"][0][0][1] == g
        greedy.append(g)
    assert res.tasks["lambada_openai"].acc == pytest.approx(sum(greedy) / N)
    items = [json.loads(line) for line in (SHARED / "piqa" / "valid.jsonl").open()][:N]
    labels = [int(x) for x in (SHARED / "piqa" / "valid-labels.lst").read_text().split()][:N]
    samples = sorted(res.samples["piqa"], key=lambda s: s["doc_id"])
    acc = acc_norm = 0
    for it, label, s in zip(items, labels, samples):
        lls = [_by_hand(tiny, f"Question: {it['goal']}\nAnswer:", " " + it[k])[0] for k in ("sol1", "sol2")]
        assert [r[0] for r in s["filtered_resps"]] == pytest.approx(lls, rel=1e-4)
        assert s["target"] == label
        acc += int(max(range(2), key=lambda i: lls[i]) == label)
        acc_norm += int(max(range(2), key=lambda i: lls[i] / len(it[("sol1", "sol2")[i]])) == label)
    assert res.tasks["piqa"].metrics["acc"] == pytest.approx(acc / N)
    assert res.tasks["piqa"].metrics["acc_norm"] == pytest.approx(acc_norm / N)
    assert {t: (r.n, r.n_total, r.version, r.source) for t, r in res.tasks.items()} == {
        "lambada_openai": (N, 5153, "1.0", "local"), "piqa": (N, 1838, "1.0", "local")}
    assert res.lm_eval_version == "0.4.13" and res.tasks["piqa"].stderr["acc"] >= 0


def test_shipped_yamls_are_lm_evals_own_tasks_but_for_the_data():
    import lm_eval

    own = Path(lm_eval.__file__).parent / "tasks"
    for name, rel in (("lambada_openai", "lambada/lambada_openai.yaml"), ("piqa", "piqa/piqa.yaml")):
        ours = yaml.safe_load((lmeval.TASKS_DIR / f"{name}.yaml").read_text())
        theirs = yaml.safe_load((own / rel).read_text())
        data_keys = {"dataset_path", "dataset_name", "dataset_kwargs", "training_split"}
        assert {k: v for k, v in ours.items() if k not in data_keys} == \
               {k: v for k, v in theirs.items() if k not in data_keys}
        assert ours["dataset_path"] == "json"


def test_offline_folder_is_resolved_outside_the_package(tmp_path):
    before = sorted(p.name for p in lmeval.TASKS_DIR.iterdir())
    folder = lmeval.offline_task_folder(["lambada_openai", "piqa"], None)
    assert lmeval.TASKS_DIR not in folder.parents and sorted(p.name for p in lmeval.TASKS_DIR.iterdir()) == before
    lam = yaml.safe_load((folder / "lambada_openai.yaml").read_text())
    assert Path(lam["dataset_kwargs"]["data_files"]["test"]).resolve() == \
        (SHARED / "lambada-openai-test.jsonl").resolve()
    piqa = Path(yaml.safe_load((folder / "piqa.yaml").read_text())["dataset_kwargs"]["data_files"]["validation"])
    rows = [json.loads(line) for line in piqa.open()]
    labels = [int(x) for x in (SHARED / "piqa" / "valid-labels.lst").read_text().split()]
    assert len(rows) == 1838 and [r["label"] for r in rows] == labels


def test_eval_cli_tasks_offline(tiny_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["eval", str(tiny_dir), "--tasks", "lambada_openai,piqa", "--limit", "3", "--json", str(out), "--quiet"]
    assert pruning_main(argv) == 0
    got = json.loads(out.read_text())
    assert "perplexity" not in got and got["settings"]["tasks"] == ["lambada_openai", "piqa"]
    z = got["zeroshot"]
    assert z["lm_eval_version"] == "0.4.13" and z["limit"] == 3
    assert {t: (r["n"], r["version"]) for t, r in z["tasks"].items()} == {"lambada_openai": (3, "1.0"),
                                                                         "piqa": (3, "1.0")}
    assert set(z["tasks"]["piqa"]["metrics"]) == {"acc", "acc_norm"}
    assert "piqa: acc" in capsys.readouterr().out


def test_eval_cli_task_errors_are_one_line(tiny_dir, tmp_path, monkeypatch, capsys):
    base = ["eval", str(tiny_dir), "--quiet"]
    assert pruning_main(base + ["--tasks", "hellaswag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'Rowan/hellaswag'" in err and "offline tasks: lambada_openai, piqa" in err
    assert pruning_main(base + ["--tasks", "piqa", "--stream"]) == 2
    assert "--tasks need the whole model in memory" in capsys.readouterr().err
    assert pruning_main(base + ["--limit", "3"]) == 2
    assert "--limit applies to --tasks" in capsys.readouterr().err
    assert pruning_main(base + ["--tasks", "piqa", "--data-dir", str(tiny_dir)]) == 2
    assert "piqa data file" in capsys.readouterr().err
    assert pruning_main(["prune", str(tiny_dir), "--stream", "--eval", "none", "--eval-tasks", "piqa", "--out",
                         str(tmp_path / "o")]) == 2
    assert "--eval-tasks need the whole model in memory" in capsys.readouterr().err
    assert pruning_main(["prune", str(tiny_dir), "--eval", "none", "--eval-limit", "3", "--out",
                         str(tmp_path / "o")]) == 2
    assert "--eval-limit applies to --eval-tasks" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    monkeypatch.setattr(lmeval, "lm_eval_version", lambda: None)
    assert pruning_main(base + ["--tasks", "piqa"]) == 2
    assert "pip install 'spectral-pruning-lab[eval]'" in capsys.readouterr().err


def test_streamed_model_is_refused_in_one_line(tiny):
    import copy

    model = copy.deepcopy(tiny.model)
    model.model.layers[0].to("meta")
    with pytest.raises(ValueError, match="streamed"):
        lmeval.evaluate_tasks(model, tiny.tokenizer, ["piqa"], limit=1)


def test_prune_and_sweep_eval_tasks(tiny_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert pruning_main(["prune", str(tiny_dir), "--pruner", "magnitude", "--sparsity", "0.5", "--eval", "none",
                         "--eval-tasks", "piqa", "--eval-limit", "2", "--out", str(out), "--quiet"]) == 0
    rep = read_report(out)
    assert rep["eval"]["tasks"] == ["piqa"] and rep["eval"]["limit"] == 2
    run = rep["runs"][0]  # the run record carries the pruned model's lm-eval columns, as a sweep row does
    assert run["piqa_n"] == 2 and run["piqa_acc"] == rep["zeroshot"]["pruned"]["tasks"]["piqa"]["metrics"]["acc"]
    assert {k: v["tasks"]["piqa"]["n"] for k, v in rep["zeroshot"].items()} == {"dense": 2, "pruned": 2}
    # the saved pruned folder evaluates to the same numbers as the in-memory pruned model did
    assert pruning_main(["eval", str(out), "--tasks", "piqa", "--limit", "2", "--json", str(tmp_path / "e.json"),
                         "--quiet"]) == 0
    again = json.loads((tmp_path / "e.json").read_text())["zeroshot"]["tasks"]["piqa"]["metrics"]
    assert again == pytest.approx(rep["zeroshot"]["pruned"]["tasks"]["piqa"]["metrics"])
    table = tmp_path / "sweep.parquet"
    assert pruning_main(["sweep", str(tiny_dir), "--pruners", "magnitude", "--sparsities", "0.5", "--eval",
                         "wikitext2", "--eval-seqlen", "32", "--max-windows", "1", "--eval-tasks", "piqa",
                         "--eval-limit", "2", "--out", str(table), "--quiet"]) == 0
    import pandas as pd

    t = pd.read_parquet(table)
    assert list(t["kind"]) == ["dense", "pruned"] and list(t["piqa_n"]) == [2, 2]
    assert t["piqa_acc"].between(0, 1).all() and set(t["lm_eval_version"]) == {"0.4.13"}
    assert {k for k in run if "piqa" in k or "lm_eval" in k or "tasks" in k} == \
        {c for c in t.columns if "piqa" in c or "lm_eval" in c or "tasks" in c}
    assert "piqa_acc" in capsys.readouterr().out


def test_lm_eval_is_imported_only_for_tasks():
    code = ("import sys, spectra.__main__, pruning.__main__, pruning.cli.eval, pruning.cli.prune, pruning.cli.sweep, "
            "pruning.sweep, pruning.evaluation.lmeval, pruning.settings, webapp.prune_evaluate, webapp.state; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'lm_eval'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=config.REPO_ROOT,
                         check=False, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"

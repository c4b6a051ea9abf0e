"""pruning.runs: short run labels, the pattern check and sweep tables reshaped into one row per pruned model."""
import json

import numpy as np
import pandas as pd
import pytest

from pruning.labels import is_paper_literal, readable, run_label
from pruning.pruners import PRUNERS, get_pruner
from pruning.runs import normalize_results, pattern_problem, read_results_table

PAPER_LITERAL = {name: spec.paper_literal for name, spec in PRUNERS.items() if spec.paper_literal}


def test_run_label_spells_pattern_variant_and_gd():
    assert run_label("wanda") == "wanda"
    assert run_label("sparsegpt", "2:4", 100) == "sparsegpt 2:4 +GD100"
    assert run_label("sparsegpt", "2:4", 100, gd_precondition=False) == "sparsegpt 2:4 +GD100 plain"
    assert run_label("fista", "unstructured", 0, literal=True) == "fista (paper-literal)"
    for empty_nm, no_steps in ((None, None), ("", np.nan), (np.nan, 0)):
        assert run_label("magnitude", empty_nm, no_steps) == "magnitude"
    # the first word is the pruner id, so plots.readable gives the readable name
    t = readable(pd.DataFrame({"pruner": [run_label("prox24", "2:4", 5, literal=True)]}))
    assert t["pruner"].iloc[0] == "prox24 (paper-literal) 2:4 +GD5"


def test_is_paper_literal_reads_dicts_and_json():
    for pruner, opts in PAPER_LITERAL.items():
        assert is_paper_literal(pruner, opts) and is_paper_literal(pruner, json.dumps(opts))
        assert not is_paper_literal(pruner, {}) and not is_paper_literal(pruner, "")
    assert is_paper_literal("prox24", '{"precondition": "False"}')  # text compared case-insensitively
    assert not is_paper_literal("wanda", {"refit": "none"})


def test_pattern_problem_follows_only_pattern_and_supports_nm():
    assert get_pruner("prox24").only_nm == (2, 4)
    assert pattern_problem("prox24", "unstructured").startswith("prox24 produces 2:4 sparsity only: set pattern to 2:4")
    assert "(it was 4:8)" in pattern_problem("prox24", "4:8")
    assert pattern_problem("prox24", "2:4") is None
    assert pattern_problem("wanda", "4:8") is None and pattern_problem("wanda", "unstructured") is None
    no_nm = [p for p, spec in PRUNERS.items() if not spec.supports_nm and spec.only_nm is None]
    for p in no_nm:
        assert pattern_problem(p, "2:4") == f"{p} does not support N:M patterns: set pattern to unstructured"


def _sweep_rows():
    return [{"kind": "dense", "allocation": "none", "pruner": "dense", "sparsity": 0.0, "nm": "", "lam": np.nan,
             "ppl": 20.0, "gd_steps": 0, "gd_precondition": True, "pruner_options": "{}",
             "eval_dataset": "wikitext2", "max_windows": 8, "eval_seqlen": 256},
            {"kind": "pruned", "allocation": "uniform", "pruner": "wanda", "sparsity": 0.5, "nm": "2:4",
             "lam": np.nan, "ppl": 60.0, "gd_steps": 100, "gd_precondition": False, "pruner_options": "{}",
             "eval_dataset": "wikitext2", "max_windows": np.nan, "eval_seqlen": 256},
            {"kind": "pruned", "allocation": "alphapruning", "pruner": "fista", "sparsity": 0.7, "nm": None,
             "lam": 0.2, "ppl": 90.0, "gd_steps": np.nan, "gd_precondition": True,
             "pruner_options": '{"refit": "none"}', "eval_dataset": "wikitext2", "max_windows": 8,
             "eval_seqlen": 256}]


def test_normalize_results_sweep_layout():
    t = normalize_results(pd.DataFrame(_sweep_rows()))
    assert len(t) == 2 and (t["dense_ppl"] == 20.0).all()
    assert t["pruner"].tolist() == ["wanda 2:4 +GD100 plain", "fista (paper-literal)"]
    assert t["eval"].tolist() == ["wikitext2 all×256", "wikitext2 8×256"]
    assert t.index.tolist() == [0, 1]


def test_normalize_results_renames_and_rejects():
    t = normalize_results(pd.DataFrame({"method": ["uniform"], "pruner": ["wanda"], "target_sparsity": [0.5],
                                        "epsilon": [0.3], "perplexity": [33.0]}))
    assert {"allocation", "sparsity", "lam", "ppl"} <= set(t.columns) and t["pruner"].iloc[0] == "wanda"
    with pytest.raises(ValueError, match="no ppl column"):
        normalize_results(pd.DataFrame({"sparsity": [0.5]}))
    with pytest.raises(ValueError, match="no pruned run"):
        normalize_results(pd.DataFrame(_sweep_rows()[:1]))


def test_read_results_table_parquet_csv_and_errors(tmp_path):
    df = pd.DataFrame(_sweep_rows())
    df.to_parquet(tmp_path / "s.parquet")
    (tmp_path / "s.csv").write_text("# a comment\n" + df.to_csv(index=False))
    a, b = read_results_table(tmp_path / "s.parquet"), read_results_table(str(tmp_path / "s.csv"))
    assert a["pruner"].tolist() == b["pruner"].tolist() == ["wanda 2:4 +GD100 plain", "fista (paper-literal)"]
    np.testing.assert_allclose(a["ppl"], b["ppl"])
    with pytest.raises(FileNotFoundError, match="python -m pruning sweep --out"):
        read_results_table(tmp_path / "missing.parquet")
    (tmp_path / "s.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown table type"):
        read_results_table(tmp_path / "s.txt")

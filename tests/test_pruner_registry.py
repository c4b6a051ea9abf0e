"""The pruner registry is the one place a pruner is described: its label, paper-literal variant, one-shot support
and llm-compressor modifier live in its ``PrunerSpec``, no other module names a pruner by a string literal, and a
new pruner registered in ``PRUNERS`` (one module + one registry line) reaches the prune and sweep command lines,
the app's pruner list, the labels and the one-shot (tune) list without an edit anywhere else."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from pruning.pruners import PRUNERS
from pruning.pruners.base import PrunerSpec
from pruning.pruners.masks import mask_from_scores

ROOT = Path(__file__).resolve().parent.parent


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant of a module that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_module_outside_a_pruner_names_a_pruner_by_string():
    names = set(PRUNERS)
    own = {ROOT / "pruning" / "pruners" / f"{name}.py" for name in names} | {ROOT / "pruning/pruners/__init__.py"}
    files = [*ROOT.glob("pruning/**/*.py"), *ROOT.glob("spectra/**/*.py"), *ROOT.glob("webapp/**/*.py"),
             ROOT / "app.py"]
    found = [f"{p.relative_to(ROOT)}:{line}: {text!r}" for p in files if p not in own
             for line, text in _string_constants(p) if text in names]
    assert found == [], "pruner names written outside the registry:\n" + "\n".join(found)


def test_specs_carry_what_other_modules_used_to_repeat():
    from pruning.labels import is_paper_literal, method_label, pruner_label
    from pruning.pruners import literal_pruners, one_shot_pruners

    assert [pruner_label(n) for n in PRUNERS] == ["magnitude", "Wanda", "SparseGPT", "FISTAPruner", "prox24"]
    assert one_shot_pruners() == ("magnitude", "wanda", "sparsegpt")  # needs ⊆ {H}: dense statistics suffice
    assert all(PRUNERS[n].needs <= {"H"} for n in one_shot_pruners())
    assert literal_pruners() == ("fista", "prox24")
    for name in literal_pruners():
        assert is_paper_literal(name, PRUNERS[name].paper_literal)
    # the labels reports and sweep tables have written so far
    assert method_label("fista", {"refit": "none"}, "intra") == "FISTAPruner (paper-literal, no re-fit) [intra]"
    assert method_label("fista", {}, "sequential") == "FISTAPruner (re-fit) [sequential]"
    assert method_label("prox24", {"precondition": False}, "sequential", 100) == "prox24 (plain step) + GD100"
    assert method_label("prox24", {}, "sequential") == "prox24 (rescaled)"
    assert method_label("wanda", {}, "sequential", 100, False) == "Wanda + GD100 (plain)"
    assert method_label("sparsegpt", {"blocksize": 64}, "none") == "SparseGPT blocksize=64 [none]"


def _toy(W: torch.Tensor, stats, sparsity: float, nm=None, **options) -> torch.Tensor:
    """Prune the entries with the largest index (a deterministic toy): scores = −(flat index)."""
    W = W.to(torch.float32).clone()
    scores = -torch.arange(W.numel(), dtype=torch.float64).reshape(W.shape)
    return W.masked_fill_(mask_from_scores(scores, sparsity, nm), 0.0)


TOY = PrunerSpec("toy", _toy, calibration_free=True, one_shot=True, label="Toy pruner", description="a test pruner",
                 paper_literal={"literal": True}, options=("literal",))


@pytest.fixture()
def toy_registered(monkeypatch):
    monkeypatch.setitem(PRUNERS, "toy", TOY)
    return TOY


def test_a_registered_pruner_reaches_every_list(toy_registered):
    from pruning.cli.sweep import spec_from_args
    from pruning.labels import method_label, readable_run
    from pruning.pruners import literal_pruners, one_shot_pruners
    from pruning.settings import PrunerSettings, PruneSettings
    from pruning.tune import TuneSettings
    from spectra.options import options_of

    # prune: the settings accept it (the --pruner check reads the registry) and its option
    s = PruneSettings.from_flat(pruner="toy", pruner_options={"literal": True}, sparsity=0.5)
    assert s.pruner.name == "toy"
    # sweep: `--pruners toy` expands to its cells
    from pruning.__main__ import build_parser

    args = build_parser().parse_args(["sweep", "--pruners", "toy,wanda", "--sparsities", "0.5", "--out", "x.parquet"])
    spec = spec_from_args(args)
    assert spec.pruners == ["toy", "wanda"]
    # the app's pruner list: the choices of the widget built from PrunerSettings.name
    (field,) = [o for o in options_of(PrunerSettings) if o.name == "name"]
    assert "toy" in field.choices
    # labels, paper-literal and one-shot (tune) lists
    assert method_label("toy", {}, "sequential") == "Toy pruner" and readable_run("toy 2:4") == "Toy pruner 2:4"
    assert "toy" in literal_pruners() and "toy" in one_shot_pruners()
    assert TuneSettings(pruner="toy").pruner == "toy"
    with pytest.raises(ValueError, match="toy"):
        TuneSettings(pruner="fista")  # the message lists the one-shot pruners, the new one included


def test_a_registered_pruner_prunes_end_to_end(toy_registered):
    """The sequential loop runs it through the registry: exact sparsity, the entries it chose."""
    import transformers as tf

    from pruning.blocks import block_linears
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    res = prune_model(model, None, PruneSettings.from_flat(pruner="toy", sparsity=0.5), progress=False)
    assert res.achieved_sparsity == pytest.approx(0.5)
    for blk in block_linears(model):
        for lin in blk:
            W = lin.get()
            k = W.numel() // 2
            assert torch.count_nonzero(W.flatten()[-k:]) == 0 and torch.count_nonzero(W.flatten()[:-k]) > 0

"""export-recipe: the llm-compressor recipe lists one sparsity per block matrix in named_modules() order, and its
target regex matches exactly those matrices (how llm-compressor 0.14 indexes a sparsity list)."""
import json
import re

import pytest

from pruning.__main__ import main as pruning_main
from pruning.recipe import block_matrix_names, build_recipe, targets_regex


def test_targets_match_exactly_the_block_matrices_in_order():
    import torch

    from spectra.models import load_model

    names = block_matrix_names()
    assert len(names) == 210 and names[:3] == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                               "model.layers.0.self_attn.v_proj"]
    rx = targets_regex(names).removeprefix("re:")
    model = load_model().model
    matched = [n for n, m in model.named_modules() if re.match(rx, n)]  # llm-compressor: re.match on the name
    assert matched == names
    assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in matched)


def test_cli_writes_the_allocation_in_module_order(tmp_path, capsys):
    names = block_matrix_names()
    alloc = {n: round(0.3 + 0.6 * i / len(names), 4) for i, n in enumerate(reversed(names))}
    (tmp_path / "a.json").write_text(json.dumps({"method": "test", "sparsity": 0.6, "layers": alloc}))
    rc = pruning_main(["export-recipe", "--allocation-file", str(tmp_path / "a.json"), "--pruner", "wanda",
                       "--out", str(tmp_path / "r.yaml")])
    out = capsys.readouterr().out
    assert rc == 0 and "oneshot(model=model" in out and 'pipeline="sequential"' in out
    text = (tmp_path / "r.yaml").read_text()
    assert "WandaPruningModifier:" in text and 'ignore: ["lm_head"]' in text and 'mask_structure: "0:0"' in text
    values = [float(v) for v in re.search(r"sparsity: \[(.*)\]", text).group(1).split(",")]
    assert values == [alloc[n] for n in names]


def test_nm_and_bad_input(tmp_path, capsys):
    rc = pruning_main(["export-recipe", "--nm", "2:4", "--pruner", "sparsegpt", "--out", str(tmp_path / "r.yaml")])
    assert rc == 0
    text = (tmp_path / "r.yaml").read_text()
    assert 'mask_structure: "2:4"' in text and "SparseGPTModifier:" in text
    capsys.readouterr()
    assert pruning_main(["export-recipe", "--nm", "2:4", "--pruner", "magnitude", "--out",
                         str(tmp_path / "x.yaml")]) == 2
    assert "--pruner must be one of: sparsegpt, wanda" in capsys.readouterr().err
    assert pruning_main(["export-recipe", "--allocation", "alphapruning", "--sparsity", "0.7",
                         "--out", str(tmp_path / "y.yaml")]) == 2
    assert "needs --metrics FILE" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no sparsity for model.layers.1.mlp.up_proj"):
        build_recipe(["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"],
                     {"model.layers.0.mlp.up_proj": 0.5}, "wanda")

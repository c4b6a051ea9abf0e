"""Allocations exported as llm-compressor recipes (scale-out on an existing engine).

llm-compressor 0.14's ``SparseGPTModifier`` / ``WandaPruningModifier`` (``SparsityModifierBase``) take
``sparsity: float | list[float]``; a list is indexed by the position of each module in
``match_named_modules(model, targets)``, i.e. in ``model.named_modules()`` order, and its length must equal the number
of matched targets. So :func:`build_recipe` targets exactly the block matrices (one anchored regex over their
names relative to a block) and lists their sparsities in ``named_modules()`` order; ``ignore`` names the LM head.
"""
from __future__ import annotations

import json
import re
from typing import Optional

from pruning.pruners import PRUNERS


def modifiers() -> dict:
    """Our pruner name → llm-compressor's modifier class of the same method (``PrunerSpec.llmc_modifier``)."""
    return {name: spec.llmc_modifier for name, spec in PRUNERS.items() if spec.llmc_modifier}


def block_matrix_names(source=None) -> list[str]:
    """Longnames of the block weight matrices of ``source``'s architecture in ``named_modules()`` order, from a
    weightless (meta-device) skeleton built from its config.json (no weights read)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from spectra.models import resolve_source, weights_dir
    from spectra.weights import iter_model_weights

    src = resolve_source(source)
    directory = src.path if src.kind == "local" else weights_dir(src)
    config = AutoConfig.from_pretrained(str(directory))
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    wanted = {info.longname for info, _ in iter_model_weights(model) if info.block >= 0}
    return [n for n, _ in model.named_modules() if n in wanted]


def targets_regex(names: list[str]) -> str:
    """One anchored llm-compressor target (``re:``) matching exactly ``names`` (``<blocks>.<i>.<relative name>``)."""
    pattern = re.compile(r"^(.*?)\.(\d+)\.(.+)$")
    prefixes, rels = set(), []
    for n in names:
        m = pattern.match(n)
        if m is None:
            raise ValueError(f"{n} is not inside a numbered decoder block")
        prefixes.add(m.group(1))
        if m.group(3) not in rels:
            rels.append(m.group(3))
    if len(prefixes) != 1:
        raise ValueError(f"block matrices under several prefixes: {sorted(prefixes)}")
    (prefix,) = prefixes
    return "re:^" + re.escape(prefix) + r"\.\d+\.(" + "|".join(re.escape(r) for r in rels) + ")$"


def build_recipe(names: list[str], sparsity: dict, pruner: str, nm: Optional[str] = None,
                 head: str = "lm_head", options: Optional[dict] = None) -> dict:
    """The recipe dict: one stage, one modifier with ``sparsity`` = [sparsity[n] for n in names] (``names`` in
    ``named_modules()`` order), ``targets`` = :func:`targets_regex`, ``ignore`` = [head], ``mask_structure``."""
    known = modifiers()
    if pruner not in known:
        raise ValueError(f"llm-compressor has no modifier for pruner {pruner!r}; choose one of: "
                         f"{', '.join(sorted(known))}")
    missing = [n for n in names if n not in sparsity]
    if missing:
        raise ValueError(f"the allocation has no sparsity for {missing[0]} (and {len(missing) - 1} more); "
                         f"was it made for another model?")
    mod = {"sparsity": [round(float(sparsity[n]), 6) for n in names], "mask_structure": nm or "0:0",
           "targets": [targets_regex(names)], "ignore": [head], **(options or {})}
    return {"sparsity_stage": {"sparsity_modifiers": {known[pruner]: mod}}}


def _yaml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a double-quoted YAML string


def to_yaml(obj, indent: int = 0) -> str:
    """YAML text of nested dicts / lists of scalars (lists of numbers on one line, flow style)."""
    pad = "  " * indent
    lines = []
    for k, v in obj.items():
        if isinstance(v, dict):
            lines.append(f"{pad}{k}:")
            lines.append(to_yaml(v, indent + 1))
        elif isinstance(v, list):
            lines.append(f"{pad}{k}: [{', '.join(_yaml_scalar(x) for x in v)}]")
        else:
            lines.append(f"{pad}{k}: {_yaml_scalar(v)}")
    return "\n".join(lines)


def oneshot_snippet(model: str, recipe_path: str, out_dir: str = "pruned-llmc", nsamples: int = 128,
                    seqlen: int = 2048) -> str:
    """The Python that runs the recipe with llm-compressor: weights offloaded to CPU / disk
    (``load_offloaded_model`` + ``device_map="auto_offload"``), the sequential pipeline onloading one decoder
    layer at a time to the first GPU, activations kept on a second GPU when there is one."""
    return f'''import torch
from compressed_tensors.offload import load_offloaded_model
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from llmcompressor import oneshot

MODEL = {model!r}
with load_offloaded_model():  # weights on CPU, spilling to disk: a 70B model needs no 140 GB of RAM
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype="auto", device_map="auto_offload")
tokenizer = AutoTokenizer.from_pretrained(MODEL)
ds = load_dataset("allenai/c4", data_files="en/c4-train.00000-of-01024.json.gz", split="train[:{nsamples}]")
ds = ds.map(lambda x: tokenizer(x["text"], truncation=True, max_length={seqlen}), remove_columns=ds.column_names)
oneshot(model=model, tokenizer=tokenizer, dataset=ds, recipe={recipe_path!r}, pipeline="sequential",
        num_calibration_samples={nsamples}, max_seq_length={seqlen},
        sequential_offload_device="cuda:1" if torch.cuda.device_count() > 1 else "cpu",
        output_dir={out_dir!r}, save_compressed=False)'''

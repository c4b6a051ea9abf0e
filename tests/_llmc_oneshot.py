"""Run by the isolated llm-compressor venv (tests/test_ecosystem.py): oneshot with a recipe on a local model and a
local calibration set, then write every Linear's achieved sparsity as JSON.

usage: python _llmc_oneshot.py MODEL_DIR RECIPE CALIB_JSON OUT_JSON
"""
import json
import sys
import time

import torch
from datasets import Dataset
from llmcompressor import oneshot
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, recipe, calib_json, out_json = sys.argv[1:5]
ids = json.load(open(calib_json))
ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids]})
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(model_dir)
t = time.perf_counter()
oneshot(model=model, tokenizer=tok, dataset=ds, recipe=recipe, pipeline="sequential",
        num_calibration_samples=len(ids), max_seq_length=len(ids[0]), shuffle_calibration_samples=False)
seconds = time.perf_counter() - t
sparsity = {n: float((m.weight == 0).float().mean()) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}
json.dump({"seconds": seconds, "sparsity": sparsity}, open(out_json, "w"))

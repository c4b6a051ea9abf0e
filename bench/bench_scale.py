"""Streamed pruning at scale on the CPU: a random-init Llama-architecture checkpoint (≥ 1.5B parameters, bf16,
sharded safetensors) pruned with ``python -m pruning prune --stream``; prints the checkpoint size, the peak RSS of
the pruning process, the time per block and an extrapolation to Llama-2-7B / Llama-2-70B shapes.

    python bench/bench_scale.py                      # 1.55B: hidden 2048, MLP 5632, 30 layers, GQA 16/4 heads
    python bench/bench_scale.py --layers 2 --hidden 512 --intermediate 1376   # a quick smoke run

The checkpoint is written block by block (never a whole model in memory) into a temporary folder that is deleted
at the end, with the built-in model's tokenizer (vocab 49,152). Target: peak RSS ≤ half the bf16 checkpoint.
The extrapolation is a model, not a measurement: time per block scales with the block's parameter count (Wanda's
cost is linear in it); memory = the measured fixed part (process after imports + calibration) + embeddings and
head + ``--shard-size`` + 3 × one block in bf16 (the block, the float32 copy of the matrix being pruned, its
replacement).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (hidden, intermediate, layers, heads, kv heads, vocab) of the extrapolation targets
SHAPES = {"Llama-2-7B": (4096, 11008, 32, 32, 32, 32000), "Llama-2-70B": (8192, 28672, 80, 64, 8, 32000)}


def block_params(hidden: int, inter: int, heads: int, kv: int) -> int:
    """Parameters of one Llama decoder block (4 attention + 3 MLP matrices + 2 norms)."""
    head_dim = hidden // heads
    return 2 * hidden * hidden + 2 * hidden * kv * head_dim + 3 * hidden * inter + 2 * hidden


def write_checkpoint(directory: Path, hidden: int, inter: int, layers: int, heads: int, kv: int,
                     shard_bytes: int = 10**9) -> int:
    """Write a random-init bf16 Llama checkpoint block by block (N(0, 0.02²) matrices, unit norms, untied head)
    with the built-in tokenizer; returns its parameter count."""
    from transformers import LlamaConfig

    from pruning.stream import ShardWriter, copy_aux_files
    from spectra.models import builtin_model_dir

    src = builtin_model_dir()
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=False,
                      max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, dtype="bfloat16")
    cfg.save_pretrained(directory)
    copy_aux_files(src, directory)
    g = torch.Generator().manual_seed(0)
    w = ShardWriter(directory, shard_bytes)
    n = 0

    def add(key, shape, ones=False):
        nonlocal n
        t = torch.ones(shape) if ones else torch.randn(shape, generator=g) * 0.02
        w.add(key, t.to(torch.bfloat16))
        n += t.numel()

    hd = hidden // heads
    add("model.embed_tokens.weight", (vocab, hidden))
    for i in range(layers):
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (kv * hd, hidden)),
                            ("self_attn.v_proj", (kv * hd, hidden)), ("self_attn.o_proj", (hidden, hidden)),
                            ("mlp.gate_proj", (inter, hidden)), ("mlp.up_proj", (inter, hidden)),
                            ("mlp.down_proj", (hidden, inter))):
            add(p + name + ".weight", shape)
        add(p + "input_layernorm.weight", (hidden,), ones=True)
        add(p + "post_attention_layernorm.weight", (hidden,), ones=True)
    add("model.norm.weight", (hidden,), ones=True)
    add("lm_head.weight", (vocab, hidden))
    w.finish()
    return n


#: runs a module as ``python -m`` would and prints the process's own peak RSS (VmHWM: counted from its exec, unlike
#: ``ru_maxrss``, which also counts the memory of the parent it was forked from) on the last stderr line
_PEAK_WRAPPER = ("import runpy, sys\n"
                 "sys.argv = sys.argv[1:]\n"
                 "try:\n"
                 "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
                 "finally:\n"
                 "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
                 "    sys.stderr.write(f'VmHWM_KB {hwm}\\n')\n")


def run_measured(module_argv: list[str], env: dict, quiet: bool = False) -> tuple[int, float]:
    """Run ``python -m MODULE ARGS`` in a child; (exit status, its peak RSS in MB from /proc/self/status VmHWM)."""
    r = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *module_argv], env=env, cwd=str(ROOT),
                       stderr=subprocess.PIPE, text=True, stdout=subprocess.DEVNULL if quiet else None)
    lines = [l for l in r.stderr.splitlines() if l.startswith("VmHWM_KB ")]
    other = [l for l in r.stderr.splitlines() if not l.startswith("VmHWM_KB ")]
    if r.returncode != 0 and other:
        print("\n".join(other[-5:]))
    return r.returncode, (int(lines[-1].split()[1]) / 1024 if lines else float("nan"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--pruner", default="wanda")
    ap.add_argument("--sparsity", default="0.5")
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--shard-size", default="256MB")
    ap.add_argument("--dir", default=None, help="where the temporary checkpoint goes (default: the system temp)")
    args = ap.parse_args()
    from pruning.cli.prune import parse_size
    from pruning.report import read_report

    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.dir))
    try:
        ckpt, out = work / "ckpt", work / "pruned"
        t = time.perf_counter()
        n = write_checkpoint(ckpt, args.hidden, args.intermediate, args.layers, args.heads, args.kv_heads)
        size = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
        nshards = len(list(ckpt.glob("*.safetensors")))
        print(f"checkpoint: {n / 1e9:.3f}B parameters, bf16, {nshards} shards, {size / 1e9:.3f} GB "
              f"(written in {time.perf_counter() - t:.0f} s)")
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        _, base_mb = run_measured(["pruning", "--help"], env, quiet=True)  # imports only
        cmd = ["pruning", "prune", str(ckpt), "--stream", "--dtype", "bfloat16",
               "--pruner", args.pruner, "--sparsity", args.sparsity, "--nsamples", str(args.nsamples),
               "--seqlen", str(args.seqlen), "--eval", "none", "--no-dense-eval", "--shard-size", args.shard_size,
               "--quiet", "--out", str(out)]
        t = time.perf_counter()
        rc, peak_mb = run_measured(cmd, env)
        wall = time.perf_counter() - t
        if rc != 0:
            print(f"prune failed with exit status {rc}")
            return 1
        rep = read_report(out)
        run = rep["runs"][0]  # the run record (pruning.runs.run_record)
        out_size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
        tm = rep["timings_s"]
        per_block = tm["loop"] / args.layers
        print(f"pruned: {args.pruner} {args.sparsity} uniform, calibration {args.nsamples} × {args.seqlen} tokens, "
              f"achieved sparsity {run['achieved_sparsity']:.4f}; output {out_size / 1e9:.3f} GB in "
              f"{len(list(out.glob('*.safetensors')))} shards")
        print(f"wall time {wall:.1f} s (process), loop {tm['loop']:.1f} s = {per_block:.2f} s per block "
              f"(stats {tm['stats']:.1f}, prune {tm['prune']:.1f}, forward {tm['forward']:.1f} s)")
        print(f"peak RSS {peak_mb:.0f} MB (whole pruning process; {run['peak_rss_mb']:.0f} MB sampled inside the "
              f"loop) = {peak_mb * 2**20 / size:.2f} × the bf16 checkpoint (target ≤ 0.50); `python -m pruning --help` "
              f"(imports only) {base_mb:.0f} MB")
        bp = block_params(args.hidden, args.intermediate, args.heads, args.kv_heads)
        vocab = json.loads((ckpt / "config.json").read_text())["vocab_size"]
        emb = 2 * vocab * args.hidden * 2
        fixed = peak_mb * 2**20 - emb - parse_size(args.shard_size) - 3 * bp * 2
        for name, (h, i, L, H, K, V) in SHAPES.items():
            bpx = block_params(h, i, H, K)
            total = L * bpx + 2 * V * h
            mem = max(fixed, base_mb * 2**20) + 2 * V * h * 2 + parse_size(args.shard_size) + 3 * bpx * 2
            print(f"extrapolated {name} ({total / 1e9:.1f}B, bf16 {2 * total / 1e9:.0f} GB): "
                  f"{per_block * bpx / bp:.1f} s "
                  f"per block × {L} = {per_block * bpx / bp * L / 60:.1f} min on this CPU (Wanda, same calibration); "
                  f"peak RSS ≈ {mem / 2**30:.1f} GiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

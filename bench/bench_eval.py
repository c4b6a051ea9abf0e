"""Perplexity evaluation speed: ``pruning.evaluation.perplexity.perplexity`` against a plain Hugging Face forward loop.

Both run the built-in model over the same WikiText-2 windows (seqlen 512, the first ``--windows``) with the same
torch threads; the plain loop is ``model(input_ids=w, labels=w).loss`` per window (what a user would write). Prints
both times, their ratio (target ≤ 1.05) and that both perplexities agree. Run it alone on a quiet machine::

    python bench/bench_eval.py --windows 32 --threads 2
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="alternating repeats; the best time of each is reported")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from pruning.evaluation.data import get_eval_tokens, tokenizer_adds_bos
    from pruning.evaluation.perplexity import eval_windows, perplexity
    from pruning.report import package_versions
    from spectra.models import load_model

    lm = load_model()
    bos = lm.tokenizer.bos_token_id if tokenizer_adds_bos(lm.tokenizer) else None
    wins = eval_windows(get_eval_tokens(lm.tokenizer, "wikitext2"), args.seqlen, bos, args.windows)

    @torch.no_grad()
    def plain() -> float:
        nll, n = 0.0, 0
        for w in wins:
            out = lm.model(input_ids=w.unsqueeze(0), labels=w.unsqueeze(0), use_cache=False)
            nll += float(out.loss) * (w.numel() - 1)
            n += w.numel() - 1
        return math.exp(nll / n)

    def ours() -> float:
        return perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=args.seqlen, max_windows=args.windows,
                          progress=False).ppl

    times = {"plain": [], "ours": []}
    ppl = {}
    ours(), plain()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("plain", plain)):
            t = time.perf_counter()
            ppl[name] = fn()
            times[name].append(time.perf_counter() - t)
    t_o, t_p = min(times["ours"]), min(times["plain"])
    print(f"{args.windows} windows × {args.seqlen}, {args.threads} thread(s); versions {package_versions()}")
    print(f"pruning.evaluation.perplexity: {t_o:.2f} s (ppl {ppl['ours']:.4f})")
    print(f"plain HF loop:      {t_p:.2f} s (ppl {ppl['plain']:.4f})")
    rel = abs(ppl["ours"] - ppl["plain"]) / ppl["plain"]
    print(f"ratio ours / plain: {t_o / t_p:.3f} (target ≤ 1.05); |Δppl| / ppl = {rel:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

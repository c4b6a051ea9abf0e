"""Zero-shot accuracy as lm-evaluation-harness scores it: LAMBADA (OpenAI) last-word accuracy and PIQA.

Both reduce to lm-eval's ``loglikelihood(context, continuation)`` request: tokenize ``context + continuation`` and
``context`` separately (trailing spaces of the context are moved to the continuation), the continuation tokens
are ``whole[len(context_tokens):]``; the model reads ``(context + continuation)[:-1]`` and we sum the
log-probabilities of the continuation tokens and check whether each is the greedy (argmax) prediction.

* LAMBADA ``lambada_openai``: context = text up to the last space, continuation = ``" " + last word``;
  acc = share of passages whose every continuation token is the argmax; ppl = exp(−mean loglikelihood).
* PIQA: context ``"Question: {goal}\\nAnswer:"``, continuations ``" {sol1}"`` / ``" {sol2}"``;
  acc = argmax of the log-likelihoods, acc_norm = argmax of log-likelihood / ``len(sol)`` (lm-eval divides by
  the choice's length in characters — the docs call it byte length; identical for ASCII text).

BOS: lm-eval encodes without special tokens unless ``add_bos_token`` is set (it is set automatically for
Gemma).  Here ``add_bos=None`` follows the tokenizer's default (:func:`pruning.evaluation.data.tokenizer_adds_bos`), which
for Gemma gives lm-eval's setting and for SmolLM2 / GPT-2 adds nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from spectra.models import model_and_tokenizer

from pruning.evaluation.data import encode, load_lambada, load_piqa, tokenizer_adds_bos

__all__ = ["LambadaResult", "PiqaResult", "lambada_accuracy", "piqa_accuracy", "loglikelihoods", "encode_pair"]


@dataclass
class LambadaResult:
    """Last-word accuracy (greedy) and perplexity of the target word on the first ``n`` passages."""

    n: int
    accuracy: float
    ppl: float
    bos: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PiqaResult:
    """PIQA accuracy (raw log-likelihood) and acc_norm (log-likelihood per character) on ``n`` examples."""

    n: int
    acc: float
    acc_norm: float
    bos: bool

    def to_dict(self) -> dict:
        return asdict(self)


def encode_pair(tokenizer, context: str, continuation: str, bos_id: Optional[int] = None
                ) -> tuple[list[int], list[int]]:
    """lm-eval ``_encode_pair``: (context tokens, continuation tokens), optionally with BOS before the context."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    prefix = [int(bos_id)] if bos_id is not None else []
    whole = prefix + list(encode(tokenizer, context + continuation))
    ctx = prefix + list(encode(tokenizer, context))
    if not ctx:  # empty context: lm-eval conditions on the end-of-text token
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("empty context and the tokenizer has neither BOS nor EOS to condition on")
        return [int(eos)], whole
    return ctx, whole[len(ctx):]


def _max_length(model) -> int:
    cfg = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        val = getattr(cfg, attr, None) if cfg is not None else None
        if isinstance(val, int) and val > 0:
            return val
    return 2048


@torch.no_grad()
def loglikelihoods(model, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 8, device=None,
                   progress: bool = False, desc: str = "loglikelihood",
                   progress_cb: Optional[Callable[[int, int], None]] = None) -> list[tuple[float, bool]]:
    """For each (context tokens, continuation tokens): (sum log p(continuation | context), all-greedy flag).

    Sequences are left-truncated to the model's max positions (as lm-eval) and right-padded in a batch (causal
    attention: padding after a sequence cannot change its logits).
    """
    if device is None:
        device = next(model.parameters()).device
    maxlen = _max_length(model)
    # longest first (as lm-eval) so that a batch holds sequences of similar length: less padding
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out: list[Optional[tuple[float, bool]]] = [None] * len(pairs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc=desc, leave=False)
    done = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs, spans = [], []
        for j in idx:
            ctx, cont = pairs[j]
            if not cont:
                raise ValueError("empty continuation: nothing to score")
            full = (list(ctx) + list(cont))[-(maxlen + 1):]
            inp = full[:-1]
            seqs.append(inp)
            spans.append((len(inp) - len(cont), list(cont)))
        width = max(len(s) for s in seqs)
        batch = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            batch[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        logits = model(input_ids=batch.to(device), use_cache=False).logits
        for i, (first, cont) in enumerate(spans):
            logp = F.log_softmax(logits[i, first:first + len(cont)].float(), dim=-1)
            tgt = torch.tensor(cont, dtype=torch.long, device=logp.device)
            ll = float(logp.gather(1, tgt[:, None]).sum().double().item())
            greedy = bool((logp.argmax(dim=-1) == tgt).all().item())
            out[idx[i]] = (ll, greedy)
        done += len(idx)
        if bar is not None:
            bar.update(len(idx))
        if progress_cb is not None:
            progress_cb(done, len(pairs))
    if bar is not None:
        bar.close()
    return out  # type: ignore[return-value]


def _bos(tokenizer, add_bos: Optional[bool]) -> Optional[int]:
    use = tokenizer_adds_bos(tokenizer) if add_bos is None else bool(add_bos)
    if not use:
        return None
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise ValueError("add_bos=True but the tokenizer has no BOS token; use add_bos=False")
    return int(bos)


def _first(items: list, n: Optional[int], what: str) -> list:
    if n is None:
        return items
    if int(n) < 1:
        raise ValueError(f"{what}: n must be positive (got {n})")
    return items[: int(n)]


def lambada_accuracy(model, tokenizer=None, n: Optional[int] = None, path=None, batch_size: int = 8,
                     add_bos: Optional[bool] = None, progress: bool = True, device=None,
                     progress_cb: Optional[Callable[[int, int], None]] = None) -> LambadaResult:
    """LAMBADA (OpenAI) last-word accuracy on the first ``n`` passages (all 5,153 when None), lm-eval style."""
    model, tokenizer = model_and_tokenizer(model, tokenizer)
    texts = _first(load_lambada(path), n, "lambada")
    bos_id = _bos(tokenizer, add_bos)
    pairs = []
    for text in texts:
        context, word = text.rsplit(" ", 1)
        pairs.append(encode_pair(tokenizer, context, " " + word, bos_id))
    model.eval()
    res = loglikelihoods(model, pairs, batch_size, device, progress, "lambada", progress_cb)
    acc = sum(g for _, g in res) / len(res)
    ppl = math.exp(-sum(ll for ll, _ in res) / len(res))
    return LambadaResult(n=len(res), accuracy=acc, ppl=ppl, bos=bos_id is not None)


def piqa_accuracy(model, tokenizer=None, n: Optional[int] = None, path=None, batch_size: int = 8,
                  add_bos: Optional[bool] = None, progress: bool = True, device=None,
                  progress_cb: Optional[Callable[[int, int], None]] = None) -> PiqaResult:
    """PIQA validation acc / acc_norm on the first ``n`` examples (all 1,838 when None), lm-eval style."""
    model, tokenizer = model_and_tokenizer(model, tokenizer)
    items = _first(load_piqa(path), n, "piqa")
    bos_id = _bos(tokenizer, add_bos)
    pairs = []
    for it in items:
        ctx = f"Question: {it['goal']}\nAnswer:"
        pairs.append(encode_pair(tokenizer, ctx, " " + it["sol1"], bos_id))
        pairs.append(encode_pair(tokenizer, ctx, " " + it["sol2"], bos_id))
    model.eval()
    res = loglikelihoods(model, pairs, batch_size, device, progress, "piqa", progress_cb)
    acc = acc_norm = 0
    for i, it in enumerate(items):
        ll = [res[2 * i][0], res[2 * i + 1][0]]
        lens = [float(len(it["sol1"])), float(len(it["sol2"]))]
        pred = 0 if ll[0] >= ll[1] else 1  # np.argmax: first on ties
        norm = [ll[0] / lens[0], ll[1] / lens[1]]
        pred_norm = 0 if norm[0] >= norm[1] else 1
        acc += int(pred == it["label"])
        acc_norm += int(pred_norm == it["label"])
    return PiqaResult(n=len(items), acc=acc / len(items), acc_norm=acc_norm / len(items), bos=bos_id is not None)

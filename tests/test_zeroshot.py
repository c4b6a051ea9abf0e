"""pruning.evaluation.zeroshot: LAMBADA / PIQA scoring against a hand-rolled lm-eval-style scorer (one example at a time)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spectra import config
from pruning.evaluation.zeroshot import encode_pair, lambada_accuracy, loglikelihoods, piqa_accuracy

SHARED = config.REPO_ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "lambada-openai-test.jsonl").is_file(),
                                reason="shared data folder not present")


@pytest.fixture(scope="module")
def lm(builtin):
    return builtin


def _score(lm, context: str, continuation: str) -> tuple[float, bool]:
    """lm-eval loglikelihood, written out: tokens of context+continuation minus those of context, one forward."""
    tok = lm.tokenizer
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    seq = ctx + cont
    with torch.no_grad():
        logits = lm.model(torch.tensor([seq[:-1]])).logits[0].double()
    ll, greedy = 0.0, True
    for j, target in enumerate(cont):
        row = logits[len(ctx) - 1 + j]
        ll += (row[target] - torch.logsumexp(row, 0)).item()
        greedy &= int(row.argmax()) == target
    return ll, greedy


def test_encode_pair_moves_trailing_space(lm):
    tok = lm.tokenizer
    ctx, cont = encode_pair(tok, "The cat sat on the ", "mat")
    assert ctx == tok("The cat sat on the", add_special_tokens=False)["input_ids"]
    assert ctx + cont == tok("The cat sat on the mat", add_special_tokens=False)["input_ids"]
    ctx_b, cont_b = encode_pair(tok, "The cat sat on the", " mat", bos_id=7)
    assert ctx_b == [7] + ctx and cont_b == cont


def test_lambada_matches_hand_rolled(lm):
    n = 6
    texts = [json.loads(line)["text"] for line in (SHARED / "lambada-openai-test.jsonl").open()][:n]
    lls, hits = [], 0
    for text in texts:
        words = text.split(" ")
        ll, greedy = _score(lm, " ".join(words[:-1]), " " + words[-1])
        lls.append(ll)
        hits += greedy
    res = lambada_accuracy(lm.model, lm.tokenizer, n=n, batch_size=4, progress=False)  # batched + padded
    assert res.n == n and not res.bos
    assert res.accuracy == hits / n
    assert res.ppl == pytest.approx(math.exp(-sum(lls) / n), rel=1e-4)


def test_piqa_matches_hand_rolled(lm):
    n = 5
    items = [json.loads(line) for line in (SHARED / "piqa" / "valid.jsonl").open()][:n]
    labels = [int(x) for x in (SHARED / "piqa" / "valid-labels.lst").read_text().split()][:n]
    acc = acc_norm = 0
    pairs, expected = [], []
    for it, gold in zip(items, labels):
        ctx = "Question: " + it["goal"] + "\nAnswer:"
        scores = [_score(lm, ctx, " " + it[k]) for k in ("sol1", "sol2")]
        lls = np.array([s[0] for s in scores])
        acc += int(np.argmax(lls) == gold)
        acc_norm += int(np.argmax(lls / np.array([len(it["sol1"]), len(it["sol2"])], dtype=float)) == gold)
        expected += scores
        pairs += [encode_pair(lm.tokenizer, ctx, " " + it[k]) for k in ("sol1", "sol2")]
    res = piqa_accuracy(lm, n=n, batch_size=3, progress=False)
    assert (res.n, res.acc, res.acc_norm) == (n, acc / n, acc_norm / n)
    got = loglikelihoods(lm.model, pairs, batch_size=4)
    for (ll, greedy), (ell, egreedy) in zip(got, expected):
        assert ll == pytest.approx(ell, rel=1e-4, abs=1e-4) and greedy == egreedy


def test_bad_n(lm):
    with pytest.raises(ValueError, match="n must be positive"):
        lambada_accuracy(lm, n=0, progress=False)

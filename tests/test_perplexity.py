"""pruning.evaluation.perplexity against independent NLL computations on the built-in model."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pruning.evaluation import data
from pruning.evaluation.perplexity import PerplexityResult, default_seqlen, eval_windows, perplexity
from spectra import config

SHARED = config.REPO_ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "wikitext-2-raw-test.txt").is_file(),
                                reason="shared data folder not present")


def _wikitext_text() -> str:
    """WikiText-2 evaluation text rebuilt here from the file (no pruning.evaluation.data code)."""
    raw = (SHARED / "wikitext-2-raw-test.txt").read_text(encoding="utf-8")
    rows = [ln + "\n" for ln in raw[:-1].split("\n")]
    return "\n\n".join(r if r.strip() else "" for r in rows)


@pytest.fixture(scope="module")
def lm(builtin):
    return builtin


@pytest.fixture(scope="module")
def wt_ids(lm):
    # only the first ~20k characters are needed for a few windows; tokenising a prefix gives the same first tokens
    ids = lm.tokenizer(_wikitext_text()[:20000], add_special_tokens=False)["input_ids"]
    return ids[:-5]  # drop the tokens at the cut (a word may be split differently there)


def test_matches_manual_log_softmax(lm, wt_ids):
    """seqlen 128, 2 windows: float64 log-softmax of each logit row, gathered by a Python loop over positions."""
    L, n = 128, 2
    total, count = 0.0, 0
    with torch.no_grad():
        for w in range(n):
            win = wt_ids[w * L:(w + 1) * L]
            logits = lm.model(torch.tensor([win])).logits[0].double()
            for t in range(1, L):
                row = logits[t - 1]
                lse = row.max().item() + math.log(torch.exp(row - row.max()).sum().item())
                total += lse - row[win[t]].item()
                count += 1
    res = perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=L, max_windows=n, progress=False)
    assert isinstance(res, PerplexityResult)
    assert (res.nwindows, res.seqlen, res.ntokens, res.bos) == (n, L, n * (L - 1), False)
    assert res.nll == pytest.approx(total / count, rel=1e-4)
    assert res.ppl == pytest.approx(math.exp(total / count), rel=1e-4)
    assert 5 < res.ppl < 200  # a trained model on English text


def test_matches_growing_prefix(lm, wt_ids):
    """seqlen 24, 2 windows: every token predicted by a separate forward pass on its prefix within the window."""
    L, n = 24, 2
    nll = []
    with torch.no_grad():
        for w in range(n):
            win = wt_ids[w * L:(w + 1) * L]
            for t in range(1, L):
                last = lm.model(torch.tensor([win[:t]])).logits[0, -1].double()
                nll.append(-torch.log_softmax(last, dim=-1)[win[t]].item())
    res = perplexity(lm, dataset="wikitext2", seqlen=L, max_windows=n, progress=False)
    assert res.ntokens == len(nll) == n * (L - 1)
    assert res.ppl == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)


def test_batching_and_progress(lm):
    calls = []
    one = perplexity(lm.model, lm.tokenizer, seqlen=64, max_windows=5, batch_size=1, progress=False)
    three = perplexity(lm.model, lm.tokenizer, seqlen=64, max_windows=5, batch_size=3, progress=True,
                       progress_cb=lambda d, t: calls.append((d, t)))
    assert three.ppl == pytest.approx(one.ppl, rel=1e-5)
    assert calls == [(3, 5), (5, 5)]


class _BosTokenizer:
    """Wraps a tokenizer so that it prepends BOS by default (as Llama-2 / Gemma tokenizers do)."""

    def __init__(self, inner, bos_id: int):
        self.inner, self.bos_token_id, self.eos_token_id = inner, bos_id, inner.eos_token_id
        self.name_or_path = "bos-wrapper"

    def __len__(self):
        return len(self.inner)

    def __call__(self, text, add_special_tokens=True, **kw):
        ids = self.inner(text, add_special_tokens=False)["input_ids"]
        if add_special_tokens:
            ids = [self.bos_token_id] + ids if isinstance(text, str) else [[self.bos_token_id] + x for x in ids]
        return {"input_ids": ids}


def test_bos_every_window(lm, wt_ids):
    bos = lm.tokenizer.bos_token_id
    tok = _BosTokenizer(lm.tokenizer, bos)
    assert data.tokenizer_adds_bos(tok) and not data.tokenizer_adds_bos(lm.tokenizer)
    seen = []
    hook = lm.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].clone()),
                                              with_kwargs=True)
    try:
        res = perplexity(lm.model, tok, seqlen=32, max_windows=3, batch_size=2, progress=False)
        n_bos = len(seen)
        off = perplexity(lm.model, tok, seqlen=32, max_windows=2, add_bos=False, progress=False)
    finally:
        hook.remove()
    inputs = torch.cat(seen[:n_bos])
    assert inputs.shape == (3, 32)
    assert (inputs[:, 0] == bos).all()
    body = inputs[:, 1:].reshape(-1).tolist()
    assert body == wt_ids[:3 * 31]  # consecutive, non-overlapping chunks of seqlen-1 text tokens
    assert res.bos and res.ntokens == 3 * 31
    # same value from the manual computation on the BOS windows
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(inputs).logits.double(), dim=-1)
    manual = -lp[:, :-1].gather(2, inputs[:, 1:, None]).mean().item()
    assert res.nll == pytest.approx(manual, rel=1e-4)
    # add_bos=False override: plain windows of 32 text tokens
    plain = torch.cat(seen[n_bos:])
    assert plain.shape == (2, 32) and plain.reshape(-1).tolist() == wt_ids[:64] and not off.bos
    with pytest.raises(ValueError, match="no BOS"):
        perplexity(lm.model, SimpleNamespace(bos_token_id=None, name_or_path="x"), seqlen=8, add_bos=True,
                   progress=False)


class _UniformLM(torch.nn.Module):
    """Predicts the uniform distribution over V tokens: its perplexity is exactly V on any text."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=4096)
        self.seen: list[torch.Tensor] = []

    def forward(self, input_ids, use_cache=False):
        self.seen.append(input_ids.clone())
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_c4_keeps_256_windows(lm, tmp_path):
    """C4 evaluation = the second half of the documents, first 256 windows only (references: 256 × seqlen)."""
    import pandas as pd

    docs = [" ".join(f"tok{d}x{i}" for i in range(60)) for d in range(40)]
    pd.DataFrame({"text": docs}).to_parquet(tmp_path / "c4-validation-2k.parquet")
    ids = lm.tokenizer(" ".join(docs[20:]), add_special_tokens=False)["input_ids"]
    assert len(ids) // 8 > 256
    fake = _UniformLM(len(lm.tokenizer))
    res = perplexity(fake, lm.tokenizer, "c4", seqlen=8, batch_size=100, progress=False, path=tmp_path)
    assert (res.nwindows, res.ntokens) == (256, 256 * 7)
    assert [x.shape[0] for x in fake.seen] == [100, 100, 56]
    assert torch.cat(fake.seen).reshape(-1).tolist() == ids[:256 * 8]
    assert res.ppl == pytest.approx(len(lm.tokenizer), rel=1e-5)  # float32 cross-entropy
    assert perplexity(fake, lm.tokenizer, "c4", seqlen=8, max_windows=300, progress=False,
                      path=tmp_path).nwindows == 300


def test_windows_and_defaults(lm, tmp_path):
    t = torch.arange(10)[None]
    assert eval_windows(t, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert eval_windows(t, 4, bos_id=99).tolist() == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8]]
    assert eval_windows(t, 3, max_windows=2).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="fewer than one window"):
        eval_windows(t, 11)
    assert default_seqlen(lm.model) == 2048  # SmolLM2: 8192 positions
    assert default_seqlen(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=1024))) == 1024
    (tmp_path / "wikitext-2-raw-test.txt").write_text(" \n = Tiny = \n")
    with pytest.raises(ValueError, match="lower seqlen"):
        perplexity(lm.model, lm.tokenizer, seqlen=512, path=tmp_path, progress=False)


# ----------------------------------------------------------------------------------------------- CLI
def _cli(argv):
    import argparse

    from pruning.cli.eval import add_parser

    parser = argparse.ArgumentParser(prog="pruning")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


def test_cli_eval_writes_json(lm, tmp_path, capsys):
    import json

    out = tmp_path / "r.json"
    assert _cli(["--seqlen", "16", "--max-windows", "2", "--json", str(out), "--quiet"]) == 0
    got = json.loads(out.read_text())
    ref = perplexity(lm, seqlen=16, max_windows=2, progress=False)
    assert got["perplexity"]["ppl"] == pytest.approx(ref.ppl, rel=1e-6)
    assert (got["perplexity"]["nwindows"], got["perplexity"]["ntokens"]) == (2, 30)
    assert got["model"] == "builtin:smollm2" and got["settings"]["dataset"] == "wikitext2" and "zeroshot" not in got
    assert "wikitext2 perplexity" in capsys.readouterr().out


def test_cli_eval_user_errors(tmp_path, monkeypatch, capsys):
    assert _cli([str(tmp_path / "no-such-model"), "--seqlen", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "no-such-model" in err
    # missing data: reported before the model is loaded
    monkeypatch.setenv("SPL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPL_OFFLINE", "1")
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path / "a" / "b")
    monkeypatch.chdir(tmp_path)
    assert _cli(["--dataset", "ptb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ptb data file 'ptb-test.txt' not found") and "SPL_DATA_DIR" in err
    with pytest.raises(SystemExit) as ei:  # argparse rejects a bad option value itself (exit 2)
        _cli(["--seqlen", "0"])
    assert ei.value.code == 2

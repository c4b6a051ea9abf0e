"""spectra.files: writes are whole or not at all; scratch folders stay bounded and a process removes its own;
safetensors are written without a serialised copy."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spectra.files import atomic_path, prune_scratch, remove_scratch, save_safetensors, scratch_file

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "table.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists() and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_atomic_path_directory_replaces_the_folder(tmp_path):
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "stale.bin").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out, directory=True) as tmp:
            (tmp / "model.safetensors").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"] and (out / "stale.bin").exists()
    with atomic_path(out, directory=True) as tmp:
        assert tmp.is_dir()
        (tmp / "model.safetensors").write_text("w")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"]


def test_atomic_path_keep_existing_keeps_a_folder_another_process_finished_first(tmp_path):
    """Two processes converting the same model at once: the one that finishes second drops its copy instead of
    removing the folder the first one may already be reading (a file opened there stays whole)."""
    out = tmp_path / "model"
    with atomic_path(out, directory=True, keep_existing=True) as tmp:
        (tmp / "w.bin").write_text("first")
    with (out / "w.bin").open() as reader:
        with atomic_path(out, directory=True, keep_existing=True) as tmp:
            (tmp / "w.bin").write_text("second")
        assert reader.read() == "first"
    assert (out / "w.bin").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["model"]
    out2 = tmp_path / "empty"
    out2.mkdir()  # an empty folder holds nothing to keep: replaced
    with atomic_path(out2, directory=True, keep_existing=True) as tmp:
        (tmp / "w.bin").write_text("new")
    assert (out2 / "w.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "model"]


def test_scratch_folder_is_bounded_by_count_and_age(tmp_path, monkeypatch):
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))
    made, base = [], time.time() - 100
    for i in range(6):
        p = scratch_file("toy", ".bin", keep=3)
        p.write_bytes(b"x" * 10)
        os.utime(p, (base + i, base + i))  # strictly increasing ages, however fast the loop
        made.append(p)
    folder = tmp_path / "scratch" / "toy"
    assert made[0].parent == folder
    assert sorted(folder.iterdir()) == sorted(made[3:])  # the newest 3: each new file pushed out the oldest
    now = time.time()
    os.utime(made[3], (now - 7200, now - 7200))
    os.utime(made[4], (now - 60, now - 60))
    os.utime(made[5], (now, now))
    assert prune_scratch(folder, keep=10, max_age_s=3600) == [made[3]]  # older than an hour, however many are kept
    assert sorted(folder.iterdir()) == sorted(made[4:])
    with pytest.raises(ValueError, match="keep=0"):
        scratch_file("toy", keep=0)


def test_a_scratch_entry_counts_against_the_bound_before_it_is_written(tmp_path, monkeypatch):
    """Two app sessions (or test workers) that each take a scratch file before either has written it: the folder
    still holds at most ``keep`` entries, because an entry exists from the moment it is handed out."""
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))
    taken = [scratch_file("toy", ".bin", keep=2) for _ in range(3)]  # none written yet
    folder = tmp_path / "scratch" / "toy"
    assert taken[-1].is_file() and taken[-1].stat().st_size == 0
    assert len(list(folder.iterdir())) == 2 and taken[-1] in set(folder.iterdir())
    d = scratch_file("toy-dir", keep=2, directory=True)
    assert d.is_dir() and not any(d.iterdir())
    remove_scratch(d)
    assert not d.exists()


def test_a_process_removes_its_own_scratch_files_at_exit(tmp_path):
    code = ("from spectra.files import scratch_file\n"
            "p = scratch_file('toy', '.bin'); p.write_bytes(b'x'); print(p, flush=True)")
    env = {**os.environ, "SPL_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert Path(out).parent == tmp_path / "scratch" / "toy" and not Path(out).exists()


def test_save_safetensors_is_read_back_by_the_reference_reader(tmp_path):
    """Every dtype the project writes, an empty tensor and the metadata come back through safetensors' own reader
    (an independent implementation of the format), bit for bit."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    g = torch.Generator().manual_seed(0)
    tensors = {"w": torch.randn(3, 5, generator=g), "bf": torch.randn(7, generator=g).to(torch.bfloat16),
               "h": torch.randn(2, 2, generator=g).to(torch.float16), "d": torch.randn(4, generator=g).double(),
               "i": torch.arange(6, dtype=torch.int64).reshape(2, 3), "m": torch.tensor([True, False, True]),
               "b": torch.arange(5, dtype=torch.uint8), "empty": torch.zeros(0, 3)}
    path = tmp_path / "t.safetensors"
    save_safetensors(tensors, path, metadata={"format": "pt", "n": 3})
    back = load_file(str(path))
    assert set(back) == set(tensors)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape
        assert torch.equal(back[k].view(torch.uint8) if t.numel() else back[k],
                           t.view(torch.uint8) if t.numel() else t), k
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt", "n": "3"}
    with pytest.raises(ValueError, match="has dtype torch.complex64"):
        save_safetensors({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="contiguous CPU tensor"):
        save_safetensors({"t": torch.randn(4, 4).t()}, tmp_path / "bad.safetensors")

"""FARMS α (spectra.farms): windows by hand, the pooled ESD against a direct numpy computation, square matrices give the
plain α, the analysis columns, and the bad-input errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from spectra.errors import SpectraError
from spectra.farms import farms_esd, farms_metrics, farms_windows, window_starts
from spectra.hill import fit_power_law
from spectra.metrics import matrix_metrics
from spectra.settings import AnalysisSettings


def heavy(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A matrix with a heavy-tailed spectrum (Student-t entries times a power-law column scale)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_t(3, size=(rows, cols)) * (np.arange(1, cols + 1) ** -0.6)[None, :]
    return torch.tensor(W, dtype=torch.float64)


def test_windows_listed_by_hand():
    # 7 × 12, window 5, 3 ops, q 1: n′ = 5; rows: step max(1, 2 // 2) = 1, min(3, 2 // 1 + 1) = 3 starts 0, 1, 2;
    # cols: step 7 // 2 = 3, min(3, 7 // 3 + 1) = 3 starts 0, 3, 6
    assert farms_windows(7, 12, window=5, ops=3) == [(r, c, 5, 5) for r in (0, 1, 2) for c in (0, 3, 6)]
    # a dimension equal to n′ has one start; q = 0.5 halves the columns
    assert farms_windows(5, 40, window=2000, ops=10) == [(0, c, 5, 5) for c in range(0, 36, 3)][:10]
    assert farms_windows(8, 8, window=6, ops=2, q=0.5) == [(0, 0, 6, 3), (0, 5, 6, 3), (2, 0, 6, 3), (2, 5, 6, 3)]
    assert window_starts(13, 5, 4) == [0, 2, 4, 6]  # step (13 − 5) // 3 = 2, min(4, 8 // 2 + 1) = 4 starts


def test_pooled_esd_equals_the_hand_built_one():
    W = heavy(7, 12)
    starts = [(r, c) for r in (0, 1, 2) for c in (0, 3, 6)]
    hand = np.sort(np.concatenate([np.linalg.svd(W.numpy()[r:r + 5, c:c + 5], compute_uv=False) ** 2
                                   for r, c in starts]))
    got = farms_esd(W, window=5, ops=3)
    assert got.shape == (45,)
    np.testing.assert_allclose(got, hand, rtol=1e-10, atol=1e-12 * hand.max())


def test_square_matrix_gives_the_plain_alpha():
    W = heavy(300, 300, seed=3)
    s = AnalysisSettings(farms=True)
    from spectra.esd import esd

    plain = matrix_metrics(esd(W), 300, 300, s)
    f = farms_metrics(W, s)
    assert f["num_windows_farms"] == 1
    assert f["alpha_farms"] == pytest.approx(plain["alpha"], rel=1e-9)
    assert f["xmin_farms"] == pytest.approx(plain["xmin"], rel=1e-9)
    assert f["num_pl_spikes_farms"] == plain["num_pl_spikes"]


def test_rectangular_matrix_fits_the_pooled_esd():
    W = heavy(600, 200, seed=5)
    s = AnalysisSettings(farms=True, farms_window=150, farms_ops=4, xmin_rule="peak_ap")
    pooled = farms_esd(W, 150, 4)
    assert pooled.size == 16 * 150
    fit = fit_power_law(pooled, "peak_ap")
    f = farms_metrics(W, s)
    assert f["alpha_farms"] == fit.alpha and f["D_farms"] == fit.D and f["num_windows_farms"] == 16


def test_analyze_adds_the_farms_columns():
    from spectra.analyze import analyze

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Module()])
            self.layers[0].self_attn = torch.nn.Module()
            self.layers[0].self_attn.q_proj = torch.nn.Linear(64, 64, bias=False)
            self.layers[0].self_attn.k_proj = torch.nn.Linear(64, 32, bias=False)
            with torch.no_grad():
                self.layers[0].self_attn.q_proj.weight.copy_(heavy(64, 64, 1))
                self.layers[0].self_attn.k_proj.weight.copy_(heavy(32, 64, 2))

    df = analyze(Tiny(), AnalysisSettings(farms=True, farms_window=16, farms_ops=3), progress=False, cache=False)
    for c in ("alpha_farms", "D_farms", "xmin_farms", "num_pl_spikes_farms"):
        assert c in df.columns
    k = df[df.longname.str.endswith("k_proj")].iloc[0]
    W = heavy(32, 64, 2).to(torch.float32)
    assert k["alpha_farms"] == pytest.approx(farms_metrics(W, AnalysisSettings(farms=True, farms_window=16,
                                                                                farms_ops=3))["alpha_farms"])
    assert "alpha_farms" not in analyze(Tiny(), progress=False, cache=False).columns


def test_bad_farms_settings_are_one_line_errors():
    with pytest.raises(SpectraError, match="--farms-window 1 is too small"):
        AnalysisSettings(farms=True, farms_window=1)
    with pytest.raises(SpectraError, match="--farms-ops"):
        AnalysisSettings(farms_ops=0)
    with pytest.raises(SpectraError, match="--farms-q"):
        AnalysisSettings(farms_q=0.0)
    r = subprocess.run([sys.executable, "-m", "spectra", "builtin", "--farms", "--farms-window", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--farms-window" in r.stderr, r.stderr


def test_farms_allocation_needs_the_column():
    import pandas as pd

    from pruning.allocation import allocate

    df = pd.DataFrame({"longname": [f"model.layers.{b}.mlp.up_proj" for b in range(3)], "rows": 8, "cols": 4,
                       "alpha": [2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match="--farms") as e:
        allocate(df, "farms", 0.5)
    assert "\n" not in str(e.value)
    df["alpha_farms"] = [4.0, 3.0, 2.0]
    a = allocate(df, "farms", 0.5, lam=0.2)
    b = allocate(df.assign(alpha=df.alpha_farms), "alphapruning", 0.5, lam=0.2)
    np.testing.assert_array_equal(a.sparsity, b.sparsity)  # AlphaPruning's mapping on alpha_farms

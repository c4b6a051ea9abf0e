"""ESD, Hill / power-law fits, MP bulk and per-matrix metrics on synthetic data, against independent computations
(torch svdvals, brute-force loops, weightwatcher's WWFit, the powerlaw package, scipy quadrature, hand values)."""
from __future__ import annotations

import io
import math
import warnings
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch

from spectra.errors import SpectraError
from spectra.esd import esd
from spectra.hill import best_candidate, candidate_fits, fit_power_law, hill_alpha, ks_distance, log_histogram_peak
from spectra.metrics import matrix_entropy, matrix_metrics, matrix_problem, status_for
from spectra.mp import mp_curve, mp_density, mp_edges, mp_fit, mp_median, mp_sigma2


def pareto(rng, alpha, n, xmin=1.0):
    """n samples of the continuous power law p(x) ∝ x^-alpha on [xmin, ∞) (inverse-CDF sampling)."""
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


def bulk_plus_tail(seed, alpha=3.0, n_bulk=400, n_tail=150):
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.uniform(0.05, 1.0, n_bulk), pareto(rng, alpha, n_tail)]))


def brute_force_ks(x):
    """weightwatcher's WWFit loop, written out: (alphas, Ds) for every candidate x[i], i < n-1."""
    n = len(x)
    logx = np.log(x)
    alphas, Ds = np.zeros(n - 1), np.ones(n - 1)
    for i in range(n - 1):
        m = n - i
        a = 1 + m / (np.sum(logx[i:]) - m * logx[i])
        alphas[i] = a
        if a > 1:
            Ds[i] = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - a) - np.arange(m) / m))
    return alphas, Ds


def quiet(fn, *a, **k):
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


# ----------------------------------------------------------------------------------------------- esd
@pytest.mark.parametrize("shape", [(50, 20), (20, 50), (33, 33)])
def test_esd_equals_squared_singular_values(shape):
    g = torch.Generator().manual_seed(sum(shape))
    W = torch.randn(*shape, generator=g)
    ev = esd(W)
    sv = torch.linalg.svdvals(W.double()).numpy()
    assert ev.shape == (min(shape),)
    assert np.all(np.diff(ev) >= 0)
    np.testing.assert_allclose(ev, np.sort(sv**2), rtol=1e-10, atol=1e-12 * sv.max() ** 2)
    np.testing.assert_allclose(esd(W, normalize=True), ev / max(shape), rtol=1e-14)
    np.testing.assert_allclose(esd(W.numpy()), ev, rtol=1e-14)  # numpy input accepted
    ev32 = esd(W, dtype=torch.float32)  # the torch route (also used on CUDA), single precision
    np.testing.assert_allclose(ev32, ev, rtol=0, atol=1e-5 * ev.max())
    assert np.array_equal(esd(torch.nn.Parameter(W)), ev)  # parameters that require grad are fine


def test_esd_rank_deficient_is_clipped_at_zero():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(40, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 30, generator=g, dtype=torch.float64)
    ev = esd(W)
    assert ev.min() >= 0.0
    assert np.sum(ev > 1e-8 * ev.max()) == 3  # rank 3
    assert ev.shape == (30,)


def test_esd_bad_input():
    with pytest.raises(SpectraError, match="NaN or Inf"):
        esd(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(SpectraError, match="2-D"):
        esd(torch.ones(3))
    if not torch.cuda.is_available():
        with pytest.raises(SpectraError, match="no CUDA GPU"):
            esd(torch.ones(3, 3), device="cuda")


# ----------------------------------------------------------------------------------------------- Hill / KS
def test_hill_and_ks_hand_values():
    x = np.array([1.0, math.e, math.e**2])
    assert hill_alpha(x, 1.0) == pytest.approx(2.0, rel=1e-15)  # 1 + 3 / (0 + 1 + 2)
    # F_fit = 1 - 1/x = (0, 1 - 1/e, 1 - 1/e²) vs F_emp = (0, 1/3, 2/3)
    assert ks_distance(x, 1.0, 2.0) == pytest.approx(1 - 1 / math.e - 1 / 3, rel=1e-14)
    assert hill_alpha(np.array([0.5, 1.0, math.e]), 1.0) == pytest.approx(3.0)  # 0.5 < xmin is ignored


@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0, 4.5, 7.0])
def test_hill_recovers_pareto_exponent_within_standard_error(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    x = pareto(rng, alpha, 4000, xmin=2.0)
    fit = fit_power_law(x, xmin=2.0)
    assert fit.xmin_rule == "fixed" and fit.num_pl_spikes == 4000
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(4000))
    assert abs(fit.alpha - alpha) < 2 * fit.sigma, (fit.alpha, alpha, fit.sigma)


def test_hill_standard_error_is_calibrated():
    """Over 400 replicates |α̂ − α| ≤ σ̂ about 68% of the time and the z-scores average ≈ 0."""
    rng = np.random.default_rng(7)
    z = []
    for _ in range(400):
        x = pareto(rng, 3.0, 500)
        fit = fit_power_law(x, xmin=1.0)
        z.append((fit.alpha - 3.0) / fit.sigma)
    z = np.array(z)
    assert 0.62 <= np.mean(np.abs(z) <= 1) <= 0.75
    assert abs(np.mean(z)) < 0.15
    assert 0.85 < np.std(z) < 1.15


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_ks_equals_brute_force_loop(seed):
    x = bulk_plus_tail(seed)
    if seed == 2:  # ties: duplicated eigenvalues must not break anything
        x = np.sort(np.concatenate([x, x[100:110], x[-20:-18]]))
    ref_a, ref_D = brute_force_ks(x)
    for chunk in (1, 7, 64, 10_000):
        a, D = candidate_fits(x, np.arange(len(x) - 1), chunk=chunk)
        np.testing.assert_allclose(a, ref_a, rtol=1e-12)
        np.testing.assert_allclose(D, ref_D, rtol=1e-12, atol=1e-15)
        assert np.argmin(D) == np.argmin(ref_D)
    for stride, chunk in ((8, 64), (3, 5), (50, 2)):  # the bounded search returns the same argmin, exactly
        k, a_k, D_k = best_candidate(x, np.arange(len(x) - 1), stride=stride, chunk=chunk)
        assert k == np.argmin(ref_D) and D_k == D[k] and a_k == a[k]
    fit = fit_power_law(x, "ks", evals_thresh=0.0)
    best = int(np.argmin(ref_D))
    assert fit.xmin == x[best]  # the same candidate, exactly
    assert fit.alpha == pytest.approx(ref_a[best], rel=1e-12)
    assert fit.D == pytest.approx(ref_D[best], rel=1e-12)
    assert fit.num_pl_spikes == len(x) - best
    assert fit.num_candidates == len(x) - 1


@pytest.mark.parametrize("seed,n", [(3, 600), (4, 60), (5, 15), (6, 12)])
def test_ks_rule_equals_weightwatcher_wwfit(seed, n):
    """Our `ks` fit equals weightwatcher's own WWFit (incl. its small-N variant below 20 eigenvalues)."""
    from weightwatcher.WW_powerlaw import WWFit

    rng = np.random.default_rng(seed)
    x = np.sort(np.concatenate([rng.uniform(0.05, 1.0, n // 2), pareto(rng, 2.5, n - n // 2)]))
    ref = quiet(WWFit, x)
    fit = fit_power_law(x, "ks")
    assert fit.xmin == ref.xmin
    assert fit.alpha == pytest.approx(ref.alpha, rel=1e-10)
    assert fit.D == pytest.approx(ref.D, rel=1e-10)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-10)
    assert fit.num_pl_spikes == np.sum(x >= ref.xmin)


@pytest.mark.parametrize("seed,ties", [(10, False), (11, True), (12, False)])
def test_peak_ref_equals_powerlaw_package(seed, ties):
    """`peak_ref` = powerlaw.Fit(xmin=(log10(0.95 p), 1.5 p)) exactly as weightwatcher calls it for xmin_peak."""
    import powerlaw

    x = bulk_plus_tail(seed) * (30.0 if seed == 12 else 1.0)  # seed 12: p > 1, so log10(0.95p) bites
    if ties:
        x = np.sort(np.concatenate([x, np.repeat(x[200:230], 2)]))
    p = log_histogram_peak(x)
    ref = quiet(powerlaw.Fit, x, xmin=(np.log10(0.95 * p), 1.5 * p), xmax=None, verbose=False)
    fit = fit_power_law(x, "peak_ref")
    assert fit.peak == p
    assert fit.xmin == ref.xmin
    assert fit.alpha == pytest.approx(ref.alpha, rel=1e-10)
    assert fit.D == pytest.approx(ref.D, rel=1e-10)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-10)


def test_bounded_search_equals_full_argmin_with_ties_and_distinct_ecdf():
    rng = np.random.default_rng(90)
    for trial in range(20):
        x = bulk_plus_tail(100 + trial, alpha=2 + trial % 4, n_bulk=150, n_tail=60)
        if trial % 3 == 0:
            x = np.sort(np.concatenate([x, x[rng.integers(0, len(x) - 1, 30)]]))  # duplicated values
        idx = np.unique(rng.integers(0, len(x) - 1, 120)) if trial % 2 else np.arange(len(x) - 1)
        for distinct in (False, True):
            _, D = candidate_fits(x, idx, distinct_ecdf=distinct)
            k, _, D_k = best_candidate(x, idx, distinct_ecdf=distinct, stride=4, chunk=8)
            assert k == int(np.argmin(D)) and D_k == D.min()


def test_peak_rule_searches_only_the_corrected_window():
    x = bulk_plus_tail(20) * 50.0
    counts, edges = np.histogram(np.log10(x), bins=100)
    p = 10 ** edges[np.argmax(counts)]
    fit = fit_power_law(x, "peak")
    assert fit.peak == pytest.approx(p, rel=1e-15)
    window = np.nonzero((x[:-1] >= 0.95 * p) & (x[:-1] <= 1.5 * p))[0]
    assert fit.num_candidates == len(window) > 0
    a, D = brute_force_ks(x)
    best = window[np.argmin(D[window])]
    assert fit.xmin == x[best] and fit.alpha == pytest.approx(a[best], rel=1e-12)
    # peak_ref's effective lower bound log10(0.95 p) (= 1.56 here) is far below 0.95 p (= 34.5)
    assert fit_power_law(x, "peak_ref").num_candidates > fit.num_candidates


def alphapruning_peak(eigs, bins=100):
    """AlphaPruning's net_esd_estimator(fix_fingers='xmin_peak') loop, transcribed (numpy float64)."""
    nz = np.sort(eigs)
    N, log_nz = len(nz), np.log(nz)
    alphas, Ds = np.zeros(N - 1), np.ones(N - 1)
    counts, edges = np.histogram(np.log10(nz), bins=bins)
    xmin2 = 10 ** edges[np.argmax(counts)]
    xmin_min, xmin_max = np.log10(0.95 * xmin2), 1.5 * xmin2
    for i, xmin in enumerate(nz[:-1]):
        if xmin < xmin_min:
            continue
        if xmin > xmin_max:
            break
        n = float(N - i)
        alpha = 1 + n / (np.sum(log_nz[i:]) - n * log_nz[i])
        alphas[i] = alpha
        if alpha > 1:
            Ds[i] = np.max(np.abs(1 - (nz[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    k = np.argmin(Ds)
    return alphas[k], nz[k], Ds[k]


@pytest.mark.parametrize("seed", [13, 14, 15])
def test_peak_ap_equals_alphapruning_loop(seed):
    x = bulk_plus_tail(seed) * (20.0 if seed == 15 else 1.0)
    x = np.concatenate([x, np.geomspace(1e-9, 5e-6, 12)])  # tiny eigenvalues: AlphaPruning keeps them
    a, xm, D = alphapruning_peak(x)
    fit = fit_power_law(x, "peak_ap")
    assert fit.xmin == xm and fit.alpha == pytest.approx(a, rel=1e-12) and fit.D == pytest.approx(D, rel=1e-12)
    # the 1e-5 threshold of the weightwatcher-style rules changes the histogram range, hence the peak
    assert fit.peak != fit_power_law(x, "peak_ref").peak


def test_median_and_fixed_rules():
    x = bulk_plus_tail(30)
    fit = fit_power_law(x, "median")
    assert fit.xmin == x[len(x) // 2] and fit.num_pl_spikes == len(x) - len(x) // 2
    tiny = np.sort(np.concatenate([np.zeros(3), np.full(40, 1e-7), x]))  # AlphaPruning keeps λ ≤ 1e-5 (not 0)
    assert fit_power_law(tiny, "median").xmin == tiny[3:][(len(tiny) - 3) // 2]
    assert fit.alpha == pytest.approx(hill_alpha(x, fit.xmin), rel=1e-12)
    assert fit.D == pytest.approx(ks_distance(x, fit.xmin, fit.alpha), rel=1e-12)
    f2 = fit_power_law(x, xmin=0.8)
    assert f2.xmin == 0.8 and f2.num_pl_spikes == np.sum(x >= 0.8)
    assert f2.alpha == pytest.approx(hill_alpha(x, 0.8), rel=1e-12)


def test_ks_finds_planted_tail():
    """Uniform bulk below 1, Pareto(α=3) tail from 1: the KS search puts xmin near 1 and α within 3σ of 3."""
    rng = np.random.default_rng(40)
    x = np.concatenate([rng.uniform(0.05, 0.9, 1000), pareto(rng, 3.0, 1500)])
    fit = fit_power_law(x, "ks")
    assert 0.9 <= fit.xmin <= 1.3
    assert abs(fit.alpha - 3.0) < 3 * fit.sigma


def test_evals_threshold_and_failures():
    x = bulk_plus_tail(50)
    with_zeros = np.concatenate([np.zeros(40), np.full(5, 1e-6), x])
    a, b = fit_power_law(with_zeros, "ks"), fit_power_law(x, "ks")
    assert (a.alpha, a.xmin, a.D) == (b.alpha, b.xmin, b.D)  # eigenvalues ≤ 1e-5 are dropped first
    f = fit_power_law(np.array([0.5, 1.0, 2.0]), "ks")
    assert not f.ok and np.isnan(f.alpha) and "too few eigenvalues" in f.warning
    f = fit_power_law(np.concatenate([x, [np.nan]]), "peak")
    assert not f.ok and "NaN" in f.warning
    f = fit_power_law(np.ones(50), "median")
    assert not f.ok and "degenerate" in f.warning
    f = fit_power_law(x, xmin=1e6)
    assert not f.ok and "leaves 0" in f.warning
    with pytest.raises(SpectraError, match="unknown xmin rule"):
        fit_power_law(x, "mid")
    with pytest.raises(SpectraError, match="needs a positive xmin"):
        fit_power_law(x, "fixed")


def test_warnings_for_small_tail_and_huge_alpha():
    rng = np.random.default_rng(60)
    x = np.concatenate([rng.uniform(0.1, 1.0, 200), 1.0 + 0.01 * rng.random(5)])  # 5-point "tail"
    fit = fit_power_law(x, xmin=1.0)
    assert fit.num_pl_spikes == 5 and "tail too small" in fit.warning
    assert fit.alpha > 8 and "spurious" in fit.warning


# ----------------------------------------------------------------------------------------------- MP
@pytest.mark.parametrize("q", [1.0, 0.375, 1 / 3, 0.05])
def test_mp_density_normalised_and_median(q):
    from scipy import integrate

    lo, hi = mp_edges(q, 2.0)
    assert (lo, hi) == pytest.approx((2.0 * (1 - math.sqrt(q)) ** 2, 2.0 * (1 + math.sqrt(q)) ** 2))
    f = lambda t: float(mp_density(np.array([t]), q, 2.0)[0])  # noqa: E731
    total = quiet(integrate.quad, f, lo, hi, limit=400)[0]
    assert total == pytest.approx(1.0, abs=1e-6)
    med = mp_median(q, 2.0)
    assert quiet(integrate.quad, f, lo, med, limit=400)[0] == pytest.approx(0.5, abs=1e-6)
    assert mp_density(np.array([lo * 0.5 if lo > 0 else -1.0, hi * 1.01]), q, 2.0).tolist() == [0.0, 0.0]


def test_mp_fit_on_random_matrix_and_planted_spike():
    rng = np.random.default_rng(70)
    N, M, s = 1200, 400, 0.05
    W = rng.normal(0, s, (N, M))
    ev = np.linalg.eigvalsh(W.T @ W)
    for method in ("median", "trace"):
        assert mp_sigma2(ev, N, M, method=method) == pytest.approx(s**2, rel=0.02)
        fit = mp_fit(ev, N, M, method=method)
        assert fit.num_spikes == 0
        assert ev.max() == pytest.approx(fit.bulk_max, rel=0.03)  # the top eigenvalue sits at the bulk edge
    # one strong rank-one signal: exactly one spike
    u, v = rng.normal(size=(N, 1)), rng.normal(size=(1, M))
    W2 = W + 4 * s * u @ v / math.sqrt(M)
    ev2 = np.linalg.eigvalsh(W2.T @ W2)
    assert mp_fit(ev2, N, M).num_spikes == 1
    # normalised eigenvalues give the same spikes and an edge divided by N
    f1, f2 = mp_fit(ev2, N, M), mp_fit(ev2 / N, N, M, normalized=True)
    assert f2.num_spikes == f1.num_spikes and f2.bulk_max == pytest.approx(f1.bulk_max / N, rel=1e-12)


# ----------------------------------------------------------------------------------------------- metrics
def test_matrix_metrics_against_independent_norms():
    from weightwatcher.RMT_Util import matrix_entropy as ww_entropy

    g = torch.Generator().manual_seed(80)
    W = torch.randn(300, 120, generator=g, dtype=torch.float64) @ torch.diag(torch.linspace(0.1, 3.0, 120,
                                                                                            dtype=torch.float64))
    ev = esd(W)
    m = matrix_metrics(ev, 300, 120)
    fro2 = torch.linalg.matrix_norm(W, "fro").item() ** 2
    two2 = torch.linalg.matrix_norm(W, 2).item() ** 2
    assert m["stable_rank"] == pytest.approx(fro2 / two2, rel=1e-10)
    assert m["norm"] == pytest.approx(fro2, rel=1e-10) and m["spectral_norm"] == pytest.approx(two2, rel=1e-10)
    assert m["lambda_max"] == m["spectral_norm"] == m["xmax"]
    assert m["log_norm"] == pytest.approx(math.log10(fro2))
    assert m["log_spectral_norm"] == pytest.approx(math.log10(two2))
    assert m["alpha_weighted"] == pytest.approx(m["alpha"] * math.log10(two2))
    assert m["log_alpha_norm"] == pytest.approx(math.log10(np.sum(ev ** m["alpha"])))
    assert m["entropy"] == pytest.approx(quiet(ww_entropy, np.sqrt(ev), 300), rel=1e-12)
    assert m["entropy"] == pytest.approx(matrix_entropy(ev, 300))
    assert m["status"] == status_for(m["alpha"]) and m["xmin_rule"] == "peak"


def test_status_reading():
    assert [status_for(a) for a in (1.5, 2.0, 4.0, 6.0, 6.5, float("nan"))] == \
        ["over-trained", "ok", "ok", "ok", "under-trained", "failed"]


def test_matrix_problems():
    assert matrix_problem(torch.randn(20, 30)) is None
    W = torch.randn(20, 30)
    W[3, 4] = float("inf")
    assert "NaN/Inf (1 of 600" in matrix_problem(W)
    assert "all-zero" in matrix_problem(torch.zeros(20, 30))
    assert "too small" in matrix_problem(torch.randn(4, 30))
    m = matrix_metrics(np.zeros(10), 10, 20)
    assert m["status"] == "failed" and np.isnan(m["alpha"]) and "zero" in m["warning"]


def test_ks_curve_figure_and_esd_mp_figure_compose_the_library_calls():
    """spectra.plots.ks_curve_figure / esd_mp_figure draw exactly ks_figure(ks_curve, xmin_window) and
    esd_figure(mp_curve, mp_fit edge) (the notebooks' and the app's KS and ESD charts)."""
    from spectra import plots
    from spectra.hill import ks_curve, xmin_window

    ev = pareto(np.random.default_rng(3), 2.5, 400)
    for rule in ("peak", "peak_ref", "ks", "median"):
        fit = fit_power_law(ev, rule)
        xs, alphas, Ds = ks_curve(ev, rule)
        window = xmin_window(rule, fit.peak)
        if window is not None and rule != "peak":
            window = (max(float(xs[0]), window[0]), window[1])
        expected = plots.ks_figure(xs, Ds, alphas, chosen=fit.xmin, window=window, title=rule)
        assert plots.ks_curve_figure(ev, fit, rule, title=rule).to_json() == expected.to_json(), rule
    fit = fit_power_law(ev, "peak")
    for method in ("trace", "median"):
        expected = plots.esd_figure(ev, fit, mp=mp_curve(ev, 40, 60, method=method),
                                    mp_edge=mp_fit(ev, 40, 60, method=method).bulk_max, title=method)
        assert plots.esd_mp_figure(ev, fit, 40, 60, method=method, title=method).to_json() == expected.to_json()


def test_new_figure_has_the_white_template_and_leaves_plotly_defaults_alone():
    import plotly.graph_objects as go
    import plotly.io as pio

    from pruning.plots import allocation_summary  # noqa: F401  (pruning.plots builds its charts with it too)
    from spectra.plots import new_figure

    before = pio.templates.default
    fig = new_figure(go.Scatter(x=[1, 2], y=[3, 4]))
    assert pio.templates.default == before
    assert fig.layout.template == pio.templates["plotly_white"]
    assert fig.to_plotly_json()["layout"]["template"] == go.Figure().update_layout(
        template="plotly_white").to_plotly_json()["layout"]["template"]
    assert list(fig.data[0].y) == [3, 4]

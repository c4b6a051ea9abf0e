"""The Model overview page."""
from __future__ import annotations

import numpy as np
from app_helpers import _decode, figure, metric, no_failure, trace


def test_overview_shows_the_analysis(app, analysis):
    from spectra.analyze import block_aggregate

    alpha = analysis["alpha"].to_numpy(dtype=float)
    assert metric(app, "α < 2 (over-trained)") == str(int((alpha < 2).sum()))
    assert metric(app, "2 ≤ α ≤ 6 (typical)") == str(int(((alpha >= 2) & (alpha <= 6)).sum()))
    assert metric(app, "α > 6 (under-trained / spurious)") == str(int((alpha > 6).sum()))
    assert metric(app, "median α") == f"{np.median(alpha):.2f}"
    fig = figure(app, "ov_depth")
    for role in ("q", "k", "v", "o", "gate", "up", "down"):
        t = trace(fig, role)
        sub = analysis[analysis["role"] == role].sort_values("block")
        np.testing.assert_array_equal(t["x"], sub["block"].to_numpy())
        np.testing.assert_allclose(t["y"], sub["alpha"].to_numpy(), rtol=0, atol=0)
    agg = block_aggregate(analysis, "alpha")
    np.testing.assert_allclose(trace(fig, "block mean")["y"], agg["alpha"].to_numpy())
    heat = figure(app, "ov_heat")["data"][0]
    z = _decode(heat["z"])
    assert z.shape == (7, 30)
    row = heat["y"].index("down")
    down = analysis[analysis["role"] == "down"].sort_values("block")["alpha"].to_numpy()
    np.testing.assert_allclose(z[row], down)
    # the one-line HT-SR reading names the block with the largest mean α
    worst_block = int(analysis.groupby("block")["alpha"].mean().idxmax())
    assert f"least well-trained block is {worst_block}" in app.info[0].value

    # the weighted block mean follows block_aggregate(weighted=True)
    app.checkbox(key="ov_weighted").check().run()
    no_failure(app)
    w = block_aggregate(analysis, "alpha", weighted=True)
    np.testing.assert_allclose(trace(figure(app, "ov_depth"), "block mean (parameter-weighted)")["y"],
                               w["alpha"].to_numpy())
    # another metric
    app.selectbox(key="ov_metric").set_value("stable_rank").run()
    no_failure(app)
    np.testing.assert_allclose(trace(figure(app, "ov_depth"), "up")["y"],
                               analysis[analysis["role"] == "up"].sort_values("block")["stable_rank"].to_numpy())

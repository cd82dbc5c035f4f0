"""Scenario engine: full revaluation, grid, replay fill, Monte Carlo and correlation repair."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.stats import norm

from portfolio_pipeline.quant import risk_metrics
from portfolio_pipeline.quant.correlation import (
    crisis_correlation,
    is_correlation,
    nearest_correlation,
)
from portfolio_pipeline.quant.scenarios import (
    Book,
    ContractSet,
    FactorModel,
    ScenarioSet,
    factor_innovations,
    garch_paths,
    geometric_fill,
    greeks_pnl,
    revalue,
    shock_grid,
    simulate_factors,
    tail_contributions,
)
from portfolio_pipeline.quant.vol import fit_garch


def _book(
    *,
    kinds: list[str | None],
    strikes: list[float],
    units: list[float],
    spot: float = 100.0,
    T: float = 30 / 365,
    vol: float = 0.2,
    factor: list[int] | None = None,
    n_factors: int = 1,
) -> Book:
    n = len(kinds)
    cs = ContractSet.build(
        factor=factor or [0] * n,
        is_option=[k is not None for k in kinds],
        is_call=[k == "C" for k in kinds],
        black76=False,
        spot=spot,
        strike=strikes,
        T=T,
        r=0.01,
        q=0.0,
        vol=vol,
    )
    return Book(
        cs, np.asarray(units, dtype=np.float64)[:, None], ("all",),
        tuple(f"f{i}" for i in range(n_factors)),
    )


def _normal_model(sigmas: list[float]) -> FactorModel:
    k = len(sigmas)
    s = np.asarray(sigmas)
    return FactorModel(
        names=tuple(f"f{i}" for i in range(k)), omega=s**2, alpha=np.zeros(k),
        beta=np.zeros(k), nu=np.full(k, np.inf), sigma0=s, mu=np.zeros(k),
    )


def test_long_put_gains_under_down_shock_and_grid_zero_cell_is_exactly_zero() -> None:
    book = _book(kinds=["P", "C", None], strikes=[95.0, 105.0, 0.0], units=[100.0, -100.0, 50.0])
    grid = shock_grid(
        [-0.3, -0.1, 0.0, 0.2],
        [("-5pt", -0.05, 0.0), ("0pt", 0.0, 0.0), ("+10pt", 0.10, 0.0)],
        [0, 1, 5],
        spot_beta=[1.0],
    )
    for rule in ("sticky_strike", "sticky_moneyness"):
        pnl = revalue(book, grid.scenarios, skew_slope=-1.0, skew_rule=rule)  # type: ignore[arg-type]
        cube = pnl[:, 0].reshape(grid.shape)
        assert cube[2, 1, 0] == 0.0  # (0% spot, 0 vol, 0 days): exactly today's value
    put_only = _book(kinds=["P"], strikes=[95.0], units=[100.0])
    down = ScenarioSet.build([[math.log(0.8)]], [[0.0]], [0.0])
    assert revalue(put_only, down)[0, 0] > 0.0
    assert greeks_pnl(put_only, down)[0, 0] > 0.0


def test_greeks_match_full_revaluation_for_small_moves_and_break_for_large() -> None:
    book = _book(kinds=["P", "C"], strikes=[95.0, 105.0], units=[-100.0, -100.0])
    small = ScenarioSet.build([[0.001]], [[0.001]], [1 / 365])
    full, approx = revalue(book, small)[0, 0], greeks_pnl(book, small)[0, 0]
    assert approx == pytest.approx(full, rel=2e-2)
    crash = ScenarioSet.build([[math.log(0.7)]], [[0.3]], [0.0])
    full, approx = revalue(book, crash)[0, 0], greeks_pnl(book, crash)[0, 0]
    assert abs(approx - full) > 0.1 * abs(full)  # where the Greeks stop describing the book


def test_linear_book_is_exact() -> None:
    book = _book(kinds=[None], strikes=[0.0], units=[10.0], spot=2000.0)
    sc = ScenarioSet.build([[math.log(1.05)]], [[0.5]], [3.0])
    assert revalue(book, sc)[0, 0] == pytest.approx(10.0 * 2000.0 * 0.05, rel=1e-12)
    assert greeks_pnl(book, sc)[0, 0] == pytest.approx(1000.0, rel=1e-12)


def test_extreme_shocks_are_finite_or_clear_errors() -> None:
    book = _book(kinds=["P", "C", None], strikes=[95.0, 105.0, 0.0], units=[1.0, -1.0, 1.0])
    grid = shock_grid([-0.9, 5.0], [("+500pt", 5.0, 0.0)], [0, 3650], spot_beta=[1.0])
    pnl = revalue(book, grid.scenarios)
    assert np.all(np.isfinite(pnl))
    with pytest.raises(ValueError, match="non-positive price"):
        shock_grid([-0.9], [("0", 0.0, 0.0)], [0], spot_beta=[1.2])
    with pytest.raises(ValueError, match="non-finite"):
        ScenarioSet.build([[np.inf]], [[0.0]], [0.0])


def test_chunking_does_not_change_results() -> None:
    rng = np.random.default_rng(1)
    n = 40
    cs = ContractSet.build(
        factor=rng.integers(0, 3, n), is_option=rng.random(n) < 0.8, is_call=rng.random(n) < 0.5,
        black76=rng.random(n) < 0.2, spot=rng.uniform(50, 150, n), strike=rng.uniform(50, 150, n),
        T=rng.uniform(0, 1, n), r=0.02, q=0.01, vol=rng.uniform(0.1, 0.6, n),
    )
    book = Book(cs, rng.normal(size=(n, 4)), ("a", "b", "c", "d"), ("x", "y", "z"))
    sc = ScenarioSet.build(rng.normal(0, 0.05, (500, 3)), rng.normal(0, 0.05, (500, 3)),
                           rng.uniform(0, 0.05, 500))
    a = revalue(book, sc, skew_slope=[-1.0, -0.5, 0.0], skew_rule="sticky_moneyness")
    b = revalue(book, sc, skew_slope=[-1.0, -0.5, 0.0], skew_rule="sticky_moneyness",
                chunk_elements=97)
    assert_allclose(a, b, rtol=0, atol=1e-9)


def test_geometric_fill_keeps_anchors_and_fills_constant_log_returns() -> None:
    v = geometric_fill([0, 3, 4], [100.0, 80.0, 90.0], 5)
    assert v[0] == 100.0 and v[3] == 80.0 and v[4] == 90.0
    assert_allclose(np.diff(np.log(v[:4])), math.log(0.8) / 3, rtol=1e-12)
    with pytest.raises(ValueError):
        geometric_fill([1, 4], [1.0, 2.0], 5)


def test_linear_book_mc_var_converges_to_analytic_normal_var() -> None:
    # Two correlated factors, normal innovations, constant vol: the 1-day P&L of a book of
    # stock is sum_i U_i S_i (e^{x_i} - 1); to first order normal with
    # sd = sqrt(d' C d), d_i = U_i S_i sigma_i, so VaR_99 = 2.3263 sd (delta-normal).
    sig = [0.01, 0.015]
    corr = np.array([[1.0, 0.6], [0.6, 1.0]])
    book = _book(kinds=[None, None], strikes=[0.0, 0.0], units=[100.0, -40.0],
                 spot=100.0, factor=[0, 1], n_factors=2)
    x = simulate_factors(_normal_model(sig), corr, n_paths=200_000, horizon=1,
                         rng=np.random.default_rng(7), innovations="normal")
    pnl = revalue(book, ScenarioSet.build(x, 0.0, 1 / 365))[:, 0]
    d = np.array([100.0 * 100.0 * sig[0], -40.0 * 100.0 * sig[1]])
    sd = math.sqrt(d @ corr @ d)
    assert risk_metrics.var(pnl, 0.99) == pytest.approx(norm.ppf(0.99) * sd, rel=0.02)
    es = sd * norm.pdf(norm.ppf(0.99)) / 0.01
    assert risk_metrics.cvar(pnl, 0.99) == pytest.approx(es, rel=0.03)


def test_simulation_is_reproducible_and_matches_garch_forecast_variance() -> None:
    rng = np.random.default_rng(3)
    r = rng.standard_t(6, 2000) * 0.01 * np.sqrt(4 / 6)
    fit = fit_garch(r)
    model = FactorModel.from_fits(["spx"], [fit])
    kw = {"n_paths": 50_000, "horizon": 10, "innovations": "t"}
    a = simulate_factors(model, np.eye(1), rng=np.random.default_rng(11), **kw)  # type: ignore[arg-type]
    b = simulate_factors(model, np.eye(1), rng=np.random.default_rng(11), **kw)  # type: ignore[arg-type]
    assert np.array_equal(a, b)
    # reference twin: the h-day variance of the paths is the sum of the analytic forecasts
    assert a[:, 0].var() == pytest.approx(fit.forecast(10).sum(), rel=0.05)


def test_shocks_drawn_once_drive_any_starting_vol_exactly_like_simulate_factors() -> None:
    # a backfill draws the copula shocks once per refit and reruns only the GARCH recursion
    rng = np.random.default_rng(4)
    fits = [fit_garch(rng.standard_t(5, 1500) * 0.01), fit_garch(rng.standard_t(8, 1500) * 0.02)]
    model = FactorModel.from_fits(["spx", "vix"], fits)
    corr = np.array([[1.0, -0.7], [-0.7, 1.0]])
    kw = {"n_paths": 3000, "horizon": 10, "innovations": "t"}
    shocks = factor_innovations(model, corr, rng=np.random.default_rng([9, 10]), **kw)  # type: ignore[arg-type]
    assert shocks.shape == (10, 3000, 2)
    for scale in (1.0, 2.5):
        m = dataclasses.replace(model, sigma0=model.sigma0 * scale)
        for vol_scale in (1.0, [1.5, 1.25]):
            plain = simulate_factors(m, corr, rng=np.random.default_rng([9, 10]), vol_scale=vol_scale, **kw)  # type: ignore[arg-type]
            assert np.array_equal(garch_paths(m, shocks, vol_scale=vol_scale), plain)
    with pytest.raises(ValueError, match="factors"):
        garch_paths(model, shocks[:, :, :1])


def test_tail_contributions_add_up_to_expected_shortfall() -> None:
    rng = np.random.default_rng(5)
    p = rng.normal(size=(10_000, 3)) * [1.0, 2.0, 0.5]
    contrib, tail = tail_contributions(p, 0.99)
    assert tail.size == 100
    total = p.sum(axis=1)
    assert contrib.sum() == pytest.approx(-np.sort(total)[:100].mean(), rel=1e-12)
    assert contrib[1] > contrib[0] > contrib[2]


def test_nearest_correlation_is_psd_with_unit_diagonal() -> None:
    # Higham (2002) section 4 example: the nearest correlation matrix of this matrix
    bad = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    res = nearest_correlation(bad)
    assert res.converged
    assert is_correlation(res.matrix) and res.min_eigenvalue >= 0
    assert_allclose(np.diag(res.matrix), 1.0, rtol=0, atol=0)
    # published solution (Higham 2002, p. 343): 0.7607 off the corner, 0.1573 in it
    expected = np.array([[1.0, 0.7607, 0.1573], [0.7607, 1.0, 0.7607], [0.1573, 0.7607, 1.0]])
    assert_allclose(res.matrix, expected, atol=1e-4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.uniform(-1, 1, (6, 6))
        a = (a + a.T) / 2
        np.fill_diagonal(a, 1.0)
        stressed = crisis_correlation(a, 0.7)
        fixed = nearest_correlation(stressed).matrix
        assert is_correlation(fixed)
        assert np.linalg.cholesky(fixed).shape == (6, 6)
    good = np.array([[1.0, 0.3], [0.3, 1.0]])
    assert_allclose(nearest_correlation(good).matrix, good, atol=1e-9)

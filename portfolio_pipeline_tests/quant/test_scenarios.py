"""Scenario engine: full revaluation, grid, replay fill, Monte Carlo and correlation repair."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.stats import norm

from portfolio_pipeline.quant import pricing as P
from portfolio_pipeline.quant import risk_metrics
from portfolio_pipeline.quant.correlation import (
    crisis_correlation,
    is_correlation,
    nearest_correlation,
)
from portfolio_pipeline.quant.monte_carlo import (
    FactorModel,
    factor_innovations,
    garch_paths,
    simulate_factors,
)
from portfolio_pipeline.quant.premium_grid import INTERP_MIN_SCENARIOS, INTERP_TAIL
from portfolio_pipeline.quant.revaluation import greeks_pnl, revalue, today_values
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline.quant.scenario_config import StressScenariosFile
from portfolio_pipeline.quant.scenario_risk import (
    scenario_var_cvar,
    scenario_var_cvar_levels,
    tail_contributions,
)
from portfolio_pipeline.quant.scenario_set import ScenarioSet, geometric_fill, shock_grid
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


def test_large_revaluation_equals_pricing_twin_bit_for_bit_threads_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Monte Carlo shape (one decay for all scenarios, > PARALLEL_MIN elements so the
    blocks run on the thread pool; and per-scenario decays): every contract's value equals
    the straightforward twin -- ``pricing.price`` on that contract's scenario arrays -- bit
    for bit, including contracts that expire within the decay (intrinsic) and Black-76 ones;
    the P&L equals the serial run bit for bit and the scipy.stats.norm textbook formula
    within 1e-9 relative; a bad scenario late in the set is named (the first one)."""
    rng = np.random.default_rng(5)
    n_c, n_s = 60, 5000
    T = rng.uniform(0.01, 2.0, n_c)
    T[:3] = 1 / 365  # expire within the decay below: intrinsic value
    black = rng.random(n_c) < 0.2
    black[:3] = False
    cs = ContractSet.build(
        factor=rng.integers(0, 3, n_c), is_option=np.arange(n_c) != 7,
        is_call=rng.random(n_c) < 0.5, black76=black, spot=rng.uniform(50, 150, n_c),
        strike=rng.uniform(50, 150, n_c), T=T, r=rng.uniform(0, 0.05, n_c),
        q=rng.uniform(0, 0.03, n_c), vol=rng.uniform(0.1, 0.6, n_c),
    )
    units = rng.normal(size=(n_c, 2))
    book = Book(cs, units, ("a", "b"), ("x", "y", "z"))
    x = rng.normal(0, 0.05, (n_s, 3))
    d_atm = rng.normal(0, 0.03, (n_s, 3))
    assert n_s * n_c > P.PARALLEL_MIN
    monkeypatch.setattr(P, "_spare_workers", lambda n_blocks: 2)  # the pool, whatever the load
    for decay in (np.full(n_s, 2 / 365), rng.uniform(0, 0.05, n_s)):
        sc = ScenarioSet.build(x, d_atm, decay)
        pnl = revalue(book, sc)
        vals = np.empty((n_s, n_c))
        for j in range(n_c):
            f = int(cs.factor[j])
            s1 = np.exp(x[:, f]) * cs.spot[j]
            if not cs.is_option[j]:
                vals[:, j] = s1 - cs.spot[j]
                continue
            model = "black76" if cs.black76[j] else "bsm"
            args = (cs.strike[j], np.maximum(cs.T[j] - decay, 0.0), cs.r[j], cs.q[j],
                    np.maximum(cs.vol[j] + d_atm[:, f], 0.01))
            v0 = P.price(cs.is_call[j], cs.spot[j], cs.strike[j], cs.T[j], cs.r[j], cs.q[j],
                         cs.vol[j], model=model)  # type: ignore[arg-type]
            vals[:, j] = P.price(cs.is_call[j], s1, *args, model=model) - v0  # type: ignore[arg-type]
        per_contract = revalue(Book(cs, np.eye(n_c), tuple(map(str, range(n_c))),
                                    book.factors), sc)
        assert np.array_equal(per_contract, vals)
        assert_allclose(pnl, vals @ units, rtol=1e-12, atol=1e-9)
        monkeypatch.setattr(P, "_spare_workers", lambda n_blocks: 1)
        assert np.array_equal(revalue(book, sc), pnl)
        monkeypatch.setattr(P, "_spare_workers", lambda n_blocks: 2)
    # independent textbook formula (scipy.stats.norm) on the constant-decay set
    sc = ScenarioSet.build(x, d_atm, np.full(n_s, 2 / 365))
    f = cs.factor
    s1 = np.exp(x[:, f]) * cs.spot
    t1 = np.maximum(cs.T - 2 / 365, 0.0)
    v1 = np.maximum(cs.vol + d_atm[:, f], 0.01)
    qe = np.where(cs.black76, cs.r, cs.q)

    def bsm(s: np.ndarray, t: np.ndarray, v: np.ndarray) -> np.ndarray:
        w = np.where(cs.is_call, 1.0, -1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            d1 = (np.log(s / cs.strike) + (cs.r - qe + 0.5 * v * v) * t) / (v * np.sqrt(t))
            d2 = d1 - v * np.sqrt(t)
            px = w * (s * np.exp(-qe * t) * norm.cdf(w * d1)
                      - cs.strike * np.exp(-cs.r * t) * norm.cdf(w * d2))
        px = np.where(t > 0, px, np.maximum(w * (s - cs.strike), 0.0))
        return np.where(cs.is_option, px, s)

    ref = (bsm(s1, t1, v1) - bsm(cs.spot, cs.T, cs.vol)) @ units
    assert_allclose(revalue(book, sc), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    x_bad = x.copy()
    x_bad[[4000, 4500], 0] = -800.0  # spot -> 0: no finite price
    with pytest.raises(ValueError, match=r"^scenario 4000: contract"):
        revalue(book, ScenarioSet.build(x_bad, d_atm, np.full(n_s, 2 / 365)))


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


# --------------------------------------------------------------------------- American exercise


def _quantlib_american_put(s: float, k: float, days: int, r: float, q: float, vol: float) -> float:
    """Source: QuantLib 1.44 FdBlackScholesVanillaEngine (tGrid 800, xGrid 800), flat
    curves, Actual365Fixed, T = days/365."""
    ql = pytest.importorskip("QuantLib")
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    proc = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(s)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), vol, dc)),
    )
    opt = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Put, k),
                           ql.AmericanExercise(today, today + days))
    opt.setPricingEngine(ql.FdBlackScholesVanillaEngine(proc, 800, 800))
    return float(opt.NPV())


# SPY-like short put deep in the money after a -30 % crash; a 5 % rate makes the
# early-exercise premium large.
AM = {"S": 270.0, "K": 280.0, "days": 90, "r": 0.05, "q": 0.015, "vol": 0.25}


def _am_book(american: bool = True) -> Book:
    """Contract 0: the American SPY put; 1: a European SPX put; 2: a Black-76 future put;
    3: an American SPY call; 4: a stock.  One group per contract (identity units)."""
    cs = ContractSet.build(
        factor=[0, 1, 1, 0, 0],
        is_option=[True, True, True, True, False],
        is_call=[False, False, False, True, False],
        black76=[False, False, True, False, False],
        spot=[AM["S"], 2700.0, 2705.0, AM["S"], AM["S"]],
        strike=[AM["K"], 2600.0, 2650.0, 250.0, 0.0],
        T=[AM["days"] / 365, 30 / 365, 45 / 365, 200 / 365, 0.0],
        r=AM["r"],
        q=[AM["q"], 0.018, 0.0, 0.04, 0.0],
        vol=[AM["vol"], 0.18, 0.2, 0.3, 0.0],
        american=[american, False, False, american, False],
    )
    return Book(cs, np.eye(5), tuple(f"c{i}" for i in range(5)), ("SPY", "SPX"))


def test_deep_itm_american_put_under_crash_is_american_price_and_matches_quantlib() -> None:
    book = _am_book()
    sc = ScenarioSet.build([[math.log(0.7), math.log(0.7)]], 0.0, 0.0)
    s1, k, t = AM["S"] * 0.7, AM["K"], AM["days"] / 365
    args = (s1, k, t, AM["r"], AM["q"], AM["vol"])
    base = P.american_price("P", AM["S"], *args[1:])
    for method in ("lr", "bs2002"):
        pnl = revalue(book, sc, american_method=method)[0, 0]  # units 1: V(s) - V(0)
        expected = P.american_price("P", *args, method=method)
        base_m = P.american_price("P", AM["S"], *args[1:], method=method)
        assert pnl == pytest.approx(float(expected - base_m), rel=1e-13, abs=1e-12)
    value = float(revalue(book, sc)[0, 0] + base)
    euro = float(P.price("P", *args))
    ref = _quantlib_american_put(s1, k, AM["days"], AM["r"], AM["q"], AM["vol"])
    assert value == pytest.approx(ref, rel=0.005)
    assert value > euro + 0.5  # the early-exercise premium is in the P&L
    # the Monte Carlo choice (BS2002) is also within 0.5 % of QuantLib here
    bs = float(revalue(book, sc, american_method="bs2002")[0, 0]
               + P.american_price("P", AM["S"], *args[1:], method="bs2002"))
    assert bs == pytest.approx(ref, rel=0.005) and bs > euro


def test_zero_cell_is_exactly_zero_with_american_contracts() -> None:
    book = _am_book()
    grid = shock_grid(
        [-0.3, -0.1, 0.0, 0.2],
        [("0pt", 0.0, 0.0), ("+10pt", 0.10, 0.0)],
        [0, 1, 5],
        spot_beta=[1.0, 1.0],
    )
    zero = grid.cells.index((2, 0, 0))
    for method, steps in (("lr", 201), ("lr", 101), ("bs2002", 201)):
        pnl = revalue(book, grid.scenarios, american_method=method, american_steps=steps,
                      chunk_elements=7)
        assert np.all(pnl[zero] == 0.0)
        assert np.all(np.isfinite(pnl))
        approx = greeks_pnl(book, grid.scenarios, american_method=method, american_steps=steps)
        assert np.all(approx[zero] == 0.0)
    # the American put is worth at least the European one in every scenario
    am = revalue(book, grid.scenarios)[:, 0]
    eu = revalue(_am_book(american=False), grid.scenarios)[:, 0]
    base_gap = float(P.american_price("P", AM["S"], AM["K"], AM["days"] / 365, AM["r"], AM["q"],
                                      AM["vol"])
                     - P.price("P", AM["S"], AM["K"], AM["days"] / 365, AM["r"], AM["q"],
                               AM["vol"]))
    assert np.all(am + base_gap >= eu - 1e-9)


def test_european_and_index_options_are_unchanged_bit_for_bit() -> None:
    """The European contracts of a book with American ones are valued exactly as before:
    the closed form on ``S e^x``, ``max(vol + d_atm, min_vol)``, ``max(T - decay, 0)``."""
    rng = np.random.default_rng(7)
    n = 40
    x = rng.normal(0.0, 0.1, (n, 2))
    d_atm = rng.normal(0.0, 0.05, (n, 2))
    decay = rng.uniform(0.0, 0.2, n)
    sc = ScenarioSet.build(x, d_atm, decay)
    with_am = revalue(_am_book(), sc, skew_rule="sticky_moneyness", skew_slope=[-0.5, -1.0])
    without = revalue(_am_book(american=False), sc, skew_rule="sticky_moneyness",
                      skew_slope=[-0.5, -1.0])
    c = _am_book().contracts
    for i, model in ((1, "bsm"), (2, "black76")):
        f = int(c.factor[i])
        slope = [-0.5, -1.0][f]

        def value(lr: np.ndarray, da: np.ndarray, dec: np.ndarray, i: int = i, f: int = f,
                  model: str = model, slope: float = slope) -> np.ndarray:
            s1 = np.exp(lr[:, f]) * c.spot[i]
            vol = np.maximum(da[:, f] + c.vol[i] - slope * lr[:, f], 0.01)
            t1 = np.maximum(c.T[i] - dec, 0.0)
            return np.asarray(P.price(c.is_call[i], s1, c.strike[i], t1, c.r[i], c.q[i], vol,
                                      model=model))  # type: ignore[arg-type]

        before = value(x, d_atm, decay) - value(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1))
        assert np.array_equal(with_am[:, i], before)
        assert np.array_equal(without[:, i], before)
        g_am = greeks_pnl(_am_book(), sc)[:, i]
        assert np.array_equal(g_am, greeks_pnl(_am_book(american=False), sc)[:, i])
    assert np.array_equal(with_am[:, 4], without[:, 4])  # the stock


def test_american_flag_is_for_bsm_options_only() -> None:
    with pytest.raises(ValueError, match="not a BSM option"):
        ContractSet.build(factor=[0], is_option=True, is_call=False, black76=True, spot=100.0,
                          strike=100.0, T=0.1, r=0.01, q=0.0, vol=0.2, american=True)
    linear = ContractSet.build(factor=[0], is_option=False, is_call=False, black76=False,
                               spot=100.0, strike=1.0, T=0.0, r=0.0, q=0.0, vol=0.0, american=True)
    assert not linear.american.any()
    with pytest.raises(ValueError, match="American method"):
        revalue(_am_book(), ScenarioSet.zero(2), american_method="fd")  # type: ignore[arg-type]


def _crash_grid() -> tuple[ScenarioSet, np.ndarray]:
    """Spot -30 %..+10 % x ATM vol -5..+20 points x decay 0 / 5 days, today's point
    included (>= INTERP_MIN_SCENARIOS scenarios per decay, so both get a premium grid)."""
    spot = np.unique(np.r_[np.linspace(-0.30, 0.10, 52), 0.0])
    vol = np.unique(np.r_[np.linspace(-0.05, 0.20, 40), 0.0])
    s, v, d = np.meshgrid(spot, vol, [0.0, 5 / 365], indexing="ij")
    x = np.log1p(s.reshape(-1))
    sc = ScenarioSet.build(np.stack([x, 0.5 * x], axis=1), v.reshape(-1)[:, None],
                           d.reshape(-1))
    assert sc.size // 2 >= INTERP_MIN_SCENARIOS
    zero = np.flatnonzero((s.reshape(-1) == 0.0) & (v.reshape(-1) == 0.0) & (d.reshape(-1) == 0))
    return sc, zero


@pytest.mark.parametrize("tail", [0.0, INTERP_TAIL])
def test_interp_lr_matches_the_tree_on_a_crash_grid(
    monkeypatch: pytest.MonkeyPatch, tail: float
) -> None:
    """The interpolated early-exercise premium + exact European value is within 0.1 % (or
    1 cent) of the tree itself in every scenario, the -30 % crash included (interpolated
    with ``tail = 0``, priced by the tree as an outlier with the default tail)."""
    import portfolio_pipeline.quant.premium_grid as S

    monkeypatch.setattr(S, "INTERP_TAIL", tail)
    book = _am_book()
    sc, zero = _crash_grid()
    kw = {"skew_rule": "sticky_moneyness", "skew_slope": [-1.0, -0.5], "american_steps": 101}
    direct = revalue(book, sc, american_method="lr", **kw)  # type: ignore[arg-type]
    interp = revalue(book, sc, american_method="interp_lr", **kw)  # type: ignore[arg-type]
    c = book.contracts
    am = np.flatnonzero(c.american)
    base = P.american_price(c.is_call[am], c.spot[am], c.strike[am], c.T[am], c.r[am], c.q[am],
                            c.vol[am], steps=101)
    value = direct[:, am] + base  # the tree's value in every scenario
    err = np.abs(interp[:, am] - direct[:, am])
    assert np.all(err <= np.maximum(1e-3 * value, 0.01))
    assert err.max() > 0.0  # really interpolated, not the tree
    # European contracts and the stock: the closed form, bit for bit
    assert np.array_equal(interp[:, ~c.american], direct[:, ~c.american])
    # the zero scenario is exactly 0, whatever the chunking
    assert np.all(interp[zero] == 0.0)
    chunked = revalue(book, sc, american_method="interp_lr", chunk_elements=999, **kw)  # type: ignore[arg-type]
    assert np.array_equal(chunked, interp)


def test_interp_lr_zero_cell_and_small_sets() -> None:
    book = _am_book()
    grid = shock_grid([-0.3, -0.1, 0.0, 0.2], [("0pt", 0.0, 0.0), ("+10pt", 0.10, 0.0)],
                      [0, 1, 5], spot_beta=[1.0, 1.0])
    zero = grid.cells.index((2, 0, 0))
    # a small scenario set has no premium grid: the tree prices it, exactly as "lr"
    small = revalue(book, grid.scenarios, american_method="interp_lr", american_steps=101)
    assert np.array_equal(small, revalue(book, grid.scenarios, american_steps=101))
    assert np.all(small[zero] == 0.0)
    approx = greeks_pnl(book, grid.scenarios, american_method="interp_lr")
    assert np.array_equal(approx, greeks_pnl(book, grid.scenarios))
    # Monte Carlo-like set without a decay-0 group: today's value is the tree's, and a
    # scenario where nothing moves but time gives the same P&L as the tree's within 1 cent
    rng = np.random.default_rng(11)
    n = INTERP_MIN_SCENARIOS
    sc = ScenarioSet.build(rng.normal(0.0, 0.03, (n, 2)), rng.normal(0.0, 0.03, (n, 2)),
                           10 / 252)
    sc = ScenarioSet.build(np.r_[np.zeros((1, 2)), sc.log_ret],
                           np.r_[np.zeros((1, 2)), sc.d_atm], 10 / 252)
    interp = revalue(book, sc, american_method="interp_lr", american_steps=101)
    direct = revalue(book, sc, american_method="lr", american_steps=101)
    assert np.abs(interp - direct).max() <= 0.05
    assert abs(interp[0, 0] - direct[0, 0]) <= 0.01
    cfg = StressScenariosFile.model_validate({"monte_carlo": {"american_method": "interp_lr"}})
    assert cfg.monte_carlo.american_method == "interp_lr"


def test_today_values_priced_once_give_the_same_pnl_bit_for_bit() -> None:
    """revalue(today=today_values(...)) is revalue() bit for bit for every American method,
    skew rule and vol_beta, also with interp_lr on a set with (then ignored) and without a
    decay-0 premium grid; made for another book or other arguments it is refused."""
    book = _am_book()
    grid = shock_grid([-0.3, -0.1, 0.0, 0.2], [("0pt", 0.0, 0.0), ("+10pt", 0.10, 0.0)],
                      [0, 1, 5], spot_beta=[1.0, 1.0])
    rng = np.random.default_rng(5)
    n = INTERP_MIN_SCENARIOS
    mc = ScenarioSet.build(rng.normal(0.0, 0.03, (n, 2)), rng.normal(0.0, 0.03, (n, 2)), 10 / 252)
    crash, _ = _crash_grid()  # has a decay-0 grid
    cases: list[dict[str, object]] = [
        {},
        {"american_method": "bs2002", "skew_rule": "sticky_moneyness", "skew_slope": [-1.0, -0.5]},
        {"american_steps": 51, "vol_beta": [1.2, 0.8, 1.0, 0.9, 1.0], "min_vol": 0.05},
        {"american_method": "interp_lr", "american_steps": 51},
    ]
    for kw in cases:
        today = today_values(book, **kw)  # type: ignore[arg-type]
        assert not today.values.flags.writeable
        sets = [grid.scenarios, mc] + ([crash] if kw.get("american_method") == "interp_lr" else [])
        for sc in sets:
            want = revalue(book, sc, **kw)  # type: ignore[arg-type]
            got = revalue(book, sc, today=today, **kw)  # type: ignore[arg-type]
            assert got.tobytes() == want.tobytes(), (kw, sc.size)
    today = today_values(book, american_steps=51)
    twin = _am_book()  # equal contents, another book
    for bad_book, kw in [(twin, {"american_steps": 51}), (book, {"american_steps": 101}),
                         (book, {"american_steps": 51, "min_vol": 0.02}),
                         (book, {"american_steps": 51, "skew_slope": [0.0, -0.1]}),
                         (book, {"american_steps": 51, "vol_beta": np.ones(5)}),
                         (book, {"american_steps": 51, "skew_rule": "sticky_moneyness"})]:
        with pytest.raises(ValueError, match="another book or other pricing arguments"):
            revalue(bad_book, grid.scenarios, today=today, **kw)  # type: ignore[arg-type]


def test_var_cvar_at_several_levels_with_one_sort_equals_straightforward_twin() -> None:
    """The one-sort path (monte_carlo_var, correlation_stress) against the straightforward
    formula written out here -- minus numpy's (1-c) quantile, minus the mean of the
    ceil((1-c) n) smallest values of ``np.sort`` -- bit for bit, on a sample with ties
    (capped losses) and the hand-computed 90 % case of the test below."""
    rng = np.random.default_rng(7)
    pnl = np.round(rng.standard_t(4, 10_000) * 1000.0, 0)
    pnl[rng.choice(pnl.size, 300, replace=False)] = -4000.0  # ties at a capped loss
    levels = (0.90, 0.95, 0.99, 0.999)
    got = scenario_var_cvar_levels(pnl, levels)
    for level, (var, cvar) in zip(levels, got, strict=True):
        k = math.ceil(round((1.0 - level) * pnl.size, 9))
        assert var == -float(np.quantile(pnl, 1.0 - level))
        assert cvar == -float(np.sort(pnl)[:k].mean())
        assert (var, cvar) == scenario_var_cvar(pnl, level)
    hand = np.concatenate([np.full(5, -1000.0), np.full(20, -500.0), -np.arange(99.0, 24.0, -1.0)])
    assert scenario_var_cvar_levels(hand, (0.90,)) == [(500.0, 750.0)]



def test_worst_scenarios_by_partition_are_the_stable_sorts_first_k() -> None:
    """scenario_risk._worst (a partition, then a sort of the k candidates) against the
    straightforward twin np.argsort(kind="stable")[:k], index for index: ties at and
    below the k-th value (lowest index first), signed zeros, infinities, NaN (sorted last;
    a NaN k-th value takes the full sort), k = 1, k near n, k = n."""
    from portfolio_pipeline.quant.scenario_risk import _worst

    rng = np.random.default_rng(3)
    samples = []
    for n in (1, 7, 100, 10_000):
        x = np.round(rng.standard_t(3, n) * 10.0, 0)  # many ties
        samples.append(x)
        y = x.copy()
        y[rng.choice(n, max(1, n // 10), replace=False)] = -0.0
        y[rng.choice(n, max(1, n // 50), replace=False)] = 0.0
        samples.append(y)
        z = rng.normal(size=n)
        z[rng.choice(n, max(1, n // 20), replace=False)] = np.nan
        z[rng.choice(n, max(1, n // 100), replace=False)] = -np.inf
        samples.append(z)
    samples.append(np.full(50, np.nan))
    for x in samples:
        n = x.size
        for k in sorted({1, 2, max(1, n // 100), max(1, n // 20), max(1, n // 4 - 1), n // 2, n - 1, n}):
            if k < 1:
                continue
            want = np.argsort(x, kind="stable")[:k]
            got = _worst(x, k)
            assert got.dtype == np.intp and np.array_equal(got, want), (n, k)

def test_scenario_cvar_is_mean_of_exactly_the_worst_k_with_ties() -> None:
    """Hand computation (issue 14, item 5): 100 scenarios: 5 at -1000, 20 tied at a capped
    loss of -500, 75 at -99..-25.  At 90 % the tail is exactly ceil(0.1 * 100) = 10
    scenarios: CVaR = (5 * 1000 + 5 * 500) / 10 = 750.  The tail "every scenario at or
    below the VaR" takes all 25 (VaR = 500) and understates it: (5000 + 10000) / 25 = 600.
    Group contributions add up to the CVaR exactly."""
    pnl = np.concatenate([np.full(5, -1000.0), np.full(20, -500.0), -np.arange(99.0, 24.0, -1.0)])
    pnl = pnl[np.random.default_rng(0).permutation(pnl.size)]
    var90, cvar90 = scenario_var_cvar(pnl, 0.90)
    assert (var90, cvar90) == (500.0, 750.0)
    assert risk_metrics.cvar(pnl / 1e4, 0.90) * 1e4 == pytest.approx(600.0, rel=1e-12)
    # 99 %: the single worst scenario
    assert scenario_var_cvar(pnl, 0.99)[1] == 1000.0
    groups = np.column_stack([0.3 * pnl, 0.7 * pnl])
    contrib, tail = tail_contributions(groups, 0.90)
    assert contrib.sum() == pytest.approx(cvar90, rel=1e-14)
    assert tail.size == 10

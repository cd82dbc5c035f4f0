"""Accuracy tests of portfolio_pipeline.quant.risk_metrics.

Oracles, each test names its own:

* ``reference/risk_reference.json``: values computed by QuantStats 0.0.86 and
  empyrical-reloaded 0.7.1 (pandas 3.1.1, numpy 2.4.6) on four fixed return series stored in
  the same file; regenerate with ``reference/gen_risk_reference.py``.  Tolerance
  ``rel 1e-12`` (the observed worst deviation is ~3e-14: summation order only).
* Hand-computed tiny cases (five returns) where every number is checked by hand.
* scipy.stats (skew, kurtosis, norm, t) and scipy.integrate.quad for the Cornish-Fisher
  expected shortfall and the GARCH Student-t tail.
* arch 8.0.0 for the GARCH forecast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from arch import arch_model
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from portfolio_pipeline.quant import risk_metrics as R
from portfolio_pipeline.quant import vol as V

REF = json.loads((Path(__file__).parent / "reference" / "risk_reference.json").read_text())
SERIES = sorted(REF["series"])
REL = 1e-12
HAND = np.array([0.10, -0.20, 0.05, 0.20, -0.10])


def _ret(name: str) -> np.ndarray:
    return np.array(REF["series"][name]["returns"])


def _periods(name: str) -> int:
    return int(REF["series"][name]["periods"])


# ----------------------------------------------------------------- reference libraries


def _ours(key: str, r: np.ndarray, periods: int) -> float:
    """Our value for a reference key such as ``sharpe_rf3`` or ``cvar_historical_99``."""
    simple: dict[str, Callable[[], float]] = {
        "sharpe": lambda: R.sharpe(r, periods=periods),
        "sharpe_rf3": lambda: R.sharpe(r, rf=0.03, periods=periods),
        "sortino": lambda: R.sortino(r, periods=periods),
        "sortino_rf3": lambda: R.sortino(r, rf=0.03, periods=periods),
        "omega": lambda: R.omega(r, periods=periods),
        "omega_thr5": lambda: R.omega(r, threshold=0.05, periods=periods),
        "max_drawdown": lambda: R.max_drawdown(r).max_drawdown,
        "calmar": lambda: R.calmar(r, periods=periods),
    }
    if key in simple:
        return simple[key]()
    kind, method, tag = key.split("_")
    fn = R.var if kind == "var" else R.cvar
    return fn(r, level=int(tag) / 100, method=method)  # type: ignore[arg-type]


CASES = [
    (lib, name, key)
    for name in SERIES
    for lib in ("quantstats", "empyrical")
    for key in REF["series"][name][lib]
]


@pytest.mark.parametrize(("lib", "name", "key"), CASES, ids=["-".join(c) for c in CASES])
def test_matches_reference_library(lib: str, name: str, key: str) -> None:
    """QuantStats 0.0.86 / empyrical-reloaded 0.7.1 stored values, rel 1e-12."""
    ref = REF["series"][name][lib][key]
    ours = _ours(key, _ret(name), _periods(name))
    assert ours == pytest.approx(ref, rel=REL, abs=1e-15), (ours, ref)


def test_rolling_matches_quantstats_and_pandas() -> None:
    """quantstats.stats.rolling_sharpe and pandas rolling quantile (stored), rel 1e-9.

    pandas' rolling moments use an online (add/remove) algorithm, hence the looser tolerance.
    """
    ref = REF["rolling"]["normal_daily"]
    r, w = _ret("normal_daily"), ref["window"]
    for key, ours in (
        ("sharpe", R.rolling("sharpe", r, window=w)),
        ("var_historical_99", R.rolling(R.var, r, window=w, level=0.99)),
    ):
        expected = np.array([np.nan if v is None else v for v in ref[key]])
        assert np.isnan(ours[: w - 1]).all() and np.isnan(expected[: w - 1]).all()
        np.testing.assert_allclose(ours[w - 1 :], expected[w - 1 :], rtol=1e-9, atol=1e-15)


# ----------------------------------------------------------------- hand-computed cases


def test_hand_moments_ratios() -> None:
    """r = [.1, -.2, .05, .2, -.1]: mean .01, deviations .09 -.21 .04 .19 -.11,
    sum of squares .102, s = sqrt(.0255); downside sqrt((.04 + .01)/5) = .1;
    gains .35, losses .30."""
    s = math.sqrt(0.102 / 4)
    assert R.sharpe(HAND, periods=1) == pytest.approx(0.01 / s, rel=1e-14)
    assert R.sharpe(HAND, periods=4) == pytest.approx(2 * 0.01 / s, rel=1e-14)
    assert R.sortino(HAND, periods=1) == pytest.approx(0.1, rel=1e-14)
    assert R.omega(HAND, periods=1) == pytest.approx(0.35 / 0.30, rel=1e-14)
    # threshold 1 % per period (periods=1 uses it as is): gains .09+.04+.19, losses .21+.11
    assert R.omega(HAND, threshold=0.01, periods=1) == pytest.approx(0.32 / 0.32, rel=1e-14)
    # rf 10.25 % a year, 2 periods a year -> 5 % a period: excess mean -.04, same s
    assert R.sharpe(HAND, rf=0.1025, periods=2) == pytest.approx(-0.04 / s * math.sqrt(2))


def test_hand_var_cvar() -> None:
    """Sorted: -.2 -.1 .05 .1 .2.  alpha .2 -> position .8 -> -.2 + .8 * .1 = -.12;
    alpha .25 -> position 1 -> -.1.  Tail means: {-.2}, {-.2, -.1}."""
    assert R.var(HAND, level=0.8) == pytest.approx(0.12, rel=1e-14)
    assert R.cvar(HAND, level=0.8) == pytest.approx(0.2, rel=1e-14)
    assert R.var(HAND, level=0.75) == pytest.approx(0.1, rel=1e-14)
    assert R.cvar(HAND, level=0.75) == pytest.approx(0.15, rel=1e-14)
    s = math.sqrt(0.0255)
    z975 = -1.959963984540054  # Phi^-1(0.025)
    assert R.var(HAND, 0.975, "parametric") == pytest.approx(-(0.01 + s * z975), rel=1e-14)
    es = -(0.01 - s * stats.norm.pdf(z975) / 0.025)
    assert R.cvar(HAND, 0.975, "parametric") == pytest.approx(es, rel=1e-14)


def test_hand_cornish_fisher_symmetric() -> None:
    """r = [-.02, -.01, 0, .01, .02]: S = 0; m2 = 2e-4, m4 = 6.8e-8, K = 1.7 - 3 = -1.3;
    z_cf = z + (z^3 - 3z)(-1.3)/24; s = sqrt(2.5e-4)."""
    r = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])
    z = stats.norm.ppf(0.01)
    zcf = z + (z**3 - 3 * z) * (-1.3) / 24
    assert R.var(r, 0.99, "cornish_fisher") == pytest.approx(-math.sqrt(2.5e-4) * zcf, rel=1e-12)


def test_hand_drawdown() -> None:
    """Equity 1, 1.1, .88, .924, 1.1088, .99792: peak 1.1 (after r0), trough .88 at 1
    (-20 %), back above 1.1 at 3; then -10 % at 4, not recovered.  CAGR with 5 periods a
    year (one year) = .99792 - 1; Calmar = -.00208 / .2."""
    dd = R.max_drawdown(HAND)
    assert dd.max_drawdown == pytest.approx(-0.2, rel=1e-14)
    assert (dd.start, dd.trough, dd.recovery, dd.duration, dd.longest_duration) == (1, 1, 3, 2, 2)
    assert R.calmar(HAND, periods=5) == pytest.approx(-0.00208 / 0.2, rel=1e-12)


def test_drawdown_episodes() -> None:
    # first-period loss counts against the initial capital; never recovered
    d = R.max_drawdown([-0.1, 0.05, -0.08])
    assert d.max_drawdown == pytest.approx(0.9 * 1.05 * 0.92 - 1)
    assert (d.start, d.trough, d.recovery, d.duration, d.longest_duration) == (0, 2, None, 3, 3)
    # longest episode (4 periods, -2 %) differs from the max-drawdown episode (1, -30 %)
    r = [-0.01, -0.005, 0.005, 0.0, 0.02, -0.3, 0.5, 0.01]
    d = R.max_drawdown(r)
    assert d.max_drawdown == pytest.approx(-0.3)
    assert (d.start, d.trough, d.recovery, d.duration, d.longest_duration) == (5, 5, 6, 1, 4)
    # no drawdown at all
    d = R.max_drawdown([0.01, 0.0, 0.02])
    assert d == R.Drawdown(0.0, None, None, None, 0, 0)
    assert math.isnan(R.calmar([0.01, 0.0, 0.02]))


# ----------------------------------------------------------------- Cornish-Fisher


@pytest.mark.parametrize("name", SERIES)
def test_skew_kurt_match_scipy(name: str) -> None:
    r = _ret(name)
    s, k = R._skew_kurt(r[None, :])
    assert s[0] == pytest.approx(stats.skew(r), rel=1e-10)
    assert k[0] == pytest.approx(stats.kurtosis(r), rel=1e-10)


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99, 0.995])
@pytest.mark.parametrize("name", SERIES)
def test_cornish_fisher_var_and_tail_integrated_es(name: str, level: float) -> None:
    """mVaR from the brief's formula with scipy moments; CF CVaR as scipy's quad integral
    of the CF quantile z_cf(Phi^-1(u)) over u in (0, alpha), divided by alpha (issue 14:
    integrate the CF quantile over the tail), floored at the CF VaR.  rel 1e-9."""
    r = _ret(name)
    a = 1 - level
    m, s = r.mean(), r.std(ddof=1)
    S, K = stats.skew(r), stats.kurtosis(r)

    def zcf(z: float) -> float:
        return float(z + (z**2 - 1) * S / 6 + (z**3 - 3 * z) * K / 24 - (2 * z**3 - 5 * z) * S**2 / 36)

    g = zcf(float(stats.norm.ppf(a)))
    assert R.var(r, level, "cornish_fisher") == pytest.approx(-(m + s * g), rel=1e-10)
    tail, _ = integrate.quad(lambda u: zcf(float(stats.norm.ppf(u))), 0.0, a,
                             epsabs=1e-14, epsrel=1e-12, limit=200)
    expected = -(m + s * min(tail / a, g))
    got = R.cvar(r, level, "cornish_fisher")
    assert got == pytest.approx(expected, rel=1e-9)
    assert got >= R.var(r, level, "cornish_fisher") - 1e-15


def test_cornish_fisher_cvar_does_not_collapse_to_var() -> None:
    """Regression (issue 14): on a skewed, fat-tailed series the CF CVaR lies beyond the
    CF VaR; with S = K = 0 it is the Gaussian ES -(m - s phi(z)/alpha) (closed form)."""
    rng = np.random.default_rng(3)
    r = 0.01 * rng.standard_t(4, 2000) - 0.004 * rng.exponential(1.0, 2000)
    for level in (0.95, 0.99):
        # measured: 1.60x (95 %), 1.39x (99 %); the old modified ES gave 1.38x and 1.06x
        assert R.cvar(r, level, "cornish_fisher") > R.var(r, level, "cornish_fisher") * 1.25
    z = stats.norm.ppf(0.05)
    skew0, kurt0 = np.zeros(1), np.zeros(1)
    tail0 = R._cornish_fisher_tail_mean(float(z), 0.05, skew0, kurt0)
    assert tail0[0] == pytest.approx(-stats.norm.pdf(z) / 0.05, rel=1e-14)


# ----------------------------------------------------------------- GARCH


@pytest.fixture(scope="module")
def garch_returns() -> np.ndarray:
    return _ret("student_t_crash")


@pytest.fixture(scope="module")
def garch_fit(garch_returns: np.ndarray) -> V.GarchFit:
    return V.fit_garch(garch_returns)


@pytest.mark.parametrize("level", [0.95, 0.99])
@pytest.mark.parametrize("horizon", [1, 10])
def test_garch_var_cvar_t(garch_fit: V.GarchFit, level: float, horizon: int) -> None:
    """Standardised-t quantile / tail mean from scipy (quad), sigma_h^2 from arch's forecast."""
    f = garch_fit
    res = arch_model(
        100 * _ret("student_t_crash"), mean="Constant", vol="GARCH", p=1, q=1, dist="t"
    ).fit(disp="off")
    var_h = res.forecast(horizon=horizon, reindex=False).variance.to_numpy()[-1].sum() / 1e4
    law = stats.t(f.nu, scale=math.sqrt((f.nu - 2) / f.nu))
    a = 1 - level
    q = law.ppf(a)
    mean_h = horizon * res.params["mu"] / 100
    assert R.garch_var(None, level, horizon, fit=f) == pytest.approx(
        -(mean_h + math.sqrt(var_h) * q), rel=1e-9
    )
    tail, _ = integrate.quad(lambda u: u * law.pdf(u), -np.inf, q, epsrel=1e-11)
    assert R.garch_cvar(None, level, horizon, fit=f) == pytest.approx(
        -(mean_h + math.sqrt(var_h) * tail / a), rel=1e-8
    )


def test_garch_fits_when_no_fit_given(garch_returns: np.ndarray, garch_fit: V.GarchFit) -> None:
    assert R.garch_var(garch_returns, 0.99) == pytest.approx(
        R.garch_var(None, 0.99, fit=garch_fit), rel=1e-12
    )
    assert R.garch_cvar(garch_returns, 0.99) > R.garch_var(garch_returns, 0.99) > 0


def test_garch_filtered_historical(garch_fit: V.GarchFit) -> None:
    f = garch_fit
    z = f.std_resid
    sig = math.sqrt(f.forecast(5).sum())
    q = np.quantile(z, 0.01)
    got = R.garch_var(None, 0.99, 5, method="filtered_historical", fit=f)
    assert got == pytest.approx(-(5 * f.mu + sig * q), rel=1e-12)
    got_es = R.garch_cvar(None, 0.99, 5, method="filtered_historical", fit=f)
    assert got_es == pytest.approx(-(5 * f.mu + sig * z[z <= q].mean()), rel=1e-12)
    assert got_es >= got


def test_garch_normal_and_simulation_agree(garch_returns: np.ndarray) -> None:
    f = V.fit_garch(garch_returns, dist="normal")
    sig = math.sqrt(f.forecast(1)[0])
    expected = -(f.mu + sig * stats.norm.ppf(0.05))
    assert R.garch_var(None, 0.95, dist="normal", fit=f) == pytest.approx(expected, rel=1e-12)
    sims = f.simulate(100_000, 1, np.random.default_rng(5))[:, 0]
    assert -np.quantile(sims, 0.05) == pytest.approx(expected, rel=0.03)


def test_garch_validation(garch_returns: np.ndarray, garch_fit: V.GarchFit) -> None:
    with pytest.raises(ValueError, match="at least 250"):
        R.garch_var(garch_returns[:100])
    with pytest.raises(ValueError, match="level"):
        R.garch_var(None, 1.0, fit=garch_fit)
    with pytest.raises(ValueError, match="horizon"):
        R.garch_cvar(None, 0.99, 0, fit=garch_fit)
    with pytest.raises(ValueError, match="method"):
        R.garch_var(None, 0.99, method="bootstrap", fit=garch_fit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="returns is required"):
        R.garch_var(None)


# ----------------------------------------------------------------- rolling


KW: list[tuple[str, dict[str, Any]]] = [
    ("var", {"level": 0.95}),
    ("var", {"level": 0.99, "method": "parametric"}),
    ("var", {"level": 0.975, "method": "cornish_fisher"}),
    ("cvar", {"level": 0.9}),
    ("cvar", {"level": 0.99, "method": "parametric"}),
    ("cvar", {"level": 0.95, "method": "cornish_fisher"}),
    ("sharpe", {"rf": 0.02}),
    ("sortino", {"periods": 52}),
    ("omega", {"threshold": 0.03}),
    ("calmar", {}),
    ("max_drawdown", {}),
]


@pytest.mark.parametrize(("name", "kw"), KW, ids=[f"{n}-{i}" for i, (n, _) in enumerate(KW)])
def test_rolling_equals_scalar_loop(name: str, kw: dict[str, Any]) -> None:
    r = _ret("skewed_monthly")
    w = 20
    fn = getattr(R, name)
    got = R.rolling(cast(R.RollingMetric, name), r, window=w, **kw)
    assert got.shape == r.shape and np.isnan(got[: w - 1]).all()
    loop = np.array([fn(r[i - w + 1 : i + 1], **kw) for i in range(w - 1, r.size)])
    if name == "max_drawdown":
        loop = np.array([d.max_drawdown for d in loop])
    np.testing.assert_allclose(got[w - 1 :], loop, rtol=1e-12, atol=1e-15, equal_nan=True)
    # the function object selects the same vectorised kernel
    np.testing.assert_array_equal(R.rolling(fn, r, window=w, **kw), got)


def test_rolling_chunking_and_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _ret("normal_daily")
    full = R.rolling("cvar", r, window=30, level=0.95)
    monkeypatch.setattr(R, "_MAX_CHUNK_ELEMENTS", 100)  # 3 windows a chunk
    np.testing.assert_array_equal(R.rolling("cvar", r, window=30, level=0.95), full)
    short = R.rolling("sharpe", r[:10], window=63)
    assert short.shape == (10,) and np.isnan(short).all()
    gen = R.rolling(lambda x, k: float(x.sum() * k), r[:6], window=3, k=2.0)
    np.testing.assert_allclose(gen[2:], 2 * np.convolve(r[:6], np.ones(3), "valid"))
    assert np.isnan(gen[:2]).all()


def test_rolling_validation() -> None:
    r = _ret("short_weekly")
    with pytest.raises(ValueError, match="window must be >= 2"):
        R.rolling("var", r, window=1)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        R.rolling("var", r, window=0)
    with pytest.raises(ValueError, match="unknown metric"):
        R.rolling("kelly", r)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        R.rolling("var", r[:5], window=10, level=2.0)  # checked even when too short


def test_rolling_garch_generic_callable(garch_returns: np.ndarray) -> None:
    r = garch_returns[:252]
    out = R.rolling(R.garch_var, r, window=250, level=0.99)
    assert np.isnan(out[:249]).all() and np.isfinite(out[249:]).all()
    assert out[-1] == pytest.approx(R.garch_var(r[-250:], 0.99), rel=1e-12)


# ----------------------------------------------------------------- validation, edge cases


@pytest.mark.parametrize(
    "fn",
    [R.var, R.cvar, R.sharpe, R.sortino, R.omega, R.calmar, R.max_drawdown],
    ids=lambda f: f.__name__,
)
def test_input_validation(fn: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="returns is empty"):
        fn([])
    with pytest.raises(ValueError, match="returns contains 2 non-finite values"):
        fn([0.01, np.nan, 0.02, np.inf])
    with pytest.raises(ValueError, match=r"returns contains 1 non-finite value$"):
        fn([0.01, -np.inf, 0.02])
    with pytest.raises(ValueError, match="1-D"):
        fn([[0.01, 0.02], [0.0, 0.01]])
    with pytest.raises(ValueError, match="returns must be a 1-D array of numbers"):
        fn(["a", "b"])


@pytest.mark.parametrize("fn", [R.var, R.cvar, R.sharpe, R.sortino, R.omega])
def test_too_short(fn: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="returns has 1 observations; at least 2"):
        fn([0.01])


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5, math.nan, "high"])
@pytest.mark.parametrize("fn", [R.var, R.cvar])
def test_bad_level(fn: Callable[..., Any], level: Any) -> None:
    with pytest.raises(ValueError, match="level must be"):
        fn(HAND, level=level)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        R.var(HAND, 0.99, "monte_carlo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="periods"):
        R.sharpe(HAND, periods=0)
    with pytest.raises(ValueError, match="rf must be"):
        R.sortino(HAND, rf=-1.0)
    with pytest.raises(ValueError, match="threshold must be"):
        R.omega(HAND, threshold=math.inf)
    with pytest.raises(ValueError, match="periods"):
        R.calmar(HAND, periods=True)


def test_constant_series_no_warnings() -> None:
    """RuntimeWarnings are errors under pytest: degenerate inputs must stay quiet."""
    c = np.full(30, 0.001)
    for method in ("historical", "parametric", "cornish_fisher"):
        assert R.var(c, 0.99, method) == pytest.approx(-0.001)
        assert R.cvar(c, 0.99, method) == pytest.approx(-0.001)
    assert math.isnan(R.sharpe(c))
    assert math.isnan(R.sortino(c))  # no negative excess return
    assert math.isnan(R.omega(c, threshold=0.0))  # nothing below the threshold
    assert R.sortino(c, rf=0.5) < 0  # all excess returns negative
    assert math.isnan(R.calmar([-1.5, 0.1]))  # negative wealth: CAGR undefined
    assert np.isnan(R.rolling("cvar", np.zeros(10), window=5, method="cornish_fisher")).sum() == 4


# ----------------------------------------------------------------- properties

finite = st.floats(-0.5, 0.5, allow_nan=False, allow_subnormal=False)
samples = st.lists(finite, min_size=5, max_size=80).map(np.array)


@settings(max_examples=60, deadline=None)
@given(samples, st.sampled_from([0.8, 0.95, 0.99]), st.floats(-0.05, 0.05), st.floats(0.1, 10))
def test_var_translation_and_scale(r: np.ndarray, level: float, c: float, k: float) -> None:
    """VaR(k r + c) = k VaR(r) - c for every method (location-scale equivariance);
    CVaR >= VaR for historical and Gaussian; modified ES >= modified VaR."""
    for method in ("historical", "parametric", "cornish_fisher"):
        v = R.var(r, level, method)
        v2 = R.var(k * r + c, level, method)
        assert v2 == pytest.approx(k * v - c, rel=1e-7, abs=1e-9)
        assert R.cvar(r, level, method) >= v - 1e-12


@settings(max_examples=60, deadline=None)
@given(samples)
def test_drawdown_properties(r: np.ndarray) -> None:
    d = R.max_drawdown(r)
    assert -1.5 <= d.max_drawdown <= 0.0
    assert d.longest_duration >= d.duration >= 0
    if d.start is not None:
        assert d.trough is not None and d.start <= d.trough
        assert d.recovery is None or d.recovery > d.trough
        assert d.duration == (d.recovery if d.recovery is not None else r.size) - d.start
    assert R.rolling("max_drawdown", r, window=r.size)[-1] == d.max_drawdown

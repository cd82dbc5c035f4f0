"""Risk-metric rows: a backfill gives the same numbers as single sessions, with few GARCH fits."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from portfolio_pipeline.analytics import performance
from portfolio_pipeline.config.pricing import RiskSettings
from portfolio_pipeline.quant import risk_metrics as rm

N = 300
DAYS = [date(2017, 1, 2) + timedelta(days=i) for i in range(N)]
RNG = np.random.default_rng(7)
TWR = RNG.standard_t(5, N) * 0.01
SERIES = pd.DataFrame({
    "session_date": DAYS,
    "twr": np.r_[0.0, TWR[1:]],
    "nlv": 1e6 * np.cumprod(1 + np.r_[0.0, TWR[1:]]),
    "prev_nlv": [None, *(1e6 * np.cumprod(1 + np.r_[0.0, TWR[1:]]))[:-1]],
})
SETTINGS = RiskSettings(garch_refit_sessions=21)


def _values(rows: list[dict]) -> dict[tuple, float]:
    return {(r["session_date"], r["window"], r["metric"]): r["value"] for r in rows}


def test_backfill_equals_single_sessions_and_refits_rarely(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fit = performance.fit_garch

    def counting_fit(returns: np.ndarray, dist: str = "t") -> object:
        calls.append(len(returns))
        return real_fit(returns, dist=dist)  # type: ignore[arg-type]

    monkeypatch.setattr(performance, "fit_garch", counting_fit)
    window = DAYS[-40:]
    batch = _values(performance.risk_metric_rows(window, SERIES, SETTINGS, ("*", "*")))
    assert len(calls) <= 3  # 40 sessions: refits at multiples of 21 returns only
    single = {}
    for day in window[::13]:
        single.update(_values(performance.risk_metric_rows([day], SERIES, SETTINGS, ("*", "*"))))
    for key, value in single.items():
        assert batch[key] == pytest.approx(value, rel=1e-10, nan_ok=True)


def test_values_match_the_kernel() -> None:
    day = DAYS[-1]
    got = _values(performance.risk_metric_rows([day], SERIES, SETTINGS, ("*", "*")))
    r = SERIES["twr"].to_numpy()[1:]
    assert got[(day, "full", "var_99_historical")] == pytest.approx(rm.var(r, 0.99, "historical"))
    assert got[(day, "rolling_63", "cvar_95_cornish_fisher")] == pytest.approx(rm.cvar(r[-63:], 0.95, "cornish_fisher"))
    assert got[(day, "full", "sharpe")] == pytest.approx(rm.sharpe(r))
    assert got[(day, "full", "max_drawdown")] == pytest.approx(rm.max_drawdown(r).max_drawdown)
    # on a refit day the GARCH number is the kernel's own fit
    n = 294  # 14 * 21 returns
    fit_day = DAYS[n]
    refit = _values(performance.risk_metric_rows([fit_day], SERIES, SETTINGS, ("*", "*")))
    assert refit[(fit_day, "full", "var_99_garch_t")] == pytest.approx(rm.garch_var(r[:n], 0.99), rel=1e-8)
    assert math.isfinite(got[(day, "full", "var_99_garch_t")])


def test_too_little_history_gives_no_rows() -> None:
    assert performance.risk_metric_rows([DAYS[5]], SERIES, SETTINGS, ("*", "*")) == []


def test_value_usd_only_for_money_metrics() -> None:
    """Issue 14, item 4 (hand computation): value_usd = value x NLV of the session for VaR,
    CVaR, max and current drawdown; NaN for durations, flags and ratios (the demo showed a
    max_drawdown_duration of $56,650,126)."""
    day = DAYS[-1]
    rows = performance.risk_metric_rows([day], SERIES, SETTINGS, ("*", "*"))
    nlv = float(SERIES["nlv"].iloc[-1])
    by = {(r["window"], r["metric"]): r for r in rows if r["window"] == "full"}
    for metric in ("var_99_historical", "cvar_95_cornish_fisher", "max_drawdown", "current_drawdown"):
        r = by[("full", metric)]
        assert r["value_usd"] == pytest.approx(r["value"] * nlv, rel=1e-15)
    for metric in ("max_drawdown_duration", "max_drawdown_recovered", "longest_drawdown_duration",
                   "max_drawdown_recovery_sessions", "sharpe", "sortino", "omega", "calmar"):
        assert math.isnan(by[("full", metric)]["value_usd"]), metric
    assert {m for _, m in by if performance.is_money_metric(m)} >= {"var_95_garch_t", "cvar_99_garch_t"}

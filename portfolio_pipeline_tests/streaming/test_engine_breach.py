"""Engine (incremental vs full revaluation twin), bad input, breach hysteresis."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from portfolio_pipeline.config.streaming import BreachSettings
from portfolio_pipeline.domain.limits import LimitCheck
from portfolio_pipeline_tests.streaming.helpers import T0, engine
from streaming_service.breach import BREACH_CLEARED, LIMIT_BREACH, BreachDetector
from streaming_service.engine import BadTickError, Tick, UnknownContractError


def test_incremental_matches_full_revaluation() -> None:
    """The twin reprices everything each tick; the incremental engine leaves untouched
    groups at the time of their last tick, so only seconds of theta drift differ."""
    fast, slow = engine(True), engine(False)
    rng = np.random.default_rng(1)
    for k in range(200):
        sym = ["SPX", "NDX", "VIX", "VIX3M"][k % 4]
        base = {"SPX": 2700.0, "NDX": 6800.0, "VIX": 25.0, "VIX3M": 22.0}[sym]
        tick = Tick(sym, T0 + timedelta(seconds=5 * k), base * float(np.exp(rng.normal(0, 0.01))))
        a, b = fast.on_tick(tick), slow.on_tick(tick)
        for name in ("nlv", "beta_weighted_dollar_delta", "dollar_gamma_1pct", "vega_per_point", "theta_per_day"):
            assert math.isclose(getattr(a.risk, name), getattr(b.risk, name), rel_tol=1e-5, abs_tol=1e-6)


def test_live_vix_reaches_the_limits() -> None:
    e = engine()
    calm = e.on_tick(Tick("VIX", T0, 12.0))
    crisis = e.on_tick(Tick("VIX", T0 + timedelta(seconds=1), 38.0))
    assert calm.regime.name == "calm" and crisis.regime.name == "crisis"
    assert all(c.vix == 38.0 and c.regime == "crisis" for c in crisis.checks)
    d_calm = next(c for c in calm.checks if c.metric == "vega").limit
    d_crisis = next(c for c in crisis.checks if c.metric == "vega").limit
    assert d_crisis < d_calm


@pytest.mark.parametrize(
    ("tick", "error"),
    [
        (Tick("SPX", T0, float("nan")), BadTickError),
        (Tick("SPX", T0, -5.0), BadTickError),
        (Tick("SPX", T0.replace(tzinfo=None), 2700.0), BadTickError),
        (Tick("SPX", T0, "abc"), BadTickError),  # type: ignore[arg-type]
        (Tick("TSLA", T0, 200.0), UnknownContractError),
    ],
)
def test_bad_ticks_raise_and_change_nothing(tick: Tick, error: type[Exception]) -> None:
    e = engine()
    before = e.risk_snapshot()
    with pytest.raises(error):
        e.on_tick(tick)
    assert e.risk_snapshot() == before


def _check(u: float, metric: str = "beta_weighted_delta") -> LimitCheck:
    return LimitCheck("DEMO-001", metric, u * 0.5, 0.5, u, "crisis", 30.0, 25.0)  # type: ignore[arg-type]


def test_hovering_at_the_edge_fires_once_and_clears_once() -> None:
    det = BreachDetector(BreachSettings(debounce_ticks=3, hysteresis=0.05, cooldown_seconds=600))
    series = [0.9, 1.01, 0.99, 1.02, 1.01, 1.03] + [0.99, 1.01, 0.98, 1.02] * 20 + [0.9, 0.9, 0.9] + [0.99, 1.01] * 10
    out = []
    for k, u in enumerate(series):
        out += det.update(T0 + timedelta(seconds=k), [_check(u)])
    kinds = [s.kind for s in out]
    assert kinds == [LIMIT_BREACH, BREACH_CLEARED]
    fired = out[0]
    assert fired.payload()["vix"] == 30.0 and fired.payload()["regime"] == "crisis"
    assert fired.payload()["limit"] == 0.5 and fired.payload()["value"] == pytest.approx(0.5 * 1.03)


def test_cooldown_delays_a_new_breach() -> None:
    det = BreachDetector(BreachSettings(debounce_ticks=1, hysteresis=0.05, cooldown_seconds=60))
    ts = T0
    assert [s.kind for s in det.update(ts, [_check(1.2)])] == [LIMIT_BREACH]
    assert [s.kind for s in det.update(ts + timedelta(seconds=1), [_check(0.5)])] == [BREACH_CLEARED]
    assert det.update(ts + timedelta(seconds=10), [_check(1.2)]) == []  # in cooldown
    assert [s.kind for s in det.update(ts + timedelta(seconds=62), [_check(1.2)])] == [LIMIT_BREACH]

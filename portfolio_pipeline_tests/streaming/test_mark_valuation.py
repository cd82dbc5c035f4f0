"""Valuation at the mark: the live engine values quoted options at the mid, the rest at
model (flagged); the model vs market check names the contract."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest

from portfolio_pipeline.domain.positions import AccountSnapshot, Quote
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.marketdata.valuation import MarkTolerance, mark_problems, market_mark
from portfolio_pipeline.quant import pricing
from portfolio_pipeline_tests.stubs import option, platform_config, position
from streaming_service.engine import Engine, EngineInputs, Tick

T0 = datetime(2018, 2, 5, 14, 30, tzinfo=UTC)
SETTLE = datetime(2018, 3, 16, 13, 30, tzinfo=UTC)  # SPX monthly AM settlement: 09:30 New York, EDT since 11 March
T = (SETTLE - T0).total_seconds() / (365.0 * 86400.0)  # 39 days
R, Q = 0.014, 0.019


def _model(strike: float, spot: float, vol: float) -> float:
    """BSM closed form (quant.pricing, checked against QuantLib in quant/test_pricing.py)."""
    return float(pricing.price("P", spot, strike, T, R, Q, vol)[()])


def test_market_mark_rules() -> None:
    assert market_mark(19.0, 19.6) == (pytest.approx(19.3), "mid")
    assert market_mark(0.0, 0.40, 0.35) == (0.35, "last")  # one-sided: last inside the spread
    assert market_mark(0.0, 0.40, 0.55) == (None, "model")  # last outside the spread
    assert market_mark(2.0, 1.5) == (None, "model")  # crossed
    assert market_mark(float("nan"), 1.5) == (None, "model")


def test_engine_values_quoted_options_at_the_mid_and_the_rest_at_model() -> None:
    quoted = option("SPX", 2600.0, "P", date(2018, 3, 16))
    unquoted = option("SPX", 2500.0, "P", date(2018, 3, 16))
    positions = [position(quoted, -10, mark=20.0, underlying_price=2762.0, as_of=T0),
                 position(unquoted, 10, mark=9.0, underlying_price=2762.0, as_of=T0)]
    quotes = [
        Quote("demo", quoted, T0, bid=19.0, ask=19.6, mark=19.3, iv=0.20),
        Quote("demo", unquoted, T0, bid=0.0, ask=0.0, mark=9.0, iv=0.25),  # no market: model
    ]
    nlv0 = 600_000.0
    account = AccountSnapshot("demo", "DEMO-001", T0, nlv0, nlv0, 100_000.0, 150_000.0, nlv0 - 150_000.0, nlv0)
    cfg = platform_config()
    e = Engine(EngineInputs(account, positions, quotes, vix=17.3, vix3m=18.1, rate=R,
                            dividend_yields={"SPX": Q}), cfg.instruments, RegimeService(cfg.risk_matrix))
    assert e.valued_at_model == frozenset({unquoted.key})
    model_2600 = _model(2600.0, 2762.0, 0.20)
    model_2500 = _model(2500.0, 2762.0, 0.25)
    assert abs(model_2600 - 19.3) > 1.0  # the broker's vol does not reproduce the mid
    # start: the quoted put at its mid (19.3 vs the broker's 20.0 mark), the other at model
    expected0 = nlv0 + (19.3 - 20.0) * -10 * 100 + (model_2500 - 9.0) * 10 * 100
    assert e.risk_snapshot().nlv == pytest.approx(expected0, rel=1e-12)
    # a spot move: the quoted put moves by the model's change from its mid
    state = e.on_tick(Tick("SPX", T0 + timedelta(microseconds=0), 2700.0))
    expected1 = (nlv0 + (19.3 + _model(2600.0, 2700.0, 0.20) - model_2600 - 20.0) * -10 * 100
                 + (_model(2500.0, 2700.0, 0.25) - 9.0) * 10 * 100)
    assert state.risk.nlv == pytest.approx(expected1, rel=1e-9)


def test_model_vs_market_flags_gap_iv_stale_and_crossed_naming_the_contract() -> None:
    close = datetime(2018, 2, 5, 21, 0, tzinfo=UTC)
    put = option("SPX", 2600.0, "P", date(2018, 3, 16))
    spot, vol = 2762.0, 0.20
    model_price = _model(2600.0, spot, vol)
    greeks_row = {"broker": "demo", "position_key": put.key, "sec_type": "OPT", "mark": 20.0,
                  "model_price": model_price, "vol": vol, "spot": spot, "time_to_expiry": T,
                  "rate": R, "dividend_yield": Q, "model": "bsm"}
    # the market at the model price (mid = model): nothing flagged
    fair = {"source": "demo", "instrument_key": put.key, "bid": model_price - 0.1,
            "ask": model_price + 0.1, "last": None, "strike": 2600.0, "right": "P",
            "as_of": close - timedelta(minutes=1)}
    assert mark_problems([greeks_row], [fair], close, MarkTolerance()) == []
    # a 41% gap: mid = 1.41 x model -> flagged in price and in vol points
    rich = {**fair, "bid": 1.41 * model_price - 0.1, "ask": 1.41 * model_price + 0.1,
            "as_of": close - timedelta(hours=2)}
    problems = mark_problems([greeks_row], [rich], close, MarkTolerance(iv_points=2.0))
    implied = float(pricing.implied_vol(1.41 * model_price, "P", spot, 2600.0, T, R, Q)[()])
    assert implied > vol + 0.02  # the richer put implies a higher vol
    assert [p.split(":")[0] for p in problems] == [put.key] * 3
    assert "stale quote" in problems[0]
    assert f"({(1.41 * model_price - model_price) / (1.41 * model_price):+.0%} gap)" in problems[1]
    assert f"{(vol - implied) * 100:+.1f} pts" in problems[2]
    crossed = {**fair, "bid": model_price + 0.2, "ask": model_price - 0.2}
    # no good quote: the broker's mark stands in (here equal to the model price)
    [c] = mark_problems([{**greeks_row, "mark": model_price}], [crossed], close, MarkTolerance())
    assert c.startswith(f"{put.key}: crossed quote")
    assert not math.isnan(model_price)

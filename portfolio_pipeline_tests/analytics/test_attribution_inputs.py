"""Inputs of pnl_attribution: execution cash per session, average prices, underlying closes;
risk metrics per session and scope."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from portfolio_pipeline.analytics.attribution import (
    average_prices,
    execution_cash_by_session,
    implied_cash,
    underlying_closes,
)
from portfolio_pipeline.analytics.beta import reference_close
from portfolio_pipeline.analytics.performance import risk_metric_rows, risk_metrics_by_session
from portfolio_pipeline.config.pricing import RiskSettings
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.storage.frames import (
    MarketFrame,
    PositionClose,
    PositionsFrame,
    ReturnsFrame,
)
from portfolio_pipeline_tests.storage.builders import AS_OF, DAY, position_row, stock_row

SPY = Contract(underlying="SPY", sec_type="STK")


def _fill(exec_id: str, ts: datetime, quantity: float, price: float, commission: float = 0.0) -> Execution:
    return Execution("demo", "A", exec_id, SPY, ts, quantity, price, 1.0, commission=commission)


def test_execution_cash_is_summed_per_session_and_position() -> None:
    monday, tuesday = date(2018, 2, 5), date(2018, 2, 6)

    def after(ts: datetime) -> date:  # before 21:00 UTC -> that day's session, else the next
        return ts.date() if ts.hour < 21 else ts.date() + timedelta(days=1)

    fills = [_fill("1", datetime(2018, 2, 5, 15, tzinfo=UTC), 10.0, 100.0, 1.0),   # -1,001
             _fill("2", datetime(2018, 2, 5, 18, tzinfo=UTC), -4.0, 101.0),        # +404
             _fill("3", datetime(2018, 2, 5, 22, tzinfo=UTC), 1.0, 99.0)]          # -99, next session
    cash = execution_cash_by_session(fills, after)
    assert cash == {monday: {("demo", "A", "SPY|STK"): pytest.approx(-597.0)},
                    tuesday: {("demo", "A", "SPY|STK"): pytest.approx(-99.0)}}


def test_average_prices_and_underlying_closes() -> None:
    positions = PositionsFrame.from_rows([position_row("SPX P2500"), stock_row("SPY")])
    assert average_prices(positions) == {("demo", "DU123", "SPX P2500"): 12.35, ("demo", "DU123", "SPY"): 270.1}
    quote = {"session_date": DAY, "source": "demo", "expiry": None, "strike": None, "right": None, "last": None,
             "underlying_price": None, "iv": None, "delta": None, "gamma": None, "vega": None, "theta": None,
             "as_of": AS_OF}
    market = MarketFrame.from_rows([
        {**quote, "instrument_key": "SPX", "underlying": "SPX", "sec_type": "IND", "bid": 1, "ask": 1, "mark": 2648.9},
        {**quote, "instrument_key": "SPY", "underlying": "SPY", "sec_type": "STK", "bid": 1, "ask": 1, "mark": 263.9},
        {**quote, "instrument_key": "SPX P2500", "underlying": "SPX", "sec_type": "OPT", "expiry": date(2018, 3, 16),
         "strike": 2500.0, "right": "P", "bid": 1, "ask": 1, "mark": 12.0},
    ])
    assert underlying_closes(market) == {"SPX": 2648.9, "SPY": 263.9}  # the option is no close


def test_risk_metrics_by_session_groups_scopes_like_one_scope_calls() -> None:
    rng = np.random.default_rng(3)
    days = [date(2017, 1, 2) + timedelta(days=i) for i in range(60)]
    frames = []
    for broker, account in (("*", "*"), ("demo", "A")):
        twr = np.r_[0.0, rng.normal(0, 0.01, 59)]
        nlv = 1e6 * np.cumprod(1 + twr)
        frames.append(pd.DataFrame({"session_date": days, "broker": broker, "account_id": account, "twr": twr,
                                    "nlv": nlv, "prev_nlv": [None, *nlv[:-1]]}))
    zeros = dict.fromkeys(("external_flow", "income", "pnl", "growth_index", "high_water_mark", "drawdown"), 0.0)
    history = ReturnsFrame.from_frame(  # any order
        pd.concat(frames[::-1], ignore_index=True).assign(**zeros, broker_daily_pnl=None))
    settings = RiskSettings(min_observations=20)
    sessions = days[-3:]
    out = risk_metrics_by_session(sessions, history, settings)
    assert list(out) == sessions
    for day in sessions:
        expected = [*risk_metric_rows([day], frames[0], settings, ("*", "*")),
                    *risk_metric_rows([day], frames[1], settings, ("demo", "A"))]
        assert len(out[day]) == len(expected) > 0
        assert [(r["broker"], r["window"], r["metric"]) for r in out[day]] == [
            (r["broker"], r["window"], r["metric"]) for r in expected]
        for got, want in zip(out[day], expected, strict=True):
            assert got["value"] == pytest.approx(want["value"], nan_ok=True)
    assert risk_metrics_by_session(sessions, ReturnsFrame.from_rows([]), settings) == {d: [] for d in sessions}


PUT = "SPX|OPT|SPXW|2018-02-02|2600|P"


def test_implied_cash_without_executions() -> None:
    friday, monday = date(2018, 2, 2), date(2018, 2, 5)
    short_put = PositionClose("SPX", quantity=-2.0, multiplier=100.0, mark=5.0, market_value=-1_000.0)
    # expired on Friday, SPX closed at 2,581: the short put pays (2,600 - 2,581) x 2 x 100 = 3,800
    assert implied_cash(monday, PUT, short_put, None, None, {"SPX": 2_581.0}) == pytest.approx(-3_800.0)
    # expired out of the money: settles at 0
    assert implied_cash(monday, PUT, short_put, None, None, {"SPX": 2_700.0}) == 0.0
    # gone before expiry: taken as closed at the prior value
    assert implied_cash(date(2018, 2, 1), PUT, short_put, None, None, {"SPX": 2_581.0}) == -1_000.0
    # new: sold at the average price 6 (else the mark 5)
    assert implied_cash(friday, PUT, None, short_put, 6.0, {}) == pytest.approx(1_200.0)
    assert implied_cash(friday, PUT, None, short_put, None, {}) == pytest.approx(1_000.0)
    # held, one more sold at today's mark 5: +500
    held = dataclasses.replace(short_put, quantity=-1.0)
    assert implied_cash(friday, PUT, held, short_put, None, {}) == pytest.approx(500.0)


def test_reference_close() -> None:
    closes = pd.DataFrame({"SPX": [2_762.13, 2_648.94]}, index=pd.to_datetime(["2018-02-02", "2018-02-05"]))
    assert reference_close(closes, "spx", date(2018, 2, 5)) == 2_648.94
    assert math.isnan(reference_close(closes, "SPX", date(2018, 2, 6)))
    assert math.isnan(reference_close(closes, "NDX", date(2018, 2, 5)))

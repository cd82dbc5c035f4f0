"""Strategy P&L of one session on a hand-checked one-strategy book."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from portfolio_pipeline.analytics.strategy_performance import (
    StrategySession,
    direct_pnl,
    entry_fallback_prices,
    performance_rows,
)
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.domain.strategies.pnl import Trade

PREV, DAY = date(2018, 2, 2), date(2018, 2, 5)
ACCOUNT = ("demo", "A")
KEY = "SPY|STK"  # Contract(underlying="SPY", sec_type="STK").key
LEG = {"position_key": KEY, "quantity": 100.0, "multiplier": 1.0, "underlying": "SPY", "sec_type": "STK",
       "expiry": None, "strike": None, "right": None, "trading_class": None}


def _group(day: date, quantity: float) -> dict[str, Any]:
    return {"session_date": day, "broker": "demo", "account_id": "A", "strategy_id": "S1", "underlying": "SPY",
            "strategy_type": "stock", "status": "open", "opened_on": PREV,
            "legs": [{**LEG, "quantity": quantity}]}


def _position(quantity: float, avg: float, mark: float) -> dict[str, Any]:
    return {"quantity": quantity, "avg_price": avg, "mark": mark, "multiplier": 1.0, "underlying_price": None}


def _session(positions: dict[str, Any], *, quantity: float = 100.0) -> StrategySession:
    return StrategySession(
        day=DAY, prev_day=PREV,
        groups={ACCOUNT: [_group(DAY, quantity)]}, prev_groups={ACCOUNT: [_group(PREV, 100.0)]},
        prev_perf={("demo", "A", "S1"): {"entry_prices": {KEY: 90.0}, "cumulative_pnl": 1_000.0,
                                         "realized_pnl": 0.0, "commissions": 0.0,
                                         "max_adverse_excursion": -200.0}},
        positions={("demo", "A", KEY): positions},
        prev_positions={("demo", "A", KEY): _position(100.0, 90.0, 100.0)},
        greeks={("demo", "A", KEY): {"quantity": quantity, "share_delta": quantity, "dollar_delta": quantity * 101.0,
                                       "dollar_gamma_1pct": 0.0, "theta_per_day": 0.0, "vega_per_point": 0.0}},
        attribution={("demo", "A", KEY): {"delta_pnl": 90.0, "gamma_pnl": 0.0, "theta_pnl": 0.0, "vega_pnl": 0.0,
                                            "vanna_pnl": 0.0, "volga_pnl": 0.0, "unexplained": 10.0}},
        quotes={},
    )


def _session_of(e: Execution) -> date:
    return e.ts.date()


def test_a_held_strategy_earns_the_mark_move() -> None:
    result = performance_rows(_session(_position(100.0, 90.0, 101.0)), {}, _session_of)
    (row,) = result.rows
    # 100 shares x (101 - 100) = 100 today; 1,000 before -> 1,100 cumulative, all unrealized
    assert row["daily_pnl"] == pytest.approx(100.0)
    assert row["cumulative_pnl"] == pytest.approx(1_100.0)
    assert row["unrealized_pnl"] == pytest.approx(1_100.0)
    assert row["max_adverse_excursion"] == -200.0
    assert row["market_value"] == pytest.approx(10_100.0)
    assert row["dollar_delta"] == pytest.approx(10_100.0) and row["greeks_source"] == "position_greeks"
    assert row["delta_pnl"] == 90.0 and row["unexplained_pnl"] == 10.0
    assert result.account_pnl[ACCOUNT] == pytest.approx(100.0)


def test_an_added_lot_counts_from_its_fill() -> None:
    fill = Execution("demo", "A", "x1", Contract(underlying="SPY", sec_type="STK"),
                     datetime(2018, 2, 5, 15, tzinfo=UTC), 50.0, 100.5, 1.0, commission=1.0)
    result = performance_rows(_session(_position(150.0, 93.5, 101.0), quantity=150.0), {ACCOUNT: [fill]}, _session_of)
    # old 100: +100; new 50 bought at 100.5, marked 101: +25; minus the $1 commission = 124
    assert result.account_pnl[ACCOUNT] == pytest.approx(124.0)
    assert result.rows[0]["daily_pnl"] == pytest.approx(124.0)


def test_direct_pnl_and_fallback_entry_hand_checked() -> None:
    before, after = {"S": {"X": 2.0}}, {"S": {"X": 3.0}}
    trades = {"X": [Trade(1.0, 10.0, 0.5)]}
    # 100 x (3 x 12 - 2 x 11) - (100 x 1 x 10 + 0.5) = 1,400 - 1,000.5
    assert direct_pnl(before, after, {"X": 11.0}, {"X": 12.0}, {"X": 100.0}, trades) == pytest.approx(399.5)
    session = _session(_position(150.0, 93.5, 101.0))
    # 150 at 93.5 minus 100 at 90: the added 50 cost (14,025 - 9,000) / 50 = 100.5
    assert entry_fallback_prices(session, ACCOUNT, [KEY], {KEY: 101.0}, {KEY: 100.0}) == {
        KEY: pytest.approx(100.5)}

"""portfolio_returns rows from typed account and return frames, hand-checked."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from portfolio_pipeline.analytics.performance import return_rows
from portfolio_pipeline.storage.frames import AccountsFrame, ReturnsFrame

PREV, DAY = date(2018, 2, 2), date(2018, 2, 5)
AS_OF = datetime(2018, 2, 5, 21, tzinfo=UTC)


def _acct(day: date, account: str, nlv: float, broker_pnl: float | None) -> dict[str, object]:
    return {"session_date": day, "broker": "demo", "account_id": account, "currency": "USD", "nlv": nlv,
            "cash": 0.0, "init_margin": 0.0, "maint_margin": 0.0, "excess_liquidity": 0.0, "buying_power": 0.0,
            "broker_daily_pnl": broker_pnl, "as_of": AS_OF}


def _ret(broker: str, account: str, growth: float, hwm: float) -> dict[str, object]:
    return {"session_date": PREV, "broker": broker, "account_id": account, "nlv": 100.0, "prev_nlv": 100.0,
            "external_flow": 0.0, "income": 0.0, "pnl": 0.0, "twr": 0.0, "growth_index": growth,
            "high_water_mark": hwm, "drawdown": growth / hwm - 1.0, "broker_daily_pnl": None}


def test_return_rows_hand_checked() -> None:
    today = AccountsFrame.from_rows([_acct(DAY, "B", 50.0, None), _acct(DAY, "A", 110.0, 4.0)])
    previous = AccountsFrame.from_rows([_acct(PREV, "A", 100.0, None)])
    flows = pd.DataFrame([{"broker": "demo", "account_id": "A", "session_date": DAY, "external": True, "amount": 5.0},
                          {"broker": "demo", "account_id": "A", "session_date": DAY, "external": False, "amount": 1.0}])
    carry = ReturnsFrame.from_rows([_ret("demo", "A", 1.1, 1.2), _ret("*", "*", 1.1, 1.2)])

    a, b, book = return_rows(DAY, today, previous, flows, carry)

    # A: deposit 5 at the close, dividend 1 is income: pnl = 110 - 100 - 5 = 5, twr = 105 / 100 - 1 = 5 %
    assert (a["account_id"], a["pnl"], a["external_flow"], a["income"]) == ("A", pytest.approx(5.0), 5.0, 1.0)
    assert a["twr"] == pytest.approx(0.05)
    assert a["growth_index"] == pytest.approx(1.1 * 1.05) and a["high_water_mark"] == 1.2
    assert a["drawdown"] == pytest.approx(1.155 / 1.2 - 1.0)
    assert a["broker_daily_pnl"] == 4.0
    # B is new: no previous NLV, no return; its NLV is money in for the book
    assert b["prev_nlv"] is None and b["pnl"] == 0.0 and b["twr"] == 0.0 and b["growth_index"] == 1.0
    assert b["broker_daily_pnl"] is None
    # book: NLV 160 from 100 with flows 5 + 50: pnl 5, twr (160 - 55) / 100 - 1 = 5 %
    assert (book["broker"], book["nlv"], book["prev_nlv"]) == ("*", 160.0, 100.0)
    assert book["external_flow"] == pytest.approx(55.0) and book["twr"] == pytest.approx(0.05)
    assert book["broker_daily_pnl"] is None  # B reported none: no book figure


def test_no_accounts_no_rows() -> None:
    empty = AccountsFrame.from_rows([])
    assert return_rows(DAY, empty, empty, pd.DataFrame(), ReturnsFrame.from_rows([])) == []
    assert math.isnan(ReturnsFrame.from_rows([_ret("*", "*", 1.0, 1.0) | {"prev_nlv": None}]).prev_nlv[0])

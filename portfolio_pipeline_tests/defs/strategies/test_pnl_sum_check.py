"""The blocking strategy P&L check compares with portfolio_returns (issue 14, item 3).

Oracle: hand-computed account P&L (NLV change net of flows, less income)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from portfolio_pipeline.defs.strategies.checks import pnl_sum_problems

DAY = date(2018, 2, 1)


def _returns(pnl: float, income: float, prev_nlv: float | None) -> pd.DataFrame:
    return pd.DataFrame([{"session_date": DAY, "broker": "demo", "account_id": "A1", "pnl": pnl,
                          "income": income, "prev_nlv": prev_nlv}])


ROWS = [{"broker": "demo", "account_id": "A1", "daily_pnl": -250.54},
        {"broker": "demo", "account_id": "A1", "daily_pnl": -84.15}]


def test_strategies_adding_up_to_the_account_pass() -> None:
    # account: NLV 99,700.31 from 100,000 with 35 of interest income: P&L -299.69 incl. income
    gap, problems = pnl_sum_problems(DAY, ROWS, [("demo", "A1")], _returns(-299.69, 35.0, 100_000.0))
    assert problems == [] and gap < 1e-9


def test_first_session_showing_zero_is_flagged() -> None:
    """The old first session: strategies 0 while the account lost 334.69."""
    zero = [{**r, "daily_pnl": 0.0} for r in ROWS]
    gap, problems = pnl_sum_problems(DAY, zero, [("demo", "A1")], _returns(-334.69, 0.0, 100_000.0))
    assert abs(gap - 334.69) < 1e-9
    assert problems == ["2018-02-01 A1: strategies 0.00 vs account -334.69 (portfolio_returns)"]


def test_missing_returns_row_is_a_problem_and_new_account_is_skipped() -> None:
    _, problems = pnl_sum_problems(DAY, ROWS, [("demo", "A1")], _returns(0.0, 0.0, None).iloc[:0])
    assert problems == ["2018-02-01 A1: no portfolio_returns row to compare with"]
    gap, problems = pnl_sum_problems(DAY, ROWS, [("demo", "A1")], _returns(0.0, 0.0, None))
    assert (gap, problems) == (0.0, [])

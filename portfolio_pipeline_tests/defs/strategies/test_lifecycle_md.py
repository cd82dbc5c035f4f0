"""The lifecycle metadata table is narrow: short headers with units, ratios as percent."""

from __future__ import annotations

from portfolio_pipeline.defs.strategies.assets import lifecycle_md


def test_lifecycle_table_fits_and_reads() -> None:
    row = {"strategy_id": "SPY-20180122-4d5a2483", "strategy_type": "cash_secured_put", "days_in_trade": 14,
           "dte": 11, "pct_max_profit": -11.0608, "pct_max_loss": 0.0453, "pnl_per_day": -535.66,
           "status": "red", "rule": "stop_loss"}
    head, rule, line = lifecycle_md([row]).splitlines()
    assert head.count("|") == rule.count("|") == line.count("|") == 10  # nine columns
    # hand-computed: -11.0608 -> -1106%, 0.0453 -> +5%, -535.66 -> -536
    assert line == ("| SPY-20180122-4d5a2483 | cash_secured_put | 14 | 11 | -1106% | +5% | -536 | red | "
                    "stop_loss |")

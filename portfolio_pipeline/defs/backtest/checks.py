"""Check of the VaR backtest: warns when a model's Basel zone is red."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from portfolio_pipeline.defs.quality import problems_check_result

VAR_BACKTEST = dg.AssetKey("var_backtest")

RED_CHECK = dg.AssetCheckSpec(
    "var_backtest_not_red", asset=VAR_BACKTEST,
    description="Warns when a VaR model and level is in the Basel red zone (too many "
    "exceedances over the trailing 250 sessions) on any session of the run.",
)


def red_check(summary: Iterable[Mapping[str, Any]]) -> dg.AssetCheckResult:
    rows = list(summary)
    red = [f"{r['session_date']} {r['model']} {round(100 * float(r['level']))}%: "
           f"{r['exceedances']} of {r['observations']} (expected {float(r['expected']):.1f}, "
           f"Kupiec p {float(r['kupiec_p'] if r['kupiec_p'] is not None else float('nan')):.3g})"
           for r in rows if r["zone"] == "red"]
    return problems_check_result(RED_CHECK, red, severity=dg.AssetCheckSeverity.WARN,
                                 red=float(len(red)), backtests=float(len(rows)))

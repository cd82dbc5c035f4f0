"""The var_backtest asset and the daily report's exceedance flag (issue 14, item 8).

Oracle: hand-built stored VaR and P&L; exceedances counted by hand; Kupiec p-value from
scipy.stats.chi2 on the hand formula.  The 2018-02-05 numbers are the demo's (the book
lost 28,551 against a 99 % VaR of 11,060)."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from scipy import stats
from sqlalchemy import select

from portfolio_pipeline.defs.backtest.assets import make_backtest_assets
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.reporting.assets import make_report_asset
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.storage import Database, replace_partition
from portfolio_pipeline.storage.tables import (
    monte_carlo_var,
    portfolio_returns,
    risk_metrics,
    var_backtest,
)
from portfolio_pipeline.storage.var_backtest import read_var_exceedances
from portfolio_pipeline_tests.stubs import ephemeral_instance

PARTS = session_partitions(ExchangeCalendar())
D0, D1, D2, D3 = date(2018, 1, 31), date(2018, 2, 1), date(2018, 2, 2), date(2018, 2, 5)
PNL = {D0: None, D1: -5_000.0, D2: -9_000.0, D3: -28_551.0}
VAR99 = {D0: 11_000.0, D1: 8_000.0, D2: 11_060.0}  # historical_full, $ at the close
MC95 = {D0: 4_000.0, D1: 9_500.0, D2: 7_000.0}  # monte_carlo_1d VaR95


def _seed(db: Database) -> None:
    nlv = 1_000_000.0
    with db.begin() as conn:
        for day, pnl in PNL.items():
            replace_partition(conn, portfolio_returns, {"session_date": day}, [{
                "session_date": day, "broker": "*", "account_id": "*", "nlv": nlv,
                "prev_nlv": None if pnl is None else nlv, "external_flow": 0.0, "income": 0.0,
                "pnl": 0.0 if pnl is None else pnl, "twr": 0.0, "growth_index": 1.0,
                "high_water_mark": 1.0, "drawdown": 0.0, "broker_daily_pnl": None}])
        for day, var in VAR99.items():
            replace_partition(conn, risk_metrics, {"session_date": day}, [
                {"session_date": day, "broker": "*", "account_id": "*", "window": "full",
                 "metric": "var_99_historical", "value": var / nlv, "value_usd": var, "observations": 60},
                {"session_date": day, "broker": "*", "account_id": "*", "window": "full",
                 "metric": "sharpe", "value": 1.0, "value_usd": None, "observations": 60},
            ])
            mc_row = {"session_date": day, "broker": "*", "account_id": "*", "group_key": "*",
                      "strategy_id": None, "var_95": MC95[day], "cvar_95": MC95[day] * 1.3,
                      "var_99": MC95[day] * 1.5, "cvar_99": MC95[day] * 1.8, "contribution_95": 0.0,
                      "contribution_99": 0.0, "mean_pnl": 0.0, "std_pnl": 1.0, "n_scenarios": 100,
                      "seed": 1, "regime": "normal", "vol_multiplier": 1.0}
            replace_partition(conn, monte_carlo_var, {"session_date": day}, [
                {**mc_row, "horizon_days": 1}, {**mc_row, "horizon_days": 10, "var_95": 1.0}])


def test_backtest_rows_summary_check_and_report_flag(db_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_HOME", str(tmp_path))
    db = Database(db_url)
    try:
        _seed(db)
        assets = [*make_backtest_assets(PARTS), make_report_asset(PARTS)]
        results: list[Any] = []
        with ephemeral_instance() as instance:
            for day in (D1, D2, D3):
                res = dg.materialize(assets, partition_key=day.isoformat(), instance=instance, resources={
                    "db": DatabaseResource(url=db_url), "platform": PlatformResource(demo_only=True)})
                assert res.success
                results.append(res)
        with db.connect() as conn:
            rows = read_var_exceedances(conn, D1, D3)
            flagged = read_var_exceedances(conn, exceeded_only=True)
            summary = [dict(r) for r in conn.execute(
                select(var_backtest).where(var_backtest.c.session_date == D3)).mappings()]
    finally:
        db.dispose()
    # hand count: VaR99 11,000 / 8,000 / 11,060 against losses 5,000 / 9,000 / 28,551 -> D2, D3;
    # MC VaR95 4,000 / 9,500 / 7,000 -> D1, D3 (the 10-day horizon and the Sharpe row are ignored)
    got = {(r["session_date"], r["model"], r["level"]): bool(r["exceeded"]) for r in rows.to_dict("records")}
    assert got == {
        (D1, "historical_full", 0.99): False, (D2, "historical_full", 0.99): True,
        (D3, "historical_full", 0.99): True, (D1, "monte_carlo_1d", 0.95): True,
        (D2, "monte_carlo_1d", 0.95): False, (D3, "monte_carlo_1d", 0.95): True,
        (D1, "monte_carlo_1d", 0.99): False, (D2, "monte_carlo_1d", 0.99): False,
        (D3, "monte_carlo_1d", 0.99): True,
    }
    d3 = rows[(rows["session_date"] == D3) & (rows["model"] == "historical_full")].iloc[0]
    assert (d3["var_session_date"], d3["var_usd"], d3["pnl_usd"]) == (D2, 11_060.0, -28_551.0)
    assert set(flagged["session_date"]) == {D1, D2, D3}
    by = {(r["model"], r["level"]): r for r in summary}
    hist = by[("historical_full", 0.99)]
    assert (hist["observations"], hist["exceedances"], hist["zone"]) == (3, 2, "red")
    ph = 2 / 3
    lr = -2 * (math.log(0.99) + 2 * math.log(0.01) - math.log(1 - ph) - 2 * math.log(ph))
    assert hist["kupiec_p"] == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-9)
    # the check warns (does not fail the run) on red
    evals = results[-1].get_asset_check_evaluations()
    red = next(e for e in evals if e.check_name == "var_backtest_not_red")
    assert not red.passed and red.severity == dg.AssetCheckSeverity.WARN
    # the daily report of 2018-02-05 flags the exceedance; 2018-02-01 flags the MC VaR95 only
    html3 = (tmp_path / "reports" / "daily_2018-02-05.html").read_text(encoding="utf-8")
    assert "VaR exceeded" in html3 and "-28,551" in html3 and "historical_full VaR99 11,060" in html3
    html1 = (tmp_path / "reports" / "daily_2018-02-01.html").read_text(encoding="utf-8")
    assert "monte_carlo_1d VaR95 4,000" in html1 and "historical_full" not in html1

"""The VaR backtest asset: every stored 1-day VaR model against the next session's P&L."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg
import pandas as pd

from portfolio_pipeline.analytics.var_backtest import exceedance_rows, summary_rows
from portfolio_pipeline.defs.backtest.checks import RED_CHECK, VAR_BACKTEST, red_check
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.metadata import SessionMetadata
from portfolio_pipeline.defs.partitions import partition_dates
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.risk.checks import RETURNS, RISK
from portfolio_pipeline.defs.stress.checks import MONTE_CARLO
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.storage import replace_partition
from portfolio_pipeline.storage.frames import read_frame
from portfolio_pipeline.storage.tables import (
    monte_carlo_var,
    portfolio_returns,
    risk_metrics,
    var_backtest,
    var_exceedances,
)

HISTORY = timedelta(days=400)  # > 250 sessions


def _md(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | level | n | exceedances | expected | Kupiec p | Christoffersen p | zone |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        kp, cp = r["kupiec_p"], r["christoffersen_p"]
        lines.append(f"| {r['model']} | {r['level']:.0%} | {r['observations']} | {r['exceedances']} | "
                     f"{r['expected']:.1f} | {'–' if kp is None else f'{kp:.3f}'} | "
                     f"{'–' if cp is None else f'{cp:.3f}'} | {r['zone']} |")
    return "\n".join(lines)


def make_backtest_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=VAR_BACKTEST,
        deps=[RETURNS, RISK, MONTE_CARLO],
        check_specs=[RED_CHECK],
        description="VaR backtest: each stored 1-day VaR model (risk_metrics per method and "
        "window, Monte Carlo 1-day) at the previous close against the session's book P&L: "
        "per-session exceedance rows (var_exceedances) and, over the trailing 250 sessions, "
        "exceedance counts, Kupiec POF and Christoffersen independence p-values and the Basel "
        "traffic-light zone per model and level (var_backtest).",
        partitions_def=partitions,
        backfill_policy=session_backfill_policy(),
        group_name="risk",
        kinds={"sql"},
    )
    def var_backtest_asset(
        context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        days = partition_dates(context)
        calendar = platform.calendar
        prev = {day: calendar.previous_session(day) for day in days}
        book = {"broker": AGGREGATE, "account_id": AGGREGATE}
        risk = read_frame(db, risk_metrics, list(prev.values()), where=book)
        mc = read_frame(db, monte_carlo_var, list(prev.values()), where={**book, "horizon_days": 1})
        returns = read_frame(db, portfolio_returns, days, where=book)
        history = read_frame(db, var_exceedances, start=days[0] - HISTORY, end=days[-1])
        meta = SessionMetadata(context, days)
        checked: list[dict[str, Any]] = []
        for day in days:
            rows = exceedance_rows(day, prev[day], risk[risk["session_date"] == prev[day]],
                                   mc[mc["session_date"] == prev[day]],
                                   returns[returns["session_date"] == day])
            history = pd.concat([history[history["session_date"] != day],
                                 pd.DataFrame(rows, columns=list(var_exceedances.c.keys()))])
            summary = summary_rows(day, history)
            with db.database.begin() as conn:
                replace_partition(conn, var_exceedances, {"session_date": day}, rows)
                replace_partition(conn, var_backtest, {"session_date": day}, summary)
            checked.extend(summary)
            hit = [r for r in rows if r["exceeded"]]
            meta.record(day, VAR_BACKTEST, {
                "exceeded_models": float(len(hit)),
                "pnl": rows[0]["pnl_usd"] if rows else None,
                "backtest": dg.MetadataValue.md(_md(summary)),
            })
        yield dg.MaterializeResult(asset_key=VAR_BACKTEST, metadata=meta.output_metadata(VAR_BACKTEST))
        yield red_check(checked)

    return [var_backtest_asset]

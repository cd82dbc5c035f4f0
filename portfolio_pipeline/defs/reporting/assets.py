"""The daily HTML report (NLV, drawdown, Greeks, attribution, VaR history, regime, limits)."""


from datetime import timedelta
from typing import Any

import dagster as dg

from portfolio_pipeline.analytics.performance import ALL
from portfolio_pipeline.analytics.report import render_report
from portfolio_pipeline.defs.backtest.checks import VAR_BACKTEST
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.greeks.checks import PORTFOLIO_GREEKS
from portfolio_pipeline.defs.metadata import SessionMetadata
from portfolio_pipeline.defs.partitions import partition_dates
from portfolio_pipeline.defs.progress import tracked
from portfolio_pipeline.defs.resources import DatabaseResource
from portfolio_pipeline.defs.risk.checks import ATTRIBUTION, MARGIN, RETURNS, RISK
from portfolio_pipeline.paths import reports_dir, write_private_text
from portfolio_pipeline.storage.frames import read_frame
from portfolio_pipeline.storage.tables import (
    limit_checks,
    margin_history,
    pnl_attribution,
    portfolio_greeks,
    portfolio_returns,
    risk_metrics,
    var_exceedances,
)

REPORT = dg.AssetKey("daily_report")
HISTORY = timedelta(days=366)


def make_report_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=REPORT,
        deps=[RETURNS, PORTFOLIO_GREEKS, ATTRIBUTION, RISK, MARGIN, VAR_BACKTEST],
        description="Self-contained HTML report per session (inline SVG, works offline) in "
        "PORTFOLIO_HOME/reports/daily_<date>.html.",
        partitions_def=partitions,
        backfill_policy=session_backfill_policy(),
        group_name="reporting",
        kinds={"html"},
    )
    def daily_report(context: dg.AssetExecutionContext, db: DatabaseResource) -> dg.MaterializeResult[Any]:
        days = partition_dates(context)
        book = {"broker": ALL, "account_id": ALL}
        start = days[0] - HISTORY
        returns = read_frame(db, portfolio_returns, start=start, end=days[-1], where=book)
        attribution = read_frame(db, pnl_attribution, start=start, end=days[-1], where={**book, "position_key": ALL})
        risk = read_frame(db, risk_metrics, start=start, end=days[-1], where=book)
        greeks = read_frame(db, portfolio_greeks, days, where=book)
        margin = read_frame(db, margin_history, days, where=book)
        limits = read_frame(db, limit_checks, days, where=book)
        exceeded = read_frame(db, var_exceedances, days)
        directory = reports_dir()
        meta = SessionMetadata(context, days)
        for day in tracked("daily_report", days, context.log):
            path = directory / f"daily_{day.isoformat()}.html"
            text = render_report(
                day,
                returns=returns[returns["session_date"] <= day],
                greeks=greeks[greeks["session_date"] == day],
                attribution=attribution[attribution["session_date"] <= day],
                risk=risk[risk["session_date"] <= day],
                margin=margin[margin["session_date"] == day],
                limits=limits[limits["session_date"] == day],
                exceedances=exceeded[exceeded["session_date"] == day],
            )
            write_private_text(path, text)
            context.log.info("report written: %s", path)
            session = returns[returns["session_date"] == day]
            meta.record(day, REPORT, {
                "path": dg.MetadataValue.path(str(path)),
                "url": dg.MetadataValue.url(path.resolve().as_uri()),
                "nlv": None if session.empty else float(session.iloc[0]["nlv"]),
            })
        return dg.MaterializeResult(metadata=meta.output_metadata(REPORT, {"reports": len(days)}))

    return daily_report

"""The daily risk pack asset: one HTML page per session plus an index (analytics/risk_pack.py)."""


from typing import Any

import dagster as dg

from portfolio_pipeline.analytics.risk_pack import (
    DEFAULT_PORT,
    INDEX_VAR,
    headline_markdown,
    limit_rows,
    pack_url,
    var_breaches,
    write_packs,
)
from portfolio_pipeline.defs.backtest.checks import VAR_BACKTEST
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.greeks.checks import PORTFOLIO_GREEKS, POSITION_GREEKS
from portfolio_pipeline.defs.metadata import SessionMetadata
from portfolio_pipeline.defs.partitions import partition_dates
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.risk.checks import MARGIN, RETURNS, RISK
from portfolio_pipeline.paths import reports_dir

PACK = dg.AssetKey("risk_pack")
UPSTREAM = [RETURNS, RISK, MARGIN, POSITION_GREEKS, PORTFOLIO_GREEKS, VAR_BACKTEST,
            *(dg.AssetKey(k) for k in ("stress_shock_grid", "stress_historical", "monte_carlo_var",
                                       "strategy_performance", "position_lifecycle",
                                       "risk_profile", "options_flow"))]


def make_pack_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=PACK,
        deps=UPSTREAM,
        description="The daily risk pack: headline with breached limits, VaR breach flag (the "
        "var_exceedances rows of var_backtest), positions "
        "and Greeks (by underlying and strategy), stress heat map, Monte Carlo distribution, "
        "risk profile (P&L vs price), historical replays, strategies with traffic lights and exit "
        "signals, margin and regime history, options flow (GEX, zero gamma, vanna/charm, "
        "put/call, pinning); with several accounts one page per account "
        "(risk_pack_<date>__<account>.html) and an account selector. "
        "PORTFOLIO_HOME/reports/risk_pack_<date>.html and index.html; open them with "
        f"`portfolio report --serve` (http://127.0.0.1:{DEFAULT_PORT}/).",
        partitions_def=partitions,
        backfill_policy=session_backfill_policy(),
        group_name="reporting",
        kinds={"html"},
    )
    def risk_pack(context: dg.AssetExecutionContext, db: DatabaseResource,
                  platform: PlatformResource) -> dg.MaterializeResult[Any]:
        days = partition_dates(context)
        meta = SessionMetadata(context, days)
        labels = {a.account_id: a.label for a in platform.config.accounts.book()}
        with db.database.connect() as conn:
            written = write_packs(conn, days, reports_dir(), labels)
        for day, (path, pack) in zip(days, written, strict=True):
            breaches = [r for r in limit_rows(pack) if r["breached"]]
            var99 = next((v for v in var_breaches(pack) if (v.model, v.level) == INDEX_VAR), None)
            meta.record(day, PACK, {
                "risk pack (portfolio report --serve)": dg.MetadataValue.url(pack_url(day)),
                "path": dg.MetadataValue.path(str(path)),
                "headline": dg.MetadataValue.md(headline_markdown(pack)),
                "limits breached": len(breaches),
                "VaR 99% breach": None if var99 is None else var99.breached,
            })
            context.log.info("risk pack written: %s", path)
        return dg.MaterializeResult(metadata=meta.output_metadata(PACK, {"packs": len(days)}))

    return risk_pack

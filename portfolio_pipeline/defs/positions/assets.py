"""The broker snapshots: positions, balances and quotes of every configured account."""


from collections.abc import Iterator
from datetime import date

import dagster as dg

from portfolio_pipeline.brokers.base import BrokerDataError, BrokerError
from portfolio_pipeline.brokers.snapshot import BookSnapshot
from portfolio_pipeline.config import ConfigError
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.metadata import SessionMetadata, usd
from portfolio_pipeline.defs.partitions import partition_dates
from portfolio_pipeline.defs.positions.checks import (
    ACCOUNTS,
    CHECK_SPECS,
    MARKET,
    POSITIONS,
    account_suite,
    check_result,
    market_suite,
    positions_suite,
)
from portfolio_pipeline.defs.progress import tracked
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.storage import (
    account_snapshot,
    market_snapshot,
    positions_snapshot,
    replace_partition,
)
from portfolio_pipeline.storage.frames import read_frame
from portfolio_pipeline.storage.records import account_row, position_row, quote_row

BROKER_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL)
"""Retries only transient broker failures (see :func:`snapshot_or_fail`)."""


def snapshot_or_fail(platform: PlatformResource, day: date) -> BookSnapshot:
    """The book at ``day``; bad data or configuration fails at once, without retries."""
    try:
        return platform.snapshot(day)
    except BrokerError:
        raise  # connection trouble, timeouts: worth the retry policy
    except (ConfigError, BrokerDataError, ValueError) as exc:
        raise dg.Failure(description=f"session {day}: {exc}", allow_retries=False) from exc


def make_snapshot_assets(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(POSITIONS, description="Positions of every account at the session close "
                         "(signed quantity, multiplier from config/instruments.yaml, marks per unit).",
                         kinds={"sql"}, group_name="positions"),
            dg.AssetSpec(ACCOUNTS, description="NLV, cash, margin, excess liquidity and buying "
                         "power of every account at the session close.",
                         kinds={"sql"}, group_name="positions"),
            dg.AssetSpec(MARKET, description="Quotes and broker Greeks of every held contract, "
                         "its underlying and the volatility indices (VIX, VIX3M).  Demo broker: "
                         "SPX and VIX are published closes (arch data sets), SPY = SPX/10, NDX is "
                         "a proxy built from Nasdaq Composite returns, VIX3M is modelled from the "
                         "VIX, option quotes come from a VIX-driven model surface.",
                         kinds={"sql"}, group_name="positions"),
        ],
        check_specs=list(CHECK_SPECS),
        partitions_def=partitions,
        backfill_policy=session_backfill_policy(),
        retry_policy=BROKER_RETRY,
        name="broker_snapshots",
    )
    def broker_snapshots(
        context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
    ) -> Iterator[dg.MaterializeResult[None] | dg.AssetCheckResult]:
        days = partition_dates(context)
        meta = SessionMetadata(context, days)
        for day in tracked("broker_snapshots", days, context.log):
            snap = snapshot_or_fail(platform, day)
            rows = {
                positions_snapshot: [position_row(day, p) for p in snap.positions],
                account_snapshot: [account_row(day, a) for a in snap.accounts],
                market_snapshot: [quote_row(day, q) for q in snap.quotes],
            }
            with db.database.begin() as conn:  # all three tables of a session, or none
                for table, table_rows in rows.items():
                    replace_partition(conn, table, {"session_date": day}, table_rows)
            nlv = sum(a.nlv for a in snap.accounts)
            vix = next((q for q in snap.quotes if q.contract.underlying == "VIX" and q.contract.sec_type == "IND"), None)
            meta.record(day, POSITIONS, {"positions": len(snap.positions)})
            meta.record(day, ACCOUNTS, {"accounts": len(snap.accounts), "NLV ($)": usd(float(nlv))})
            meta.record(day, MARKET, {"quotes": len(snap.quotes), "VIX": vix.mark if vix is not None else None})
            for problem in snap.data_quality:
                context.log.warning("session=%s data quality: %s", day, problem)
            context.log.info("session=%s positions=%d nlv=%.2f", day, len(snap.positions), nlv)
        for key in (POSITIONS, ACCOUNTS, MARKET):
            yield dg.MaterializeResult(asset_key=key, metadata=meta.output_metadata(key))
        multipliers = sorted(platform.config.instruments.known_multipliers())
        yield check_result(CHECK_SPECS[0], positions_suite(read_frame(db, positions_snapshot, days), multipliers))
        yield check_result(CHECK_SPECS[1], account_suite(read_frame(db, account_snapshot, days)))
        yield check_result(CHECK_SPECS[2], market_suite(read_frame(db, market_snapshot, days)))

    return broker_snapshots

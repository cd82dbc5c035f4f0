"""Strategy assets: groups, performance, lifecycle/exit signals, Kelly, liquidity, theta/vega.

Every asset runs over session partitions with a single-run backfill, sessions in
order (strategy identity and cumulative P&L carry from the previous stored session),
and replaces its partition in one transaction per session.
"""


import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from typing import Any

import dagster as dg
from sqlalchemy import select

from portfolio_pipeline.defs.activity import read_activity
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.metadata import SessionMetadata
from portfolio_pipeline.defs.partitions import partition_dates
from portfolio_pipeline.defs.progress import tracked
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.strategies import book
from portfolio_pipeline.defs.strategies.checks import (
    COVERAGE_CHECK,
    GROUPS_CHECK,
    KELLY_SIZING,
    LIFECYCLE_CHECK,
    LIQUIDITY_FLAGS,
    PNL_SUM_CHECK,
    POSITION_LIFECYCLE,
    STRATEGY_GROUPS,
    STRATEGY_PERFORMANCE,
    THETA_VEGA_HISTORY,
    coverage_problems,
    groups_suite,
    lifecycle_suite,
    pnl_sum_problems,
    simple_result,
    suite_result,
)
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.storage import append_event, dict_rows, replace_partition
from portfolio_pipeline.storage.frames import read_frame
from portfolio_pipeline.storage.tables import (
    kelly_sizing,
    liquidity_flags,
    portfolio_returns,
    position_lifecycle,
    positions_snapshot,
    strategy_groups,
    strategy_performance,
    strategy_stats,
    theta_vega_history,
)

logger = logging.getLogger(__name__)

POSITIONS = dg.AssetKey("positions_snapshot")
ACCOUNTS = dg.AssetKey("account_snapshot")
MARKET = dg.AssetKey("market_snapshot")
POSITION_GREEKS = dg.AssetKey("position_greeks")
PNL_ATTRIBUTION = dg.AssetKey("pnl_attribution")
RETURNS = dg.AssetKey("portfolio_returns")
EXIT_SIGNAL = "exit_signal"
ACTIVITY_LOOKBACK = timedelta(days=400)


def load_executions(db: DatabaseResource, platform: PlatformResource, days: Sequence[date]
                    ) -> dict[book.Account, list[Execution]]:
    """Executions of the one activity source (live plus imported, deduplicated by id)."""
    _, fills = read_activity(db, platform, days[0] - ACTIVITY_LOOKBACK, days[-1],
                             imported_only_on_broker_error=True)
    out: dict[book.Account, list[Execution]] = defaultdict(list)
    for e in fills:
        out[(e.broker, e.account_id)].append(e)
    return dict(out)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:,.4g}" if abs(v) < 10 else f"{v:,.0f}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows)


def lifecycle_md(rows: Sequence[dict[str, Any]]) -> str:
    """The lifecycle rows as a narrow markdown table: short headers with units, % as percent."""
    def pct(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):+.0f}%"

    def usd(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):+,.0f}"

    head = "| strategy | type | days | DTE | of max profit | of max loss | $/day | light | rule |\n" \
           "|---|---|---:|---:|---:|---:|---:|---|---|\n"
    return head + "\n".join(
        f"| {r.get('strategy_id')} | {r.get('strategy_type')} | {r.get('days_in_trade', '')} | "
        f"{'' if r.get('dte') is None else r.get('dte')} | {pct(r.get('pct_max_profit'))} | "
        f"{pct(r.get('pct_max_loss'))} | {usd(r.get('pnl_per_day'))} | {r.get('status')} | {r.get('rule') or ''} |"
        for r in rows)


def strategy_groups_asset(context: dg.AssetExecutionContext, db: DatabaseResource,
                          platform: PlatformResource) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    cfg = platform.config.strategies
    execs = load_executions(db, platform, days)
    meta = SessionMetadata(context, days)
    for day in tracked("strategy_groups", days, context.log):
        with db.database.begin() as conn:
            groups = book.tag_session(conn, day, execs, cfg)
            replace_partition(conn, strategy_groups, {"session_date": day}, groups)
        open_rows = [r for r in groups if r["status"] == "open"]
        counts: dict[str, int] = defaultdict(int)
        for r in open_rows:
            counts[r["strategy_type"]] += 1
        table = md_table(
            [{"id": r["strategy_id"], "type": r["strategy_type"], "detail": r["detail"],
              "legs": len(r["legs"]), "opened_on": r["opened_on"], "parent": r["parent_id"],
              "name": r["name"]} for r in open_rows],
            ["id", "type", "detail", "legs", "opened_on", "parent", "name"])
        meta.record(day, STRATEGY_GROUPS, {
            "open_strategies": len(open_rows),
            "types": dg.MetadataValue.json(dict(sorted(counts.items()))),
            "strategies": dg.MetadataValue.md(table)})
    yield dg.MaterializeResult(asset_key=STRATEGY_GROUPS, metadata=meta.output_metadata(STRATEGY_GROUPS))
    stored = read_frame(db, strategy_groups, days)
    yield suite_result(GROUPS_CHECK, groups_suite(stored))
    positions = read_frame(db, positions_snapshot, days)
    yield simple_result(COVERAGE_CHECK, coverage_problems(positions.to_dict("records"),
                                                          stored.to_dict("records")))


def strategy_performance_asset(context: dg.AssetExecutionContext, db: DatabaseResource,
                               platform: PlatformResource) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    execs = load_executions(db, platform, days)
    account_pnl = read_frame(db, portfolio_returns, days)
    problems: list[str] = []
    worst = 0.0
    meta = SessionMetadata(context, days)
    for day in tracked("strategy_performance", days, context.log):
        with db.database.begin() as conn:
            result = book.performance_session(conn, day, execs)
            replace_partition(conn, strategy_performance, {"session_date": day}, result.rows)
            closed = book.closed_to_date(conn, day)
            stats = book.stats_rows(day, closed, result.rows)
            replace_partition(conn, strategy_stats, {"session_date": day}, stats)
        gap, found = pnl_sum_problems(day, result.rows, result.account_pnl, account_pnl)
        worst = max(worst, gap)
        problems.extend(found)
        by_type = [r for r in stats if r["dimension"] == "strategy_type"]
        overall = next((r for r in stats if r["dimension"] == "all"), None)
        meta.record(day, STRATEGY_PERFORMANCE, {
            "daily_pnl": float(sum(r["daily_pnl"] for r in result.rows)),
            "open_pnl": float(overall["open_pnl"]) if overall else 0.0,
            "realized_total": float(overall["realized_total"]) if overall else 0.0,
            "by_strategy_type": dg.MetadataValue.md(md_table(by_type, [
                "group_key", "trades", "open_strategies", "win_rate", "avg_win", "avg_loss",
                "expectancy", "profit_factor", "realized_total", "open_pnl", "worst_mae"])),
        })
    yield dg.MaterializeResult(asset_key=STRATEGY_PERFORMANCE,
                               metadata=meta.output_metadata(STRATEGY_PERFORMANCE))
    yield simple_result(PNL_SUM_CHECK, problems, max_abs_difference=worst)


def position_lifecycle_asset(context: dg.AssetExecutionContext, db: DatabaseResource,
                             platform: PlatformResource) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    rules = platform.config.exit_rules
    if rules is None:
        context.log.warning("config/exit_rules.yaml is absent: every strategy is green")
    meta = SessionMetadata(context, days)
    for day in tracked("position_lifecycle", days, context.log):
        close = platform.calendar.session_close(day)
        session_signals = 0
        with db.database.begin() as conn:  # rows and events commit together
            rows, new = book.lifecycle_session(conn, day, rules)
            replace_partition(conn, position_lifecycle, {"session_date": day}, rows)
            for s in new:
                event_id = append_event(
                    conn, event_key=f"exit:{s.strategy_id}:{s.rule}:{day.isoformat()}",
                    kind=EXIT_SIGNAL, severity="warning", ts=close, payload=s.payload,
                    account_id=s.account[1])
                session_signals += event_id is not None
        meta.record(day, POSITION_LIFECYCLE, {
            "exit_signals": session_signals,
            "red": sum(r["status"] == "red" for r in rows),
            "yellow": sum(r["status"] == "yellow" for r in rows),
            "lifecycle": dg.MetadataValue.md(lifecycle_md(rows)),
        })
    yield dg.MaterializeResult(asset_key=POSITION_LIFECYCLE, metadata=meta.output_metadata(POSITION_LIFECYCLE))
    yield suite_result(LIFECYCLE_CHECK, lifecycle_suite(read_frame(db, position_lifecycle, days)))


def kelly_sizing_asset(context: dg.AssetExecutionContext, db: DatabaseResource,
                       platform: PlatformResource) -> dg.MaterializeResult[Any]:
    days = partition_dates(context)
    cfg = platform.config.strategies
    meta = SessionMetadata(context, days)
    for day in days:
        with db.database.begin() as conn:
            rows = book.kelly_rows(day, book.closed_to_date(conn, day), cfg)
            replace_partition(conn, kelly_sizing, {"session_date": day}, rows)
        meta.record(day, KELLY_SIZING, {"kelly": dg.MetadataValue.md(md_table(rows, [
            "strategy_type", "trades", "win_rate", "payoff_ratio", "full_kelly", "shrinkage",
            "recommended_fraction", "capped", "status"]))})
    return dg.MaterializeResult(metadata=meta.output_metadata(
        KELLY_SIZING, {"configured": bool(cfg and cfg.sizing)}))


def liquidity_flags_asset(context: dg.AssetExecutionContext, db: DatabaseResource,
                          platform: PlatformResource) -> dg.MaterializeResult[Any]:
    days = partition_dates(context)
    cfg = platform.config.strategies
    meta = SessionMetadata(context, days)
    for day in days:
        with db.database.begin() as conn:
            rows = book.liquidity_rows(conn, day, cfg)
            replace_partition(conn, liquidity_flags, {"session_date": day}, rows)
        flagged = [r for r in rows if r["illiquid"]]
        meta.record(day, LIQUIDITY_FLAGS, {
            "illiquid": len(flagged),
            "flagged": dg.MetadataValue.md(md_table(flagged, ["position_key", "strategy_id", "bid", "ask",
                                                              "spread_pct", "reason"])),
        })
    return dg.MaterializeResult(metadata=meta.output_metadata(LIQUIDITY_FLAGS, {
        "days_to_exit": "not computed: no volume/open interest in market_snapshot"}))


def theta_vega_asset(context: dg.AssetExecutionContext, db: DatabaseResource,
                     platform: PlatformResource) -> dg.MaterializeResult[Any]:
    days = partition_dates(context)
    cfg = platform.config.strategies
    for day in days:
        with db.database.begin() as conn:
            rows = book.theta_vega_rows(conn, day, cfg)
            replace_partition(conn, theta_vega_history, {"session_date": day}, rows)
    t = theta_vega_history
    with db.database.connect() as conn:  # the book's rows: the run's sessions and 14 before
        hist = dict_rows(conn.execute(
            select(t).where(t.c.account_id == "*", t.c.session_date <= days[-1])
            .order_by(t.c.session_date.desc()).limit(len(days) + 14)))
    hist.reverse()
    meta = SessionMetadata(context, days)
    for day in days:
        upto = [r for r in hist if r["session_date"] <= day][-15:]
        today = upto[-1] if upto and upto[-1]["session_date"] == day else {}
        meta.record(day, THETA_VEGA_HISTORY, {
            "history": dg.MetadataValue.md(md_table(upto, [
                "session_date", "theta_per_day", "vega_per_point", "ratio", "in_band",
                "daily_pnl", "rolling_corr"])),
            **{name: None if today.get(name) is None else float(today[name])
               for name in ("ratio", "rolling_corr")},
        })
    return dg.MaterializeResult(metadata=meta.output_metadata(THETA_VEGA_HISTORY))


def make_strategy_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The strategy assets on ``partitions`` (session partitions; tests pass a short range)."""

    def daily(**spec: Any) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
        decorate: Callable[[Callable[..., Any]], dg.AssetsDefinition] = dg.asset(
            partitions_def=partitions, backfill_policy=session_backfill_policy(),
            group_name="strategies", kinds={"sql"}, **spec)
        return decorate

    return [
        daily(key=STRATEGY_GROUPS, deps=[POSITIONS, ACCOUNTS, MARKET],
              check_specs=[GROUPS_CHECK, COVERAGE_CHECK],
              description="Strategies per account: auto-tagged from leg structure (see "
              "domain/strategies.py), persistent ids, opened_on, roll parent, manual "
              "names/types from config/strategies.yaml and `portfolio strategies tag`.")(strategy_groups_asset),
        daily(key=STRATEGY_PERFORMANCE, deps=[STRATEGY_GROUPS, POSITION_GREEKS, PNL_ATTRIBUTION, RETURNS],
              check_specs=[PNL_SUM_CHECK],
              description="Per strategy: daily/cumulative, realized/unrealized P&L (commissions "
              "included), max adverse excursion, Greeks and Greeks attribution (sum of the "
              "per-position components); table strategy_stats: win rate, average win/loss, "
              "expectancy, profit factor by strategy type, underlying and account.")(strategy_performance_asset),
        daily(key=POSITION_LIFECYCLE, deps=[STRATEGY_PERFORMANCE], check_specs=[LIFECYCLE_CHECK],
              description="Per open strategy: days in trade, DTE, % of max profit/loss, P&L per "
              "day, and green/yellow/red from config/exit_rules.yaml; a new red writes an "
              "`exit_signal` event (one per strategy, rule and session).")(position_lifecycle_asset),
        daily(key=KELLY_SIZING, deps=[STRATEGY_PERFORMANCE],
              description="Fractional Kelly per strategy type from closed strategies (win rate, "
              "payoff ratio), shrunk on small samples and capped per config/strategies.yaml.")(kelly_sizing_asset),
        daily(key=LIQUIDITY_FLAGS, deps=[STRATEGY_GROUPS, MARKET],
              description="Bid/ask spread as % of mid per position (illiquid/stale above "
              "liquidity.max_spread_pct), a 0-1 liquidity score; days-to-exit needs volume/open "
              "interest, which market_snapshot does not carry (NULL).")(liquidity_flags_asset),
        daily(key=THETA_VEGA_HISTORY, deps=[STRATEGY_PERFORMANCE],
              description="|theta|/|vega| per day against the target band (config/strategies.yaml "
              "theta_vega) and its rolling correlation with the next session's P&L.")(theta_vega_asset),
    ]

"""Returns, P&L attribution, risk metrics and margin/limit history of the daily record."""


import math
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from portfolio_pipeline.analytics.attribution import (
    attribution_rows,
    average_prices,
    execution_cash_by_session,
    underlying_closes,
)
from portfolio_pipeline.analytics.margin import margin_rows, regime_label
from portfolio_pipeline.analytics.performance import (
    ALL,
    flow_sessions,
    return_rows,
    risk_metrics_by_session,
)
from portfolio_pipeline.defs.activity import read_activity
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.greeks.checks import PORTFOLIO_GREEKS, POSITION_GREEKS
from portfolio_pipeline.defs.greeks.frames import (
    check_result,
    on,
)
from portfolio_pipeline.defs.metadata import SessionMetadata, pct, usd
from portfolio_pipeline.defs.partitions import partition_dates
from portfolio_pipeline.defs.positions.checks import ACCOUNTS, MARKET
from portfolio_pipeline.defs.progress import tracked
from portfolio_pipeline.defs.quality import problems_check_result
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.risk.checks import (
    ATTRIBUTION,
    ATTRIBUTION_CHECK,
    BREACH_CHECK,
    MARGIN,
    MARGIN_CHECK,
    RECONCILIATION_CHECK,
    RETURNS,
    RETURNS_CHECK,
    RISK,
    RISK_CHECK,
    UNEXPLAINED_CHECK,
    attribution_suite,
    breach_lines,
    margin_suite,
    reconciliation_frame,
    reconciliation_suite,
    returns_suite,
    risk_suite,
    unexplained_suite,
)
from portfolio_pipeline.defs.strategies.checks import STRATEGY_GROUPS
from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar
from portfolio_pipeline.storage import replace_partition
from portfolio_pipeline.storage.frames import (
    AccountsFrame,
    MarketFrame,
    PortfolioGreeksFrame,
    PositionGreeksFrame,
    PositionsFrame,
    ReturnsFrame,
    read_frame,
)
from portfolio_pipeline.storage.regimes import session_regime_state
from portfolio_pipeline.storage.tables import (
    limit_checks,
    margin_history,
    pnl_attribution,
    portfolio_returns,
    risk_metrics,
    strategy_groups,
)

BROKER_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL)


def session_after(calendar: ExchangeCalendar) -> Callable[[datetime], date]:
    """ts -> the first session whose close is at or after ``ts`` (flows 'at the close')."""

    def first(ts: datetime) -> date:
        day = ts.astimezone(NEW_YORK).date()
        session = day if calendar.is_session(day) else calendar.next_session(day)
        if calendar.session_close(session) < ts:
            session = calendar.next_session(session)
        return session

    return first


def _float(value: Any) -> float:
    return float(value) if value is not None else math.nan


# --------------------------------------------------------------------------- portfolio_returns


def _returns_metadata(session: ReturnsFrame, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The book's numbers and, with several accounts, each account's NLV, day return,
    drawdown and external flow under its display name (``NLV [IBKR IRA] ($)``): one
    series per account in the UI next to the consolidated one."""
    book = session.book(ALL)

    def last(values: np.ndarray) -> float | None:
        value = float(values[-1]) if len(values) else math.nan
        return value if math.isfinite(value) else None

    out: dict[str, Any] = {
        "NLV ($)": usd(last(book.nlv)),
        "day P&L ($)": usd(last(book.pnl)),
        "day return (%)": pct(last(book.twr)),
        "drawdown (%)": pct(last(book.drawdown)),
        "external flow ($)": usd(last(book.external_flow)),
    }
    rows = [i for i in range(len(session)) if session.broker[i] != ALL]
    if len(rows) > 1:
        for i in sorted(rows, key=lambda j: str(session.account_id[j])):
            account = str(session.account_id[i])
            name = (labels or {}).get(account, account)
            out[f"NLV [{name}] ($)"] = usd(float(session.nlv[i]))
            out[f"day return [{name}] (%)"] = pct(float(session.twr[i]))
            out[f"drawdown [{name}] (%)"] = pct(float(session.drawdown[i]))
            out[f"external flow [{name}] ($)"] = usd(float(session.external_flow[i]))
    return out


def portfolio_returns_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    calendar = platform.calendar
    first_prev = calendar.previous_session(days[0])
    accounts = read_frame(db, AccountsFrame, start=first_prev, end=days[-1])
    flows, _ = read_activity(db, platform, first_prev, days[-1])
    flow_frame = flow_sessions(flows, session_after(calendar))
    carry = read_frame(db, ReturnsFrame, [first_prev])
    for day in tracked("portfolio_returns", days, context.log):
        rows = return_rows(day, accounts.on(day), accounts.on(calendar.previous_session(day)), flow_frame, carry)
        with db.database.begin() as conn:
            replace_partition(conn, portfolio_returns, {"session_date": day}, rows)
        carry = ReturnsFrame.from_rows(rows)
    stored = read_frame(db, ReturnsFrame, days)
    cfg = platform.config.pricing
    meta = SessionMetadata(context, days)
    labels = {a.account_id: a.label for a in platform.config.accounts.book()}
    for day in days:
        meta.record(day, RETURNS, _returns_metadata(stored.on(day), labels))
    yield dg.MaterializeResult(asset_key=RETURNS, metadata=meta.output_metadata(RETURNS))
    yield check_result(RETURNS_CHECK, returns_suite(stored.frame))
    yield check_result(
        RECONCILIATION_CHECK, reconciliation_suite(stored.frame, cfg.reconciliation),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"reconciled_rows": dg.MetadataValue.int(len(reconciliation_frame(stored.frame, cfg.reconciliation)))},
    )


# --------------------------------------------------------------------------- pnl_attribution

_ATTRIBUTION_LABELS = (
    ("actual", "day P&L"), ("delta_pnl", "delta P&L"), ("gamma_pnl", "gamma P&L"),
    ("theta_pnl", "theta P&L"), ("vega_pnl", "vega P&L"), ("vanna_pnl", "vanna P&L"),
    ("volga_pnl", "volga P&L"), ("unexplained", "unexplained P&L"))


def _attribution_metadata(session: pd.DataFrame) -> dict[str, Any]:
    if session.empty:
        return {"flagged_rows": 0}
    values: dict[str, Any] = {"flagged_rows": int(session["large_unexplained"].astype(bool).sum())}
    book = session[(session["broker"] == ALL) & (session["position_key"] == ALL)]
    if not book.empty:
        row = book.iloc[0]
        values.update({f"{label} ($)": usd(_float(row[c])) for c, label in _ATTRIBUTION_LABELS})
    return values


def pnl_attribution_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    calendar = platform.calendar
    cfg = platform.config.pricing
    first_prev = calendar.previous_session(days[0])
    greeks = read_frame(db, PositionGreeksFrame, start=first_prev, end=days[-1])
    positions = read_frame(db, PositionsFrame, days)
    market = read_frame(db, MarketFrame, days)
    _, fills = read_activity(db, platform, first_prev, days[-1])
    cash = execution_cash_by_session(fills, session_after(calendar))
    for day in tracked("pnl_attribution", days, context.log):
        prev = calendar.previous_session(day)
        previous = greeks.on(prev)
        rows: list[dict[str, Any]] = []
        if previous.empty:
            context.log.info("session=%s: no position Greeks at %s; attribution starts later", day, prev)
        else:
            rows = attribution_rows(
                day, previous, greeks.on(day), dt_days=float((day - prev).days),
                execution_cash=cash.get(day, {}), avg_price=average_prices(positions.on(day)),
                spot_close=underlying_closes(market.on(day)), settings=cfg.attribution,
            )
        with db.database.begin() as conn:
            replace_partition(conn, pnl_attribution, {"session_date": day}, rows)
    stored = read_frame(db, pnl_attribution, days)
    meta = SessionMetadata(context, days)
    for day in days:
        meta.record(day, ATTRIBUTION, _attribution_metadata(on(stored, day)))
    yield dg.MaterializeResult(asset_key=ATTRIBUTION, metadata=meta.output_metadata(ATTRIBUTION))
    yield check_result(ATTRIBUTION_CHECK, attribution_suite(stored))
    yield check_result(UNEXPLAINED_CHECK, unexplained_suite(stored), severity=dg.AssetCheckSeverity.WARN)


# --------------------------------------------------------------------------- risk_metrics

_RISK_LABELS = (
    ("var_95_historical", "VaR 95% 1d historical"), ("var_99_historical", "VaR 99% 1d historical"),
    ("cvar_95_historical", "CVaR 95% 1d historical"), ("cvar_99_historical", "CVaR 99% 1d historical"),
    ("var_99_garch_t", "VaR 99% 1d GARCH-t"), ("max_drawdown", "max drawdown"))


def _risk_metadata(session: pd.DataFrame) -> dict[str, Any]:
    values: dict[str, Any] = {"rows": len(session)}
    if session.empty:
        return values
    book = session[(session["broker"] == ALL) & (session["window"] == "full")]
    for metric, label in _RISK_LABELS:
        hit = book[book["metric"] == metric]
        if not hit.empty:
            values[f"{label} ($)"] = usd(_float(hit.iloc[0]["value_usd"]))
            values[f"{label} (%)"] = pct(_float(hit.iloc[0]["value"]))
    for metric in ("sharpe", "sortino"):
        hit = book[book["metric"] == metric]
        if not hit.empty:
            values[metric] = _float(hit.iloc[0]["value"])
    return values


def risk_metrics_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    history = read_frame(db, ReturnsFrame, end=days[-1])
    by_session = risk_metrics_by_session(days, history, platform.config.pricing.risk)
    for day in tracked("risk_metrics", days, context.log):
        with db.database.begin() as conn:
            replace_partition(conn, risk_metrics, {"session_date": day}, by_session[day])
    stored = read_frame(db, risk_metrics, days)
    meta = SessionMetadata(context, days)
    for day in days:
        meta.record(day, RISK, _risk_metadata(on(stored, day)))
    yield dg.MaterializeResult(asset_key=RISK, metadata=meta.output_metadata(RISK))
    yield check_result(RISK_CHECK, risk_suite(stored))


# --------------------------------------------------------------------------- margin_history


def _session_vix(context: dg.AssetExecutionContext, day: date, market: MarketFrame,
                 last_vix: tuple[date, float] | None) -> tuple[float, float | None]:
    """The session's VIX (else the stated fallback: the last known one) and VIX3M."""
    vix = market.index_close("VIX")
    if vix is None:
        if last_vix is None:
            raise InvalidDataError(
                f"margin_history: market_snapshot has no VIX close for session {day} and no earlier "
                "VIX is stored; the regime needs the VIX (check the CBOE index market data "
                "subscription, then re-run broker_snapshots for that session)"
            )
        # stated fallback: the last known VIX (with the hysteresis of the regime in force)
        context.log.warning(
            "session=%s data quality: no VIX in market_snapshot (no CBOE index subscription?); "
            "regime FALLBACK: classified on the last known VIX %.2f of %s", day, last_vix[1], last_vix[0])
        vix = last_vix[1]
    vix3m = market.index_close("VIX3M")
    if vix3m is None:
        context.log.warning("session=%s data quality: no VIX3M; regime from the VIX level only", day)
    return vix, vix3m


def _margin_metadata(session: pd.DataFrame, names: tuple[str, ...]) -> dict[str, Any] | None:
    book = session[session["broker"] == ALL] if not session.empty else session
    if book.empty:
        return None
    row = book.iloc[0]
    regime = str(row["regime"])
    return {
        "margin utilisation (%)": pct(_float(row["margin_utilisation"])), "VIX": _float(row["vix"]),
        "NLV ($)": usd(_float(row["nlv"])), "regime": regime,
        regime_label(names): names.index(regime) if regime in names else None,
        "limit breaches": int(row["breaches"]),
        "breached limits": str(row["breached_metrics"]) or "none"}


def margin_history_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    calendar = platform.calendar
    service = RegimeService(platform.config.risk_matrix)
    configured = platform.config.accounts.by_account_id()
    groups = read_frame(db, strategy_groups, days) if service.matrix.structure_bans else None
    accounts = read_frame(db, AccountsFrame, days)
    market = read_frame(db, MarketFrame, days)
    greeks = read_frame(db, PortfolioGreeksFrame, days)
    prior = read_frame(db, margin_history, [calendar.previous_session(days[0])], where={"broker": ALL})
    last_vix: tuple[date, float] | None = None
    if not prior.empty and math.isfinite(_float(prior.iloc[0]["vix"])):
        last_vix = (calendar.previous_session(days[0]), float(prior.iloc[0]["vix"]))
    for day in tracked("margin_history", days, context.log):
        vix, vix3m = _session_vix(context, day, market.on(day), last_vix)
        last_vix = (day, vix)
        with db.database.begin() as conn:  # THE session regime, stored for Monte Carlo
            state = session_regime_state(conn, service, day, calendar.previous_session(day), vix,
                                         vix3m, recompute=True)
            held = on(groups, day).to_dict("records") if groups is not None and not groups.empty else []
            rows, check_rows = margin_rows(day, accounts.on(day), greeks.on(day), service, state, configured, held)
            replace_partition(conn, margin_history, {"session_date": day}, rows)
            replace_partition(conn, limit_checks, {"session_date": day}, check_rows)
        context.log.info("session=%s regime=%s vix=%.2f breaches=%d", day, state.name, vix,
                         sum(1 for r in check_rows if r["breached"]))
    stored = read_frame(db, margin_history, days)
    meta = SessionMetadata(context, days)
    for day in days:
        values = _margin_metadata(on(stored, day), service.regime_names)
        if values is not None:
            meta.record(day, MARGIN, values)
    yield dg.MaterializeResult(asset_key=MARGIN, metadata=meta.output_metadata(MARGIN))
    yield check_result(MARGIN_CHECK, margin_suite(stored, list(service.regime_names)))
    breached = breach_lines(read_frame(db, limit_checks, days), stored)
    yield problems_check_result(
        BREACH_CHECK, breached, severity=dg.AssetCheckSeverity.WARN,
        sessions_with_breaches=len({line.split(" ", 1)[0] for line in breached}))


# --------------------------------------------------------------------------- definitions


def make_risk_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The four risk assets on ``partitions`` (session partitions; tests pass a short range)."""

    def daily(**spec: Any) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
        decorate: Callable[[Callable[..., Any]], dg.AssetsDefinition] = dg.asset(
            partitions_def=partitions, backfill_policy=session_backfill_policy(),
            group_name="risk", kinds={"sql"}, **spec)
        return decorate

    return [
        daily(key=RETURNS, deps=[ACCOUNTS], check_specs=[RETURNS_CHECK, RECONCILIATION_CHECK],
              retry_policy=BROKER_RETRY,
              description="EOD NLV per account and consolidated ('*'); external flows (deposits, "
              "withdrawals, transfers) separated from income (dividends, interest, fees: "
              "performance); daily time-weighted return r = (NLV - F) / NLV_prev - 1 with flows "
              "at the close; growth index and drawdown.")(portfolio_returns_asset),
        daily(key=ATTRIBUTION, deps=[POSITION_GREEKS], check_specs=[ATTRIBUTION_CHECK, UNEXPLAINED_CHECK],
              retry_policy=BROKER_RETRY,
              description="Each day's P&L per position, per account and for the book, split into "
              "delta, gamma, theta, vega, vanna and volga terms of the PRIOR close's Greeks, plus "
              "unexplained = actual - explained (new trades and closes are unexplained; flagged "
              "when large).")(pnl_attribution_asset),
        daily(key=RISK, deps=[RETURNS], check_specs=[RISK_CHECK],
              description="VaR and CVaR at the configured levels (historical, parametric, "
              "Cornish-Fisher; GARCH(1,1)-t on the full history), Sharpe, Sortino, Calmar, Omega, "
              "max drawdown with duration and recovery: full history and rolling window, as a "
              "fraction and in $ (x NLV).  GARCH is refitted every N returns and filtered "
              "between.")(risk_metrics_asset),
        daily(key=MARGIN, deps=[ACCOUNTS, MARKET, PORTFOLIO_GREEKS, STRATEGY_GROUPS],
              check_specs=[MARGIN_CHECK, BREACH_CHECK],
              description="Margin utilisation (maint margin / NLV) per account and in total, the "
              "regime from the session's live VIX and VIX3M (config/risk_matrix.yaml) and every "
              "limit check of that regime (table limit_checks), each account with its own limits "
              "(risk_matrix.yaml accounts/groups) and its type's structure bans (naked short "
              "options in an IRA): breaches in the daily record.")(margin_history_asset),
    ]

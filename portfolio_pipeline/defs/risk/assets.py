"""Returns, P&L attribution, risk metrics and margin/limit history of the daily record."""


import dataclasses
import math
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any

import dagster as dg
import pandas as pd

from portfolio_pipeline.analytics.attribution import attribution_rows
from portfolio_pipeline.analytics.performance import (
    ALL,
    flow_sessions,
    return_rows,
    risk_metric_rows,
)
from portfolio_pipeline.defs.activity import read_activity
from portfolio_pipeline.defs.greeks.checks import PORTFOLIO_GREEKS, POSITION_GREEKS
from portfolio_pipeline.defs.greeks.frames import (
    check_result,
    on,
    read_frame,
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
from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.limits import RiskSnapshot, evaluate_limits
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar
from portfolio_pipeline.storage import (
    account_snapshot,
    market_snapshot,
    positions_snapshot,
    replace_partition,
)
from portfolio_pipeline.storage.regimes import session_regime_state
from portfolio_pipeline.storage.tables import (
    limit_checks,
    margin_history,
    pnl_attribution,
    portfolio_greeks,
    portfolio_returns,
    position_greeks,
    risk_metrics,
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


def _book_value(frame: pd.DataFrame, column: str) -> float | None:
    book = frame[(frame["broker"] == ALL) & (frame["account_id"] == ALL)] if not frame.empty else frame
    if book.empty or book.iloc[-1][column] is None:
        return None
    value = float(book.iloc[-1][column])
    return value if math.isfinite(value) else None


def make_risk_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=RETURNS,
        deps=[ACCOUNTS],
        description="EOD NLV per account and consolidated ('*'); external flows (deposits, "
        "withdrawals, transfers) separated from income (dividends, interest, fees: "
        "performance); daily time-weighted return r = (NLV - F) / NLV_prev - 1 with flows "
        "at the close; growth index and drawdown.",
        check_specs=[RETURNS_CHECK, RECONCILIATION_CHECK],
        retry_policy=BROKER_RETRY,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="risk",
        kinds={"sql"},
    )
    def portfolio_returns_asset(
        context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        days = partition_dates(context)
        calendar = platform.calendar
        first_prev = calendar.previous_session(days[0])
        accounts = read_frame(db, account_snapshot, start=first_prev, end=days[-1])
        flows, _ = read_activity(db, platform, first_prev, days[-1])
        flow_frame = flow_sessions(flows, session_after(calendar))
        carry = read_frame(db, portfolio_returns, [first_prev])
        for day in tracked("portfolio_returns", days, context.log):
            prev = calendar.previous_session(day)
            rows = return_rows(day, on(accounts, day), on(accounts, prev), flow_frame, carry)
            with db.database.begin() as conn:
                replace_partition(conn, portfolio_returns, {"session_date": day}, rows)
            carry = pd.DataFrame(rows, columns=list(portfolio_returns.c.keys()))
        stored = read_frame(db, portfolio_returns, days)
        cfg = platform.config.pricing
        rec = reconciliation_frame(stored, cfg.reconciliation)
        meta = SessionMetadata(context, days)
        for day in days:
            session = on(stored, day)
            meta.record(day, RETURNS, {
                "NLV ($)": usd(_book_value(session, "nlv")),
                "day P&L ($)": usd(_book_value(session, "pnl")),
                "day return (%)": pct(_book_value(session, "twr")),
                "drawdown (%)": pct(_book_value(session, "drawdown")),
                "external flow ($)": usd(_book_value(session, "external_flow")),
            })
        yield dg.MaterializeResult(asset_key=RETURNS, metadata=meta.output_metadata(RETURNS))
        yield check_result(RETURNS_CHECK, returns_suite(stored))
        yield check_result(
            RECONCILIATION_CHECK, reconciliation_suite(stored, cfg.reconciliation),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"reconciled_rows": dg.MetadataValue.int(len(rec))},
        )

    @dg.asset(
        key=ATTRIBUTION,
        deps=[POSITION_GREEKS],
        description="Each day's P&L per position, per account and for the book, split into "
        "delta, gamma, theta, vega, vanna and volga terms of the PRIOR close's Greeks, plus "
        "unexplained = actual - explained (new trades and closes are unexplained; flagged "
        "when large).",
        check_specs=[ATTRIBUTION_CHECK, UNEXPLAINED_CHECK],
        retry_policy=BROKER_RETRY,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="risk",
        kinds={"sql"},
    )
    def pnl_attribution_asset(
        context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        days = partition_dates(context)
        calendar = platform.calendar
        cfg = platform.config.pricing
        first_prev = calendar.previous_session(days[0])
        greeks = read_frame(db, position_greeks, start=first_prev, end=days[-1])
        positions = read_frame(db, positions_snapshot, days)
        spots = read_frame(db, market_snapshot, days)
        spots = spots[spots["sec_type"].isin(["IND", "STK"])] if not spots.empty else spots
        _, fills = read_activity(db, platform, first_prev, days[-1])
        after = session_after(calendar)
        cash: dict[date, dict[tuple[str, str, str], float]] = {}
        for f in fills:
            per_day = cash.setdefault(after(f.ts), {})
            key = (f.broker, f.account_id, f.contract.key)
            per_day[key] = per_day.get(key, 0.0) + f.cash_effect
        for day in tracked("pnl_attribution", days, context.log):
            prev = calendar.previous_session(day)
            previous = on(greeks, prev)
            if previous.empty:
                context.log.info("session=%s: no position Greeks at %s; attribution starts later", day, prev)
                rows: list[dict[str, Any]] = []
            else:
                pos = on(positions, day)
                avg = {(r["broker"], r["account_id"], r["position_key"]): float(r["avg_price"])
                       for r in pos.to_dict("records")}
                closes = {str(r["underlying"]): float(r["mark"]) for r in on(spots, day).to_dict("records")}
                rows = attribution_rows(
                    day, previous, on(greeks, day), dt_days=float((day - prev).days),
                    execution_cash=cash.get(day, {}), avg_price=avg, spot_close=closes,
                    settings=cfg.attribution,
                )
            with db.database.begin() as conn:
                replace_partition(conn, pnl_attribution, {"session_date": day}, rows)
        stored = read_frame(db, pnl_attribution, days)
        meta = SessionMetadata(context, days)
        for day in days:
            session = on(stored, day)
            values: dict[str, Any] = {
                "flagged_rows": int(session["large_unexplained"].astype(bool).sum()) if not session.empty else 0}
            book = session[(session["broker"] == ALL) & (session["position_key"] == ALL)] if not session.empty else session
            if not book.empty:
                row = book.iloc[0]
                values.update({f"{label} ($)": usd(_float(row[c])) for c, label in (
                    ("actual", "day P&L"), ("delta_pnl", "delta P&L"), ("gamma_pnl", "gamma P&L"),
                    ("theta_pnl", "theta P&L"), ("vega_pnl", "vega P&L"), ("vanna_pnl", "vanna P&L"),
                    ("volga_pnl", "volga P&L"), ("unexplained", "unexplained P&L"))})
            meta.record(day, ATTRIBUTION, values)
        yield dg.MaterializeResult(asset_key=ATTRIBUTION, metadata=meta.output_metadata(ATTRIBUTION))
        yield check_result(ATTRIBUTION_CHECK, attribution_suite(stored))
        yield check_result(UNEXPLAINED_CHECK, unexplained_suite(stored), severity=dg.AssetCheckSeverity.WARN)

    @dg.asset(
        key=RISK,
        deps=[RETURNS],
        description="VaR and CVaR at the configured levels (historical, parametric, "
        "Cornish-Fisher; GARCH(1,1)-t on the full history), Sharpe, Sortino, Calmar, Omega, "
        "max drawdown with duration and recovery: full history and rolling window, as a "
        "fraction and in $ (x NLV).  GARCH is refitted every N returns and filtered between.",
        check_specs=[RISK_CHECK],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="risk",
        kinds={"sql"},
    )
    def risk_metrics_asset(
        context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        days = partition_dates(context)
        cfg = platform.config.pricing
        history = read_frame(db, portfolio_returns, end=days[-1])
        rows: list[dict[str, Any]] = []
        if not history.empty:
            for (broker, account), series in history.groupby(["broker", "account_id"], sort=True):
                have = set(series["session_date"])
                rows += risk_metric_rows([d for d in days if d in have], series, cfg.risk,
                                         (str(broker), str(account)))
        frame = pd.DataFrame(rows, columns=list(risk_metrics.c.keys()))
        for day in tracked("risk_metrics", days, context.log):
            day_rows = frame[frame["session_date"] == day].to_dict("records") if not frame.empty else []
            with db.database.begin() as conn:
                replace_partition(conn, risk_metrics, {"session_date": day}, day_rows)
        stored = read_frame(db, risk_metrics, days)
        meta = SessionMetadata(context, days)
        for day in days:
            session = on(stored, day)
            values: dict[str, Any] = {"rows": len(session)}
            if not session.empty:
                book = session[(session["broker"] == ALL) & (session["window"] == "full")]
                for metric, label in (
                    ("var_95_historical", "VaR 95% 1d historical"), ("var_99_historical", "VaR 99% 1d historical"),
                    ("cvar_95_historical", "CVaR 95% 1d historical"),
                    ("cvar_99_historical", "CVaR 99% 1d historical"), ("var_99_garch_t", "VaR 99% 1d GARCH-t"),
                    ("max_drawdown", "max drawdown"),
                ):
                    hit = book[book["metric"] == metric]
                    if not hit.empty:
                        values[f"{label} ($)"] = usd(_float(hit.iloc[0]["value_usd"]))
                        values[f"{label} (%)"] = pct(_float(hit.iloc[0]["value"]))
                for metric in ("sharpe", "sortino"):
                    hit = book[book["metric"] == metric]
                    if not hit.empty:
                        values[metric] = _float(hit.iloc[0]["value"])
            meta.record(day, RISK, values)
        yield dg.MaterializeResult(asset_key=RISK, metadata=meta.output_metadata(RISK))
        yield check_result(RISK_CHECK, risk_suite(stored))

    @dg.asset(
        key=MARGIN,
        deps=[ACCOUNTS, MARKET, PORTFOLIO_GREEKS],
        description="Margin utilisation (maint margin / NLV) per account and in total, the "
        "regime from the session's live VIX and VIX3M (config/risk_matrix.yaml) and every "
        "limit check of that regime (table limit_checks): breaches in the daily record.",
        check_specs=[MARGIN_CHECK, BREACH_CHECK],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="risk",
        kinds={"sql"},
    )
    def margin_history_asset(
        context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        days = partition_dates(context)
        calendar = platform.calendar
        service = RegimeService(platform.config.risk_matrix)
        overrides = {a.account_id: a.limit_overrides for a in platform.config.accounts.accounts}
        accounts = read_frame(db, account_snapshot, days)
        market = read_frame(db, market_snapshot, days)
        greeks = read_frame(db, portfolio_greeks, days)
        prior = read_frame(db, margin_history, [calendar.previous_session(days[0])], where={"broker": ALL})
        last_vix: tuple[date, float] | None = None
        if not prior.empty and math.isfinite(_float(prior.iloc[0]["vix"])):
            last_vix = (calendar.previous_session(days[0]), float(prior.iloc[0]["vix"]))
        for day in tracked("margin_history", days, context.log):
            quotes = on(market, day)
            vix = _index_close(quotes, "VIX")
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
            vix3m = _index_close(quotes, "VIX3M")
            if vix3m is None:
                context.log.warning("session=%s data quality: no VIX3M; regime from the VIX level only", day)
            last_vix = (day, vix)
            with db.database.begin() as conn:  # THE session regime, stored for Monte Carlo
                state = session_regime_state(conn, service, day, calendar.previous_session(day), vix,
                                             vix3m, recompute=True)
                margin_rows, check_rows = _margin_rows(day, on(accounts, day), on(greeks, day), service,
                                                       state, overrides)
                replace_partition(conn, margin_history, {"session_date": day}, margin_rows)
                replace_partition(conn, limit_checks, {"session_date": day}, check_rows)
            context.log.info("session=%s regime=%s vix=%.2f breaches=%d", day, state.name, vix,
                             sum(1 for r in check_rows if r["breached"]))
        stored = read_frame(db, margin_history, days)
        checks = read_frame(db, limit_checks, days)
        meta = SessionMetadata(context, days)
        for day in days:
            session = on(stored, day)
            book = session[session["broker"] == ALL] if not session.empty else session
            if not book.empty:
                row = book.iloc[0]
                regime = str(row["regime"])
                meta.record(day, MARGIN, {
                    "margin utilisation (%)": pct(_float(row["margin_utilisation"])), "VIX": _float(row["vix"]),
                    "NLV ($)": usd(_float(row["nlv"])), "regime": regime,
                    _regime_label(service.regime_names): service.regime_names.index(regime)
                    if regime in service.regime_names else None,
                    "limit breaches": int(row["breaches"]),
                    "breached limits": str(row["breached_metrics"]) or "none"})
        yield dg.MaterializeResult(asset_key=MARGIN, metadata=meta.output_metadata(MARGIN))
        yield check_result(MARGIN_CHECK, margin_suite(stored, list(service.regime_names)))
        breached = breach_lines(checks, stored)
        yield problems_check_result(
            BREACH_CHECK, breached, severity=dg.AssetCheckSeverity.WARN,
            sessions_with_breaches=len({line.split(" ", 1)[0] for line in breached}))

    return [portfolio_returns_asset, pnl_attribution_asset, risk_metrics_asset, margin_history_asset]


def _regime_label(names: tuple[str, ...]) -> str:
    """Label of the plotted regime level: '0 calm .. 3 crisis' style, from the configured order."""
    return "regime level (" + ", ".join(f"{i}={n}" for i, n in enumerate(names)) + ")"


def _index_close(quotes: pd.DataFrame, root: str) -> float | None:
    if quotes.empty:
        return None
    hit = quotes[(quotes["underlying"] == root) & (quotes["sec_type"] == "IND")]
    if hit.empty:
        return None
    value = float(hit.iloc[0]["mark"])
    return value if math.isfinite(value) and value > 0 else None


def _margin_rows(
    day: date,
    accounts: pd.DataFrame,
    greeks: pd.DataFrame,
    service: RegimeService,
    state: Any,
    overrides: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    totals = {(r["broker"], r["account_id"]): r for r in greeks.to_dict("records") if r["underlying"] == ALL}
    margin_rows: list[dict[str, Any]] = []
    check_rows: list[dict[str, Any]] = []
    scopes: list[tuple[tuple[str, str], dict[str, float], Any]] = []
    book = dict.fromkeys(("nlv", "maint_margin", "init_margin", "excess_liquidity"), 0.0)
    for acct in accounts.sort_values(["broker", "account_id"]).to_dict("records"):
        values = {k: float(acct[k]) for k in book}
        for k in book:
            book[k] += values[k]
        limits = state
        if overrides.get(acct["account_id"]) is not None:
            limits = dataclasses.replace(state, limits=service.limits_for(state.name, overrides[acct["account_id"]]))
        scopes.append(((acct["broker"], acct["account_id"]), values, limits))
    if scopes:
        scopes.append(((ALL, ALL), book, state))
    for key, values, regime in scopes:
        if values["nlv"] <= 0:
            continue  # returns_quality / account_quality report a non-positive NLV
        g = totals.get(key, {})
        snap = RiskSnapshot(
            scope=f"{key[0]}:{key[1]}", nlv=values["nlv"],
            beta_weighted_dollar_delta=float(g.get("beta_weighted_dollar_delta", 0.0) or 0.0),
            dollar_gamma_1pct=float(g.get("dollar_gamma_1pct", 0.0) or 0.0),
            vega_per_point=float(g.get("vega_per_point", 0.0) or 0.0),
            theta_per_day=float(g.get("theta_per_day", 0.0) or 0.0),
            maint_margin=values["maint_margin"],
        )
        checks = evaluate_limits(snap, regime)
        breached = [c.metric for c in checks if c.breached]
        margin_rows.append({
            "session_date": day, "broker": key[0], "account_id": key[1], **values,
            "margin_utilisation": values["maint_margin"] / values["nlv"],
            "regime": regime.name, "vix": regime.vix, "vix3m": regime.vix3m,
            "term_ratio": regime.term_ratio, "backwardation": bool(regime.backwardation),
            "breaches": len(breached), "breached_metrics": ",".join(breached),
        })
        for c in checks:
            check_rows.append({
                "session_date": day, "broker": key[0], "account_id": key[1], "metric": c.metric,
                "value": c.value, "limit_value": c.limit,
                "utilisation": c.utilisation if math.isfinite(c.utilisation) else 1e9,
                "breached": c.breached, "regime": c.regime, "vix": c.vix, "vix3m": c.vix3m,
            })
    return margin_rows, check_rows

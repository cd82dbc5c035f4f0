"""Reads the stored EOD analytics of a session (or a week) into the notify renderers' data.

Book-level numbers are the consolidated rows (``broker = account_id = '*'``); per-position
and per-strategy numbers use the account rows only, so nothing is counted twice.
Anything not stored is reported as missing and renders as ``n/a``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import Connection, Row, Table, and_, func, select
from sqlalchemy.sql.elements import ColumnElement

from portfolio_pipeline.domain.orders import Order, OrderStatus
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar
from portfolio_pipeline.notify import (
    DailySummaryData,
    ExitSignal,
    GreekAttribution,
    GreeksSnapshot,
    NamedPnl,
    StagedOrderSummary,
    WeeklyDigestData,
)
from portfolio_pipeline.orders import OrderStore
from portfolio_pipeline.storage import Database, read_partition
from portfolio_pipeline.storage.tables import (
    events,
    margin_history,
    monte_carlo_var,
    pnl_attribution,
    portfolio_greeks,
    portfolio_returns,
    risk_metrics,
    strategy_performance,
)

__all__ = [
    "EXIT_SIGNAL_KIND",
    "Gathered",
    "daily_summary_data",
    "is_week_end",
    "week_sessions",
    "weekly_digest_data",
]

BOOK: Final = {"broker": AGGREGATE, "account_id": AGGREGATE}
EXIT_SIGNAL_KIND: Final = "exit_signal"
AWAITING: Final = (OrderStatus.STAGED, OrderStatus.SHOWN)
TOP_POSITIONS: Final = 3
NAN: Final = math.nan

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Gathered(Generic[T]):
    data: T
    missing: tuple[str, ...]


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else NAN


def _book_row(conn: Connection, table: Table, day: date, **extra: Any) -> dict[str, Any] | None:
    rows = read_partition(conn, table, {"session_date": day, **BOOK, **extra})
    return rows[0] if rows else None


def _greeks(row: Mapping[str, Any]) -> GreeksSnapshot:
    return GreeksSnapshot(
        dollar_delta=_float(row["dollar_delta"]),
        dollar_gamma=_float(row["dollar_gamma_1pct"]),
        theta=_float(row["theta_per_day"]),
        vega=_float(row["vega_per_point"]),
    )


def _previous_greeks(conn: Connection, day: date) -> GreeksSnapshot | None:
    g = portfolio_greeks
    book = and_(g.c.broker == AGGREGATE, g.c.account_id == AGGREGATE, g.c.underlying == AGGREGATE)
    prev = conn.execute(
        select(func.max(g.c.session_date)).where(book, g.c.session_date < day)
    ).scalar_one_or_none()
    if prev is None:
        return None
    row = _book_row(conn, g, prev, underlying=AGGREGATE)
    return None if row is None else _greeks(row)


def _var(conn: Connection, day: date) -> tuple[float, float, str | None]:
    """1-day VaR 95/99 in money: historical (risk_metrics), else Monte Carlo."""
    r = risk_metrics
    rows = conn.execute(
        select(r.c.metric, r.c.value_usd).where(
            r.c.session_date == day,
            r.c.broker == AGGREGATE,
            r.c.account_id == AGGREGATE,
            r.c.window == "full",
            r.c.metric.in_(["var_95_historical", "var_99_historical"]),
        )
    ).all()
    found = {m: _float(v) for m, v in rows}
    v95, v99 = found.get("var_95_historical", NAN), found.get("var_99_historical", NAN)
    if math.isfinite(v95) and math.isfinite(v99):
        return v95, v99, None
    mc = _book_row(conn, monte_carlo_var, day, horizon_days=1, group_key=AGGREGATE)
    if mc is not None:
        return _float(mc["var_95"]), _float(mc["var_99"]), None
    return v95, v99, "risk_metrics"


def _ny_day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=NEW_YORK)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=NEW_YORK)
    return start, end


def _exit_signals(conn: Connection, day: date) -> tuple[ExitSignal, ...]:
    start, end = _ny_day_bounds(day)
    rows = conn.execute(
        select(events.c.event_key, events.c.payload)
        .where(events.c.kind == EXIT_SIGNAL_KIND, events.c.ts >= start, events.c.ts < end)
        .order_by(events.c.id)
    ).all()
    out = []
    for key, payload in rows:
        body = payload if isinstance(payload, dict) else {}
        position = str(body.get("position") or body.get("strategy_id") or key)
        out.append(ExitSignal(position, str(body.get("reason") or body.get("rule") or "exit rule")))
    return tuple(out)


def _order_summary(order: Order) -> StagedOrderSummary:
    legs = " / ".join(f"{leg.action} {leg.ratio} {leg.contract.key}" for leg in order.legs)
    return StagedOrderSummary(
        order_id=order.order_id,
        description=f"{order.quantity} x {legs} @ {order.limit_price:.2f}",
        status=order.status.value,
        expires_at=order.expires_at,
    )


def daily_summary_data(db: Database, day: date) -> Gathered[DailySummaryData]:
    """The daily summary of session ``day`` from the stored tables.

    Staged orders are those awaiting confirmation *now* (the summary is sent after the
    close of the latest session; for a past session they are today's, not that day's).
    """
    missing: list[str] = []
    with db.connect() as conn:
        ret = _book_row(conn, portfolio_returns, day)
        att = _book_row(conn, pnl_attribution, day, position_key=AGGREGATE)
        greeks = _book_row(conn, portfolio_greeks, day, underlying=AGGREGATE)
        margin = _book_row(conn, margin_history, day)
        prev = _previous_greeks(conn, day)
        var_95, var_99, var_missing = _var(conn, day)
        exits = _exit_signals(conn, day)
    for name, row in (
        ("portfolio_returns", ret),
        ("pnl_attribution", att),
        ("portfolio_greeks", greeks),
        ("margin_history", margin),
    ):
        if row is None:
            missing.append(name)
    if var_missing:
        missing.append(var_missing)
    orders = OrderStore(db).list_orders(list(AWAITING))
    attribution = (
        GreekAttribution(
            delta=_float(att["delta_pnl"]),
            gamma=_float(att["gamma_pnl"]),
            theta=_float(att["theta_pnl"]),
            vega=_float(att["vega_pnl"]),
            unexplained=_float(att["unexplained"]),
            other=_float(att["vanna_pnl"]) + _float(att["volga_pnl"]),
        )
        if att is not None
        else GreekAttribution(NAN, NAN, NAN, NAN, NAN)
    )
    data = DailySummaryData(
        session_date=day,
        pnl=_float(ret["pnl"]) if ret else NAN,
        nlv=_float(ret["nlv"]) if ret else None,
        attribution=attribution,
        greeks=_greeks(greeks) if greeks else GreeksSnapshot(NAN, NAN, NAN, NAN),
        previous_greeks=prev,
        regime=str(margin["regime"]) if margin else "unknown",
        vix=_float(margin["vix"]) if margin else NAN,
        var_95=var_95,
        var_99=var_99,
        exit_signals=exits,
        staged_orders=tuple(_order_summary(o) for o in orders),
    )
    return Gathered(data, tuple(missing))


# --------------------------------------------------------------------------- weekly


def is_week_end(calendar: ExchangeCalendar, day: date) -> bool:
    """Whether session ``day`` is the last session of its (ISO) week on the exchange."""
    if not calendar.is_session(day):
        return False
    return calendar.next_session(day).isocalendar()[:2] != day.isocalendar()[:2]


def week_sessions(calendar: ExchangeCalendar, day: date) -> list[date]:
    """The sessions of ``day``'s week up to and including ``day``."""
    return calendar.sessions(day - timedelta(days=day.weekday()), day)


def _account_sums(
    conn: Connection, table: Table, key: str, value: str, first: date, day: date,
    *where: ColumnElement[bool],
) -> Sequence[Row[Any, Any]]:
    """``(key, sum(value))`` over the per-account rows (no aggregate broker or account,
    and ``where``) of the sessions ``first..day``."""
    return conn.execute(
        select(table.c[key], func.sum(table.c[value]))
        .where(
            table.c.session_date.between(first, day),
            table.c.broker != AGGREGATE,
            table.c.account_id != AGGREGATE,
            *where,
        )
        .group_by(table.c[key])
    ).all()


def _metric(conn: Connection, day: date, metric: str) -> float | None:
    r = risk_metrics
    value = conn.execute(
        select(r.c.value).where(
            r.c.session_date == day,
            r.c.broker == AGGREGATE,
            r.c.account_id == AGGREGATE,
            r.c.window == "full",
            r.c.metric == metric,
        )
    ).scalar_one_or_none()
    number = _float(value)
    return number if math.isfinite(number) else None


def _ranked(totals: Mapping[str, float]) -> tuple[tuple[NamedPnl, ...], tuple[NamedPnl, ...]]:
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    best = tuple(NamedPnl(k, v) for k, v in ordered if v > 0)[:TOP_POSITIONS]
    worst = tuple(NamedPnl(k, v) for k, v in reversed(ordered) if v < 0)[:TOP_POSITIONS]
    return best, worst


def weekly_digest_data(db: Database, calendar: ExchangeCalendar, day: date) -> Gathered[WeeklyDigestData]:
    """The digest of the week ending with session ``day``."""
    sessions = week_sessions(calendar, day)
    first = sessions[0]
    missing: list[str] = []
    ret, perf, att = portfolio_returns, strategy_performance, pnl_attribution
    with db.connect() as conn:
        pnl_rows = conn.execute(
            select(ret.c.session_date, ret.c.pnl, ret.c.nlv).where(
                ret.c.broker == AGGREGATE, ret.c.account_id == AGGREGATE, ret.c.session_date.between(first, day)
            )
        ).all()
        sharpe = _metric(conn, day, "sharpe")
        max_dd = _metric(conn, day, "max_drawdown")
        current_dd = _metric(conn, day, "current_drawdown")
        strategies = _account_sums(conn, perf, "strategy_type", "daily_pnl", first, day)
        positions = _account_sums(conn, att, "position_key", "actual", first, day,
                                  att.c.position_key != AGGREGATE)
    if not pnl_rows:
        missing.append("portfolio_returns")
    if max_dd is None:
        missing.append("risk_metrics")
    nlv = next((_float(n) for d, _p, n in pnl_rows if d == day), None)
    totals: dict[str, float] = defaultdict(float)
    for key, value in positions:
        totals[str(key)] += _float(value)
    best, worst = _ranked(totals)
    attribution = tuple(
        sorted(
            (NamedPnl(str(name), _float(total)) for name, total in strategies),
            key=lambda s: (-s.pnl, s.name),
        )
    )
    data = WeeklyDigestData(
        week_ending=day,
        pnl=sum(_float(p) for _d, p, _n in pnl_rows) if pnl_rows else NAN,
        sharpe=sharpe,
        max_drawdown=abs(max_dd) if max_dd is not None else NAN,
        current_drawdown=abs(current_dd) if current_dd is not None else None,
        strategy_attribution=attribution,
        best_positions=best,
        worst_positions=worst,
        nlv=nlv,
    )
    return Gathered(data, tuple(missing))

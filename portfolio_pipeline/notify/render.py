"""Daily summary and weekly digest: plain data in, (text, html) out.

The Dagster assets gather the numbers and call :func:`render_daily_summary` /
:func:`render_weekly_digest`; :func:`daily_summary_alert` / :func:`weekly_digest_alert`
wrap the result in an :class:`~portfolio_pipeline.notify.dispatcher.Alert`.  Text is for
Telegram/Slack/log (at most 4096 characters, truncated with a note); HTML is for email,
every value escaped.  Money is in the book's currency; Greeks use the units of
``docs/ARCHITECTURE.md`` (dollar delta, dollar gamma per 1% move, theta $/day, vega $/vol point).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

from portfolio_pipeline.config.notifications import AlertType
from portfolio_pipeline.exchange_calendar import NEW_YORK
from portfolio_pipeline.notify.channels import TELEGRAM_MAX_CHARS, truncate_text
from portfolio_pipeline.notify.dispatcher import Alert

__all__ = [
    "DailySummaryData",
    "ExitSignal",
    "GreekAttribution",
    "GreeksSnapshot",
    "NamedPnl",
    "Rendered",
    "StagedOrderSummary",
    "WeeklyDigestData",
    "daily_summary_alert",
    "render_daily_summary",
    "render_weekly_digest",
    "weekly_digest_alert",
]


@dataclass(frozen=True, slots=True)
class GreekAttribution:
    """The day's P&L explained by Greek (prior-close Greeks); ``unexplained`` = actual - sum."""

    delta: float
    gamma: float
    theta: float
    vega: float
    unexplained: float
    other: float = 0.0  # vanna/volga where enabled


@dataclass(frozen=True, slots=True)
class GreeksSnapshot:
    """Portfolio Greeks: dollar delta, dollar gamma per 1% move, theta $/day, vega $/vol point."""

    dollar_delta: float
    dollar_gamma: float
    theta: float
    vega: float


@dataclass(frozen=True, slots=True)
class ExitSignal:
    position: str
    reason: str


@dataclass(frozen=True, slots=True)
class StagedOrderSummary:
    order_id: str
    description: str
    status: str
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DailySummaryData:
    session_date: date
    pnl: float
    attribution: GreekAttribution
    greeks: GreeksSnapshot
    previous_greeks: GreeksSnapshot | None
    regime: str
    vix: float
    var_95: float
    var_99: float
    exit_signals: tuple[ExitSignal, ...] = ()
    staged_orders: tuple[StagedOrderSummary, ...] = ()
    nlv: float | None = None
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class NamedPnl:
    name: str
    pnl: float


@dataclass(frozen=True, slots=True)
class WeeklyDigestData:
    week_ending: date
    pnl: float
    sharpe: float | None
    max_drawdown: float  # fraction of peak, e.g. 0.084 = 8.4%
    strategy_attribution: tuple[NamedPnl, ...] = ()
    best_positions: tuple[NamedPnl, ...] = ()
    worst_positions: tuple[NamedPnl, ...] = ()
    current_drawdown: float | None = None
    nlv: float | None = None
    currency: str = "USD"


class Rendered(NamedTuple):
    """``text`` for Telegram/Slack (<= 4096 chars), ``html`` for email."""

    text: str
    html: str


# --------------------------------------------------------------------------- formatting


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _money(x: float | None, currency: str, *, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    sign = ("+" if x > 0 else "-" if x < 0 else "") if signed else ("-" if x < 0 else "")
    amount = f"{abs(x):,.2f}"
    return f"{sign}${amount}" if currency == "USD" else f"{sign}{amount} {currency}"


def _num(x: float | None, *, signed: bool = True, decimals: int = 0) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+,.{decimals}f}" if signed else f"{x:,.{decimals}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:.1f}%"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _html_doc(title: str, sections: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<title>{_e(title)}</title></head>\n<body style="font-family:sans-serif">\n'
        f"<h2>{_e(title)}</h2>\n" + "\n".join(sections) + "\n</body></html>"
    )


def _html_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Rows of already-formatted text cells; every cell is escaped here."""
    out = ['<table border="1" cellpadding="4" cellspacing="0">']
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    out.extend("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    out.append("</table>")
    return "\n".join(out)


def _html_list(title: str, items: Sequence[str]) -> str:
    if not items:
        return f"<h3>{_e(title)}</h3>\n<p>none</p>"
    lis = "".join(f"<li>{_e(i)}</li>" for i in items)
    return f"<h3>{_e(title)}</h3>\n<ul>{lis}</ul>"


# --------------------------------------------------------------------------- daily


_GREEK_ROWS = (
    ("dollar delta", "dollar_delta"),
    ("dollar gamma (1%)", "dollar_gamma"),
    ("theta $/day", "theta"),
    ("vega $/vol pt", "vega"),
)


def _greek_rows(
    now: GreeksSnapshot, prev: GreeksSnapshot | None
) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, attr in _GREEK_ROWS:
        cur = float(getattr(now, attr))
        before = float(getattr(prev, attr)) if prev is not None else None
        change = cur - before if before is not None and _finite(before) and _finite(cur) else None
        rows.append((label, _num(before), _num(cur), _num(change)))
    return rows


def _order_line(o: StagedOrderSummary) -> str:
    expires = (
        f", expires {o.expires_at.astimezone(NEW_YORK).strftime('%Y-%m-%d %H:%M %Z')}"
        if o.expires_at is not None
        else ""
    )
    return f"{o.order_id} {o.description} [{o.status}{expires}]"


def render_daily_summary(data: DailySummaryData) -> Rendered:
    """The end-of-day summary: P&L and its Greek attribution, Greeks, regime/VIX, VaR, signals, orders."""
    cur = data.currency
    a = data.attribution
    title = f"Daily summary {data.session_date.isoformat()} ({data.session_date.strftime('%a')})"
    attribution = [
        ("delta", a.delta),
        ("gamma", a.gamma),
        ("theta", a.theta),
        ("vega", a.vega),
        *((("other", a.other),) if a.other else ()),
        ("unexplained", a.unexplained),
    ]
    greeks = _greek_rows(data.greeks, data.previous_greeks)
    exits = [f"{s.position}: {s.reason}" for s in data.exit_signals]
    orders = [_order_line(o) for o in data.staged_orders]
    nlv = f" (NLV {_money(data.nlv, cur, signed=False)})" if data.nlv is not None else ""
    vix = _num(data.vix, signed=False, decimals=1)
    var_line = f"VaR 1d: 95% {_money(data.var_95, cur, signed=False)} | 99% {_money(data.var_99, cur, signed=False)}"

    lines = [
        title,
        f"P&L: {_money(data.pnl, cur)}{nlv}",
        "Attribution: " + " | ".join(f"{k} {_money(v, cur)}" for k, v in attribution),
        f"Regime: {data.regime} (VIX {vix})",
        var_line,
        "Greeks (prev -> now, change):",
        *(f"  {label}: {b} -> {c} ({d})" for label, b, c, d in greeks),
        f"Exit signals ({len(exits)}):" if exits else "Exit signals: none",
        *(f"  - {x}" for x in exits),
        f"Staged orders awaiting confirmation ({len(orders)}):"
        if orders
        else "Staged orders: none",
        *(f"  - {x}" for x in orders),
    ]
    text = truncate_text("\n".join(lines), TELEGRAM_MAX_CHARS)

    sections = [
        _html_table(
            [
                ("P&L", _money(data.pnl, cur)),
                *((("NLV", _money(data.nlv, cur, signed=False)),) if data.nlv is not None else ()),
                ("Regime", data.regime),
                ("VIX", vix),
                ("VaR 1d 95%", _money(data.var_95, cur, signed=False)),
                ("VaR 1d 99%", _money(data.var_99, cur, signed=False)),
            ]
        ),
        "<h3>P&amp;L attribution</h3>",
        _html_table([(k, _money(v, cur)) for k, v in attribution], header=("Greek", "P&L")),
        "<h3>Greeks</h3>",
        _html_table(greeks, header=("Greek", "previous", "now", "change")),
        _html_list("Exit signals", exits),
        _html_list("Staged orders awaiting confirmation", orders),
    ]
    return Rendered(text, _html_doc(title, sections))


# --------------------------------------------------------------------------- weekly


def render_weekly_digest(data: WeeklyDigestData) -> Rendered:
    """The weekly digest: P&L, Sharpe, drawdown, strategy attribution, best/worst positions."""
    cur = data.currency
    title = f"Weekly digest, week ending {data.week_ending.isoformat()}"
    sharpe = _num(data.sharpe, signed=False, decimals=2)
    strategies = [(s.name, _money(s.pnl, cur)) for s in data.strategy_attribution]
    best = [f"{p.name}: {_money(p.pnl, cur)}" for p in data.best_positions]
    worst = [f"{p.name}: {_money(p.pnl, cur)}" for p in data.worst_positions]
    nlv = f" (NLV {_money(data.nlv, cur, signed=False)})" if data.nlv is not None else ""
    drawdown = f"max drawdown {_pct(data.max_drawdown)}" + (
        f", current {_pct(data.current_drawdown)}" if data.current_drawdown is not None else ""
    )
    lines = [
        title,
        f"P&L: {_money(data.pnl, cur)}{nlv}",
        f"Sharpe: {sharpe} | {drawdown}",
        "Strategy attribution:" if strategies else "Strategy attribution: none",
        *(f"  {n}: {v}" for n, v in strategies),
        "Best positions:" if best else "Best positions: none",
        *(f"  + {x}" for x in best),
        "Worst positions:" if worst else "Worst positions: none",
        *(f"  - {x}" for x in worst),
    ]
    text = truncate_text("\n".join(lines), TELEGRAM_MAX_CHARS)
    summary_rows: list[tuple[str, str]] = [("P&L", _money(data.pnl, cur))]
    if data.nlv is not None:
        summary_rows.append(("NLV", _money(data.nlv, cur, signed=False)))
    summary_rows += [("Sharpe", sharpe), ("Max drawdown", _pct(data.max_drawdown))]
    if data.current_drawdown is not None:
        summary_rows.append(("Current drawdown", _pct(data.current_drawdown)))
    sections = [
        _html_table(summary_rows),
        "<h3>Strategy attribution</h3>",
        _html_table(strategies, header=("Strategy", "P&L")) if strategies else "<p>none</p>",
        _html_list("Best positions", best),
        _html_list("Worst positions", worst),
    ]
    return Rendered(text, _html_doc(title, sections))


# --------------------------------------------------------------------------- alerts


def daily_summary_alert(data: DailySummaryData) -> Alert:
    """The daily summary as an alert keyed by session (re-running the asset sends nothing new)."""
    return _rendered_alert(f"daily_summary:{data.session_date.isoformat()}", AlertType.DAILY_SUMMARY,
                           render_daily_summary(data), regime=data.regime)


def weekly_digest_alert(data: WeeklyDigestData) -> Alert:
    """The weekly digest as an alert keyed by week."""
    return _rendered_alert(f"weekly_digest:{data.week_ending.isoformat()}", AlertType.WEEKLY_DIGEST,
                           render_weekly_digest(data))


def _rendered_alert(key: str, kind: AlertType, rendered: Rendered, *, regime: str | None = None) -> Alert:
    """An alert of a rendered text: its first line is the title."""
    text, body_html = rendered
    return Alert(key=key, type=kind, title=text.splitlines()[0], text=text, html=body_html, regime=regime)

"""Alert texts a trader can act on: the account and broker, numbers with their units,
New York times, and the next step (the order commands, or what to consider when no
automatic hedge exists).  Plain data in, text out; no I/O.

Units of the limit metrics (``portfolio_pipeline.domain.limits``) are fractions of NLV:
beta-weighted dollar delta / NLV, dollar gamma per 1% move / NLV, vega $ per vol point /
NLV, theta $ per day / NLV, maintenance margin / NLV (see the README's Units section).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.exchange_calendar import NEW_YORK

__all__ = [
    "HEDGE_RULE_METRICS",
    "METRICS",
    "BreachText",
    "MetricUnits",
    "account_label",
    "breach_message",
    "exit_signal_message",
    "fmt_money",
    "fmt_number",
    "fmt_pct",
    "ny_time",
    "order_commands",
]


def order_commands(order_id: str) -> str:
    """The command sequence that acts on a proposed or staged hedge order (the ONE place
    the alert texts name it)."""
    return (f"portfolio orders show {order_id}, then portfolio orders confirm {order_id} TOKEN "
            f"(show stages it at the broker without transmitting and prints the token); "
            f"or portfolio orders reject {order_id}")


@dataclass(frozen=True, slots=True)
class MetricUnits:
    label: str
    unit: str
    """What the fraction of NLV measures, e.g. "of NLV per vol point"."""
    dollars: str
    """What ``value x NLV`` (in dollars) measures, e.g. "per vol point"."""
    consider: str
    """What to consider when no automatic hedge exists for the metric."""


METRICS: Final[Mapping[str, MetricUnits]] = {
    "beta_weighted_delta": MetricUnits(
        "beta-weighted delta", "of NLV", "beta-weighted dollar delta",
        "index futures or SPY/SPX options against the net delta, or closing the largest "
        "directional positions",
    ),
    "short_gamma": MetricUnits(
        "short gamma", "of NLV per 1% move", "per 1% move",
        "buying near-the-money options (long gamma) or closing short options close to expiry",
    ),
    "vega": MetricUnits(
        "vega", "of NLV per vol point", "per vol point",
        "long or short options or calendars against the net vega",
    ),
    "theta": MetricUnits(
        "theta", "of NLV per day", "per day",
        "reducing long premium (closing long options, or selling premium against them)",
    ),
    "margin_utilisation": MetricUnits(
        "maintenance margin", "of NLV", "of margin",
        "closing or reducing the positions with the largest margin requirement, or adding "
        "cash; no order can hedge margin",
    ),
}

HEDGE_RULE_METRICS: Final = frozenset({"beta_weighted_delta", "vega"})
"""Metrics the streaming service's proposer has an automatic hedge rule for
(``streaming_service/proposer.py``); other breaches alert without a proposal."""


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_number(value: object, decimals: int = 2) -> str:
    """``20.04`` for 20.038447...; "n/a" when missing or not finite."""
    x = _float(value)
    return "n/a" if x is None else f"{x:,.{decimals}f}"


def fmt_pct(fraction: object, *, signed: bool = False, decimals: int = 2) -> str:
    """A fraction as a percentage: 0.6234 -> "62.34%"."""
    x = _float(fraction)
    if x is None:
        return "n/a"
    return f"{x * 100:+.{decimals}f}%" if signed else f"{x * 100:.{decimals}f}%"


def fmt_money(value: object, *, signed: bool = False, currency: str = "USD") -> str:
    """Dollars rounded to the dollar: -312450.7 -> "-$312,451"."""
    x = _float(value)
    if x is None:
        return "n/a"
    sign = "-" if x < 0 else ("+" if signed and x > 0 else "")
    amount = f"{abs(round(x)):,.0f}"
    return f"{sign}${amount}" if currency == "USD" else f"{sign}{amount} {currency}"


def ny_time(value: datetime | str | None) -> str:
    """An instant in New York time: "2018-02-05 10:31 EST"."""
    if value is None:
        return "n/a"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: alert times must be timezone-aware")
    return at.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z")


def account_label(account_id: str | None, broker: str | None, display: str | None = None) -> str:
    """ "account DEMO-001 (demo broker)", "account IBKR IRA (DEMO-IRA, ibkr broker)" with a
    display name, "the consolidated book (every account)" for ``"*"``."""
    if not account_id:
        return "account n/a"
    if account_id == AGGREGATE:
        return "the consolidated book (every account)"
    if display and display != account_id:
        return f"account {display} ({account_id}, {broker} broker)" if broker else f"account {display} ({account_id})"
    return f"account {account_id} ({broker} broker)" if broker else f"account {account_id}"


def _short_account(account_id: str | None, display: str | None) -> str:
    if not account_id:
        return "n/a"
    if account_id == AGGREGATE:
        return "consolidated book"
    return f"{display} ({account_id})" if display and display != account_id else account_id


@dataclass(frozen=True, slots=True)
class BreachText:
    title: str
    text: str


def _metric_line(metric: str, breach: Mapping[str, Any], nlv: float | None) -> str:
    units = METRICS.get(metric)
    label = units.label if units else metric
    unit = units.unit if units else "of NLV"
    value, limit = breach.get("value"), breach.get("limit")
    dollars = ""
    v = _float(value)
    if units is not None and nlv is not None and v is not None:
        dollars = f" ({fmt_money(v * nlv, signed=True)} {units.dollars})"
    util = _float(breach.get("utilisation"))
    used = f", {util * 100:.0f}% of the limit" if util is not None else ""
    return (
        f"{label} {fmt_pct(value, signed=True)} {unit}{dollars} vs limit "
        f"{fmt_pct(limit, signed=metric == 'theta')} {unit}{used}"
    )


def _proposal_lines(proposals: Sequence[Mapping[str, Any]]) -> list[str]:
    lines: list[str] = []
    for p in proposals:
        price = _float(p.get("limit_price"))
        legs = " / ".join(str(leg) for leg in p.get("legs", []))
        lines.append(
            f"hedge proposal {p['order_id']} [{p.get('status')}]: {p.get('quantity')} x {legs}"
            + (f" @ {price:.2f}" if price is not None else "")
        )
        lines.extend(f"  broker warning: {w}" for w in p.get("warnings", []))
        lines.append(f"  to act: {order_commands(str(p['order_id']))}")
    return lines


def breach_message(record: Mapping[str, Any], *, broker: str | None = None, display: str | None = None
                   ) -> BreachText:
    """Title and text of a ``breach_response`` record (breach event payload, the risk
    snapshot of the moment, the hedge proposals)."""
    b: Mapping[str, Any] = record.get("breach") or {}
    risk: Mapping[str, Any] | None = record.get("risk")
    metric = str(b.get("metric") or "unknown metric")
    units = METRICS.get(metric)
    label = units.label if units else metric
    nlv = _float(b.get("nlv"))
    if nlv is None and risk:
        nlv = _float(risk.get("nlv"))
    account = account_label(record.get("account_id"), broker, display)
    regime = b.get("regime") or "n/a"
    vix = fmt_number(b.get("vix"))
    title = (
        f"Limit breach: {label} {fmt_pct(b.get('value'), signed=True, decimals=1)} "
        f"{units.unit if units else 'of NLV'} "
        f"(limit {fmt_pct(b.get('limit'), signed=metric == 'theta', decimals=1)}), "
        f"{_short_account(record.get('account_id'), display)}, {regime}, VIX {vix}"
    )
    lines = [
        f"{account}, {ny_time(record.get('ts'))}",
        _metric_line(metric, b, nlv),
        f"regime {regime}, VIX {vix}, VIX3M {fmt_number(b.get('vix3m'))}",
    ]
    if risk:
        lines.append(
            f"NLV {fmt_money(risk.get('nlv'))}; beta-weighted delta "
            f"{fmt_money(risk.get('beta_weighted_dollar_delta'), signed=True)}; gamma "
            f"{fmt_money(risk.get('dollar_gamma_1pct'), signed=True)} per 1% move; vega "
            f"{fmt_money(risk.get('vega_per_point'), signed=True)} per vol point; theta "
            f"{fmt_money(risk.get('theta_per_day'), signed=True)} per day"
        )
    proposals = list(record.get("proposals") or [])
    if proposals:
        lines += _proposal_lines(proposals)
        lines.append("Orders are never sent automatically: only confirm with the token transmits.")
    elif metric not in HEDGE_RULE_METRICS:
        consider = units.consider if units else "reducing the positions that drive this metric"
        lines.append(f"No hedge rule for this metric ({label}): no order was proposed.")
        lines.append(f"Consider: {consider}.")
    else:
        lines.append(
            f"No hedge proposal was recorded with this {label} breach: `portfolio orders "
            "list` shows any proposed since; otherwise consider hedging by hand."
        )
    return BreachText(title, "\n".join(lines))


def exit_signal_message(
    payload: Mapping[str, Any], *, account_id: str | None, ts: datetime
) -> BreachText:
    """Title and text of an ``exit_signal`` event: position, rule, P&L, days to expiry."""
    position = str(payload.get("position") or payload.get("strategy_id") or "position")
    rule = str(payload.get("rule") or "exit rule")
    reason = str(payload.get("reason") or rule)
    broker = payload.get("broker")
    account = account_label(account_id or payload.get("account_id"), broker if broker else None)
    dte = _float(payload.get("dte"))
    dte_text = "n/a" if dte is None else f"{dte:.0f}"
    pnl = fmt_money(payload.get("pnl"), signed=True)
    session = payload.get("session") or ts.astimezone(NEW_YORK).date().isoformat()
    lines = [
        f"{position}: {reason}",
        f"P&L {pnl}, {dte_text} days to expiry",
        f"rule {rule}, session {session} (signal at {ny_time(ts)})",
        account,
    ]
    title = f"Exit signal: {position} ({rule}), P&L {pnl}, {dte_text} DTE"
    return BreachText(title, "\n".join(lines))

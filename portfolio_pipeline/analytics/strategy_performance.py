"""Per-strategy P&L of one session: allocation of each account's P&L to its strategies,
the strategy's Greeks and its share of the P&L attribution (rows of strategy_performance).

Pure: :class:`StrategySession` holds the stored rows of the session and of the previous
stored session (read by ``defs/strategies/book.py``); :func:`performance_rows` computes.
State across sessions: entry prices, cumulative P&L and max adverse excursion carry from
the previous session's rows; a session with no stored predecessor is a cold start (entry
at the broker's average cost, daily P&L 0) unless today's executions opened every
position.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.greeks import position_greeks as scale_greeks
from portfolio_pipeline.domain.strategies.pnl import Trade, allocate_pnl

__all__ = ["ATTRIBUTION", "GREEK_COLUMNS", "UNALLOCATED", "PerformanceResult", "StrategySession",
           "direct_pnl", "entry_fallback_prices", "performance_rows"]

Account = tuple[str, str]
PositionKey = tuple[str, str, str]
Holdings = dict[str, dict[str, float]]
"""strategy_id -> position_key -> quantity held."""
UNALLOCATED = "_unallocated"
GREEK_COLUMNS = ("share_delta", "dollar_delta", "dollar_gamma_1pct", "theta_per_day", "vega_per_point")
ATTRIBUTION = {"delta_pnl": ("delta_pnl",), "gamma_pnl": ("gamma_pnl",), "theta_pnl": ("theta_pnl",),
               "vega_pnl": ("vega_pnl",), "other_pnl": ("vanna_pnl", "volga_pnl"),
               "unexplained_pnl": ("unexplained",)}


@dataclass(frozen=True)
class StrategySession:
    """The stored rows one session's strategy P&L needs (keyed as noted)."""

    day: date
    prev_day: date | None
    groups: Mapping[Account, list[dict[str, Any]]]
    """strategy_groups rows of the session per account."""
    prev_groups: Mapping[Account, list[dict[str, Any]]]
    """open strategy_groups rows of the previous stored session per account."""
    prev_perf: Mapping[tuple[str, str, str], Mapping[str, Any]]
    """(broker, account, strategy_id) -> strategy_performance row of the previous session."""
    positions: Mapping[PositionKey, Mapping[str, Any]]
    prev_positions: Mapping[PositionKey, Mapping[str, Any]]
    greeks: Mapping[PositionKey, Mapping[str, Any]]
    attribution: Mapping[PositionKey, Mapping[str, Any]]
    quotes: Mapping[str, Mapping[str, Any]]
    """instrument_key -> market_snapshot row."""


@dataclass(slots=True)
class PerformanceResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    account_pnl: dict[Account, float] = field(default_factory=dict)
    """Each account's position P&L computed directly (not through the allocation)."""


def _holdings(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["status"] != "open":
            continue
        held: dict[str, float] = defaultdict(float)
        for leg in r["legs"] or []:
            held[leg["position_key"]] += float(leg["quantity"])
        out[r["strategy_id"]] = dict(held)
    return out


def _quote_greeks(quotes: Mapping[str, Mapping[str, Any]], key: str, leg: Mapping[str, Any],
                  qty: float, spot_fallback: float | None) -> dict[str, float] | None:
    if leg["sec_type"] in ("STK", "FUT"):
        spot = (quotes.get(key) or {}).get("mark") or spot_fallback
        if spot is None:
            return None
        units = qty * float(leg["multiplier"])
        return {"share_delta": units, "dollar_delta": units * float(spot), "dollar_gamma_1pct": 0.0,
                "theta_per_day": 0.0, "vega_per_point": 0.0}
    q = quotes.get(key)
    if q is None or any(q.get(g) is None for g in ("delta", "gamma", "vega", "theta")):
        return None
    spot = q.get("underlying_price") or spot_fallback
    if spot is None:
        return None
    g = scale_greeks(delta=q["delta"], gamma=q["gamma"], vega=q["vega"], theta=q["theta"],
                        quantity=qty, multiplier=float(leg["multiplier"]), spot=float(spot))
    return {"share_delta": float(g.share_delta), "dollar_delta": float(g.dollar_delta),
            "dollar_gamma_1pct": float(g.dollar_gamma_1pct), "theta_per_day": float(g.theta_per_day),
            "vega_per_point": float(g.vega_per_point)}


def _opened_by_fills(after: Mapping[str, Mapping[str, float]], trades: Mapping[str, Sequence[Trade]]) -> bool:
    """True when every held quantity is exactly what today's executions opened."""
    held: dict[str, float] = defaultdict(float)
    for h in after.values():
        for k, q in h.items():
            held[k] += q
    return all(abs(q - sum(t.quantity for t in trades.get(k, ()))) <= 1e-9 for k, q in held.items())


def _account_legs(session: StrategySession, account: Account) -> dict[str, dict[str, Any]]:
    """position_key -> leg (JSON of strategy_groups) of today's and yesterday's strategies."""
    legs: dict[str, dict[str, Any]] = {}
    for r in [*session.groups.get(account, []), *session.prev_groups.get(account, [])]:
        for leg in r["legs"] or []:
            legs.setdefault(leg["position_key"], leg)
    return legs


def entry_fallback_prices(session: StrategySession, account: Account, legs: Iterable[str],
                          marks: Mapping[str, float], prev_marks: Mapping[str, float]) -> dict[str, float]:
    """position_key -> entry price of quantity opened today when no execution says:
    the average cost of the added quantity (from the broker's average prices), else the mark."""
    out: dict[str, float] = {}
    for key in legs:
        now = session.positions.get((*account, key))
        was = session.prev_positions.get((*account, key))
        q_now = float(now["quantity"]) if now else 0.0
        q_was = float(was["quantity"]) if was else 0.0
        if now is not None and (was is None or (q_now * q_was > 0 and abs(q_now) > abs(q_was))):
            basis = float(now["avg_price"]) * q_now - (float(was["avg_price"]) * q_was if was else 0.0)
            out[key] = basis / (q_now - q_was)
        else:
            out[key] = marks.get(key, prev_marks.get(key, 0.0))
    return out


def direct_pnl(before: Holdings, after: Holdings, prev_marks: Mapping[str, float], marks: Mapping[str, float],
               multipliers: Mapping[str, float], trades: Mapping[str, Sequence[Trade]]) -> float:
    """An account's position P&L computed directly: sum over positions of
    multiplier x (q_now x mark - q_was x prev_mark) minus the cash of today's trades."""
    direct = 0.0
    keys = {k for h in (*before.values(), *after.values()) for k in h} | set(trades)
    for k in keys:
        q_now = sum(h.get(k, 0.0) for h in after.values())
        q_was = sum(h.get(k, 0.0) for h in before.values())
        direct += multipliers[k] * (q_now * marks.get(k, 0.0) - q_was * prev_marks.get(k, 0.0))
        direct -= sum(multipliers[k] * t.quantity * t.price + t.costs for t in trades.get(k, ()))
    return direct


@dataclass
class _AccountDay:
    """One account's holdings, marks and trades of the session (after the cold-start rule)."""

    account: Account
    legs: dict[str, dict[str, Any]]
    before: Holdings
    after: Holdings
    marks: dict[str, float]
    prev_marks: dict[str, float]
    trades: dict[str, list[Trade]]
    entries: dict[str, dict[str, float]]
    cold: bool
    multipliers: dict[str, float]
    fallback: dict[str, float]
    """Entry prices where no execution says (:func:`entry_fallback_prices`, before the cold-start rule)."""


def _account_day(session: StrategySession, account: Account, executions: Sequence[Execution],
                 execution_session: Callable[[Execution], date]) -> _AccountDay:
    legs = _account_legs(session, account)
    after = _holdings(session.groups.get(account, []))
    before = _holdings(session.prev_groups.get(account, [])) if session.prev_day else {}
    marks = {k[2]: float(r["mark"]) for k, r in session.positions.items() if k[:2] == account}
    prev_marks = {k[2]: float(r["mark"]) for k, r in session.prev_positions.items() if k[:2] == account}
    trades: dict[str, list[Trade]] = defaultdict(list)
    for e in executions:
        if execution_session(e) == session.day and e.contract.key in legs:
            trades[e.contract.key].append(Trade(e.quantity, e.price, e.commission + e.fees))
    entries = {sid: dict(session.prev_perf[(*account, sid)]["entry_prices"] or {})
               for sid in before if (*account, sid) in session.prev_perf}
    fallback = entry_fallback_prices(session, account, legs, marks, prev_marks)
    cold = session.prev_day is None and not _opened_by_fills(after, trades)
    if session.prev_day is None and not cold:
        # the book's first session, every position opened by today's fills: a normal day
        # from an empty book (opening commissions and the fill-to-close move included)
        before, prev_marks, entries = {}, {}, {}
    if cold:  # positions of unknown origin: entry at the broker's average cost, no daily P&L
        before = {sid: dict(h) for sid, h in after.items()}
        prev_marks = {k[2]: float(r["avg_price"]) for k, r in session.positions.items() if k[:2] == account}
        trades = defaultdict(list)
        entries = {sid: {k: prev_marks[k] for k in h} for sid, h in after.items()}
    multipliers = {k: float(v["multiplier"]) for k, v in legs.items()}
    return _AccountDay(account, legs, before, after, marks, prev_marks, trades, entries, cold, multipliers,
                       fallback)


def _strategy_row(session: StrategySession, acct: _AccountDay, sid: str, share: Any,
                  group: Mapping[str, Any] | None) -> dict[str, Any]:
    broker, account_id = acct.account
    pnl = 0.0 if share is None or acct.cold else share.pnl
    prev = session.prev_perf.get((broker, account_id, sid))
    held = acct.after.get(sid, {})
    cumulative = (float(prev["cumulative_pnl"]) if prev else 0.0) + pnl
    if acct.cold:
        cumulative = sum(acct.multipliers[k] * q * (acct.marks.get(k, 0.0) - acct.prev_marks.get(k, 0.0))
                         for k, q in held.items())
    realized = (float(prev["realized_pnl"]) if prev else 0.0) + (share.realized if share else 0.0)
    if not held:
        realized = cumulative
    return {
        "session_date": session.day, "broker": broker, "account_id": account_id, "strategy_id": sid,
        "underlying": group["underlying"] if group else "*",
        "strategy_type": group["strategy_type"] if group else "custom",
        "status": "open" if held else "closed", "opened_on": group["opened_on"] if group else session.day,
        "daily_pnl": pnl, "cumulative_pnl": cumulative,
        "realized_pnl": realized, "unrealized_pnl": cumulative - realized,
        "commissions": (float(prev["commissions"]) if prev else 0.0) + (share.costs if share else 0.0),
        "max_adverse_excursion": min(float(prev["max_adverse_excursion"]) if prev else 0.0, cumulative, 0.0),
        "market_value": sum(acct.multipliers[k] * q * acct.marks.get(k, 0.0) for k, q in held.items()),
        "entry_prices": {k: v for k, v in (share.entry_prices if share else {}).items() if k in held},
        **_strategy_greeks(acct.account, held, acct.legs, session.greeks, session.quotes, session.positions),
        **_strategy_attribution(acct.account, sid, acct.before, acct.after, session.attribution),
    }


def performance_rows(
    session: StrategySession,
    executions: Mapping[Account, Sequence[Execution]],
    execution_session: Callable[[Execution], date],
) -> PerformanceResult:
    """The ``strategy_performance`` rows of one session and each account's direct P&L."""
    result = PerformanceResult()
    for account in sorted(set(session.groups) | set(session.prev_groups)):
        acct = _account_day(session, account, executions.get(account, ()), execution_session)
        shares = allocate_pnl(acct.before, acct.after, acct.prev_marks, acct.marks, acct.multipliers,
                              acct.trades, acct.entries,
                              fallback_prices=acct.fallback, unallocated=UNALLOCATED)
        result.account_pnl[account] = 0.0 if acct.cold else direct_pnl(
            acct.before, acct.after, acct.prev_marks, acct.marks, acct.multipliers, acct.trades)
        meta = {r["strategy_id"]: r for r in session.groups.get(account, [])}
        for sid in sorted(set(meta) | set(shares)):
            result.rows.append(_strategy_row(session, acct, sid, shares.get(sid), meta.get(sid)))
    return result


def _strategy_greeks(account: Account, held: Mapping[str, float], legs: Mapping[str, Mapping[str, Any]],
                     greeks: Mapping[tuple[str, str, str], Mapping[str, Any]],
                     quotes: Mapping[str, Mapping[str, Any]],
                     positions: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> dict[str, Any]:
    totals = dict.fromkeys(GREEK_COLUMNS, 0.0)
    sources: set[str] = set()
    for key, qty in held.items():
        g = greeks.get((*account, key))
        if g is not None and g["quantity"]:
            frac = qty / float(g["quantity"])
            for c in GREEK_COLUMNS:
                totals[c] += float(g[c] or 0.0) * frac
            sources.add("position_greeks")
            continue
        pos = positions.get((*account, key))
        spot = float(pos["underlying_price"]) if pos and pos.get("underlying_price") else None
        q = _quote_greeks(quotes, key, legs[key], qty, spot)
        if q is None:
            sources.add("none")
            continue
        for c in GREEK_COLUMNS:
            totals[c] += q[c]
        sources.add("market")
    source = "none" if not sources else sorted(sources)[0] if len(sources) == 1 else "mixed"
    return {**totals, "greeks_source": source[:16]}


def _strategy_attribution(account: Account, sid: str, before: Mapping[str, Mapping[str, float]],
                          after: Mapping[str, Mapping[str, float]],
                          attribution: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(ATTRIBUTION, None)
    for basis in (before, after):
        for key, qty in basis.get(sid, {}).items():
            a = attribution.get((*account, key))
            if a is None:
                continue
            total = sum(h.get(key, 0.0) for h in basis.values())
            if total == 0:
                continue
            frac = qty / total
            for name, cols in ATTRIBUTION.items():
                out[name] = (out[name] or 0.0) + sum(float(a[c] or 0.0) for c in cols) * frac
        if any(v is not None for v in out.values()):
            break  # prior-close holdings when the strategy held anything yesterday
    return out

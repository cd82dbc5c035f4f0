"""Inputs and rows of the strategy assets (I/O and row shaping; the rules are in domain/quant).

State across sessions: each session reads the latest stored session before it
(``strategy_groups`` / ``strategy_performance``), so ids, entry prices, cumulative P&L
and max adverse excursion carry forward.  Sessions must therefore be materialized in
order (a single-run backfill does that); a session with no stored predecessor is a
cold start (open dates and refs from executions, entry at the broker's average cost,
daily P&L 0).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import Connection, Table, and_, func, select

from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.greeks import position_greeks as scale_greeks
from portfolio_pipeline.domain.lifecycle import (
    ExitRulesFile,
    evaluate_exit_rules,
    lifecycle_metrics,
)
from portfolio_pipeline.domain.positions import Contract, contract_from_row
from portfolio_pipeline.domain.strategies.identity import (
    ExecutionFact,
    ManualStrategy,
    StrategyState,
    assign_strategies,
)
from portfolio_pipeline.domain.strategies.legs import Leg
from portfolio_pipeline.domain.strategies.pnl import Trade, allocate_pnl
from portfolio_pipeline.domain.strategies.settings import (
    LiquiditySettings,
    StrategiesFile,
    ThetaVegaSettings,
)
from portfolio_pipeline.exchange_calendar import NEW_YORK
from portfolio_pipeline.quant.sizing import kelly_from_trades
from portfolio_pipeline.storage import read_partition
from portfolio_pipeline.storage.tables import (
    account_snapshot,
    market_snapshot,
    pnl_attribution,
    position_greeks,
    position_lifecycle,
    positions_snapshot,
    strategy_groups,
    strategy_overrides,
    strategy_performance,
    theta_vega_history,
)

logger = logging.getLogger(__name__)

Account = tuple[str, str]
UNALLOCATED = "_unallocated"
GREEK_COLUMNS = ("share_delta", "dollar_delta", "dollar_gamma_1pct", "theta_per_day", "vega_per_point")
ATTRIBUTION = {"delta_pnl": ("delta_pnl",), "gamma_pnl": ("gamma_pnl",), "theta_pnl": ("theta_pnl",),
               "vega_pnl": ("vega_pnl",), "other_pnl": ("vanna_pnl", "volga_pnl"),
               "unexplained_pnl": ("unexplained",)}


# ------------------------------------------------------------------------------ reads


def rows_on(conn: Connection, table: Table, day: date, **where: Any) -> list[dict[str, Any]]:
    return read_partition(conn, table, {"session_date": day, **where})


def previous_session(conn: Connection, table: Table, day: date) -> date | None:
    value = conn.execute(select(func.max(table.c.session_date)).where(table.c.session_date < day)).scalar()
    return value if isinstance(value, date) else None


def execution_session(ex: Execution) -> date:
    return ex.ts.astimezone(NEW_YORK).date()


def leg_from_row(row: Mapping[str, Any]) -> Leg:
    contract = contract_from_row(row, source=f"strategy leg {row.get('position_key')}")
    return Leg(str(row["position_key"]), contract, float(row["quantity"]), float(row["multiplier"]))


def leg_json(leg: Leg) -> dict[str, Any]:
    c = leg.contract
    return {
        "position_key": leg.position_key, "quantity": leg.quantity, "multiplier": leg.multiplier,
        "underlying": c.underlying, "sec_type": c.sec_type,
        "expiry": c.expiry.isoformat() if c.expiry else None, "strike": c.strike, "right": c.right,
        "trading_class": c.trading_class,
    }


def leg_from_json(data: Mapping[str, Any]) -> Leg:
    return leg_from_row(data)


def state_from_row(row: Mapping[str, Any]) -> StrategyState:
    return StrategyState(
        strategy_id=row["strategy_id"], underlying=row["underlying"],
        strategy_type=row["strategy_type"], detail=row["detail"],
        legs=tuple(leg_from_json(x) for x in row["legs"] or []), opened_on=row["opened_on"],
        parent_id=row["parent_id"], name=row["name"], source=row["source"],
        closed_on=row["closed_on"], open_refs=tuple(row["open_refs"] or ()),
    )


def group_row(day: date, account: Account, s: StrategyState) -> dict[str, Any]:
    return {
        "session_date": day, "broker": account[0], "account_id": account[1],
        "strategy_id": s.strategy_id, "underlying": s.underlying, "strategy_type": s.strategy_type,
        "detail": s.detail[:64], "name": s.name, "source": s.source,
        "status": "open" if s.is_open else "closed", "opened_on": s.opened_on,
        "closed_on": s.closed_on, "parent_id": s.parent_id,
        "legs": [leg_json(x) for x in s.legs], "open_refs": list(s.open_refs),
    }


def by_account(rows: Iterable[Mapping[str, Any]]) -> dict[Account, list[dict[str, Any]]]:
    out: dict[Account, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[(r["broker"], r["account_id"])].append(dict(r))
    return out


# ------------------------------------------------------------------------------ groups


def manual_overrides(conn: Connection, cfg: StrategiesFile | None) -> dict[str, list[ManualStrategy]]:
    """account_id -> manual strategies: the database (CLI) first, the config file wins."""
    merged: dict[tuple[str, str], ManualStrategy] = {}
    for r in conn.execute(select(strategy_overrides)).mappings():
        merged[(r["account_id"], r["strategy_id"])] = ManualStrategy(
            r["strategy_id"], r["name"], r["strategy_type"], r["legs"] or None)
    for o in (cfg.overrides if cfg else []):
        merged[(o.account_id, o.id)] = ManualStrategy(o.id, o.name, o.type, o.legs)
    out: dict[str, list[ManualStrategy]] = defaultdict(list)
    for (account_id, _), m in sorted(merged.items()):
        out[account_id].append(m)
    return out


def execution_facts(execs: Sequence[Execution], day: date) -> list[ExecutionFact]:
    return [ExecutionFact(e.contract.key, e.quantity, execution_session(e), e.order_ref, e.kind)
            for e in execs if execution_session(e) <= day]


def tag_session(
    conn: Connection,
    day: date,
    executions: Mapping[Account, Sequence[Execution]],
    cfg: StrategiesFile | None,
) -> list[dict[str, Any]]:
    """The ``strategy_groups`` rows of one session."""
    positions = by_account(rows_on(conn, positions_snapshot, day))
    prev_day = previous_session(conn, strategy_groups, day)
    previous = by_account(rows_on(conn, strategy_groups, prev_day, status="open")) if prev_day else {}
    cash = {(r["broker"], r["account_id"]): float(r["cash"]) for r in rows_on(conn, account_snapshot, day)}
    manual = manual_overrides(conn, cfg)
    rows: list[dict[str, Any]] = []
    for account in sorted(set(positions) | set(previous)):
        legs = [leg_from_row(r) for r in positions.get(account, [])]
        prev = [state_from_row(r) for r in previous.get(account, [])]
        states = assign_strategies(
            day, account[1], legs, prev,
            executions=execution_facts(executions.get(account, ()), day),
            manual=manual.get(account[1], []), cash=cash.get(account),
        )
        rows.extend(group_row(day, account, s) for s in states)
    logger.info("session=%s strategies=%d cold_start=%s", day, len(rows), prev_day is None)
    return rows


# ------------------------------------------------------------------------------ performance


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


def performance_session(
    conn: Connection, day: date, executions: Mapping[Account, Sequence[Execution]]
) -> PerformanceResult:
    """The ``strategy_performance`` rows of one session (after ``strategy_groups``)."""
    groups = by_account(rows_on(conn, strategy_groups, day))
    prev_day = previous_session(conn, strategy_groups, day)
    prev_groups = by_account(rows_on(conn, strategy_groups, prev_day, status="open")) if prev_day else {}
    prev_perf = {(r["broker"], r["account_id"], r["strategy_id"]): r
                 for r in (rows_on(conn, strategy_performance, prev_day) if prev_day else [])}
    positions = {(r["broker"], r["account_id"], r["position_key"]): r
                 for r in rows_on(conn, positions_snapshot, day)}
    prev_positions = {(r["broker"], r["account_id"], r["position_key"]): r
                      for r in (rows_on(conn, positions_snapshot, prev_day) if prev_day else [])}
    greeks = {(r["broker"], r["account_id"], r["position_key"]): r
              for r in rows_on(conn, position_greeks, day)}
    attribution = {(r["broker"], r["account_id"], r["position_key"]): r
                   for r in rows_on(conn, pnl_attribution, day)
                   if r["position_key"] != "*" and r["account_id"] != "*"}
    quotes: dict[str, dict[str, Any]] = {}
    for r in rows_on(conn, market_snapshot, day):
        quotes.setdefault(r["instrument_key"], r)
    result = PerformanceResult()
    for account in sorted(set(groups) | set(prev_groups)):
        broker, account_id = account
        today_rows = groups.get(account, [])
        after = _holdings(today_rows)
        before = _holdings(prev_groups.get(account, [])) if prev_day else {}
        legs_info: dict[str, dict[str, Any]] = {}
        for r in [*today_rows, *prev_groups.get(account, [])]:
            for leg in r["legs"] or []:
                legs_info.setdefault(leg["position_key"], leg)
        marks = {k[2]: float(r["mark"]) for k, r in positions.items() if k[:2] == account}
        prev_marks = {k[2]: float(r["mark"]) for k, r in prev_positions.items() if k[:2] == account}
        trades: dict[str, list[Trade]] = defaultdict(list)
        for e in executions.get(account, ()):
            if execution_session(e) == day and e.contract.key in legs_info:
                trades[e.contract.key].append(Trade(e.quantity, e.price, e.commission + e.fees))
        fallback = {}
        for key in legs_info:
            now = positions.get((broker, account_id, key))
            was = prev_positions.get((broker, account_id, key))
            q_now = float(now["quantity"]) if now else 0.0
            q_was = float(was["quantity"]) if was else 0.0
            if now is not None and (was is None or (q_now * q_was > 0 and abs(q_now) > abs(q_was))):
                opened = q_now - q_was
                basis = float(now["avg_price"]) * q_now - (float(was["avg_price"]) * q_was if was else 0.0)
                fallback[key] = basis / opened
            else:
                fallback[key] = marks.get(key, prev_marks.get(key, 0.0))
        multipliers = {k: float(v["multiplier"]) for k, v in legs_info.items()}
        entries = {sid: dict(prev_perf[(broker, account_id, sid)]["entry_prices"] or {})
                   for sid in before if (broker, account_id, sid) in prev_perf}
        cold = prev_day is None and not _opened_by_fills(after, trades)
        if prev_day is None and not cold:
            # the book's first session, every position opened by today's fills: a normal day
            # from an empty book (opening commissions and the fill-to-close move included)
            before, prev_marks, entries = {}, {}, {}
        if cold:  # positions of unknown origin: entry at the broker's average cost, no daily P&L
            before = {sid: dict(h) for sid, h in after.items()}
            prev_marks = {k[2]: float(r["avg_price"]) for k, r in positions.items() if k[:2] == account}
            trades = defaultdict(list)
            entries = {sid: {k: prev_marks[k] for k in h} for sid, h in after.items()}
        shares = allocate_pnl(before, after, prev_marks, marks, multipliers, trades, entries,
                              fallback_prices=fallback, unallocated=UNALLOCATED)
        direct = 0.0
        keys = {k for h in (*before.values(), *after.values()) for k in h} | set(trades)
        for k in keys:
            q_now = sum(h.get(k, 0.0) for h in after.values())
            q_was = sum(h.get(k, 0.0) for h in before.values())
            direct += multipliers[k] * (q_now * marks.get(k, 0.0) - q_was * prev_marks.get(k, 0.0))
            direct -= sum(multipliers[k] * t.quantity * t.price + t.costs for t in trades.get(k, ()))
        if cold:
            direct = 0.0
        result.account_pnl[account] = direct
        meta = {r["strategy_id"]: r for r in today_rows}
        for sid in sorted(set(meta) | set(shares)):
            share = shares.get(sid)
            pnl = share.pnl if share else 0.0
            if cold and share is not None:
                pnl = 0.0
            prev = prev_perf.get((broker, account_id, sid))
            g = meta.get(sid)
            opened_on = g["opened_on"] if g else day
            held = after.get(sid, {})
            cum0 = float(prev["cumulative_pnl"]) if prev else 0.0
            cumulative = cum0 + pnl
            if cold:
                cumulative = sum(multipliers[k] * q * (marks.get(k, 0.0) - prev_marks.get(k, 0.0))
                                 for k, q in held.items())
            realized = (float(prev["realized_pnl"]) if prev else 0.0) + (share.realized if share else 0.0)
            costs = (float(prev["commissions"]) if prev else 0.0) + (share.costs if share else 0.0)
            mae0 = float(prev["max_adverse_excursion"]) if prev else 0.0
            status = "open" if held else "closed"
            if not held:
                realized = cumulative
            row: dict[str, Any] = {
                "session_date": day, "broker": broker, "account_id": account_id, "strategy_id": sid,
                "underlying": g["underlying"] if g else "*", "strategy_type": g["strategy_type"] if g else "custom",
                "status": status, "opened_on": opened_on, "daily_pnl": pnl, "cumulative_pnl": cumulative,
                "realized_pnl": realized, "unrealized_pnl": cumulative - realized, "commissions": costs,
                "max_adverse_excursion": min(mae0, cumulative, 0.0),
                "market_value": sum(multipliers[k] * q * marks.get(k, 0.0) for k, q in held.items()),
                "entry_prices": {k: v for k, v in (share.entry_prices if share else {}).items() if k in held},
            }
            row.update(_strategy_greeks(account, held, legs_info, greeks, quotes, positions))
            row.update(_strategy_attribution(account, sid, before, after, attribution))
            result.rows.append(row)
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


def stats_rows(day: date, closed: Sequence[Mapping[str, Any]], today: Sequence[Mapping[str, Any]]
               ) -> list[dict[str, Any]]:
    """``strategy_stats``: closed-trade statistics by type, underlying, account and overall."""
    from portfolio_pipeline.quant.sizing import trade_stats

    dims = {"strategy_type": "strategy_type", "underlying": "underlying", "account": "account_id"}
    rows = []
    for dim, col in [*dims.items(), ("all", None)]:
        keys = sorted({str(r[col]) for r in [*closed, *today]} if col else {"*"})
        for key in keys:
            mine = [r for r in closed if col is None or str(r[col]) == key]
            live = [r for r in today if (col is None or str(r[col]) == key) and r["status"] == "open"]
            daily = sum(float(r["daily_pnl"]) for r in today if col is None or str(r[col]) == key)
            s = trade_stats([float(r["cumulative_pnl"]) for r in mine])
            rows.append({
                "session_date": day, "dimension": dim, "group_key": key[:64], "trades": s.trades,
                "open_strategies": len(live), "win_rate": s.win_rate if s.trades else None,
                "avg_win": s.avg_win if s.wins else None, "avg_loss": s.avg_loss if s.losses else None,
                "expectancy": s.expectancy if s.trades else None,
                "profit_factor": s.profit_factor if math.isfinite(s.profit_factor) else None,
                "realized_total": s.total, "open_pnl": sum(float(r["cumulative_pnl"]) for r in live),
                "daily_pnl": daily,
                "worst_mae": min((float(r["max_adverse_excursion"]) for r in mine), default=0.0),
            })
    return rows


def closed_to_date(conn: Connection, day: date) -> list[dict[str, Any]]:
    t = strategy_performance
    stmt = select(t).where(and_(t.c.status == "closed", t.c.session_date <= day,
                                t.c.strategy_id != UNALLOCATED))
    return [dict(r) for r in conn.execute(stmt).mappings()]


# ------------------------------------------------------------------------------ lifecycle


@dataclass(frozen=True, slots=True)
class Signal:
    account: Account
    strategy_id: str
    rule: str
    message: str
    payload: dict[str, Any]


def lifecycle_session(conn: Connection, day: date, rules: ExitRulesFile | None
                      ) -> tuple[list[dict[str, Any]], list[Signal]]:
    """``position_lifecycle`` rows of one session and its new red signals."""
    groups = rows_on(conn, strategy_groups, day, status="open")
    perf = {(r["broker"], r["account_id"], r["strategy_id"]): r for r in rows_on(conn, strategy_performance, day)}
    prev_day = previous_session(conn, position_lifecycle, day)
    prev = {(r["broker"], r["account_id"], r["strategy_id"]): r
            for r in (rows_on(conn, position_lifecycle, prev_day) if prev_day else [])}
    rows, signals = [], []
    for g in groups:
        key = (g["broker"], g["account_id"], g["strategy_id"])
        p = perf.get(key)
        legs = [leg_from_json(x) for x in g["legs"] or []]
        entry = dict(p["entry_prices"] or {}) if p else {}
        pnl = float(p["cumulative_pnl"]) if p else 0.0
        delta = float(p["share_delta"]) if p and p["greeks_source"] != "none" else None
        m = lifecycle_metrics(day, g["opened_on"], legs, entry, pnl, delta)
        verdict = evaluate_exit_rules(m, rules.rules_for(g["strategy_type"])) if rules else None
        status = verdict.status if verdict else "green"
        reds = verdict.red_rules if verdict else ()
        message = "; ".join(o.message for o in verdict.outcomes) if verdict else "no exit_rules.yaml"
        rows.append({
            "session_date": day, "broker": key[0], "account_id": key[1], "strategy_id": key[2],
            "strategy_type": g["strategy_type"], "underlying": g["underlying"],
            "days_in_trade": m.days_in_trade, "dte": m.dte, "credit": m.credit,
            "max_profit": m.max_profit if math.isfinite(m.max_profit) else None,
            "max_loss": m.max_loss if math.isfinite(m.max_loss) else None,
            "defined_risk": m.defined_risk, "pct_max_profit": m.pct_max_profit,
            "pct_max_loss": m.pct_max_loss, "loss_credit_multiple": m.loss_credit_multiple,
            "pnl": pnl, "pnl_per_day": m.pnl_per_day, "delta_per_lot": m.delta_per_lot,
            "status": status, "rule": verdict.rule if verdict else None,
            "red_rules": ",".join(reds), "message": message[:255],
        })
        before = set((prev.get(key) or {}).get("red_rules", "").split(",")) - {""}
        for rule in reds:
            if rule in before:
                continue
            assert verdict is not None
            outcome = next(o for o in verdict.outcomes if o.rule == rule)
            label = g["name"] or f"{g['strategy_type']} {g['underlying']} ({key[2]})"
            signals.append(Signal((key[0], key[1]), key[2], rule, outcome.message, {
                "strategy_id": key[2], "position": label, "reason": outcome.message, "rule": rule,
                "session": day.isoformat(), "broker": key[0], "account_id": key[1],
                "strategy_type": g["strategy_type"], "underlying": g["underlying"],
                "value": outcome.value, "threshold": outcome.threshold, "pnl": pnl, "dte": m.dte,
            }))
    return rows, signals


# ------------------------------------------------------------------------------ kelly


def kelly_rows(day: date, closed: Sequence[Mapping[str, Any]], cfg: StrategiesFile | None
               ) -> list[dict[str, Any]]:
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in closed:
        by_type[str(r["strategy_type"])].append(float(r["cumulative_pnl"]))
    rows = []
    sizing = cfg.sizing if cfg else None
    for stype, pnls in sorted(by_type.items()):
        if sizing is None:
            from portfolio_pipeline.quant.sizing import trade_stats

            s = trade_stats(pnls)
            rows.append({"session_date": day, "strategy_type": stype, "trades": s.trades,
                         "win_rate": s.win_rate, "payoff_ratio": None, "full_kelly": None,
                         "shrinkage": 0.0, "shrunk_kelly": None, "recommended_fraction": 0.0,
                         "capped": False, "status": "not_configured"})
            continue
        cap = min(sizing.max_fraction, sizing.type_caps.get(stype, sizing.max_fraction))  # type: ignore[call-overload]
        k = kelly_from_trades(pnls, fraction=sizing.fraction, min_trades=sizing.min_trades,
                              shrinkage_trades=sizing.shrinkage_trades, cap=cap)
        rows.append({
            "session_date": day, "strategy_type": stype, "trades": k.stats.trades,
            "win_rate": k.stats.win_rate, "payoff_ratio": _finite(k.payoff_ratio),
            "full_kelly": _finite(k.full_kelly), "shrinkage": k.shrinkage,
            "shrunk_kelly": _finite(k.shrunk_kelly), "recommended_fraction": k.recommended,
            "capped": k.capped, "status": k.status,
        })
    return rows


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------------ liquidity


def liquidity_rows(conn: Connection, day: date, cfg: StrategiesFile | None) -> list[dict[str, Any]]:
    """Spread-based flags; ``market_snapshot`` carries no volume/open interest, so
    ``days_to_exit`` stays NULL until a broker provides them."""
    threshold = (cfg.liquidity if cfg else LiquiditySettings()).max_spread_pct
    quotes: dict[tuple[str, str], dict[str, Any]] = {}
    any_quote: dict[str, dict[str, Any]] = {}
    for r in rows_on(conn, market_snapshot, day):
        quotes[(r["source"], r["instrument_key"])] = r
        any_quote.setdefault(r["instrument_key"], r)
    holder: dict[tuple[str, str, str], str] = {}
    for g in rows_on(conn, strategy_groups, day, status="open"):
        for leg in g["legs"] or []:
            holder.setdefault((g["broker"], g["account_id"], leg["position_key"]), g["strategy_id"])
    rows = []
    for p in rows_on(conn, positions_snapshot, day):
        key = p["position_key"]
        q = quotes.get((p["broker"], key)) or any_quote.get(key)
        bid = float(q["bid"]) if q else None
        ask = float(q["ask"]) if q else None
        mid = (bid + ask) / 2.0 if bid is not None and ask is not None else None
        if mid is None:
            spread, illiquid, reason = None, True, "no quote"
        elif mid <= 0 or (bid is not None and bid <= 0 and p["sec_type"] in ("OPT", "FOP")):
            spread, illiquid, reason = None, True, "no bid"
        else:
            assert bid is not None and ask is not None
            spread = (ask - bid) / mid
            illiquid = spread > threshold
            reason = f"spread {spread:.1%} > {threshold:.0%}" if illiquid else "ok"
        score = 0.0 if spread is None else float(np.clip(1.0 - spread / (2.0 * threshold), 0.0, 1.0))
        rows.append({
            "session_date": day, "broker": p["broker"], "account_id": p["account_id"],
            "position_key": key, "strategy_id": holder.get((p["broker"], p["account_id"], key)),
            "bid": bid, "ask": ask, "mid": mid, "spread_pct": spread, "illiquid": illiquid,
            "liquidity_score": score, "days_to_exit": None, "reason": reason,
        })
    return rows


# ------------------------------------------------------------------------------ theta/vega


def theta_vega_rows(conn: Connection, day: date, cfg: StrategiesFile | None) -> list[dict[str, Any]]:
    settings = cfg.theta_vega if cfg else ThetaVegaSettings()
    low, high, window = settings.band_low, settings.band_high, settings.window
    perf = rows_on(conn, strategy_performance, day)
    accounts = [*sorted({r["account_id"] for r in perf}), "*"]
    t = theta_vega_history
    rows = []
    for account in accounts:
        mine = [r for r in perf if account == "*" or r["account_id"] == account]
        theta = sum(float(r["theta_per_day"]) for r in mine if r["status"] == "open")
        vega = sum(float(r["vega_per_point"]) for r in mine if r["status"] == "open")
        pnl = sum(float(r["daily_pnl"]) for r in mine)
        ratio = abs(theta) / abs(vega) if abs(vega) > 1e-9 else None
        hist = conn.execute(
            select(t.c.ratio, t.c.daily_pnl).where(and_(t.c.account_id == account, t.c.session_date < day))
            .order_by(t.c.session_date.desc()).limit(window)
        ).all()
        series = [(r.ratio, float(r.daily_pnl)) for r in reversed(hist)] + [(ratio, pnl)]
        rows.append({
            "session_date": day, "account_id": account, "theta_per_day": theta, "vega_per_point": vega,
            "ratio": ratio, "in_band": ratio is not None and low <= ratio <= high, "daily_pnl": pnl,
            "rolling_corr": lagged_correlation(series),
        })
    return rows


def lagged_correlation(series: Sequence[tuple[float | None, float]]) -> float | None:
    """corr(ratio[t-1], pnl[t]) over the pairs where both exist (None below 3 pairs)."""
    pairs = [(a[0], b[1]) for a, b in itertools.pairwise(series) if a[0] is not None]
    if len(pairs) < 3:
        return None
    x = np.array([p[0] for p in pairs], dtype=np.float64)
    y = np.array([p[1] for p in pairs], dtype=np.float64)
    if float(x.std()) == 0.0 or float(y.std()) == 0.0:
        return None
    return float(np.corrcoef(x, y)[0, 1])

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
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import Connection, Table, and_, func, select

from portfolio_pipeline.analytics.strategy_performance import (
    UNALLOCATED,
    PerformanceResult,
    StrategySession,
    performance_rows,
)
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.lifecycle import (
    ExitRulesFile,
    evaluate_exit_rules,
    lifecycle_metrics,
)
from portfolio_pipeline.domain.positions import contract_from_row
from portfolio_pipeline.domain.strategies.identity import (
    ExecutionFact,
    ManualStrategy,
    StrategyState,
    assign_strategies,
)
from portfolio_pipeline.domain.strategies.legs import Leg
from portfolio_pipeline.domain.strategies.settings import (
    LiquiditySettings,
    StrategiesFile,
    ThetaVegaSettings,
)
from portfolio_pipeline.exchange_calendar import NEW_YORK
from portfolio_pipeline.quant.sizing import kelly_from_trades
from portfolio_pipeline.storage import dict_rows, read_partition
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


def performance_session(
    conn: Connection, day: date, executions: Mapping[Account, Sequence[Execution]]
) -> PerformanceResult:
    """The ``strategy_performance`` rows of one session (after ``strategy_groups``)."""
    return performance_rows(read_strategy_session(conn, day), executions, execution_session)


def read_strategy_session(conn: Connection, day: date) -> StrategySession:
    """The stored rows of ``day`` and of the previous stored session that
    :func:`analytics.strategy_performance.performance_rows` needs."""
    prev_day = previous_session(conn, strategy_groups, day)

    def keyed(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
        return {(r["broker"], r["account_id"], r["position_key"]): dict(r) for r in rows}

    quotes: dict[str, dict[str, Any]] = {}
    for r in rows_on(conn, market_snapshot, day):
        quotes.setdefault(r["instrument_key"], r)
    return StrategySession(
        day=day, prev_day=prev_day,
        groups=by_account(rows_on(conn, strategy_groups, day)),
        prev_groups=by_account(rows_on(conn, strategy_groups, prev_day, status="open")) if prev_day else {},
        prev_perf={(r["broker"], r["account_id"], r["strategy_id"]): r
                   for r in (rows_on(conn, strategy_performance, prev_day) if prev_day else [])},
        positions=keyed(rows_on(conn, positions_snapshot, day)),
        prev_positions=keyed(rows_on(conn, positions_snapshot, prev_day) if prev_day else []),
        greeks=keyed(rows_on(conn, position_greeks, day)),
        attribution=keyed(r for r in rows_on(conn, pnl_attribution, day)
                          if r["position_key"] != "*" and r["account_id"] != "*"),
        quotes=quotes,
    )


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
    return dict_rows(conn.execute(stmt))


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

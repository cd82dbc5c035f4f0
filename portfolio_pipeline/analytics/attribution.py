"""Daily P&L attribution rows from two sessions of ``position_greeks`` and the executions between.

Conventions
-----------
* ``actual = V_t - V_{t-1} + cash from executions`` per position (``V`` = market value,
  0 when not held; execution cash includes commissions and fees), so opening and closing
  trades are in the day's P&L exactly once.
* ``held`` (in both snapshots): Greeks terms of :func:`portfolio_pipeline.quant.attribution.attribute`
  from the PRIOR close's position Greeks (prior quantity), with ``dS`` the change of the
  spot the Greeks were taken against, ``dsigma`` the change of the vol used (points;
  0 when either side had no implied vol) and ``dt`` the calendar days between closes.
  P&L of a quantity change during the day lands in ``unexplained``.
* ``new`` (opened since the prior close): everything is ``unexplained`` (fill to close);
  without executions the cost is the broker's average price.
* ``closed`` (gone since the prior close): everything is ``unexplained`` (realised, from
  executions); without executions an option past expiry settles at intrinsic value on
  the day's underlying close, anything else at the prior mark (no P&L).
* Totals: ``position_key='*'`` per account and ``('*', '*', '*')`` for the book, with
  ``unexplained`` recomputed from the summed columns so the identity
  ``actual = sum(components) + unexplained`` holds on every row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from portfolio_pipeline.config.pricing import AttributionSettings
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.quant._typing import Float64Array
from portfolio_pipeline.quant.attribution import attribute, large_unexplained
from portfolio_pipeline.storage.frames import (
    MarketFrame,
    PositionClose,
    PositionGreeksFrame,
    PositionsFrame,
)

ALL = AGGREGATE
PNL_COLUMNS: tuple[str, ...] = (
    "delta_pnl", "gamma_pnl", "theta_pnl", "vega_pnl", "vanna_pnl", "volga_pnl",
)
_IV_SOURCES = ("broker", "implied")


def _intrinsic(position_key: str, spot: float | None) -> float | None:
    parts = position_key.split("|")
    if len(parts) < 6 or parts[1] not in ("OPT", "FOP") or spot is None:
        return None
    strike, right = float(parts[4]), parts[5]
    return max(spot - strike, 0.0) if right == "C" else max(strike - spot, 0.0)


def _expired(position_key: str, session: date) -> bool:
    parts = position_key.split("|")
    return len(parts) >= 6 and parts[1] in ("OPT", "FOP") and date.fromisoformat(parts[3]) <= session


def attribution_rows(
    session: date,
    previous: PositionGreeksFrame,
    current: PositionGreeksFrame,
    *,
    dt_days: float,
    execution_cash: Mapping[tuple[str, str, str], float],
    avg_price: Mapping[tuple[str, str, str], float],
    spot_close: Mapping[str, float],
    settings: AttributionSettings,
) -> list[dict[str, Any]]:
    """``pnl_attribution`` rows of ``session``.

    Parameters
    ----------
    previous, current
        ``position_greeks`` rows of the prior and of this session.
    execution_cash
        (broker, account_id, position_key) -> cash of the executions in between.
    avg_price
        (broker, account_id, position_key) -> average price of today's positions.
    spot_close
        Underlying root -> today's close (settlement of expired options).
    """
    prev, cur = previous.keys(), current.keys()
    keys = sorted(set(prev) | set(cur))
    if not keys:
        return []
    changes = _changes(session, keys, previous, current, execution_cash, avg_price, spot_close)
    greeks = changes.greeks
    att = attribute(
        np.nan_to_num(changes.ds), np.nan_to_num(changes.dsig), dt_days, greeks["share_delta"],
        greeks["gamma_shares"], greeks["theta_per_day"], greeks["vega_per_point"], greeks["vanna_per_point"],
        greeks["volga_per_point"], actual=changes.actual,
    )
    held = np.array([b == "held" for b in changes.buckets])
    comps = {
        "delta_pnl": att.delta, "gamma_pnl": att.gamma, "theta_pnl": np.where(held, att.theta, 0.0),
        "vega_pnl": att.vega, "vanna_pnl": att.vanna, "volga_pnl": att.volga,
    }
    rows = [{
        "session_date": session, "broker": key[0], "account_id": key[1], "position_key": key[2],
        "underlying": changes.underlying[i], "bucket": changes.buckets[i],
        "dS": changes.ds[i], "dsigma_points": changes.dsig[i], "dt_days": float(dt_days),
        "actual": float(changes.actual[i]), **{k: float(v[i]) for k, v in comps.items()},
    } for i, key in enumerate(keys)]
    out = rows + _totals(session, pd.DataFrame(rows), dt_days)
    _finish(out, settings)
    return out


_GREEK_TERMS = ("share_delta", "gamma_shares", "theta_per_day", "vega_per_point", "vanna_per_point", "volga_per_point")


@dataclass(frozen=True)
class _Changes:
    """Per position (sorted keys): actual P&L, spot move, vol move in points (0 unless both
    vols are market vols), the prior close's Greeks (held positions only), the bucket
    (held / new / closed) and the underlying."""

    actual: Float64Array
    ds: Float64Array
    dsig: Float64Array
    greeks: dict[str, Float64Array]
    buckets: list[str]
    underlying: list[str]


def _changes(
    session: date,
    keys: list[tuple[str, str, str]],
    previous: PositionGreeksFrame,
    current: PositionGreeksFrame,
    execution_cash: Mapping[tuple[str, str, str], float],
    avg_price: Mapping[tuple[str, str, str], float],
    spot_close: Mapping[str, float],
) -> _Changes:
    prev, cur = previous.keys(), current.keys()
    n = len(keys)
    out = _Changes(np.zeros(n), np.full(n, np.nan), np.full(n, np.nan), {g: np.zeros(n) for g in _GREEK_TERMS},
                   [], [])
    for i, key in enumerate(keys):
        pi, ci = prev.get(key), cur.get(key)
        p = previous.close(pi) if pi is not None else None
        c = current.close(ci) if ci is not None else None
        cash = execution_cash.get(key)
        if cash is None:
            cash = implied_cash(session, key[2], p, c, avg_price.get(key), spot_close)
        out.actual[i] = (c.market_value if c else 0.0) - (p.market_value if p else 0.0) + cash
        out.underlying.append(c.underlying if c else p.underlying if p else "")
        if pi is not None and ci is not None:
            out.buckets.append("held")
            out.ds[i] = float(current.spot[ci]) - float(previous.spot[pi])
            both_iv = previous.vol_source[pi] in _IV_SOURCES and current.vol_source[ci] in _IV_SOURCES
            out.dsig[i] = (float(current.vol[ci]) - float(previous.vol[pi])) * 100.0 if both_iv else 0.0
            for g in _GREEK_TERMS:
                out.greeks[g][i] = float(getattr(previous, g)[pi])
        else:
            out.buckets.append("new" if pi is None else "closed")
    return out


def implied_cash(
    session: date,
    position_key: str,
    previous: PositionClose | None,
    current: PositionClose | None,
    avg_price: float | None,
    spot_close: Mapping[str, float],
) -> float:
    """Cash of a position's change between two closes when no execution is known.

    New: bought at today's average price (else the mark); gone: an expired option
    settles at intrinsic value on the underlying's close, anything else is taken as sold
    at the prior value; held with a changed quantity: the difference traded at the mark."""
    p, c = previous, current
    if p is None and c is not None:
        price = c.mark if avg_price is None else avg_price
        return -price * c.quantity * c.multiplier
    if c is None and p is not None:
        settle = _intrinsic(position_key, spot_close.get(p.underlying))
        if _expired(position_key, session) and settle is not None:
            return settle * p.quantity * p.multiplier
        return p.market_value
    if p is not None and c is not None:
        return -(c.quantity - p.quantity) * c.multiplier * c.mark
    return 0.0


def _totals(session: date, frame: pd.DataFrame, dt_days: float) -> list[dict[str, Any]]:
    """One total row per account and one for the book."""
    totals = [_total(session, str(broker), str(account), group, dt_days)
              for (broker, account), group in frame.groupby(["broker", "account_id"], sort=True)]
    return [*totals, _total(session, ALL, ALL, frame, dt_days)]


def _total(session: date, broker: str, account: str, group: pd.DataFrame, dt_days: float) -> dict[str, Any]:
    return {
        "session_date": session, "broker": broker, "account_id": account, "position_key": ALL,
        "underlying": ALL, "bucket": "total", "dS": math.nan, "dsigma_points": math.nan,
        "dt_days": float(dt_days), "actual": float(group["actual"].sum()),
        **{k: float(group[k].sum()) for k in PNL_COLUMNS},
    }


def _finish(rows: list[dict[str, Any]], settings: AttributionSettings) -> None:
    """Explained, unexplained (exact identity per row) and the large-unexplained flag."""
    for row in rows:
        explained = 0.0
        for k in PNL_COLUMNS:
            explained += row[k]
        row["explained"] = explained
        row["unexplained"] = row["actual"] - explained
    flags = large_unexplained(
        [r["actual"] for r in rows], [r["unexplained"] for r in rows],
        relative=settings.unexplained_relative, absolute=settings.unexplained_absolute,
    )
    for row, flag in zip(rows, flags, strict=True):
        row["large_unexplained"] = bool(flag)


def identity_error(frame: pd.DataFrame) -> pd.Series:
    """``actual - (components + unexplained)`` relative to ``max(1, |actual|)`` (should be ~1e-16)."""
    total = frame["unexplained"].astype("float64").copy()
    for k in PNL_COLUMNS:
        total = total + frame[k].astype("float64")
    scale = np.maximum(1.0, frame["actual"].astype("float64").abs())
    return ((frame["actual"].astype("float64") - total) / scale).abs()


def execution_cash_by_session(
    fills: Iterable[Execution], session_after: Callable[[datetime], date]
) -> dict[date, dict[tuple[str, str, str], float]]:
    """session -> (broker, account_id, position_key) -> summed cash effect of the
    executions booked to that session (``session_after`` of the execution time)."""
    cash: dict[date, dict[tuple[str, str, str], float]] = {}
    for f in fills:
        per_day = cash.setdefault(session_after(f.ts), {})
        key = (f.broker, f.account_id, f.contract.key)
        per_day[key] = per_day.get(key, 0.0) + f.cash_effect
    return cash


def average_prices(positions: PositionsFrame) -> dict[tuple[str, str, str], float]:
    """(broker, account_id, position_key) -> average price of the positions."""
    return {(str(b), str(a), str(k)): float(p) for b, a, k, p in zip(
        positions.broker, positions.account_id, positions.position_key, positions.avg_price, strict=True)}


def underlying_closes(market: MarketFrame) -> dict[str, float]:
    """Underlying root -> mark of its index or stock quote (the last one of a root wins)."""
    spot = np.isin(market.sec_type, ["IND", "STK"])
    return {str(u): float(m) for u, m in zip(market.underlying[spot], market.mark[spot], strict=True)}

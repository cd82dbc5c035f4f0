"""Daily P&L split between the strategies that held each position.

:func:`allocate_pnl` splits each position's daily P&L between the strategies that held
it, exactly (the strategy P&L of an account sums to the account's P&L).  Pure rules, no
I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from portfolio_pipeline.domain.strategies.legs import QUANTITY_EPS

__all__ = ["PnlShare", "Trade", "allocate_pnl"]


@dataclass(frozen=True, slots=True)
class PnlShare:
    """One strategy's part of one day's P&L (account currency)."""

    pnl: float = 0.0
    realized: float = 0.0
    costs: float = 0.0
    entry_prices: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trade:
    quantity: float
    price: float
    costs: float


def allocate_pnl(
    before: Mapping[str, Mapping[str, float]],
    after: Mapping[str, Mapping[str, float]],
    prev_marks: Mapping[str, float],
    marks: Mapping[str, float],
    multipliers: Mapping[str, float],
    trades: Mapping[str, Sequence[Trade]],
    entry_prices: Mapping[str, Mapping[str, float]],
    *,
    fallback_prices: Mapping[str, float] | None = None,
    unallocated: str = "_unallocated",
) -> dict[str, PnlShare]:
    r"""Split each position's daily P&L between the strategies that held it.

    Parameters
    ----------
    before, after
        strategy id -> position key -> signed quantity at the previous and this close.
    prev_marks, marks
        position key -> mark per unit at the previous and this close.
    multipliers
        position key -> contract multiplier.
    trades
        position key -> today's executions (signed quantity, price, commission+fees).
    entry_prices
        strategy id -> position key -> average entry price so far.
    fallback_prices
        position key -> price assumed for a quantity change without executions (the
        caller passes the broker's average cost for opens, the mark for closes).

    Notes
    -----
    The position's P&L is exact:

    .. math:: \Delta P_k = m_k (Q_k^{t} M_k^{t} - Q_k^{t-1} M_k^{t-1})
              - \sum_{trades} (m_k q p + c)

    Each strategy gets its held part at the marks and its quantity change at the VWAP
    of the trades on its side, plus commissions pro rata to ``|dq|``; any residual (e.g.
    executions that do not match the quantity changes) goes to the largest holder, so
    the strategies of an account sum to the account's position P&L exactly.
    """
    fallback = fallback_prices or {}
    keys = sorted({k for h in (*before.values(), *after.values()) for k in h} | set(trades))
    pnl: dict[str, float] = defaultdict(float)
    realized: dict[str, float] = defaultdict(float)
    costs: dict[str, float] = defaultdict(float)
    entries: dict[str, dict[str, float]] = {sid: dict(v) for sid, v in entry_prices.items()}
    sids = sorted(set(before) | set(after))
    for k in keys:
        m = multipliers[k]
        m_prev, m_now = prev_marks.get(k, 0.0), marks.get(k, 0.0)
        k_trades = trades.get(k, ())
        q_prev = {s: before.get(s, {}).get(k, 0.0) for s in sids}
        q_now = {s: after.get(s, {}).get(k, 0.0) for s in sids}
        total = (m * (sum(q_now.values()) * m_now - sum(q_prev.values()) * m_prev)
                 - sum(m * t.quantity * t.price + t.costs for t in k_trades))
        buys = [t for t in k_trades if t.quantity > 0]
        sells = [t for t in k_trades if t.quantity < 0]
        k_costs = sum(t.costs for t in k_trades)
        gross = sum(abs(q_now[s] - q_prev[s]) for s in sids)
        allocated = 0.0
        for s in sids:
            dq = q_now[s] - q_prev[s]
            if abs(dq) <= QUANTITY_EPS and abs(q_prev[s]) <= QUANTITY_EPS:
                continue
            side = buys if dq > 0 else sells
            price = _vwap(side) if side else _vwap(k_trades) if k_trades else fallback.get(
                k, m_now if abs(q_now[s]) > QUANTITY_EPS else m_prev)
            c = k_costs * abs(dq) / gross if gross > QUANTITY_EPS else 0.0
            share = m * (q_now[s] * m_now - q_prev[s] * m_prev) - m * dq * price - c
            entry = entries.setdefault(s, {})
            old = entry.get(k, price)
            if q_prev[s] * dq < 0:  # a reduction (possibly through zero)
                closed = -dq if abs(dq) <= abs(q_prev[s]) else q_prev[s]
                realized[s] += closed * m * (price - old)
                if abs(q_now[s]) <= QUANTITY_EPS:
                    entry.pop(k, None)
                elif q_now[s] * q_prev[s] < 0:
                    entry[k] = price
            elif abs(dq) > QUANTITY_EPS:
                w = abs(q_prev[s])
                entry[k] = (old * w + price * abs(dq)) / (w + abs(dq))
            realized[s] -= c
            pnl[s] += share
            costs[s] += c
            allocated += share
        residual = total - allocated
        if abs(residual) > 1e-9:
            holders = [(max(abs(q_now[s]), abs(q_prev[s])), s) for s in sids]
            holders = [h for h in holders if h[0] > QUANTITY_EPS]
            target = min(holders, key=lambda h: (-h[0], h[1]))[1] if holders else unallocated
            pnl[target] += residual
            realized[target] += residual if abs(q_now.get(target, 0.0)) <= QUANTITY_EPS else 0.0
    return {
        s: PnlShare(pnl=pnl[s], realized=realized[s], costs=costs[s], entry_prices=entries.get(s, {}))
        for s in sorted(set(sids) | set(pnl))
    }


def _vwap(trades: Sequence[Trade]) -> float:
    qty = sum(abs(t.quantity) for t in trades)
    return sum(abs(t.quantity) * t.price for t in trades) / qty if qty > 0 else 0.0

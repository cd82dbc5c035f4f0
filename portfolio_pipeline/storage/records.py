"""Domain records -> rows of the snapshot tables (the one place this mapping lives)."""

from __future__ import annotations

from datetime import date
from typing import Any

from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote


def _contract_row(contract: Contract) -> dict[str, Any]:
    return {
        "underlying": contract.underlying,
        "sec_type": contract.sec_type,
        "expiry": contract.expiry,
        "strike": contract.strike,
        "right": contract.right,
    }


def position_row(session_date: date, p: Position) -> dict[str, Any]:
    return {
        "session_date": session_date,
        "broker": p.broker,
        "account_id": p.account_id,
        "position_key": p.key,
        **_contract_row(p.contract),
        "multiplier": p.multiplier,
        "trading_class": p.contract.trading_class,
        "currency": p.contract.currency,
        "quantity": p.quantity,
        "avg_price": p.avg_price,
        "mark": p.mark,
        "market_value": p.market_value,
        "underlying_price": p.underlying_price,
        "as_of": p.as_of,
    }


def account_row(session_date: date, a: AccountSnapshot) -> dict[str, Any]:
    return {
        "session_date": session_date,
        "broker": a.broker,
        "account_id": a.account_id,
        "currency": a.currency,
        "nlv": a.nlv,
        "cash": a.cash,
        "init_margin": a.init_margin,
        "maint_margin": a.maint_margin,
        "excess_liquidity": a.excess_liquidity,
        "buying_power": a.buying_power,
        "broker_daily_pnl": a.broker_daily_pnl,
        "as_of": a.as_of,
    }


def _optional(value: float | None) -> float | None:
    if value is None or value != value:  # NaN is stored as NULL: "the broker had none"
        return None
    return float(value)


def quote_row(session_date: date, q: Quote) -> dict[str, Any]:
    return {
        "session_date": session_date,
        "source": q.source,
        "instrument_key": q.contract.key,
        **_contract_row(q.contract),
        "bid": q.bid,
        "ask": q.ask,
        "last": _optional(q.last),
        "mark": q.mark,
        "underlying_price": _optional(q.underlying_price),
        "iv": _optional(q.iv),
        "delta": _optional(q.delta),
        "gamma": _optional(q.gamma),
        "vega": _optional(q.vega),
        "theta": _optional(q.theta),
        "as_of": q.as_of,
    }

"""THE merge of live broker activity with imported history (one activity source).

Live adapter executions and cash flows (``BrokerAdapter.executions``/``cash_flows``) and
the rows imported with ``portfolio import ibkr-flex|tastytrade-csv`` (tables
``executions`` and ``cash_flows``) describe the same events with the same broker ids
(IBKR ``tradeID``/``execId`` and ``transactionID``; Tastytrade transaction ids).  They are
merged keyed by ``(broker, account_id, id)``; where both have an event, the live one is
kept.  Imported rows outside ``[start, until]`` are left out (no look-ahead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import TypeVar

from portfolio_pipeline.domain.activity import CashFlow, Execution

__all__ = ["merge_activity"]

A = TypeVar("A", CashFlow, Execution)


def merge_activity(
    live_flows: Iterable[CashFlow],
    live_fills: Iterable[Execution],
    imported_flows: Iterable[CashFlow],
    imported_fills: Iterable[Execution],
    *,
    start: date,
    until: datetime,
) -> tuple[list[CashFlow], list[Execution]]:
    """Cash flows and executions, deduplicated by broker id, each in time order."""
    return (_merged(live_flows, imported_flows, lambda f: f.flow_id, start, until),
            _merged(live_fills, imported_fills, lambda e: e.exec_id, start, until))


def _merged(
    live: Iterable[A], imported: Iterable[A], broker_id: Callable[[A], str], start: date, until: datetime
) -> list[A]:
    """``live`` and the ``imported`` events within ``[start, until]`` keyed by
    ``(broker, account_id, broker_id)`` (the live one kept), in ``(ts, broker_id)`` order."""
    merged: dict[tuple[str, str, str], A] = {}
    for a in live:
        merged[(a.broker, a.account_id, broker_id(a))] = a
    for a in imported:
        if start <= a.ts.date() and a.ts <= until:
            merged.setdefault((a.broker, a.account_id, broker_id(a)), a)
    return sorted(merged.values(), key=lambda a: (a.ts, broker_id(a)))

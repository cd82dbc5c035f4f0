"""THE merge of live broker activity with imported history (one activity source).

Live adapter executions and cash flows (``BrokerAdapter.executions``/``cash_flows``) and
the rows imported with ``portfolio import ibkr-flex|tastytrade-csv`` (tables
``executions`` and ``cash_flows``) describe the same events with the same broker ids
(IBKR ``tradeID``/``execId`` and ``transactionID``; Tastytrade transaction ids).  They are
merged keyed by ``(broker, account_id, id)``; where both have an event, the live one is
kept.  Imported rows outside ``[start, until]`` are left out (no look-ahead).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from portfolio_pipeline.domain.activity import CashFlow, Execution

__all__ = ["merge_activity"]


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
    flows: dict[tuple[str, str, str], CashFlow] = {}
    for f in live_flows:
        flows[(f.broker, f.account_id, f.flow_id)] = f
    for f in imported_flows:
        if start <= f.ts.date() and f.ts <= until:
            flows.setdefault((f.broker, f.account_id, f.flow_id), f)
    fills: dict[tuple[str, str, str], Execution] = {}
    for e in live_fills:
        fills[(e.broker, e.account_id, e.exec_id)] = e
    for e in imported_fills:
        if start <= e.ts.date() and e.ts <= until:
            fills.setdefault((e.broker, e.account_id, e.exec_id), e)
    return (sorted(flows.values(), key=lambda f: (f.ts, f.flow_id)),
            sorted(fills.values(), key=lambda e: (e.ts, e.exec_id)))

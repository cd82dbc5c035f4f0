"""Historical data on the fake IB Gateway: ``reqHistoricalData`` answered through the real
wrapper (``historicalData`` per bar, then ``historicalDataEnd``), or an ``error`` as IBKR
sends it (354 no subscription, 162 pacing violation / no data).  A subclass of the
shared :class:`FakeGateway` so the gateway model itself is untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ib_async import IB, BarData, Contract

from portfolio_pipeline_tests.brokers.ibkr.fake_ib import FakeClient, FakeGateway


@dataclass
class HistoryGateway(FakeGateway):
    bars: dict[int, list[tuple[date, float, float, float, float, float]]] = field(default_factory=dict)
    """conId -> (session or intraday bar start, open, high, low, close, volume) served by reqHistoricalData."""
    history_errors: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    """conId -> errors answered to the next requests (one per request, in order)."""

    def make_ib(self) -> IB:
        ib = IB()
        client = HistoryClient(ib, self)
        ib.client = client  # type: ignore[assignment]
        self.clients.append(client)
        return ib


class HistoryClient(FakeClient):
    gateway: HistoryGateway

    def reqHistoricalData(self, reqId: int, contract: Contract, endDateTime: str, durationStr: str,
                          barSizeSetting: str, whatToShow: str, useRTH: Any, formatDate: int,
                          keepUpToDate: bool, chartOptions: Any) -> None:
        if not self._record("reqHistoricalData", reqId, copy.copy(contract), endDateTime, durationStr,
                            barSizeSetting, whatToShow, useRTH):
            return
        errors = self.gateway.history_errors.get(contract.conId) or []
        if errors:
            code, text = errors.pop(0)
            self._later([lambda: self.wrapper.error(reqId, code, text, contract)])
            return
        calls = [
            (lambda b=b: self.wrapper.historicalData(reqId, BarData(
                # a session as YYYYMMDD; an intraday bar as epoch seconds (formatDate 2)
                date=str(int(b[0].timestamp())) if isinstance(b[0], datetime) else b[0].strftime("%Y%m%d"),
                open=b[1], high=b[2], low=b[3], close=b[4], volume=b[5])))
            for b in self.gateway.bars.get(contract.conId, [])
        ]
        calls.append(lambda: self.wrapper.historicalDataEnd(reqId, "", ""))
        self._later(calls)

    def cancelHistoricalData(self, reqId: int) -> None:
        self._record("cancelHistoricalData", reqId)

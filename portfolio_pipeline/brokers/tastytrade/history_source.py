"""Tastytrade daily history: not served by this build.

DXLink candles (``DXLinkStreamer.subscribe_candle``) arrive as an unbounded stream whose
snapshot end is signalled by event flags the SDK does not expose; until that is handled
and tested against the DXLink test double, every request raises
:class:`~portfolio_pipeline.marketdata.bars.HistoryUnavailableError`, so the
``market_history`` asset reports the symbols as unavailable instead of storing a
partial history as if it were complete.
"""

from __future__ import annotations

from datetime import date

from portfolio_pipeline.brokers.base import BrokerAdapter
from portfolio_pipeline.marketdata.bars import HistoryAnswer, HistoryUnavailableError


class TastytradeHistorySource:
    name = "tastytrade"

    def __init__(self, adapter: BrokerAdapter) -> None:
        self._adapter = adapter

    def max_years(self) -> float:
        return 0.0

    async def daily_bars(self, symbol: str, start: date, end: date) -> HistoryAnswer:
        raise HistoryUnavailableError(
            f"tastytrade: daily history of {symbol} is not available in this build "
            "(DXLink candle snapshots are not supported yet); configure an IBKR account "
            "for market history"
        )

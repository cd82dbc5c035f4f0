"""Daily market history from Tastytrade: DXLink daily candles through the SDK.

``DXLinkStreamer.subscribe_candle([symbol], "1d", start_time=...)`` asks dxfeed for the
daily candles of ``symbol`` (regular trading hours, ``{=1d,tho=true}``) from
``start_time`` on; dxfeed answers with a snapshot of indexed ``Candle`` events whose
last one carries the SNAPSHOT_END (or SNAPSHOT_SNIP) flag.  This source reads events
until that flag, then unsubscribes:

* no event at all within ``first_event_timeout`` seconds: dxfeed has nothing for the
  symbol (unknown symbol or no market-data entitlement) ->
  :class:`~portfolio_pipeline.marketdata.bars.HistoryUnavailableError`;
* events but no snapshot end within ``timeout`` seconds: a **partial** answer, returned
  with a note (nothing is filled);
* removed events and candles without a positive close are skipped and counted in a note.

Session date of a candle: dxfeed stamps a daily candle with the start of its day; the
date of ``time + 12 h`` in New York is that session whether the stamp is New York or
UTC midnight.  Indices (SPX, VIX, VIX3M) and stocks/ETFs use their plain symbols;
futures roots are not served here (dxfeed needs a dated contract) and raise
``HistoryUnavailableError``.  Source label: ``tastytrade:candle``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from tastytrade import DXLinkStreamer, Session
from tastytrade.dxfeed import Candle

from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.exchange_calendar import NEW_YORK
from portfolio_pipeline.marketdata.bars import DailyBar, HistoryAnswer, HistoryUnavailableError

logger = logging.getLogger(__name__)

SOURCE = "tastytrade:candle"

StreamerFactory = Callable[[Session], Any]


def candle_symbol(symbol: str) -> str:
    """The DXLink symbol the SDK subscribes for daily RTH candles of ``symbol``."""
    return f"{symbol}{{=1d,tho=true}}"


def candle_session(ms: int) -> date:
    """Session date of a daily candle stamped ``ms`` (epoch milliseconds); module docstring."""
    return (datetime.fromtimestamp(ms / 1000.0, NEW_YORK) + timedelta(hours=12)).date()


class TastytradeHistorySource:
    """Daily bars over a connected Tastytrade adapter's session (its own DXLink streamer)."""

    name = "tastytrade"

    def __init__(
        self,
        session: Session,
        instruments: InstrumentTable,
        *,
        first_event_timeout: float = 5.0,
        timeout: float = 30.0,
        streamer_factory: StreamerFactory = DXLinkStreamer,
    ) -> None:
        self._session = session
        self._instruments = instruments
        self._first = first_event_timeout
        self._timeout = timeout
        self._streamer_factory = streamer_factory

    def max_years(self) -> float:
        return 10.0

    def _check_symbol(self, symbol: str) -> None:
        try:
            kind = self._instruments.spec(symbol).underlying_type
        except UnknownInstrumentError:
            return
        if kind == "future":
            raise HistoryUnavailableError(
                f"tastytrade: no continuous daily candles for the futures root {symbol} "
                "(dxfeed needs a dated contract)"
            )

    async def daily_bars(self, symbol: str, start: date, end: date) -> HistoryAnswer:
        self._check_symbol(symbol)
        dx = candle_symbol(symbol)
        events: dict[int, Candle] = {}
        complete = False
        loop = asyncio.get_running_loop()
        async with self._streamer_factory(self._session) as streamer:
            start_at = datetime(start.year, start.month, start.day, tzinfo=NEW_YORK)
            await streamer.subscribe_candle([symbol], "1d", start_time=start_at)
            deadline = loop.time() + self._timeout
            while True:
                wait = (self._first if not events else deadline - loop.time())
                if wait <= 0:
                    break
                try:
                    event = await asyncio.wait_for(streamer.get_event(Candle), wait)
                except TimeoutError:
                    break
                if event.event_symbol != dx:
                    continue
                events[event.index] = event
                if event.snapshot_end or event.snapshot_snip:
                    complete = True
                    break
            await streamer.unsubscribe_candle(symbol, "1d")
        if not events:
            raise HistoryUnavailableError(
                f"tastytrade: no daily candles for {symbol} within {self._first:g}s "
                "(unknown symbol or no market-data entitlement)"
            )
        bars: dict[date, DailyBar] = {}
        skipped = 0
        for event in sorted(events.values(), key=lambda e: e.time):
            day = candle_session(event.time)
            close = float(event.close)
            if event.remove or not close > 0:
                skipped += 1
                continue
            if not start <= day <= end:
                continue

            def positive(v: Any) -> float | None:
                x = float(v) if v is not None else 0.0
                return x if x > 0 else None

            bars[day] = DailyBar(
                symbol=symbol, session=day, close=close, source=SOURCE, open=positive(event.open),
                high=positive(event.high), low=positive(event.low),
                volume=float(event.volume) if event.volume is not None and event.volume >= 0 else None,
            )
        notes: list[str] = []
        if not complete:
            notes.append(f"tastytrade: partial answer for {symbol}: the candle snapshot did not end "
                         f"within {self._timeout:g}s ({len(events)} candles received)")
        if skipped:
            notes.append(f"tastytrade: {skipped} {symbol} candle(s) removed or without a close, skipped")
        ordered = tuple(bars[d] for d in sorted(bars))
        logger.info("tastytrade history symbol=%s range=%s..%s bars=%s complete=%s", symbol, start, end,
                    len(ordered), complete)
        return HistoryAnswer(symbol, start, end, ordered, tuple(notes))

"""Daily market history from IBKR: ``reqHistoricalData`` (1-day bars) through ib_async.

Contracts: indices and volatility indices of the instrument table (SPX, NDX, VIX,
VIX3M...) as ``IND``; futures roots (ES, NQ, CL...) as the continuous future
(``CONTFUT``, the futures behind futures options; IBKR takes no end date for it, so it is
asked up to now and cut at the requested end); everything else as a SMART stock/ETF.
Bars are ``TRADES`` with regular trading hours only; the source is stored as
``ibkr:TRADES``.

Pacing (IBKR's historical-data limits, https://interactivebrokers.github.io/tws-api/
historical_limitations.html): at most 60 requests in any 10 minutes (a
:class:`~portfolio_pipeline.brokers.ibkr.pacing.RateLimiter` of 60 per 600 s, on top of
the adapter's 45 messages/s), never the same request twice (each symbol is asked once
per range), and on a pacing violation (error 162 "pacing violation") a wait of
``violation_wait`` seconds before ONE retry.  Error 162 "HMDS query returned no data"
is an empty answer; errors 354 / 10089 / 10090 / 10167 / 10168 (no market-data
subscription) and 200 (no security definition) raise
:class:`~portfolio_pipeline.marketdata.bars.HistoryUnavailableError` naming the symbol.
A partial answer (the first bar later than the requested start, or fewer sessions than
requested) is returned as sent, with a note; nothing is filled.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import date, datetime, time
from typing import Any, Final

from ib_async import Contract as IbContract
from ib_async.wrapper import RequestError

from portfolio_pipeline.brokers.base import BrokerError
from portfolio_pipeline.brokers.ibkr.adapter import IbkrBroker
from portfolio_pipeline.brokers.ibkr.pacing import RateLimiter, Sleep
from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.exchange_calendar import NEW_YORK
from portfolio_pipeline.marketdata.bars import DailyBar, HistoryAnswer, HistoryUnavailableError

logger = logging.getLogger(__name__)

HISTORICAL_REQUESTS_PER_WINDOW: Final = 60
HISTORICAL_WINDOW_SECONDS: Final = 600.0
NO_SUBSCRIPTION_CODES: Final = frozenset({354, 10089, 10090, 10167, 10168})
NO_DATA_TEXT: Final = "hmds query returned no data"
PACING_TEXT: Final = "pacing violation"
WHAT_TO_SHOW: Final = "TRADES"


def duration_for(start: date, end: date) -> str:
    """IBKR duration string covering ``start..end``: days up to a year, else whole years."""
    days = (end - start).days + 1
    if days <= 365:
        return f"{max(days, 1)} D"
    return f"{math.ceil((end - start).days / 365.25)} Y"  # 5 Y reaches back 5 x 365.25 days


def _request_error(exc: BaseException) -> RequestError | None:
    cause = exc.__cause__
    return cause if isinstance(cause, RequestError) else None


class IbkrHistorySource:
    """Daily bars over an :class:`IbkrBroker`'s connection (call inside ``async with broker``).

    Parameters
    ----------
    broker : IbkrBroker
        A connected adapter (its qualification cache, limiter and timeout are used).
    instruments : InstrumentTable
        Decides index / future / stock per symbol.
    pacing : RateLimiter, optional
        Historical-data pacing (default 60 requests per 600 s).
    violation_wait : float
        Seconds to wait after a pacing violation before the one retry.
    sleep : callable
        Awaitable sleep (injected in tests).
    """

    name = "ibkr"

    def __init__(
        self,
        broker: IbkrBroker,
        instruments: InstrumentTable,
        *,
        pacing: RateLimiter | None = None,
        violation_wait: float = 15.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._broker = broker
        self._instruments = instruments
        self._pacing = pacing or RateLimiter(HISTORICAL_REQUESTS_PER_WINDOW, HISTORICAL_WINDOW_SECONDS)
        self._violation_wait = violation_wait
        self._sleep = sleep
        self.requests = 0
        """Historical-data requests sent (for logs and tests)."""

    def max_years(self) -> float:
        return 20.0

    async def _contract(self, symbol: str) -> IbContract:
        try:
            spec = self._instruments.spec(symbol)
            kind = spec.underlying_type
        except UnknownInstrumentError:
            spec, kind = None, "equity"
        if kind in ("index", "volatility_index"):
            return await self._broker.contracts.qualify(Contract(symbol, "IND"))
        if kind == "future" and spec is not None and spec.future is not None:
            ib = await self._broker.session.ready_ib()
            request = IbContract(secType="CONTFUT", symbol=symbol, exchange=spec.future.exchange,
                                 currency=spec.currency)
            found = await self._broker.session.request(
                f"qualify continuous future {symbol}", lambda: ib.qualifyContractsAsync(request)
            )
            qualified = found[0] if found else None
            if not isinstance(qualified, IbContract) or not qualified.conId:
                raise HistoryUnavailableError(f"ibkr: no continuous future for {symbol} on {spec.future.exchange}")
            qualified.secType = "CONTFUT"  # the details name the front month; keep it continuous
            return qualified
        return await self._broker.contracts.qualify(Contract(symbol, "STK"))

    async def _bars(self, symbol: str, contract: IbContract, start: date, end: date) -> list[Any]:
        ib = await self._broker.session.ready_ib()
        end_at: datetime | str = datetime.combine(end, time(23, 59, 59), tzinfo=NEW_YORK)
        duration = duration_for(start, end)
        if contract.secType == "CONTFUT":
            # IBKR refuses an end date for continuous futures (error 10339): ask up to now
            # and keep the sessions up to ``end`` (below)
            end_at = ""
            duration = duration_for(start, max(end, self._broker.session.clock().astimezone(NEW_YORK).date()))
        what = f"historical data {symbol} {duration} to {end}"
        for attempt in (0, 1):
            await self._pacing.acquire()
            self.requests += 1
            try:
                bars: list[Any] = await self._broker.session.request(
                    what,
                    lambda: ib.reqHistoricalDataAsync(
                        contract, end_at, duration, "1 day", WHAT_TO_SHOW, True, 1, timeout=0
                    ),
                )
                return bars
            except BrokerError as exc:
                err = _request_error(exc)
                if err is None:
                    raise
                text = err.message.lower()
                if err.code in NO_SUBSCRIPTION_CODES:
                    raise HistoryUnavailableError(
                        f"ibkr: no market-data subscription for {symbol} history: IBKR error "
                        f"{err.code}: {err.message}"
                    ) from exc
                if err.code == 162 and NO_DATA_TEXT in text:
                    return []
                if err.code == 162 and PACING_TEXT in text and attempt == 0:
                    logger.warning("ibkr history pacing violation symbol=%s; waiting %ss", symbol,
                                   self._violation_wait)
                    await self._sleep(self._violation_wait)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def intraday_volumes(
        self, symbol: str, *, sessions: int = 20, bar_size: str = "30 mins"
    ) -> list[tuple[datetime, float]]:
        """(bar start UTC, volume) of the last ``sessions`` sessions' regular-hours TRADES bars.

        The input of a VWAP slicer's volume profile (``orders.slicer.volume_profile``);
        bars without a volume are left out.
        """
        contract = await self._contract(symbol)
        ib = await self._broker.session.ready_ib()
        await self._pacing.acquire()
        self.requests += 1
        raw: list[Any] = await self._broker.session.request(
            f"intraday bars {symbol} {sessions} D {bar_size}",
            lambda: ib.reqHistoricalDataAsync(
                contract, "", f"{sessions} D", bar_size, WHAT_TO_SHOW, True, 2, timeout=0
            ),
        )
        return [
            (b.date, float(b.volume)) for b in raw
            if isinstance(b.date, datetime) and b.volume is not None and b.volume >= 0
        ]

    async def daily_bars(self, symbol: str, start: date, end: date) -> HistoryAnswer:
        try:
            contract = await self._contract(symbol)
        except BrokerError as exc:
            err = _request_error(exc)
            if (err is not None and err.code == 200) or "no security definition" in str(exc):
                raise HistoryUnavailableError(str(exc)) from exc
            raise
        raw = await self._bars(symbol, contract, start, end)
        source = f"ibkr:{WHAT_TO_SHOW}"
        bars: list[DailyBar] = []
        for b in raw:
            day = b.date.date() if isinstance(b.date, datetime) else b.date
            if not isinstance(day, date) or not start <= day <= end:
                continue
            bars.append(DailyBar(
                symbol=symbol, session=day, close=float(b.close), source=source,
                open=float(b.open) if b.open > 0 else None, high=float(b.high) if b.high > 0 else None,
                low=float(b.low) if b.low > 0 else None,
                volume=float(b.volume) if b.volume is not None and b.volume >= 0 else None,
            ))
        notes: list[str] = []
        if not bars:
            notes.append(f"ibkr: no {symbol} bars for {start}..{end}")
        elif bars[0].session > start:
            notes.append(f"ibkr: partial answer for {symbol}: first bar {bars[0].session} "
                         f"after the requested start {start}")
        logger.info("ibkr history symbol=%s range=%s..%s bars=%s", symbol, start, end, len(bars))
        return HistoryAnswer(symbol, start, end, tuple(bars), tuple(notes))

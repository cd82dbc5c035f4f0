"""Daily bars and the one interface every market-history source implements.

A :class:`HistorySource` answers "daily bars of ``symbol`` from ``start`` to ``end``"
(session dates, America/New_York, both inclusive) with :class:`DailyBar` values that name
their source (``"ibkr:TRADES"``, ``"tastytrade:candle"``, ``"demo:arch.sp500"``,
``"demo:model-vix3m"`` ...).  Sources never fill a missing session: what the broker did
not send is simply absent, and the checks of the ``market_history`` asset report it.

Implementations: the demo (:mod:`portfolio_pipeline.brokers.demo.history_source`, the
shipped ``arch``/published data), IBKR (:mod:`portfolio_pipeline.brokers.ibkr.history_source`,
``reqHistoricalData`` with pacing) and Tastytrade
(:mod:`portfolio_pipeline.brokers.tastytrade.history_source`, DXLink candles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Protocol, runtime_checkable

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.symbols import VOLATILITY_INDEX_SYMBOLS

INDEX_SYMBOLS: tuple[str, ...] = ("SPX", *VOLATILITY_INDEX_SYMBOLS)
"""Symbols the market history always holds besides the book's underlyings."""


class HistoryUnavailableError(RuntimeError):
    """The source cannot serve this symbol at all (no subscription, unknown symbol)."""


@dataclass(frozen=True, slots=True)
class DailyBar:
    """One session of one symbol; prices in index points / currency units per share."""

    symbol: str
    session: date
    close: float
    source: str
    open: float | None = None
    high: float | None = None
    low: float | None = None
    volume: float | None = None

    def __post_init__(self) -> None:
        where = f"{self.source}:{self.symbol} bar {self.session}"
        if not self.symbol or not self.source:
            raise InvalidDataError(f"{where}: symbol and source are required")
        if not isinstance(self.close, float | int) or not math.isfinite(self.close) or self.close <= 0:
            raise InvalidDataError(f"{where}: close must be positive and finite, got {self.close!r}")
        for name in ("open", "high", "low"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise InvalidDataError(f"{where}: {name} must be positive and finite, got {value!r}")
        if self.high is not None and self.low is not None and self.high < self.low:
            raise InvalidDataError(f"{where}: high {self.high} < low {self.low}")
        if self.volume is not None and (not math.isfinite(self.volume) or self.volume < 0):
            raise InvalidDataError(f"{where}: volume must be >= 0 and finite, got {self.volume!r}")


@dataclass(frozen=True, slots=True)
class HistoryAnswer:
    """What a source returned for one request, and what it says about it."""

    symbol: str
    start: date
    end: date
    bars: tuple[DailyBar, ...]
    notes: tuple[str, ...] = ()
    """Partial answers, pacing waits, substitutions the source made (never fills)."""


@runtime_checkable
class HistorySource(Protocol):
    """Daily bars of one broker (or of the demo's shipped data)."""

    name: str

    def max_years(self) -> float:
        """The deepest history this source serves (years back from today)."""
        ...

    async def daily_bars(self, symbol: str, start: date, end: date) -> HistoryAnswer:
        """Bars of ``symbol`` on sessions ``start..end`` (inclusive), oldest first.

        Raises :class:`HistoryUnavailableError` when the symbol cannot be served at all.
        """
        ...

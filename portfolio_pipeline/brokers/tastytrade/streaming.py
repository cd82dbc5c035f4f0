"""DXLink (dxfeed) Quote and Greeks events, with a staleness watchdog.

The SDK's :class:`~tastytrade.DXLinkStreamer` silently drops an event whose fields are
``NaN`` (pydantic rejects it and the SDK skips it), so "no event" is indistinguishable
from "nothing changed".  :class:`FeedState` therefore stamps every event with the
injected clock and treats a subscribed symbol without a fresh Greeks event (options) or
Quote event (everything) within ``stale_after`` seconds as **stale**: it is logged once
as a warning when it becomes stale, exposed in :attr:`FeedState.stale_symbols`, and
callers report NaN Greeks for it instead of an old or missing value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from portfolio_pipeline.clock import Clock

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QuoteTick:
    bid: float
    ask: float
    received_at: datetime


@dataclass(frozen=True, slots=True)
class GreeksTick:
    price: float
    iv: float
    delta: float
    gamma: float
    theta: float
    vega: float
    received_at: datetime


def _f(value: Decimal | float) -> float:
    return float(value)


class FeedState:
    """Latest Quote/Greeks per dxfeed symbol and the watchdog over them."""

    def __init__(self, clock: Clock, stale_after: float) -> None:
        if stale_after <= 0:
            raise ValueError("stale_after must be > 0 seconds")
        self._clock = clock
        self._stale_after = stale_after
        self._quotes: dict[str, QuoteTick] = {}
        self._greeks: dict[str, GreeksTick] = {}
        self._subscribed_at: dict[str, datetime] = {}
        self._needs_greeks: set[str] = set()
        self._stale: set[str] = set()

    @property
    def stale_after(self) -> float:
        return self._stale_after

    def subscribed(self) -> set[str]:
        return set(self._subscribed_at)

    def add_subscriptions(self, symbols: Iterable[str]) -> list[str]:
        """Register symbols for quotes; returns those that were new."""
        now = self._clock()
        new = [s for s in dict.fromkeys(symbols) if s not in self._subscribed_at]
        for symbol in new:
            self._subscribed_at[symbol] = now
        return new

    def forget_subscriptions(self) -> None:
        """The streamer died: nothing is subscribed any more (the next request resubscribes)."""
        self._subscribed_at.clear()
        self._needs_greeks.clear()

    def add_greeks(self, symbols: Iterable[str]) -> list[str]:
        """Register (already subscribed) symbols as needing Greeks; returns the new ones."""
        new = [s for s in dict.fromkeys(symbols) if s not in self._needs_greeks]
        self._needs_greeks.update(new)
        return new

    def on_quote(self, symbol: str, bid: Decimal, ask: Decimal) -> None:
        self._quotes[symbol] = QuoteTick(_f(bid), _f(ask), self._clock())

    def on_greeks(
        self, symbol: str, *, price: Decimal, iv: Decimal, delta: Decimal, gamma: Decimal,
        theta: Decimal, vega: Decimal,
    ) -> None:
        self._greeks[symbol] = GreeksTick(
            _f(price), _f(iv), _f(delta), _f(gamma), _f(theta), _f(vega), self._clock()
        )

    def _age(self, stamp: datetime | None, symbol: str, now: datetime) -> float:
        since = stamp if stamp is not None else self._subscribed_at[symbol]
        return (now - since).total_seconds()

    def is_fresh_quote(self, symbol: str, now: datetime | None = None) -> bool:
        tick = self._quotes.get(symbol)
        now = now or self._clock()
        return tick is not None and self._age(tick.received_at, symbol, now) <= self._stale_after

    def is_fresh_greeks(self, symbol: str, now: datetime | None = None) -> bool:
        tick = self._greeks.get(symbol)
        now = now or self._clock()
        return tick is not None and self._age(tick.received_at, symbol, now) <= self._stale_after

    def quote(self, symbol: str) -> QuoteTick | None:
        return self._quotes.get(symbol)

    def greeks(self, symbol: str) -> GreeksTick | None:
        return self._greeks.get(symbol)

    def has_all(self, symbols: Iterable[str]) -> bool:
        """Every symbol has a quote, and every option symbol Greeks (fresh or not)."""
        return all(
            s in self._quotes and (s not in self._needs_greeks or s in self._greeks) for s in symbols
        )

    def check(self) -> set[str]:
        """Run the watchdog now: log newly stale symbols, forget recovered ones."""
        now = self._clock()
        stale: set[str] = set()
        for symbol in self._subscribed_at:
            quote = self._quotes.get(symbol)
            if self._age(quote.received_at if quote else None, symbol, now) > self._stale_after:
                stale.add(symbol)
                continue
            if symbol in self._needs_greeks:
                greeks = self._greeks.get(symbol)
                if self._age(greeks.received_at if greeks else None, symbol, now) > self._stale_after:
                    stale.add(symbol)
        for symbol in sorted(stale - self._stale):
            logger.warning(
                "tastytrade DXLink: %s stale, no valid event for more than %.0fs "
                "(NaN events are dropped by the SDK)",
                symbol, self._stale_after,
            )
        for symbol in sorted(self._stale - stale):
            logger.info("tastytrade DXLink: %s fresh again", symbol)
        self._stale = stale
        return set(stale)

    @property
    def stale_symbols(self) -> frozenset[str]:
        """Symbols found stale by the last watchdog check."""
        return frozenset(self._stale)

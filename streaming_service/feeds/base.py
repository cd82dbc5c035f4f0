"""The feed contract."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from portfolio_pipeline.domain.positions import AccountSnapshot, Position, Quote
from streaming_service.engine import Tick


@dataclass(frozen=True, slots=True)
class StartingBook:
    """The book at the last close and the volatility indices then."""

    account: AccountSnapshot
    positions: Sequence[Position]
    quotes: Sequence[Quote]
    vix: float
    vix3m: float | None


class Feed(Protocol):
    """A tick source (demo replay, IBKR, Tastytrade)."""

    name: str

    async def starting_book(self) -> StartingBook: ...

    def ticks(self) -> AsyncIterator[Tick]:
        """Ticks as received (may be malformed: the engine validates and the service skips)."""
        ...

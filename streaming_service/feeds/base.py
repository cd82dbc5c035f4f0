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
    accounts: Sequence[AccountSnapshot] = ()
    """Each account's own snapshot when ``account`` combines several (the service then
    checks every account and the book: ``streaming_service.book``)."""


def combined_snapshot(snapshots: Sequence[AccountSnapshot]) -> AccountSnapshot:
    """One snapshot for several accounts of one broker: balances summed."""
    if len(snapshots) == 1:
        return snapshots[0]
    first = snapshots[0]
    pnl = [s.broker_daily_pnl for s in snapshots]
    return AccountSnapshot(
        broker=first.broker,
        account_id="+".join(s.account_id for s in snapshots),
        as_of=max(s.as_of for s in snapshots),
        nlv=sum(s.nlv for s in snapshots),
        cash=sum(s.cash for s in snapshots),
        init_margin=sum(s.init_margin for s in snapshots),
        maint_margin=sum(s.maint_margin for s in snapshots),
        excess_liquidity=sum(s.excess_liquidity for s in snapshots),
        buying_power=sum(s.buying_power for s in snapshots),
        currency=first.currency,
        broker_daily_pnl=None if any(v is None for v in pnl) else sum(v for v in pnl if v is not None),
    )


class Feed(Protocol):
    """A tick source (demo replay, IBKR, Tastytrade)."""

    name: str

    async def starting_book(self) -> StartingBook: ...

    def ticks(self) -> AsyncIterator[Tick]:
        """Ticks as received (may be malformed: the engine validates and the service skips)."""
        ...

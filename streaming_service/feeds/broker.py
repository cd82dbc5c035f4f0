"""Live feed over a broker adapter (IBKR, Tastytrade, or anything with the adapter's read API).

Design: **polling**.  Every ``poll_seconds`` the feed calls ``adapter.quotes()`` for
the underlyings of the held options (the index, the ETF/stock, the future), the held
option contracts and VIX / VIX3M, and yields one :class:`~streaming_service.engine.Tick`
per followed underlying plus VIX and VIX3M (the tick type the demo feed produces: the
engine reprices the options itself from spot and the VIX-scaled vol).  Polling is
cheap with both adapters because their ``quotes()`` read a streaming cache: IBKR keeps
``reqMktData`` lines open (and restores them after a reconnect), Tastytrade keeps a
DXLink subscription with a staleness watchdog.  So polling costs no extra broker
requests and gives one code path for every adapter.  Every poll emits a tick even if
the price did not move: that is the heartbeat the service's stale watchdog listens to.

Start (:meth:`BrokerFeed.starting_book`): connect the adapter (``async with``
semantics: ``__aenter__`` now, ``__aexit__`` in :meth:`BrokerFeed.aclose`), load the
positions and account snapshots of the followed accounts (summed when there are
several) and quote everything once.  The starting book carries the broker's quotes
(the engine takes each option's broker IV as its starting vol) and every position's
``underlying_price`` from the underlying's quote.  VIX is required (retried with
backoff, then :class:`BrokerError`); a root whose spot cannot be quoted at all is left
out of the book with an ERROR log (:attr:`BrokerFeed.excluded_roots`).

Bad data never raises.  An underlying whose own quote is missing or unusable gets **no
tick** while that lasts: the engine keeps that group's last good numbers and, after
``stale_after_seconds``, the service's watchdog raises its ``stale_data`` event and
marks the health ``degraded`` (:attr:`BrokerFeed.stale_roots`).  One held option with a
missing quote or a NaN/missing broker Greek (IBKR sentinels -1/-2/1.797e308, Tastytrade
NaN events or stale symbols) does NOT freeze its underlying: the engine prices that
option itself (from the implied vol of its mark, as the EOD pipeline does, and the live
spot), the row is flagged in :attr:`BrokerFeed.flagged_options` and every other row
stays live.  Both are logged once per episode, never per poll.  A contract the
adapter refuses outright (e.g. no DXLink symbol for an unheld future) is left out of
the polls until the next positions refresh.

Broker errors (:class:`BrokerError`, :class:`BrokerDataError`, ``OSError``) while
polling are logged and retried with exponential backoff (``retry_seconds`` doubling up
to ``max_retry_seconds``); ticks simply stop meanwhile.  The adapter reconnects by
itself (IBKR: backoff + resubscribe); when polls work again the gap is logged and kept
in :attr:`BrokerFeed.gaps` -- the adapter's own ``gap_seconds`` where it has one (IBKR),
otherwise the measured length of the failing-poll outage.

Positions are reloaded every ``positions_seconds``.  When the holdings changed (a fill,
an expiry, an assignment) the feed awaits ``on_book_change`` -- wired by
``streaming_service.main`` to the service's public ``start_engine()``, which rebuilds the
engine from a fresh :meth:`starting_book` -- so fills show up in the live risk.  Without
the hook the change is only logged.

The feed only ever calls ``__aenter__``/``__aexit__``, ``positions``,
``account_snapshot`` and ``quotes``: it is typed against :class:`QuoteSource`, the
read-only slice of the adapter contract, so it cannot stage or transmit an order.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Final, Protocol

from portfolio_pipeline.brokers.base import BrokerDataError, BrokerError
from portfolio_pipeline.brokers.snapshot import VOLATILITY_INDICES, underlying_contracts
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline.retry import FEED_POLL, FEED_START, RetryGaveUpError
from streaming_service.engine import VOL_INDEX, VOL_INDEX_3M, Tick
from streaming_service.feeds.base import StartingBook, combined_snapshot

__all__ = ["BookChangeHook", "BrokerFeed", "QuoteSource"]

logger = logging.getLogger(__name__)

#: Failures of a broker call that are retried (the adapters map SDK errors to these).
RETRYABLE: Final = (BrokerError, BrokerDataError, OSError)
_GREEKS: Final = ("iv", "delta", "gamma", "vega", "theta")

#: Awaited when the positions changed; returns whatever (the service's new engine).
BookChangeHook = Callable[[], Awaitable[object]]


class QuoteSource(Protocol):
    """The read-only slice of :class:`~portfolio_pipeline.brokers.base.BrokerAdapter`
    that the feed uses (no order methods: the feed cannot place anything)."""

    name: str

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> object: ...

    async def account_snapshot(self, account_id: str) -> AccountSnapshot: ...

    async def positions(self, account_id: str) -> list[Position]: ...

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]: ...


@dataclass(frozen=True, slots=True)
class _Plan:
    """What is followed: root -> the contract its ticks come from, root -> held options."""

    underlyings: Mapping[str, Contract]
    options: Mapping[str, tuple[Contract, ...]]


def _usable_price(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _holdings(positions: Sequence[Position]) -> frozenset[tuple[str, str, float]]:
    return frozenset((p.account_id, p.contract.key, p.quantity) for p in positions)


class BrokerFeed:
    """Ticks from a live broker adapter by polling its quotes (see the module docstring).

    Parameters
    ----------
    adapter:
        A broker adapter (only its read methods are used).
    account_ids:
        Accounts whose positions form the book (balances summed when several).
    instruments:
        THE instrument table (which contract an option's spot is quoted on).
    poll_seconds:
        Wall seconds between quote polls (each poll yields one tick per followed symbol).
    positions_seconds:
        Wall seconds between position reloads (fills -> ``on_book_change``).
    retry_seconds, max_retry_seconds:
        Backoff after a failed poll or starting-book attempt: doubles from
        ``retry_seconds`` up to the maximum (defaults: :data:`portfolio_pipeline.retry.FEED_POLL`).
    start_attempts:
        Attempts at loading the starting book before :meth:`starting_book` raises
        (default: :data:`portfolio_pipeline.retry.FEED_START`).
    on_book_change:
        Awaited when the positions changed (e.g. ``service.start_engine``).
    """

    def __init__(
        self,
        adapter: QuoteSource,
        account_ids: Sequence[str],
        instruments: InstrumentTable,
        *,
        poll_seconds: float = 1.0,
        positions_seconds: float = 60.0,
        retry_seconds: float = FEED_POLL.initial,
        max_retry_seconds: float = FEED_POLL.maximum,
        start_attempts: int | None = None,
        on_book_change: BookChangeHook | None = None,
    ) -> None:
        if not account_ids:
            raise ValueError("broker feed: no accounts to follow")
        if poll_seconds <= 0 or positions_seconds <= 0 or retry_seconds <= 0 or max_retry_seconds <= 0:
            raise ValueError("broker feed: intervals must be positive")
        self._adapter = adapter
        self._accounts = tuple(account_ids)
        self._instruments = instruments
        self._poll = poll_seconds
        self._positions_every = positions_seconds
        self._start_retry = replace(FEED_START, operation=f"{adapter.name} feed: starting book",
                                    max_attempts=FEED_START.max_attempts if start_attempts is None
                                    else max(1, start_attempts), initial=retry_seconds,
                                    maximum=max_retry_seconds)
        self._poll_retry = replace(FEED_POLL, initial=retry_seconds, maximum=max_retry_seconds)
        self.on_book_change = on_book_change
        self.name = adapter.name
        self._connected = False
        self._plan = _Plan({}, {})
        self._holdings: frozenset[tuple[str, str, float]] = frozenset()
        self._unquotable: dict[str, str] = {}
        self._gap_marker: tuple[object, object] = (None, None)
        self._next_refresh = 0.0
        self.stale_roots: dict[str, str] = {}
        self._failing_polls = 0
        self.flagged_options: dict[str, str] = {}
        """Held options priced by the engine without broker Greeks: contract key -> reason."""
        """Followed symbols currently without ticks -> why (missing quote, NaN Greeks...)."""
        self.excluded_roots: dict[str, str] = {}
        """Roots held but left out of the book (no spot could be quoted) -> why."""
        self.gaps: list[float] = []
        """Market-data gaps (seconds) after reconnects / failed-poll outages, oldest first."""
        self.last_quotes: dict[str, Quote] = {}
        """The latest broker quote per contract key (with the broker's Greeks)."""
        self.polls = 0
        self.failed_polls = 0

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Enter the adapter's context (connect); idempotent."""
        if self._connected:
            return
        await self._adapter.__aenter__()
        self._connected = True
        self._gap_marker = self._adapter_gap_marker()
        logger.info("%s feed: connected, following account(s) %s", self.name, ", ".join(self._accounts))

    async def aclose(self) -> None:
        """Leave the adapter's context (disconnect); idempotent."""
        if not self._connected:
            return
        self._connected = False
        await self._adapter.__aexit__(None, None, None)
        logger.info("%s feed: disconnected", self.name)

    @property
    def followed(self) -> frozenset[str]:
        """Tick symbols of the current book (underlying roots, VIX, VIX3M)."""
        return frozenset((*self._plan.underlyings, VOL_INDEX, VOL_INDEX_3M))

    # ------------------------------------------------------------------ the book

    def _make_plan(self, positions: Sequence[Position]) -> _Plan:
        underlyings: dict[str, Contract] = {}
        for contract in underlying_contracts(positions, self._instruments):
            underlyings.setdefault(contract.underlying.upper(), contract)
        options: dict[str, list[Contract]] = {}
        for p in positions:
            root = p.contract.underlying.upper()
            if p.contract.is_option:
                options.setdefault(root, []).append(p.contract)
            else:
                underlyings.setdefault(root, p.contract)
        for root in (VOL_INDEX, VOL_INDEX_3M):
            underlyings.pop(root, None)  # VIX / VIX3M are ticked as the volatility indices
        return _Plan(underlyings, {r: tuple(dict.fromkeys(cs)) for r, cs in options.items()})

    def _contracts(self, plan: _Plan) -> list[Contract]:
        wanted: dict[str, Contract] = {}
        for contract in (*plan.underlyings.values(), *(c for cs in plan.options.values() for c in cs),
                         *VOLATILITY_INDICES):
            wanted.setdefault(contract.key, contract)
        return list(wanted.values())

    async def _load_accounts(self) -> tuple[list[Position], list[AccountSnapshot]]:
        positions: list[Position] = []
        snapshots: list[AccountSnapshot] = []
        for account_id in self._accounts:
            snapshots.append(await self._adapter.account_snapshot(account_id))
            positions.extend(await self._adapter.positions(account_id))
        return positions, snapshots

    def _spot(self, root: str, plan: _Plan, positions: Sequence[Position], quotes: Mapping[str, Quote]) -> float | None:
        und = plan.underlyings.get(root)
        quote = quotes.get(und.key) if und is not None else None
        if quote is not None and _usable_price(quote.mark):
            return quote.mark
        for contract in plan.options.get(root, ()):
            q = quotes.get(contract.key)
            if q is not None and _usable_price(q.underlying_price):
                return q.underlying_price
        for p in positions:
            if p.contract.underlying.upper() == root and not p.contract.is_option and _usable_price(p.mark):
                return p.mark
        return None

    async def _load_book(self) -> StartingBook:
        positions, snapshots = await self._load_accounts()
        account = combined_snapshot(snapshots)
        plan = self._make_plan(positions)
        self._unquotable.clear()
        quotes = {q.contract.key: q for q in await self._quote(self._contracts(plan))}
        vix, vix3m = (quotes.get(c.key) for c in VOLATILITY_INDICES)
        if vix is None or not _usable_price(vix.mark):
            raise BrokerError(f"{self.name} feed: no usable VIX quote for the starting book")
        excluded: dict[str, str] = {}
        spots: dict[str, float] = {}
        for root in sorted({p.contract.underlying.upper() for p in positions}):
            spot = self._spot(root, plan, positions, quotes)
            if spot is None:
                und = plan.underlyings.get(root)
                key = und.key if und is not None else root
                excluded[root] = f"no price for {key}: {self._unquotable.get(key, 'no usable quote')}"
            else:
                spots[root] = spot
        for root, why in excluded.items():
            held = [p.contract.key for p in positions if p.contract.underlying.upper() == root]
            logger.error("%s feed: %s left out of the live book (%s); positions not monitored: %s",
                         self.name, root, why, ", ".join(held))
        kept = [replace(p, underlying_price=spots[p.contract.underlying.upper()])
                for p in positions if p.contract.underlying.upper() in spots]
        self._plan = _Plan(
            {r: c for r, c in plan.underlyings.items() if r in spots},
            {r: cs for r, cs in plan.options.items() if r in spots},
        )
        self._holdings = _holdings(positions)
        self.excluded_roots = excluded
        self.last_quotes.update(quotes)
        self._next_refresh = asyncio.get_running_loop().time() + self._positions_every
        vix3m_level = vix3m.mark if vix3m is not None and _usable_price(vix3m.mark) else None
        if vix3m_level is None:
            logger.warning("%s feed: no usable VIX3M quote; the regime starts without the term ratio", self.name)
        logger.info("%s feed: book ready positions=%d roots=%s vix=%.2f", self.name, len(kept),
                    sorted(self._plan.underlyings), vix.mark)
        return StartingBook(account=account, positions=kept, quotes=list(quotes.values()),
                            vix=vix.mark, vix3m=vix3m_level, accounts=tuple(snapshots))

    async def starting_book(self) -> StartingBook:
        """Connect (first call), load positions, balances and quotes; retried with backoff."""
        async def load() -> StartingBook:
            await self.connect()  # a Gateway that is down at start is retried like the rest
            return await self._load_book()

        try:
            return await self._start_retry.acall(load, retry_on=RETRYABLE)
        except RetryGaveUpError as exc:
            raise BrokerError(
                f"{self.name} feed: starting book failed after {exc.attempts} attempt(s): {exc.last}"
            ) from exc.last

    # ------------------------------------------------------------------ quotes

    async def _quote(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Quotes of ``contracts``; one the adapter refuses is left out until the next
        positions refresh (probed one by one when the batch fails).  Raises only when
        nothing at all could be quoted."""
        wanted = [c for c in contracts if c.key not in self._unquotable]
        if not wanted:
            return []
        try:
            return await self._adapter.quotes(wanted)
        except RETRYABLE as exc:
            if len(wanted) == 1 or not self._adapter_connected():
                raise  # the broker is down, not one contract: the caller backs off
            batch_error = exc
        # One by one (sequentially: an adapter may start its streamer on first use).
        good: list[Quote] = []
        failed: dict[str, str] = {}
        for contract in wanted:
            try:
                good.extend(await self._adapter.quotes([contract]))
            except RETRYABLE as exc:
                failed[contract.key] = str(exc)
        if not good or (failed and not self._adapter_connected()):
            raise batch_error  # lost the connection while probing: nothing is blamed
        for key, why in failed.items():
            self._unquotable[key] = why
            logger.warning("%s feed: %s left out of the polls until the next positions refresh: %s",
                           self.name, key, why)
        return good

    def _adapter_connected(self) -> bool:
        """False only when the adapter says it is disconnected (IBKR ``is_connected``)."""
        return getattr(self._adapter, "is_connected", True) is not False

    @property
    def connected(self) -> bool:
        """Live broker connectivity for /health: the adapter's own state (IBKR: socket up and
        the Gateway connected to IB's servers) and no run of failing polls in progress."""
        if not self._adapter_connected() or getattr(self._adapter, "upstream_lost", False):
            return False
        return self._failing_polls == 0

    def _stale_reason(self, root: str, quotes: Mapping[str, Quote]) -> str | None:
        for contract in self._plan.options.get(root, ()):
            q = quotes.get(contract.key)
            if q is None:
                self._flag(contract.key, "no quote; priced by the engine at its last implied vol")
                continue
            bad = [g for g in _GREEKS if (v := getattr(q, g)) is None or not math.isfinite(v)]
            if bad:
                self._flag(contract.key, f"NaN broker Greeks ({', '.join(bad)}); priced from the mark's implied vol")
            else:
                self._flag(contract.key, None)
        und = self._plan.underlyings[root]
        quote = quotes.get(und.key)
        if quote is None:
            return f"no quote for {und.key}"
        if not _usable_price(quote.mark):
            return f"unusable price {quote.mark!r} for {und.key}"
        return None

    def _flag(self, key: str, reason: str | None) -> None:
        """Flag (or clear) one option row; logged once per episode."""
        if reason is None:
            if self.flagged_options.pop(key, None) is not None:
                logger.info("%s feed: %s has broker Greeks again", self.name, key)
            return
        if self.flagged_options.get(key) != reason:
            logger.warning("%s feed: %s flagged: %s (its underlying keeps ticking)", self.name, key, reason)
            self.flagged_options[key] = reason

    def _set_stale(self, symbol: str, reason: str | None) -> None:
        if reason is None:
            if self.stale_roots.pop(symbol, None) is not None:
                logger.info("%s feed: %s ticking again", self.name, symbol)
            return
        if self.stale_roots.get(symbol) != reason:
            logger.warning("%s feed: %s withheld (stale data): %s", self.name, symbol, reason)
            self.stale_roots[symbol] = reason

    def _ticks_from(self, quotes: Sequence[Quote]) -> list[Tick]:
        by_key = {q.contract.key: q for q in quotes}
        self.last_quotes.update(by_key)
        received = time.perf_counter()
        ticks: list[Tick] = []
        for root in sorted(self._plan.underlyings):
            reason = self._stale_reason(root, by_key)
            self._set_stale(root, reason)
            if reason is None:
                spot = by_key[self._plan.underlyings[root].key]
                ticks.append(Tick(root, spot.as_of, spot.mark, received))
        for contract in VOLATILITY_INDICES:
            level = by_key.get(contract.key)
            symbol = contract.underlying
            if level is None or not _usable_price(level.mark):
                self._set_stale(symbol, f"no usable quote for {contract.key}")
                continue
            self._set_stale(symbol, None)
            ticks.append(Tick(symbol, level.as_of, level.mark, received))
        return ticks

    # ------------------------------------------------------------------ gaps and refresh

    def _adapter_gap_marker(self) -> tuple[object, object]:
        return getattr(self._adapter, "last_disconnect", None), getattr(self._adapter, "gap_seconds", None)

    def _check_adapter_gap(self) -> bool:
        """Report a reconnect gap the adapter measured since the last check (IBKR)."""
        marker = self._adapter_gap_marker()
        if marker == self._gap_marker:
            return False
        self._gap_marker = marker
        gap = marker[1]
        if not isinstance(gap, int | float):
            return False
        self.gaps.append(float(gap))
        logger.warning("%s feed: broker reconnected; market-data gap of %.3fs (disconnected at %s)",
                       self.name, gap, marker[0])
        return True

    async def _refresh_positions(self) -> None:
        """Reload positions; when the holdings changed, rebuild via ``on_book_change``."""
        self._next_refresh = asyncio.get_running_loop().time() + self._positions_every
        self._unquotable.clear()  # refused contracts get another chance
        try:
            positions, _ = await self._load_accounts()
        except RETRYABLE as exc:
            logger.warning("%s feed: positions refresh failed (%s); next try in %.0fs",
                           self.name, exc, self._positions_every)
            return
        new = _holdings(positions)
        if new == self._holdings:
            return
        old = self._holdings
        added = sorted(f"{k} {q:+g}" for _, k, q in new - old)
        gone = sorted(f"{k} {q:+g}" for _, k, q in old - new)
        logger.warning("%s feed: positions changed (now %s; before %s)", self.name,
                       "; ".join(added) or "-", "; ".join(gone) or "-")
        if self.on_book_change is None:
            logger.warning("%s feed: no on_book_change hook; the engine keeps the old book", self.name)
            self._holdings = new
            return
        saved = (self._plan, self._holdings, dict(self.excluded_roots))
        try:
            await self.on_book_change()
        except Exception:
            self._plan, self._holdings, self.excluded_roots = saved
            logger.exception("%s feed: rebuilding the book failed; keeping the old one, retrying at the "
                             "next positions refresh", self.name)
            return
        logger.info("%s feed: book rebuilt with the new positions", self.name)

    # ------------------------------------------------------------------ ticks

    async def ticks(self) -> AsyncGenerator[Tick, None]:
        """Poll forever (until cancelled): one tick per followed symbol with good data."""
        loop = asyncio.get_running_loop()
        failures = 0
        outage_since: float | None = None
        while True:
            started = loop.time()
            try:
                if started >= self._next_refresh:
                    await self._refresh_positions()
                quotes = await self._quote(self._contracts(self._plan))
            except RETRYABLE as exc:
                failures += 1
                self._failing_polls = failures
                self.failed_polls += 1
                if outage_since is None:
                    outage_since = started
                delay = self._poll_retry.delay(failures)
                logger.warning("%s feed: poll failed (%d in a row): %s; retrying in %.2fs",
                               self.name, failures, exc, delay)
                await asyncio.sleep(delay)
                continue
            self.polls += 1
            reported = self._check_adapter_gap()
            if outage_since is not None:
                outage = loop.time() - outage_since
                logger.warning("%s feed: polls working again after %d failure(s), %.3fs without data",
                               self.name, failures, outage)
                if not reported and not hasattr(self._adapter, "gap_seconds"):
                    self.gaps.append(outage)
                failures, outage_since = 0, None
            self._failing_polls = 0
            for tick in self._ticks_from(quotes):
                yield tick
            await asyncio.sleep(max(started + self._poll - loop.time(), 0.0))

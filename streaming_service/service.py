"""The streaming service: feed -> engine -> breach detector -> events (+ proposals).

A reader task takes ticks off the feed into a queue, stamping their arrival time
(``Tick.received``, unless the feed stamped it already).  The tick loop drains the
queue into micro-batches -- every tick that queued up while the previous batch was
processed, at most ``feed.batch_max_ticks`` and spanning at most
``feed.batch_window_seconds`` of market time (so a fast replay still gets one
evaluation per market instant) -- and runs each batch through the engine once (each
touched underlying interpolated on its expansion grid or repriced once, one VIX
update however many VIX ticks; see ``streaming_service.engine``: the breach decisions
are those of full revaluation) and the breach detector once, at the batch's last market time.  An idle feed gives batches of
one tick (no waiting for more); a busy one gives bigger batches at about the cost of
one, which is what keeps the latency bounded.  Each tick's latency runs from its
arrival to its batch's events being queued, so waiting in the queue counts.

The batch work is synchronous only (engine, detector, ``EventWriter.submit``); the
database is written by the writer task in a thread, proposals run as their own tasks,
the watchdog and the health endpoint are tasks too, and the loop yields to them after
every batch.  Once the book is loaded the objects of start-up are frozen out of the
garbage collector (``gc.freeze``), so a full collection does not walk them mid-session.
Bad input never stops the loop: malformed ticks and unknown contracts are
logged and skipped (the rest of their batch goes on); NaN Greeks raise a ``stale_data``
event and the affected group keeps its last good numbers (the batch is still
evaluated with them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from portfolio_pipeline.config.streaming import StreamingConfig
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import AccountSnapshot, Position
from portfolio_pipeline.domain.regime import LimitSet, RegimeService
from streaming_service.book import BookEngine
from streaming_service.breach import LIMIT_BREACH, BreachDetector, BreachSignal
from streaming_service.buffer import EventWriter, StreamEvent
from streaming_service.engine import (
    BadTickError,
    Engine,
    EngineInputs,
    Expansion,
    RiskState,
    Tick,
    UnknownContractError,
)
from streaming_service.feeds.base import Feed
from streaming_service.health import ServiceMetrics
from streaming_service.staging import HedgeDesk

__all__ = ["RISK_SNAPSHOT", "STALE_DATA", "StreamingService"]

logger = logging.getLogger(__name__)

RISK_SNAPSHOT: Final = "risk_snapshot"
STALE_DATA: Final = "stale_data"

#: A tick and its arrival (``time.perf_counter()``); ``None`` ends the feed.
_Queued = tuple[Tick, float]


def _market_seconds(tick: Tick) -> float | None:
    ts = getattr(tick, "ts", None)
    if isinstance(ts, datetime) and ts.tzinfo is not None and ts.utcoffset() is not None:
        return ts.timestamp()
    return None  # malformed: the engine rejects it; it does not bound the batch


def risk_payload(state: RiskState) -> dict[str, Any]:
    r, g = state.risk, state.regime
    return {
        "ts": state.ts.isoformat(), "scope": r.scope, "nlv": r.nlv,
        "beta_weighted_dollar_delta": r.beta_weighted_dollar_delta,
        "dollar_gamma_1pct": r.dollar_gamma_1pct, "vega_per_point": r.vega_per_point,
        "theta_per_day": r.theta_per_day, "maint_margin": r.maint_margin,
        "regime": g.name, "vix": g.vix, "vix3m": g.vix3m, "term_ratio": g.term_ratio,
        "spots": dict(state.spots),
        "checks": [
            {"metric": c.metric, "value": c.value, "limit": c.limit, "utilisation": c.utilisation}
            for c in state.checks
        ],
    }


@dataclass(frozen=True, slots=True)
class _Pricing:
    rate: float
    dividend_yields: dict[str, float]
    betas: dict[str, float]


class StreamingService:
    """The live risk loop of one broker's accounts (see the module docstring).

    A starting book of one account runs one :class:`Engine` (scope: ``account_id``); a
    book of several accounts (``StartingBook.accounts``) runs a :class:`BookEngine`:
    every account against its own limits (``account_limits``: account id -> regime
    name -> limits) and the whole book (scope ``"*"``) against the regime's; each breach
    event carries the account it belongs to.  Hedges are proposed only for the desk's
    own account (``account_id``), from that account's engine."""

    def __init__(
        self,
        *,
        feed: Feed,
        writer: EventWriter,
        instruments: InstrumentTable,
        regimes: RegimeService,
        settings: StreamingConfig,
        account_id: str,
        desk: HedgeDesk | None = None,
        rate: float = 0.0,
        dividend_yields: dict[str, float] | None = None,
        betas: dict[str, float] | None = None,
        account_limits: Mapping[str, Callable[[str], LimitSet]] | None = None,
        metrics: ServiceMetrics | None = None,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = feed
        self._writer = writer
        self._instruments = instruments
        self._regimes = regimes
        self._settings = settings
        self._account = account_id
        self._account_limits = dict(account_limits or {})
        self._desk = desk
        self._pricing = _Pricing(rate, dict(dividend_yields or {}), dict(betas or {}))
        self.metrics = metrics or ServiceMetrics()
        self._wall = wall_clock
        self._detector = BreachDetector(settings.breach, regimes)
        self._engine: Engine | BookEngine | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stale: set[str] = set()
        self._nan_roots: set[str] = set()
        self._last_snapshot: datetime | None = None
        self._snapshot_every = timedelta(seconds=settings.feed.risk_snapshot_seconds)
        self.signals: list[BreachSignal] = []

    @property
    def engine(self) -> Engine | BookEngine | None:
        return self._engine

    @property
    def desk(self) -> HedgeDesk | None:
        return self._desk

    @property
    def writer(self) -> EventWriter:
        return self._writer

    @staticmethod
    async def _next_or_stop(queue: asyncio.Queue[_Queued | None], stop: asyncio.Event) -> _Queued | None:
        """The next queued tick, or None as soon as ``stop`` is set (no tick may ever come:
        a broker that is down must not keep SIGTERM waiting)."""
        if not queue.empty():
            return queue.get_nowait()
        getter = asyncio.ensure_future(queue.get())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        await asyncio.gather(getter, return_exceptions=True)
        return None

    async def _start_or_stop(self, stop: asyncio.Event) -> Engine | BookEngine | None:
        """Load the starting book, unless ``stop`` is set first (SIGTERM while the broker is down)."""
        starter = asyncio.ensure_future(self.start_engine())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if starter.done():
            return starter.result()
        starter.cancel()
        await asyncio.gather(starter, return_exceptions=True)
        return None

    async def start_engine(self) -> Engine | BookEngine:
        book = await self._feed.starting_book()
        self.metrics.broker_connected = True
        levels = (1.0, 1.0 - self._settings.breach.hysteresis)  # fire / clear

        def engine(account: AccountSnapshot, positions: Sequence[Position], scope: str) -> Engine:
            return Engine(
                EngineInputs(
                    account=account, positions=positions, quotes=book.quotes,
                    vix=book.vix, vix3m=book.vix3m, rate=self._pricing.rate,
                    dividend_yields=self._pricing.dividend_yields, betas=self._pricing.betas,
                ),
                self._instruments, self._regimes, scope=scope, expansion=Expansion(levels=levels),
                limits=self._account_limits.get(account.account_id),
            )

        accounts = [a for a in book.accounts if a.nlv > 0]
        if len(accounts) > 1:
            self._engine = BookEngine(
                {a.account_id: engine(a, [p for p in book.positions if p.account_id == a.account_id], a.account_id)
                 for a in accounts},
                self._regimes, guard=Expansion().guard, levels=levels,
            )
            logger.info("book engine ready accounts=%s positions=%s roots=%s", [a.account_id for a in accounts],
                        self._engine.position_count, list(self._engine.roots))
        else:
            self._engine = engine(book.account, book.positions, self._account)
            logger.info("engine ready positions=%s roots=%s", self._engine.position_count, list(self._engine.roots))
        return self._engine

    def _emit(self, event: StreamEvent) -> None:
        self._writer.submit(event)

    def process_tick(self, tick: Tick) -> list[BreachSignal]:
        """One tick through engine and detector (a batch of one; see :meth:`process_batch`)."""
        received = getattr(tick, "received", None)
        return self.process_batch(((tick, time.perf_counter() if received is None else received),))

    def process_batch(self, batch: Sequence[_Queued]) -> list[BreachSignal]:
        """A micro-batch of (tick, arrival) through the engine once and the detector once.

        Synchronous; never raises for bad input: each tick is validated on its own and
        a bad one is logged and skipped.  The touched groups are repriced once, then the
        detector sees one evaluation at the batch's last market time.  Every accepted
        tick's latency (arrival -> the batch's events queued) goes to the metrics.
        """
        engine = self._engine
        assert engine is not None, "start_engine() first"
        accepted: list[_Queued] = []
        for item in batch:
            tick = item[0]
            try:
                engine.apply(tick)
            except (BadTickError, UnknownContractError) as exc:
                self.metrics.ticks_rejected += 1
                logger.warning("tick skipped symbol=%r reason=%s", getattr(tick, "symbol", None), exc)
                continue
            accepted.append(item)
        if not accepted:
            return []
        for err in engine.reprice_pending():
            self.metrics.nan_greeks += 1
            if err.root not in self._nan_roots:
                self._nan_roots.add(err.root)
                self._stale_event(err.root, accepted[-1][0].ts, "nan_greeks", str(err))
        self._nan_roots &= engine.bad_groups
        state = engine.evaluate()
        signals = self._detector.update(state.ts, state.checks)
        for sig in signals:
            self._on_signal(sig, state)
        self._maybe_snapshot(state)
        done = time.perf_counter()
        last_market: dict[str, str] = {}
        latencies: list[float] = []
        for tick, received in accepted:
            symbol = tick.symbol.upper()
            last_market[symbol] = tick.ts.isoformat()
            latencies.append(done - received)
            if symbol in self._stale:
                self._stale.discard(symbol)
                logger.info("ticks resumed symbol=%s", tick.symbol)
        self.metrics.record_batch(last_market, latencies)
        self.metrics.regime, self.metrics.vix = state.regime.name, state.regime.vix
        return signals

    def _on_signal(self, sig: BreachSignal, state: RiskState) -> None:
        self.signals.append(sig)
        account = self._account if isinstance(self._engine, Engine) else sig.check.scope
        if isinstance(self._engine, BookEngine):  # the account's own risk, not the book's
            state = self._engine.accounts.get(account, state)
        r = state.risk
        self._emit(StreamEvent(
            event_key=sig.event_key, kind=sig.kind, severity=sig.severity, ts=sig.ts, account_id=account,
            payload=sig.payload(nlv=r.nlv, spots=dict(state.spots), term_ratio=state.regime.term_ratio,
                                backwardation=state.regime.backwardation),
        ))
        if sig.kind == LIMIT_BREACH:
            self.metrics.breaches += 1
            logger.warning(
                "limit breach account=%s metric=%s value=%.4f limit=%.4f regime=%s vix=%.2f",
                account, sig.check.metric, sig.check.value, sig.check.limit, sig.check.regime, sig.check.vix,
            )
            self._emit(StreamEvent(
                event_key=f"{RISK_SNAPSHOT}:{account}:{sig.ts.isoformat()}", kind=RISK_SNAPSHOT,
                severity="info", ts=sig.ts, account_id=account, payload=risk_payload(state),
            ))
            own = self._engine
            if isinstance(own, BookEngine):  # hedges only for the desk's account, from its engine
                own = own.engines.get(self._account) if sig.check.scope == self._account else None
            moment = self._desk.try_capture(own, sig) if self._desk and own is not None else None
            if self._desk is not None and moment is not None:
                task = asyncio.get_running_loop().create_task(self._desk.handle(moment))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            self.metrics.clears += 1
            logger.info("limit cleared account=%s metric=%s value=%.4f", account, sig.check.metric, sig.check.value)

    def _maybe_snapshot(self, state: RiskState) -> None:
        if self._last_snapshot is not None and state.ts - self._last_snapshot < self._snapshot_every:
            return
        self._last_snapshot = state.ts
        self._emit(StreamEvent(
            event_key=f"{RISK_SNAPSHOT}:{self._account}:{state.ts.isoformat()}", kind=RISK_SNAPSHOT,
            severity="info", ts=state.ts, account_id=self._account, payload=risk_payload(state),
        ))

    def _stale_event(self, symbol: str, ts: datetime, reason: str, detail: str) -> None:
        self.metrics.stale_events += 1
        logger.warning("stale data symbol=%s reason=%s detail=%s", symbol, reason, detail)
        self._emit(StreamEvent(
            event_key=f"{STALE_DATA}:{self._account}:{symbol}:{reason}:{ts.isoformat()}", kind=STALE_DATA,
            severity="warning", ts=ts, account_id=self._account,
            payload={"symbol": symbol, "reason": reason, "detail": detail, "ts": ts.isoformat()},
        ))

    def check_stale(self, now_ts: datetime) -> list[str]:
        """Symbols without a tick for ``stale_after_seconds`` (wall clock); one event per stall."""
        limit = self._settings.feed.stale_after_seconds
        if self._engine is None or self.metrics.feed_done:
            return []
        now = self._wall()
        newly: list[str] = []
        for sym in sorted(self._engine.symbols):
            last = self.metrics.last_tick_wall.get(sym, self.metrics.started)
            if now - last > limit and sym not in self._stale:
                self._stale.add(sym)
                newly.append(sym)
                self._stale_event(sym, now_ts, "no_ticks", f"no tick for {now - last:.1f}s")
        return newly

    async def _watchdog(self, market_now: Callable[[], datetime]) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._settings.feed.stale_after_seconds / 2))
            self.check_stale(market_now())

    async def _read_feed(self, queue: asyncio.Queue[_Queued | None]) -> None:
        """Feed -> queue, stamping arrivals; pauses while ``queue_max_ticks`` are waiting."""
        limit = self._settings.feed.queue_max_ticks
        try:
            async for tick in self._feed.ticks():
                received = getattr(tick, "received", None)
                queue.put_nowait((tick, time.perf_counter() if received is None else received))
                while queue.qsize() >= limit:
                    await asyncio.sleep(0)  # back-pressure: let the tick loop catch up
        finally:
            queue.put_nowait(None)  # unbounded queue: the end marker always fits

    def _next_batch(
        self, first: _Queued, queue: asyncio.Queue[_Queued | None]
    ) -> tuple[list[_Queued], _Queued | None, bool]:
        """``first`` plus what is queued behind it that fits the batch bounds.

        Returns the batch, the item that did not fit (starts the next batch) and
        whether the feed's end marker was reached.
        """
        feed = self._settings.feed
        batch = [first]
        base = _market_seconds(first[0])
        while len(batch) < feed.batch_max_ticks and not queue.empty():
            item = queue.get_nowait()
            if item is None:
                return batch, None, True
            t = _market_seconds(item[0])
            if t is not None:
                if base is None:
                    base = t
                elif abs(t - base) > feed.batch_window_seconds:
                    return batch, item, False
            batch.append(item)
        return batch, None, False

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until the feed ends or ``stop`` is set; then flush (nothing is lost)."""
        stop = stop or asyncio.Event()
        self._writer.start()
        engine = self._engine or await self._start_or_stop(stop)
        if engine is None:  # stopped while the broker was unreachable (e.g. Gateway down)
            await self._writer.close()
            logger.info("service stopped before the book was loaded")
            return
        last_ts: list[datetime] = [engine.evaluate().ts]
        # Start-up objects (modules, config, the book) never die: move them out of the
        # collector's generations, so a full collection during the session scans only
        # what the session allocated (it otherwise walks every imported module's objects).
        gc.collect()
        gc.freeze()
        watchdog = asyncio.create_task(self._watchdog(lambda: last_ts[0]), name="stale-watchdog")
        queue: asyncio.Queue[_Queued | None] = asyncio.Queue()
        reader = asyncio.create_task(self._read_feed(queue), name="feed-reader")
        retries = (asyncio.create_task(self._desk.retry_loop(self._settings.buffer.retry_seconds),
                                       name="proposal-retries") if self._desk is not None else None)
        try:
            carry: _Queued | None = None
            ended = False
            while not ended and not stop.is_set():
                first = carry if carry is not None else await self._next_or_stop(queue, stop)
                if first is None:
                    break
                batch, carry, ended = self._next_batch(first, queue)
                if stop.is_set():
                    break
                self.process_batch(batch)
                for tick, _ in reversed(batch):
                    if isinstance(getattr(tick, "ts", None), datetime):
                        last_ts[0] = tick.ts
                        break
                await asyncio.sleep(0)  # the feed reader, the event writer and proposals run
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader  # re-raises a feed error
            self.metrics.feed_done = True
        finally:
            reader.cancel()
            watchdog.cancel()
            if retries is not None:
                retries.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._writer.close()
            logger.info(
                "service stopped ticks=%s rejected=%s breaches=%s proposals=%s buffered=%s",
                self.metrics.ticks, self.metrics.ticks_rejected, self.metrics.breaches,
                self._desk.proposed if self._desk else 0, self._writer.buffer_depth,
            )

    def _refresh_connected(self) -> None:
        """The broker's connectivity now (a feed with a ``connected`` property), not at start."""
        live = getattr(self._feed, "connected", None)
        if isinstance(live, bool) and self._engine is not None:
            self.metrics.broker_connected = live

    def health(self) -> dict[str, Any]:
        self._refresh_connected()
        ages = self.metrics.tick_ages()
        stats = self._writer.stats
        lag = min(ages.values()) if ages else None
        status = "ok" if stats.db_up and not self._stale and self.metrics.broker_connected else "degraded"
        return {
            "status": status,
            "feed_lag_seconds": lag,
            "last_tick_age_seconds": ages,
            "last_tick_market_time": dict(self.metrics.last_tick_market),
            "stale_symbols": sorted(self._stale),
            "db": "up" if stats.db_up else "down",
            "broker_connected": self.metrics.broker_connected,
            "buffer_depth": self._writer.buffer_depth,
            "queue_depth": self._writer.queue_depth,
            "regime": self.metrics.regime,
            "vix": self.metrics.vix,
            "feed_done": self.metrics.feed_done,
        }

    def metrics_text(self) -> str:
        self._refresh_connected()
        m, s = self.metrics, self._writer.stats
        q = m.latency_quantiles()
        lines = [
            "# TYPE portfolio_stream_ticks_total counter", f"portfolio_stream_ticks_total {m.ticks}",
            "# TYPE portfolio_stream_batches_total counter", f"portfolio_stream_batches_total {m.batches}",
            "# TYPE portfolio_stream_ticks_rejected_total counter",
            f"portfolio_stream_ticks_rejected_total {m.ticks_rejected}",
            "# TYPE portfolio_stream_nan_greeks_total counter", f"portfolio_stream_nan_greeks_total {m.nan_greeks}",
            "# TYPE portfolio_stream_breaches_total counter", f"portfolio_stream_breaches_total {m.breaches}",
            "# TYPE portfolio_stream_clears_total counter", f"portfolio_stream_clears_total {m.clears}",
            "# TYPE portfolio_stream_stale_events_total counter",
            f"portfolio_stream_stale_events_total {m.stale_events}",
            "# TYPE portfolio_stream_events_written_total counter",
            f"portfolio_stream_events_written_total {s.written}",
            "# TYPE portfolio_stream_events_buffered_total counter",
            f"portfolio_stream_events_buffered_total {s.buffered}",
            "# TYPE portfolio_stream_events_dropped_total counter",
            f"portfolio_stream_events_dropped_total {s.dropped}",
            "# TYPE portfolio_stream_buffer_depth gauge", f"portfolio_stream_buffer_depth {self._writer.buffer_depth}",
            "# TYPE portfolio_stream_db_up gauge", f"portfolio_stream_db_up {int(s.db_up)}",
            "# TYPE portfolio_stream_broker_connected gauge",
            f"portfolio_stream_broker_connected {int(m.broker_connected)}",
            "# TYPE portfolio_stream_tick_latency_seconds summary",
            f'portfolio_stream_tick_latency_seconds{{quantile="0.5"}} {q["p50"]:.9f}',
            f'portfolio_stream_tick_latency_seconds{{quantile="0.99"}} {q["p99"]:.9f}',
            "# TYPE portfolio_stream_last_tick_age_seconds gauge",
        ]
        lines += [
            f'portfolio_stream_last_tick_age_seconds{{symbol="{sym}"}} {age:.3f}'
            for sym, age in sorted(m.tick_ages().items())
        ]
        return "\n".join(lines) + "\n"

"""The streaming service: feed -> engine -> breach detector -> events (+ proposals).

The tick loop is synchronous work only (engine, detector, ``EventWriter.submit``); the
database is written by the writer task in a thread, proposals run as their own tasks,
the watchdog and the health endpoint are tasks too.  Bad input never stops the loop:
malformed ticks and unknown contracts are logged and skipped; NaN Greeks raise a
``stale_data`` event and the affected group keeps its last good numbers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.regime import RegimeService
from streaming_service.breach import LIMIT_BREACH, BreachDetector, BreachSignal
from streaming_service.buffer import EventWriter, StreamEvent
from streaming_service.config import StreamingConfig
from streaming_service.engine import (
    BadTickError,
    Engine,
    EngineInputs,
    NonFiniteGreeksError,
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
    """One account's live risk loop (see the module docstring)."""

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
        metrics: ServiceMetrics | None = None,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = feed
        self._writer = writer
        self._instruments = instruments
        self._regimes = regimes
        self._settings = settings
        self._account = account_id
        self._desk = desk
        self._pricing = _Pricing(rate, dict(dividend_yields or {}), dict(betas or {}))
        self.metrics = metrics or ServiceMetrics()
        self._wall = wall_clock
        self._detector = BreachDetector(settings.breach, regimes)
        self._engine: Engine | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stale: set[str] = set()
        self._nan_roots: set[str] = set()
        self._last_snapshot: datetime | None = None
        self._snapshot_every = timedelta(seconds=settings.feed.risk_snapshot_seconds)
        self.signals: list[BreachSignal] = []

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def writer(self) -> EventWriter:
        return self._writer

    async def start_engine(self) -> Engine:
        book = await self._feed.starting_book()
        self.metrics.broker_connected = True
        self._engine = Engine(
            EngineInputs(
                account=book.account, positions=book.positions, quotes=book.quotes,
                vix=book.vix, vix3m=book.vix3m, rate=self._pricing.rate,
                dividend_yields=self._pricing.dividend_yields, betas=self._pricing.betas,
            ),
            self._instruments, self._regimes, scope=self._account,
        )
        logger.info("engine ready positions=%s roots=%s", self._engine.position_count, list(self._engine.roots))
        return self._engine

    def _emit(self, event: StreamEvent) -> None:
        self._writer.submit(event)

    def process_tick(self, tick: Tick) -> list[BreachSignal]:
        """One tick through engine and detector (synchronous; never raises for bad input)."""
        engine = self._engine
        assert engine is not None, "start_engine() first"
        t0 = time.perf_counter()
        try:
            state = engine.on_tick(tick)
        except (BadTickError, UnknownContractError) as exc:
            self.metrics.ticks_rejected += 1
            logger.warning("tick skipped symbol=%r reason=%s", getattr(tick, "symbol", None), exc)
            return []
        except NonFiniteGreeksError as exc:
            self.metrics.nan_greeks += 1
            if exc.root not in self._nan_roots:
                self._nan_roots.add(exc.root)
                self._stale_event(exc.root, tick.ts, "nan_greeks", str(exc))
            return []
        self._nan_roots &= set(engine.bad_groups)
        signals = self._detector.update(state.ts, state.checks)
        for sig in signals:
            self._on_signal(sig, state)
        self._maybe_snapshot(state)
        self.metrics.regime, self.metrics.vix = state.regime.name, state.regime.vix
        self.metrics.record_tick(tick.symbol.upper(), tick.ts.isoformat(), time.perf_counter() - t0)
        if tick.symbol.upper() in self._stale:
            self._stale.discard(tick.symbol.upper())
            logger.info("ticks resumed symbol=%s", tick.symbol)
        return signals

    def _on_signal(self, sig: BreachSignal, state: RiskState) -> None:
        self.signals.append(sig)
        r = state.risk
        self._emit(StreamEvent(
            event_key=sig.event_key, kind=sig.kind, severity=sig.severity, ts=sig.ts, account_id=self._account,
            payload=sig.payload(nlv=r.nlv, spots=dict(state.spots), term_ratio=state.regime.term_ratio,
                                backwardation=state.regime.backwardation),
        ))
        if sig.kind == LIMIT_BREACH:
            self.metrics.breaches += 1
            logger.warning(
                "limit breach metric=%s value=%.4f limit=%.4f regime=%s vix=%.2f",
                sig.check.metric, sig.check.value, sig.check.limit, sig.check.regime, sig.check.vix,
            )
            self._emit(StreamEvent(
                event_key=f"{RISK_SNAPSHOT}:{self._account}:{sig.ts.isoformat()}", kind=RISK_SNAPSHOT,
                severity="info", ts=sig.ts, account_id=self._account, payload=risk_payload(state),
            ))
            if self._desk is not None and self._engine is not None:
                task = asyncio.get_running_loop().create_task(self._desk.handle(self._desk.capture(self._engine, sig)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            self.metrics.clears += 1
            logger.info("limit cleared metric=%s value=%.4f", sig.check.metric, sig.check.value)

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

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until the feed ends or ``stop`` is set; then flush (nothing is lost)."""
        stop = stop or asyncio.Event()
        self._writer.start()
        engine = self._engine or await self.start_engine()
        last_ts: list[datetime] = [engine.evaluate().ts]
        watchdog = asyncio.create_task(self._watchdog(lambda: last_ts[0]), name="stale-watchdog")
        try:
            ticks = self._feed.ticks()
            async for tick in ticks:
                if stop.is_set():
                    break
                self.process_tick(tick)
                if isinstance(getattr(tick, "ts", None), datetime):
                    last_ts[0] = tick.ts
            self.metrics.feed_done = True
        finally:
            watchdog.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._writer.close()
            logger.info(
                "service stopped ticks=%s rejected=%s breaches=%s proposals=%s buffered=%s",
                self.metrics.ticks, self.metrics.ticks_rejected, self.metrics.breaches,
                self._desk.proposed if self._desk else 0, self._writer.buffer_depth,
            )

    def health(self) -> dict[str, Any]:
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
        m, s = self.metrics, self._writer.stats
        q = m.latency_quantiles()
        lines = [
            "# TYPE portfolio_stream_ticks_total counter", f"portfolio_stream_ticks_total {m.ticks}",
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

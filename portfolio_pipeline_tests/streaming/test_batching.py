"""Micro-batching: the engine's batch path, the service's coalescing and latency, bulk writes."""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from portfolio_pipeline.config.streaming import BreachSettings, FeedSettings, StreamingConfig
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.streaming.helpers import T0, engine, inputs
from portfolio_pipeline_tests.stubs import platform_config
from streaming_service import engine as engine_module
from streaming_service.buffer import DatabaseEventStore, DiskBuffer, EventWriter, StreamEvent
from streaming_service.engine import BadTickError, Tick
from streaming_service.feeds.base import StartingBook
from streaming_service.service import StreamingService

FIELDS = ("nlv", "beta_weighted_dollar_delta", "dollar_gamma_1pct", "vega_per_point", "theta_per_day")


def _tape(n: int, step: timedelta = timedelta(seconds=1)) -> list[Tick]:
    rng = np.random.default_rng(4)
    base = {"SPX": 2700.0, "NDX": 6800.0, "VIX": 25.0, "VIX3M": 22.0}
    syms = ["SPX", "VIX", "NDX", "VIX", "VIX3M"]
    return [Tick(syms[k % 5], T0 + step * k, base[syms[k % 5]] * float(np.exp(rng.normal(0, 0.02))))
            for k in range(n)]


def test_batch_matches_tick_by_tick_and_the_twin() -> None:
    """Batched ticks end where tick-by-tick processing ends (same prices, same clock)."""
    tape = _tape(40, step=timedelta(0))  # one market instant: no theta drift between the paths
    one, batched, twin = engine(), engine(), engine(incremental=False)
    for t in tape:
        a = one.on_tick(t)
    b = batched.on_ticks(tape)
    c = twin.on_ticks(tape)
    for name in FIELDS:
        assert math.isclose(getattr(a.risk, name), getattr(b.risk, name), rel_tol=1e-12, abs_tol=1e-9)
        assert math.isclose(getattr(c.risk, name), getattr(b.risk, name), rel_tol=1e-12, abs_tol=1e-9)
    assert b.regime.vix == tape[-2].price and b.regime.vix3m == tape[-1].price
    assert dict(b.spots) == dict(a.spots)


def test_a_batch_prices_each_model_once_however_many_vix_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    e = engine()
    calls: list[int] = []
    real = engine_module.pricing.greeks

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(np.size(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module.pricing, "greeks", counting)
    e.on_ticks(_tape(25))  # 10 VIX ticks, SPX and NDX ticks
    assert calls == [e.position_count]  # one call, every option row (all bsm here)
    calls.clear()
    e.on_ticks([Tick("SPX", T0, 2690.0), Tick("SPX", T0, 2691.0)])
    assert calls == [3]  # only the SPX rows
    calls.clear()
    e.on_ticks([Tick("VIX3M", T0, 23.0)])
    assert calls == []  # regime only


def test_a_bad_tick_keeps_the_ticks_before_it_pending() -> None:
    e, ref = engine(), engine()
    with pytest.raises(BadTickError):
        e.on_ticks([Tick("SPX", T0, 2650.0), Tick("NDX", T0, float("nan"))])
    assert e.pending == {"SPX"}
    state = e.on_ticks([])
    want = ref.on_tick(Tick("SPX", T0, 2650.0))
    assert state.risk == want.risk and not e.pending


class _Feed:
    name = "list"

    def __init__(self, ticks: list[Tick]) -> None:
        self._ticks = ticks

    async def starting_book(self) -> StartingBook:
        i = inputs()
        return StartingBook(i.account, i.positions, i.quotes, i.vix, i.vix3m)

    async def ticks(self) -> AsyncIterator[Tick]:
        for t in self._ticks:  # no await between ticks: they all queue up together
            yield t


class _Memory:
    def __init__(self) -> None:
        self.seen: list[StreamEvent] = []

    def write(self, batch: Sequence[StreamEvent]) -> list[int | None]:
        self.seen.extend(batch)
        return list(range(len(batch)))


def _run(ticks: list[Tick], feed: FeedSettings, breach: BreachSettings | None = None) -> StreamingService:
    cfg = platform_config()
    settings = StreamingConfig(feed=feed, breach=breach or BreachSettings())
    with tempfile.TemporaryDirectory() as tmp:
        svc = StreamingService(feed=_Feed(ticks), writer=EventWriter(_Memory(), DiskBuffer(Path(tmp), max_events=100)),
                               instruments=cfg.instruments, regimes=RegimeService(cfg.risk_matrix),
                               settings=settings, account_id="DEMO-001", rate=0.014)
        asyncio.run(svc.run())
    return svc


def test_service_coalesces_one_market_instant_per_evaluation() -> None:
    # 6 instants x 5 ticks, a minute apart: queued all at once, evaluated once per instant.
    tape = [Tick(sym, T0 + timedelta(minutes=m), px) for m in range(6)
            for sym, px in (("SPX", 2700.0 - m), ("NDX", 6800.0), ("VIX", 20.0 + m), ("VIX3M", 21.0), ("SPX", 2699.0))]
    svc = _run(tape, FeedSettings())
    assert svc.metrics.ticks == 30 and svc.metrics.batches == 6
    per_tick = _run(tape, FeedSettings(batch_max_ticks=1))
    assert per_tick.metrics.ticks == 30 and per_tick.metrics.batches == 30
    capped = _run(tape, FeedSettings(batch_max_ticks=2))
    assert capped.metrics.batches == 18  # 2 + 2 + 1 per instant
    wide = _run(tape, FeedSettings(batch_window_seconds=3600.0))
    assert wide.metrics.batches == 1
    for s in (svc, per_tick, capped, wide):
        engine_ = s.engine
        assert engine_ is not None and engine_.vix == 25.0 and engine_.spot("SPX") == 2699.0


def test_bad_ticks_inside_a_batch_are_skipped_and_the_rest_applied() -> None:
    tape = [Tick("SPX", T0, 2650.0), Tick("SPX", T0, float("nan")), Tick("ZZZ", T0, 1.0), Tick("NDX", T0, 6700.0)]
    svc = _run(tape, FeedSettings())
    assert svc.metrics.batches == 1 and svc.metrics.ticks == 2 and svc.metrics.ticks_rejected == 2
    assert svc.engine is not None and svc.engine.spot("NDX") == 6700.0 and svc.engine.spot("SPX") == 2650.0


def test_latency_runs_from_arrival_and_counts_the_wait(tmp_path: Path) -> None:
    cfg = platform_config()
    svc = StreamingService(feed=_Feed([]), writer=EventWriter(_Memory(), DiskBuffer(tmp_path, max_events=1)),
                           instruments=cfg.instruments, regimes=RegimeService(cfg.risk_matrix),
                           settings=StreamingConfig(), account_id="DEMO-001", rate=0.014)
    asyncio.run(svc.start_engine())
    now = time.perf_counter()
    svc.process_batch([(Tick("SPX", T0, 2650.0), now - 0.5), (Tick("NDX", T0, 6700.0), now - 0.001)])
    lat = list(svc.metrics.latencies)
    assert len(lat) == 2 and lat[0] >= 0.5 and 0.001 <= lat[1] < 0.5


def test_breach_fires_once_per_batch_evaluation() -> None:
    """Hysteresis/debounce count evaluations: a spike coalesced into one batch is one
    evaluation, the same as the tick-by-tick path at that instant."""
    crash = [Tick("VIX", T0 + timedelta(seconds=k), 40.0 + k) for k in range(3)]
    a = _run(crash, FeedSettings(batch_max_ticks=1), BreachSettings(debounce_ticks=1, cooldown_seconds=0))
    b = _run(crash, FeedSettings(batch_window_seconds=10.0), BreachSettings(debounce_ticks=1, cooldown_seconds=0))
    assert b.metrics.batches == 1
    kinds_a = sorted((s.kind, s.check.metric) for s in a.signals)
    kinds_b = sorted((s.kind, s.check.metric) for s in b.signals)
    assert kinds_a == kinds_b


def test_bulk_write_is_idempotent_and_ordered(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/events.db")
    db.migrate()
    try:
        store = DatabaseEventStore(db)

        def ev(key: str) -> StreamEvent:
            return StreamEvent(key, "k", "info", T0, {"key": key}, "DEMO-001")

        assert store.write([ev("a"), ev("b")]) == [1, 2]
        assert store.write([ev("c"), ev("a"), ev("c"), ev("d")]) == [3, None, None, 4]
        assert store.write([ev("d")]) == [None]
        assert store.write([]) == []
    finally:
        db.dispose()

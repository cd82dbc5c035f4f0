"""Database outage mid-stream (exactly once, in order), bad input, health endpoint."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from portfolio_pipeline.config.streaming import StreamingConfig
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.paths import buffer_dir
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import events
from portfolio_pipeline_tests.streaming.helpers import T0, inputs
from portfolio_pipeline_tests.stubs import platform_config
from streaming_service.buffer import DatabaseEventStore, DiskBuffer, EventWriter, StreamEvent
from streaming_service.engine import Tick
from streaming_service.feeds.base import StartingBook
from streaming_service.health import HealthServer
from streaming_service.service import StreamingService


class FlakyStore:
    """The real store, but every write fails with a connection error while ``down``."""

    def __init__(self, inner: DatabaseEventStore) -> None:
        self.inner = inner
        self.down = False
        self.failures = 0

    def write(self, batch: Sequence[StreamEvent]) -> list[int | None]:
        if self.down:
            self.failures += 1
            raise OperationalError("INSERT", {}, ConnectionRefusedError("database stopped"))
        return self.inner.write(batch)


def _event(i: int) -> StreamEvent:
    return StreamEvent(f"test:{i:05d}", "limit_breach", "warning", T0 + timedelta(seconds=i), {"i": i}, "DEMO-001")


def test_database_outage_every_event_exactly_once_in_order(db_url: str, portfolio_env: Path) -> None:
    db = Database(db_url)
    store = FlakyStore(DatabaseEventStore(db))
    buf = DiskBuffer(buffer_dir(), max_events=10_000)

    async def scenario() -> None:
        writer = EventWriter(store, buf, batch_size=20, flush_interval=0.005, retry_seconds=0.02)
        writer.start()
        for i in range(100):
            writer.submit(_event(i))
        await asyncio.sleep(0.1)
        store.down = True  # database stopped mid-stream
        for i in range(100, 300):
            writer.submit(_event(i))
            if i % 50 == 0:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert buf.depth > 0 and not writer.stats.db_up
        mode = stat.S_IMODE(buf.path.stat().st_mode)
        assert mode == 0o600 and stat.S_IMODE(buf.path.parent.stat().st_mode) == 0o700
        for i in range(30):  # replaying a prefix twice must not duplicate anything
            buf.append([_event(100 + i)])
        store.down = False  # ... and it returns
        for i in range(300, 350):
            writer.submit(_event(i))
        await writer.close()

    try:
        asyncio.run(scenario())
        with db.connect() as conn:
            keys = [r.event_key for r in conn.execute(select(events.c.event_key).order_by(events.c.id))]
        assert store.failures > 0
        assert len(keys) == 350 and len(set(keys)) == 350
        assert keys == sorted(keys)  # replayed in order, new events behind the buffered ones
        assert buf.depth == 0
    finally:
        db.dispose()


def test_unreachable_url_buffers_then_replays(tmp_path: Path, db_url: str) -> None:
    """A writer pointed at an unreachable server buffers; a good store later drains the file."""
    buf_dir = tmp_path / "buf"
    buf_dir.mkdir(mode=0o700)
    dead = Database("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")

    async def down() -> None:
        w = EventWriter(DatabaseEventStore(dead), DiskBuffer(buf_dir, max_events=100), batch_size=5, flush_interval=0.005)
        w.start()
        for i in range(12):
            w.submit(_event(i))
        await w.close()

    asyncio.run(down())
    dead.dispose()
    assert DiskBuffer(buf_dir, max_events=100).depth == 12
    db = Database(db_url)

    async def up() -> None:
        w = EventWriter(DatabaseEventStore(db), DiskBuffer(buf_dir, max_events=100), batch_size=5, flush_interval=0.005)
        w.start()
        await asyncio.sleep(0.05)
        await w.close()

    try:
        asyncio.run(up())
        with db.connect() as conn:
            assert conn.execute(select(events.c.event_key)).scalars().all() == [f"test:{i:05d}" for i in range(12)]
    finally:
        db.dispose()


class ListFeed:
    name = "list"

    def __init__(self, ticks: list[Tick]) -> None:
        self._ticks = ticks

    async def starting_book(self) -> StartingBook:
        i = inputs()
        return StartingBook(i.account, i.positions, i.quotes, i.vix, i.vix3m)

    async def ticks(self) -> AsyncIterator[Tick]:
        for t in self._ticks:
            yield t
            await asyncio.sleep(0)


def _service(feed: ListFeed, tmp_path: Path) -> tuple[StreamingService, list[StreamEvent]]:
    cfg = platform_config()
    seen: list[StreamEvent] = []

    class Memory:
        def write(self, batch: Sequence[StreamEvent]) -> list[int | None]:
            seen.extend(batch)
            return list(range(len(batch)))

    writer = EventWriter(Memory(), DiskBuffer(tmp_path, max_events=100))
    svc = StreamingService(feed=feed, writer=writer, instruments=cfg.instruments,
                           regimes=RegimeService(cfg.risk_matrix), settings=StreamingConfig(),
                           account_id="DEMO-001", rate=0.014)
    return svc, seen


def test_malformed_ticks_nan_greeks_unknown_contracts_are_skipped(tmp_path: Path) -> None:
    good = [Tick("SPX", T0 + timedelta(seconds=k), 2700.0 - k) for k in range(5)]
    bad = [Tick("SPX", T0, float("nan")), Tick("ZZZ", T0, 1.0), Tick("SPX", T0.replace(tzinfo=None), 1.0),
           Tick("VIX", T0, None)]  # type: ignore[arg-type]
    svc, _seen = _service(ListFeed([good[0], *bad, *good[1:]]), tmp_path)

    async def run() -> None:
        await svc.start_engine()
        engine = svc.engine
        assert engine is not None
        engine._groups["NDX"].vol0[:] = float("nan")  # NaN Greeks from a bad vol
        await svc.run()

    asyncio.run(run())
    assert svc.metrics.ticks_rejected == 4
    assert svc.metrics.ticks == 5  # the service kept running through all of it
    svc2, seen2 = _service(ListFeed([Tick("VIX", T0, 20.0)]), tmp_path / "x")
    (tmp_path / "x").mkdir()

    async def run_nan() -> None:
        await svc2.start_engine()
        assert svc2.engine is not None
        svc2.engine._groups["NDX"].vol0[:] = float("nan")
        await svc2.run()

    asyncio.run(run_nan())
    stale = [e for e in seen2 if e.kind == "stale_data"]
    assert stale and stale[0].payload["reason"] == "nan_greeks" and stale[0].payload["symbol"] == "NDX"


def test_health_and_metrics_on_a_free_loopback_port(tmp_path: Path) -> None:
    svc, _ = _service(ListFeed([Tick("SPX", T0, 2700.0)]), tmp_path)

    async def run() -> tuple[str, str]:
        await svc.start_engine()
        await svc.run()
        server = HealthServer(svc.health, svc.metrics_text, 0)
        await server.start()
        try:
            out = []
            for path in ("/health", "/metrics"):
                r, w = await asyncio.open_connection("127.0.0.1", server.port)
                w.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                await w.drain()
                out.append((await r.read()).decode())
                w.close()
            return out[0], out[1]
        finally:
            await server.close()

    health, metrics = asyncio.run(run())
    assert health.startswith("HTTP/1.0 200")
    doc = json.loads(health.split("\r\n\r\n", 1)[1])
    assert doc["db"] == "up" and doc["buffer_depth"] == 0 and "SPX" in doc["last_tick_age_seconds"]
    assert "portfolio_stream_ticks_total 1" in metrics and 'quantile="0.99"' in metrics

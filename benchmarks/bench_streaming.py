"""Streaming engine throughput and tick-to-breach-event latency.

500 option positions on 5 underlyings; ticks round-robin over the underlyings plus VIX
(1 in 10).

1. Flat out, one tick at a time (the original rows): every tick runs engine + breach
   detector + EventWriter.submit, with the writer batching real SQLite writes (a risk
   snapshot every 10 ticks so the DB path is busy); latency = that tick's processing.
   Printed next to a naive engine that reprices the whole book on every tick, as a ratio.
2. Paced (the goal): the real ``StreamingService`` fed at a fixed arrival rate
   (``--rate``, default 5,000 ticks/s; market timestamps follow the arrivals), with
   SQLite writes, a risk snapshot every 2 ms of market time and breach settings that
   fire and clear often.  Latency = each tick's scheduled arrival -> its batch's events
   queued, so time waiting in the queue counts (and so does up to ~1 ms of asyncio
   timer granularity in the pacing: pessimistic).  Run with ``batch_max_ticks=1``
   (evaluate every tick: the old service) and with the default micro-batching, plus
   the batched service at twice the rate for headroom.

    .venv/bin/python benchmarks/bench_streaming.py [--ticks 20000] [--rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from portfolio_pipeline.config import load_platform_config
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.storage import Database
from streaming_service.breach import BreachDetector
from streaming_service.buffer import DatabaseEventStore, DiskBuffer, EventWriter, StreamEvent
from streaming_service.config import BreachSettings, FeedSettings, StreamingConfig
from streaming_service.engine import Engine, EngineInputs, Tick
from streaming_service.feeds.base import StartingBook
from streaming_service.health import ServiceMetrics
from streaming_service.service import StreamingService

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2018, 2, 5, 14, 30, tzinfo=UTC)
SPOTS = {"SPX": 2760.0, "NDX": 6900.0, "RUT": 1590.0, "SPY": 276.0, "QQQ": 168.0}


def book(n: int = 500) -> EngineInputs:
    rng = np.random.default_rng(3)
    positions = []
    for k in range(n):
        root = list(SPOTS)[k % 5]
        s = SPOTS[root]
        inc = {"SPX": 5, "NDX": 25, "RUT": 5, "SPY": 1, "QQQ": 1}[root]
        strike = round(s * rng.uniform(0.85, 1.1) / inc) * inc
        c = Contract(root, "OPT", date(2018, 3, 16) + timedelta(days=7 * int(rng.integers(0, 8))), float(strike),
                     "P" if k % 2 else "C", root)
        positions.append(Position("demo", "B", c, float(rng.choice([-5, -2, 1, 3])), 100.0, 5.0, 5.0, T0,
                                  underlying_price=s))
    acct = AccountSnapshot("demo", "B", T0, 5_000_000.0, 5e6, 1e6, 1e6, 4e6, 4e6)
    return EngineInputs(acct, positions, [], vix=17.0, vix3m=18.0, rate=0.014)


def ticks(n: int, spacing: timedelta = timedelta(milliseconds=200)) -> list[Tick]:
    rng = np.random.default_rng(5)
    out = []
    for k in range(n):
        sym = "VIX" if k % 10 == 9 else list(SPOTS)[k % 5]
        base = 17.0 if sym == "VIX" else SPOTS[sym]
        out.append(Tick(sym, T0 + spacing * k, base * float(np.exp(rng.normal(0, 0.01)))))
    return out


class PacedFeed:
    """Yields the tape at ``rate`` ticks/s, each tick stamped with its scheduled arrival."""

    name = "paced"

    def __init__(self, tape: list[Tick], rate: float) -> None:
        self._tape = tape
        self._rate = rate

    async def starting_book(self) -> StartingBook:
        b = book()
        return StartingBook(b.account, b.positions, b.quotes, b.vix, b.vix3m)

    async def ticks(self) -> AsyncIterator[Tick]:
        t0 = time.perf_counter() + 0.01
        for k, tick in enumerate(self._tape):
            due = t0 + k / self._rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)  # ms timer granularity: the late part counts as latency
            yield Tick(tick.symbol, tick.ts, tick.price, received=due)


async def paced(tape: list[Tick], rate: float, batch_max: int, db: Database, buf: Path) -> dict[str, float]:
    cfg = load_platform_config(ROOT / "config")
    settings = StreamingConfig(
        breach=BreachSettings(debounce_ticks=1, hysteresis=0.0, cooldown_seconds=0),
        feed=FeedSettings(risk_snapshot_seconds=0.002, batch_max_ticks=batch_max),
    )
    store = DatabaseEventStore(db)
    store.write([StreamEvent("warmup", "warmup", "info", T0, {})])  # connect + compile once, off the clock
    writer = EventWriter(store, DiskBuffer(buf, max_events=10**6), batch_size=500)
    metrics = ServiceMetrics(latencies=deque(maxlen=len(tape)))
    svc = StreamingService(feed=PacedFeed(tape, rate), writer=writer, instruments=cfg.instruments,
                           regimes=RegimeService(cfg.risk_matrix), settings=settings, account_id="demo",
                           rate=0.014, metrics=metrics)
    await svc.start_engine()
    await svc.run()
    lat = np.fromiter(metrics.latencies, dtype=np.float64)
    return {
        "achieved": len(lat) / ((len(lat) - 1) / rate + lat[-1]), "p50": float(np.quantile(lat, 0.5)),
        "p99": float(np.quantile(lat, 0.99)), "max": float(lat.max()), "batches": metrics.batches,
        "ticks": metrics.ticks, "signals": len(svc.signals), "written": writer.stats.written,
        "submitted": writer.stats.submitted,
    }


async def run(incremental: bool, tape: list[Tick], db: Database, buf: Path) -> tuple[float, np.ndarray, int]:
    cfg = load_platform_config(ROOT / "config")
    regimes = RegimeService(cfg.risk_matrix)
    engine = Engine(book(), cfg.instruments, regimes, incremental=incremental)
    det = BreachDetector(BreachSettings(debounce_ticks=1, hysteresis=0.0, cooldown_seconds=0), regimes)
    writer = EventWriter(DatabaseEventStore(db), DiskBuffer(buf, max_events=10**6), batch_size=500)
    writer.start()
    lat = np.empty(len(tape))
    events = 0
    t_start = time.perf_counter()
    for k, tick in enumerate(tape):
        t0 = time.perf_counter()
        state = engine.on_tick(tick)
        for sig in det.update(state.ts, state.checks):
            writer.submit(StreamEvent(f"{sig.event_key}:{incremental}:{k}", sig.kind, sig.severity, sig.ts,
                                      sig.payload()))
            events += 1
        if k % 10 == 0:
            writer.submit(StreamEvent(f"snap:{incremental}:{k}", "risk_snapshot", "info", state.ts,
                                      {"nlv": state.risk.nlv}))
        lat[k] = time.perf_counter() - t0
        if k % 200 == 0:
            await asyncio.sleep(0)  # let the writer task run its batches
    elapsed = time.perf_counter() - t_start
    await writer.close()
    return len(tape) / elapsed, lat, events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=5_000.0, help="paced arrival rate, ticks/s")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the synthetic book has no quotes: vol fallbacks warn
    tape = ticks(args.ticks)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        db.migrate()
        rows = {}
        for name, inc, n in (("incremental", True, args.ticks), ("naive full revaluation", False, args.ticks // 4)):
            rate, lat, ev = asyncio.run(run(inc, tape[:n], db, Path(tmp)))
            rows[name] = rate
            print(f"{name:<24} {rate:>10,.0f} ticks/s   latency p50 {np.quantile(lat, .5) * 1e3:6.3f} ms"
                  f"   p99 {np.quantile(lat, .99) * 1e3:6.3f} ms   events {ev}")
        db.dispose()
    print(f"ratio incremental / naive: {rows['incremental'] / rows['naive full revaluation']:.1f}x "
          "(500 positions, 5 underlyings, DB writes batched in a thread)")
    print(f"paced StreamingService, {args.ticks:,} ticks, latency = scheduled arrival -> batch events queued:")
    for name, rate, batch_max in (("per-tick (batch_max=1)", args.rate, 1),
                                  ("micro-batched", args.rate, 256),
                                  ("micro-batched", 2 * args.rate, 256)):
        spacing = timedelta(seconds=1.0 / rate)  # market time follows the arrivals
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{tmp}/paced.db")
            db.migrate()
            r = asyncio.run(paced(ticks(args.ticks, spacing), rate, batch_max, db, Path(tmp)))
            db.dispose()
        ok = "OK " if r["p99"] < 0.005 and r["achieved"] >= 0.98 * rate else "MISS"
        print(f"  {ok} {name:<23} offered {rate:>7,.0f}/s achieved {r['achieved']:>7,.0f} ticks/s"
              f"   p50 {r['p50'] * 1e3:6.3f} ms   p99 {r['p99'] * 1e3:6.3f} ms   max {r['max'] * 1e3:7.3f} ms"
              f"   batches {r['batches']:,} (mean {r['ticks'] / max(r['batches'], 1):.1f} ticks)"
              f"   signals {r['signals']}   events new/submitted {r['written']:,}/{r['submitted']:,}")
    print("goal: p99 < 5 ms at 5,000 ticks/s sustained, SQLite writes included")


if __name__ == "__main__":
    main()

"""Streaming engine throughput and tick-to-breach-event latency.

500 option positions on 5 underlyings; ticks round-robin over the underlyings plus VIX
(1 in 10); every tick runs engine + breach detector + EventWriter.submit, with the
writer batching real SQLite writes (risk snapshots every tick so the DB path is busy).
Printed next to a naive engine that reprices the whole book on every tick, as a ratio.

    .venv/bin/python benchmarks/bench_streaming.py [--ticks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from portfolio_pipeline.config import load_platform_config
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.storage import Database
from streaming_service.breach import BreachDetector
from streaming_service.buffer import DatabaseEventStore, DiskBuffer, EventWriter, StreamEvent
from streaming_service.config import BreachSettings
from streaming_service.engine import Engine, EngineInputs, Tick

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


def ticks(n: int) -> list[Tick]:
    rng = np.random.default_rng(5)
    out = []
    for k in range(n):
        sym = "VIX" if k % 10 == 9 else list(SPOTS)[k % 5]
        base = 17.0 if sym == "VIX" else SPOTS[sym]
        out.append(Tick(sym, T0 + timedelta(milliseconds=200 * k), base * float(np.exp(rng.normal(0, 0.01)))))
    return out


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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()

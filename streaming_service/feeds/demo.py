"""Demo intraday feed: a seeded Brownian bridge between real daily closes.

For the replayed session ``d`` every followed symbol moves from its close of the
previous session to its close of ``d`` (``marketdata.history.MarketHistory``: SPX,
the NDX proxy, VIX and the model VIX3M; SPY/QQQ follow SPX/NDX returns from the demo
broker's last quotes) along a Brownian bridge in log space, so intraday paths are
random but every close is the real one.  The S&P and Nasdaq families share a driver
(correlation 0.9) and VIX moves against it (-0.8), which is what makes 2018-02-05 trip
the limits mid-session.

Time: ticks carry market timestamps from the XNYS open to the close of ``d``, every
``tick_seconds``; ``speed`` market seconds pass per wall second (``None`` = as fast as
possible).  The optional ``clock`` follows the replay, so a demo broker sharing it
answers "now" questions (what-if, chains) as of the replayed moment.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from datetime import date, timedelta
from typing import Final

import numpy as np
import pandas as pd

from portfolio_pipeline.brokers.base import BrokerAdapter
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata.history import MarketHistory
from streaming_service.engine import VOL_INDEX, VOL_INDEX_3M, Tick
from streaming_service.feeds.base import StartingBook, combined_snapshot

__all__ = ["DemoFeed", "bridge_paths"]

logger = logging.getLogger(__name__)

#: symbol -> (driver family, intraday log-vol of the bridge noise)
_FAMILY: Final = {"SPX": ("spx", 0.006), "SPY": ("spx", 0.006), "NDX": ("ndx", 0.008),
                  "QQQ": ("ndx", 0.008), VOL_INDEX: ("vix", 0.08), VOL_INDEX_3M: ("vix", 0.05)}
_HISTORY_COLUMN: Final = {"SPX": "spx_close", "NDX": "ndx_close", VOL_INDEX: "vix", VOL_INDEX_3M: "vix3m"}
_ETF_BASE: Final = {"SPY": "SPX", "QQQ": "NDX"}


def bridge_paths(
    start: dict[str, float], end: dict[str, float], steps: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Log-space Brownian bridges from ``start`` to ``end`` (``steps`` points after the start).

    The last point of every path equals ``end`` exactly.
    """
    t = np.arange(1, steps + 1) / steps
    dt = 1.0 / steps

    def brownian() -> np.ndarray:
        return np.cumsum(rng.normal(0.0, math.sqrt(dt), steps))

    w_spx = brownian()
    w_ndx = 0.9 * w_spx + math.sqrt(1 - 0.81) * brownian()
    w_vix = -0.8 * w_spx + 0.6 * brownian()
    drivers = {"spx": w_spx, "ndx": w_ndx, "vix": w_vix}
    out: dict[str, np.ndarray] = {}
    for sym, p0 in start.items():
        family, sigma = _FAMILY.get(sym, ("spx", 0.006))
        w = drivers[family]
        bridge = w - t * w[-1]
        x0, x1 = math.log(p0), math.log(end[sym])
        path = np.exp(x0 + (x1 - x0) * t + sigma * bridge)
        path[-1] = end[sym]
        out[sym] = path
    return out


class DemoFeed:
    """Replays one session of synthetic intraday ticks (see the module docstring).

    Parameters
    ----------
    broker:
        The demo broker (its positions at the previous close seed the engine).
    account_id:
        The account to follow.
    history:
        Daily history (closes).
    session:
        The session to replay (e.g. 2018-02-05).
    speed:
        Market seconds per wall second; None = no pacing.
    tick_seconds:
        Market seconds between ticks.
    seed:
        Seeds the bridge noise.
    clock:
        Set to each tick's time (share it with the demo broker).
    """

    name = "demo"

    def __init__(
        self,
        broker: BrokerAdapter,
        account_id: str | Sequence[str],
        history: MarketHistory,
        session: date,
        *,
        speed: float | None = 600.0,
        tick_seconds: float = 5.0,
        seed: int = 7,
        clock: SettableClock | None = None,
        calendar: ExchangeCalendar | None = None,
    ) -> None:
        self._broker = broker
        self._accounts = (account_id,) if isinstance(account_id, str) else tuple(account_id)
        self._history = history
        self._calendar = calendar or ExchangeCalendar()
        if not self._calendar.is_session(session):
            raise ValueError(f"demo feed: {session} is not an XNYS session")
        self._session = session
        self._prev = self._calendar.previous_session(session)
        self._speed = speed
        self._tick = tick_seconds
        self._seed = seed
        self._clock = clock
        self._open = self._calendar.session_open(session)
        self._close = self._calendar.session_close(session)
        self._start: dict[str, float] = {}
        self._end: dict[str, float] = {}

    @property
    def session(self) -> date:
        return self._session

    def _closes(self, day: date) -> pd.Series:
        frame = self._history.daily_frame()
        ts = pd.Timestamp(day)
        if ts not in frame.index:
            raise ValueError(f"demo feed: no history for session {day}")
        return frame.loc[ts]

    async def starting_book(self) -> StartingBook:
        if self._clock is not None:
            self._clock.set(self._open)
        snapshots = [await self._broker.account_snapshot(a) for a in self._accounts]
        account = combined_snapshot(snapshots)
        positions = [p for a in self._accounts for p in await self._broker.positions(a)]
        contracts = [p.contract for p in positions if p.contract.is_option]
        roots = sorted({p.contract.underlying.upper() for p in positions})
        stocks = [Contract(r, "STK") for r in roots if r in _ETF_BASE]
        quotes = await self._broker.quotes([*contracts, *stocks])
        prev, cur = self._closes(self._prev), self._closes(self._session)
        start: dict[str, float] = {}
        end: dict[str, float] = {}
        for sym in ("SPX", "NDX", VOL_INDEX, VOL_INDEX_3M):
            start[sym] = float(prev[_HISTORY_COLUMN[sym]])
            end[sym] = float(cur[_HISTORY_COLUMN[sym]])
        stock_marks = {q.contract.underlying.upper(): q.mark for q in quotes if q.contract.sec_type == "STK"}
        for etf, base in _ETF_BASE.items():
            if etf in roots:
                p0 = stock_marks.get(etf) or next(
                    (p.underlying_price for p in positions if p.contract.underlying.upper() == etf and p.underlying_price),
                    None,
                )
                if p0:
                    start[etf] = float(p0)
                    end[etf] = float(p0) * end[base] / start[base]
        followed = set(roots) | {VOL_INDEX, VOL_INDEX_3M}
        self._start = {k: v for k, v in start.items() if k in followed}
        self._end = {k: end[k] for k in self._start}
        logger.info(
            "demo feed ready session=%s positions=%d symbols=%s", self._session, len(positions), sorted(self._start)
        )
        return StartingBook(account=account, positions=positions, quotes=quotes,
                            vix=start[VOL_INDEX], vix3m=start[VOL_INDEX_3M], accounts=tuple(snapshots))

    def schedule(self) -> tuple[list[pd.Timestamp], dict[str, np.ndarray]]:
        """Tick times and price paths (call after :meth:`starting_book`)."""
        if not self._start:
            raise RuntimeError("demo feed: call starting_book() first")
        seconds = (self._close - self._open).total_seconds()
        steps = max(int(seconds // self._tick), 1)
        rng = np.random.default_rng([self._seed, self._session.toordinal()])
        paths = bridge_paths(self._start, self._end, steps, rng)
        times = [pd.Timestamp(self._open + timedelta(seconds=seconds * (k + 1) / steps)) for k in range(steps)]
        return times, paths

    async def ticks(self) -> AsyncIterator[Tick]:
        times, paths = self.schedule()
        symbols: Sequence[str] = sorted(paths)
        pause = None if not self._speed else self._tick / self._speed
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k, ts in enumerate(times):
            at = ts.to_pydatetime()
            if self._clock is not None:
                self._clock.set(at)
            for sym in symbols:
                yield Tick(sym, at, float(paths[sym][k]))
            if pause is None:
                if k % 50 == 0:
                    await asyncio.sleep(0)
            else:
                delay = t0 + (k + 1) * pause - loop.time()
                await asyncio.sleep(max(delay, 0.0))
        logger.info("demo feed finished session=%s ticks=%d", self._session, len(times) * len(symbols))

"""Request pacing for the IBKR adapter (clock and sleep injectable).

Reconnects retry under :data:`portfolio_pipeline.retry.IBKR_RECONNECT`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

MonotonicClock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: IBKR disconnects a client that sends more than 50 messages per second; stay below.
DEFAULT_MAX_PER_SECOND = 45


class RateLimiter:
    """Sliding-window limiter: at most ``max_events`` acquisitions in any ``window`` seconds.

    ``clock`` is a monotonic seconds clock and ``sleep`` an awaitable sleep; tests inject a
    fake pair so no real time passes.
    """

    def __init__(
        self,
        max_events: int = DEFAULT_MAX_PER_SECOND,
        window: float = 1.0,
        *,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"rate limiter: max_events must be >= 1, got {max_events}")
        if window <= 0:
            raise ValueError(f"rate limiter: window must be > 0, got {window}")
        self.max_events = max_events
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self, count: int = 1) -> None:
        """Wait until ``count`` more messages may be sent, then record them."""
        for _ in range(count):
            async with self._lock:
                await self._acquire_one()

    async def _acquire_one(self) -> None:
        while True:
            now = self._clock()
            horizon = now - self.window
            while self._sent and self._sent[0] <= horizon + 1e-9:
                self._sent.popleft()
            if len(self._sent) < self.max_events:
                self._sent.append(now)
                return
            await self._sleep(max(self._sent[0] + self.window - now, 1e-6))

"""Pacing limiter and reconnect backoff (fake clock: no real seconds pass)."""

from __future__ import annotations

import asyncio
from bisect import bisect_left

import pytest

from portfolio_pipeline.brokers.ibkr import RateLimiter
from portfolio_pipeline.brokers.ibkr.pacing import DEFAULT_MAX_PER_SECOND


class FakeTime:
    """Monotonic clock plus a sleep that advances it instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(0)


def _max_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(bisect_left(times, t + window - 1e-9) - i for i, t in enumerate(times))


@pytest.mark.parametrize("concurrent", [False, True])
def test_limiter_never_exceeds_50_messages_per_second(concurrent: bool) -> None:
    fake = FakeTime()
    limiter = RateLimiter(clock=fake.clock, sleep=fake.sleep)
    sent: list[float] = []

    async def send() -> None:
        await limiter.acquire()
        sent.append(fake.now)

    async def scenario() -> None:
        if concurrent:
            await asyncio.gather(*(send() for _ in range(500)))
        else:
            for _ in range(500):
                await send()

    asyncio.run(scenario())
    assert DEFAULT_MAX_PER_SECOND < 50
    assert _max_in_any_window(sent) <= DEFAULT_MAX_PER_SECOND
    # it paces rather than stalls: 500 messages need a little over 500/45 seconds
    assert 500 / DEFAULT_MAX_PER_SECOND - 1.5 <= fake.now - 1000.0 <= 500 / DEFAULT_MAX_PER_SECOND + 0.5


def test_limiter_does_not_wait_below_the_limit() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10, clock=fake.clock, sleep=fake.sleep)

    async def scenario() -> None:
        await limiter.acquire(10)
        assert fake.slept == 0.0
        await limiter.acquire()
        assert fake.slept == pytest.approx(1.0)

    asyncio.run(scenario())


def test_limiter_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_events"):
        RateLimiter(0)

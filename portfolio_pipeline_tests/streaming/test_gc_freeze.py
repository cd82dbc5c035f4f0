"""Start-up objects are frozen out of the garbage collector once the book is loaded."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from portfolio_pipeline.config.streaming import StreamingConfig
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline_tests.streaming.helpers import T0, inputs
from portfolio_pipeline_tests.stubs import platform_config
from streaming_service.buffer import DiskBuffer, EventWriter, StreamEvent
from streaming_service.engine import Tick
from streaming_service.feeds.base import StartingBook
from streaming_service.service import StreamingService


class _Feed:
    name = "list"

    def __init__(self, ticks: list[Tick]) -> None:
        self._ticks = ticks
        self.frozen_while_streaming: list[int] = []

    async def starting_book(self) -> StartingBook:
        i = inputs()
        return StartingBook(i.account, i.positions, i.quotes, i.vix, i.vix3m)

    async def ticks(self) -> AsyncIterator[Tick]:
        for t in self._ticks:
            self.frozen_while_streaming.append(gc.get_freeze_count())
            yield t
            await asyncio.sleep(0)


class _Memory:
    def write(self, batch: Sequence[StreamEvent]) -> list[int | None]:
        return list(range(len(batch)))


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # give the test process its collector back


def test_objects_of_start_up_are_frozen_before_the_first_tick(tmp_path: Path, unfrozen: None) -> None:
    cfg = platform_config()
    feed = _Feed([Tick("SPX", T0 + timedelta(seconds=k), 2700.0 - k) for k in range(3)])
    svc = StreamingService(feed=feed, writer=EventWriter(_Memory(), DiskBuffer(tmp_path, max_events=100)),
                           instruments=cfg.instruments, regimes=RegimeService(cfg.risk_matrix),
                           settings=StreamingConfig(), account_id="DEMO-001", rate=0.014)
    assert gc.get_freeze_count() == 0
    asyncio.run(svc.run())
    assert svc.metrics.ticks == 3
    assert len(feed.frozen_while_streaming) == 3 and min(feed.frozen_while_streaming) > 10_000

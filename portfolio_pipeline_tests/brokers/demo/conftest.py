"""Fixtures of the demo-broker tests: one loaded history and one default broker per run."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from portfolio_pipeline.brokers.demo import DemoBroker
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.marketdata import MarketHistory
from portfolio_pipeline_tests.stubs import instruments


def eod(day: date) -> datetime:
    """22:00 UTC: after the 16:00 New York close in both EST and EDT."""
    return datetime(day.year, day.month, day.day, 22, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def history() -> MarketHistory:
    return MarketHistory()


@pytest.fixture(scope="session")
def shared_broker(history: MarketHistory) -> tuple[DemoBroker, SettableClock]:
    """A default broker (seed 7, start 2017-07-03) for read-only tests; reset the clock."""
    clock = SettableClock(eod(date(2018, 12, 31)))
    return DemoBroker(instruments(), clock=clock, history=history), clock


@pytest.fixture
def broker(shared_broker: tuple[DemoBroker, SettableClock]) -> tuple[DemoBroker, SettableClock]:
    b, clock = shared_broker
    clock.set(eod(date(2018, 12, 31)))
    return b, clock

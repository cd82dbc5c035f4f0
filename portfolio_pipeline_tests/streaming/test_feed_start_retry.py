"""The broker feed's starting book retries transient broker failures under the retry
policy and gives up with an error naming the feed; anything else is not retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType

import pytest

from portfolio_pipeline.brokers.base import BrokerError
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline_tests.stubs import instruments
from streaming_service.feeds import BrokerFeed


class _Down:
    """A broker whose connect always fails with ``error``."""

    name = "ibkr"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.connects = 0

    async def __aenter__(self) -> object:
        self.connects += 1
        raise self.error

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> object:
        return None

    async def account_snapshot(self, account_id: str) -> AccountSnapshot:
        raise AssertionError("not connected")

    async def positions(self, account_id: str) -> list[Position]:
        raise AssertionError("not connected")

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        raise AssertionError("not connected")


def _feed(adapter: _Down) -> BrokerFeed:
    return BrokerFeed(adapter, ["U1"], instruments(), retry_seconds=0.001, max_retry_seconds=0.002,
                      start_attempts=3)


def test_transient_failures_retried_then_a_named_error() -> None:
    down = _Down(BrokerError("gateway 127.0.0.1:4002 refused the connection"))
    with pytest.raises(BrokerError, match=r"ibkr feed: starting book failed after 3 attempt\(s\): gateway"):
        asyncio.run(_feed(down).starting_book())
    assert down.connects == 3


def test_a_permanent_error_is_not_retried() -> None:
    down = _Down(ValueError("account U1 is not configured"))
    with pytest.raises(ValueError, match="not configured"):
        asyncio.run(_feed(down).starting_book())
    assert down.connects == 1

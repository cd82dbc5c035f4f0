"""Test stub kit: builds contracts, positions and the instrument table once for all tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg

from portfolio_pipeline.config import load_platform_config
from portfolio_pipeline.config.loader import PlatformConfig
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import Contract, Position

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
T0 = datetime(2018, 2, 2, 21, 0, tzinfo=UTC)


@cache
def platform_config() -> PlatformConfig:
    return load_platform_config(CONFIG_DIR)


def instruments() -> InstrumentTable:
    return platform_config().instruments


def option(
    underlying: str = "SPX",
    strike: float = 2700.0,
    right: str = "P",
    expiry: date = date(2018, 3, 16),
    trading_class: str | None = None,
    sec_type: str = "OPT",
) -> Contract:
    return Contract(
        underlying=underlying,
        sec_type=sec_type,  # type: ignore[arg-type]
        expiry=expiry,
        strike=strike,
        right=right,  # type: ignore[arg-type]
        trading_class=trading_class or underlying,
    )


def position(
    contract: Contract,
    quantity: float,
    *,
    mark: float = 10.0,
    avg_price: float = 10.0,
    broker: str = "demo",
    account_id: str = "DEMO-001",
    underlying_price: float | None = 2762.13,
    as_of: datetime = T0,
) -> Position:
    mult = instruments().multiplier(contract.underlying, contract.sec_type, contract.trading_class)
    return Position(
        broker=broker,
        account_id=account_id,
        contract=contract,
        quantity=quantity,
        multiplier=mult,
        avg_price=avg_price,
        mark=mark,
        as_of=as_of,
        underlying_price=underlying_price,
    )


class StubBroker:
    """A BrokerAdapter serving a fixed book (for Dagster-layer tests; SDK adapters are
    tested at their wire boundary instead)."""

    name = "stub"

    def __init__(self, positions: list[Position], accounts: list[Any], quotes: list[Any]) -> None:
        self._positions = positions
        self._accounts = accounts
        self._quotes = quotes
        self.connected = 0

    async def __aenter__(self) -> StubBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self.connected += 1

    async def close(self) -> None:
        self.connected -= 1

    async def account_ids(self) -> list[str]:
        return sorted({a.account_id for a in self._accounts})

    async def account_snapshot(self, account_id: str) -> Any:
        return next(a for a in self._accounts if a.account_id == account_id)

    async def positions(self, account_id: str) -> list[Position]:
        return [p for p in self._positions if p.account_id == account_id]

    async def quotes(self, contracts: Any) -> list[Any]:
        keys = {c.key for c in contracts}
        return [q for q in self._quotes if q.contract.key in keys]

    async def option_chain(self, underlying: str, trading_class: str | None = None) -> Any:
        raise NotImplementedError("StubBroker has no chains")

    async def executions(self, account_id: str, since: date) -> list[Any]:
        return []

    async def cash_flows(self, account_id: str, since: date) -> list[Any]:
        return []

    async def what_if(self, order: Any) -> Any:
        raise NotImplementedError("StubBroker does not trade")

    async def stage(self, order: Any) -> Any:
        raise NotImplementedError("StubBroker does not trade")

    async def transmit(self, order: Any) -> str:
        raise NotImplementedError("StubBroker does not trade")

    async def cancel(self, order: Any) -> None:
        raise NotImplementedError("StubBroker does not trade")


@contextmanager
def ephemeral_instance() -> Iterator[dg.DagsterInstance]:
    """An ephemeral Dagster instance, disposed afterwards.

    Not ``with dg.DagsterInstance.ephemeral() as ...``: in Dagster 1.13 the instance's
    ``__exit__`` disposes it but leaves its defs-state storage set in a ContextVar, and a
    later ``materialize`` in the same thread then fails with "Attempted to resolve
    undefined DagsterInstance weakref".
    """
    instance = dg.DagsterInstance.ephemeral()
    try:
        yield instance
    finally:
        instance.dispose()

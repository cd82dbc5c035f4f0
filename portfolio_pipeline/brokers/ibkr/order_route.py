"""Order operations on ONE designated IBKR order client id, shared by the service and the CLI.

At IBKR an order belongs to the API client id that placed it: only that id may modify,
transmit or cancel it (another id gets error 10147, or its "modification" becomes a
second order).  So every order operation of the platform (the streaming service staging
a hedge, `portfolio orders show/confirm/reject/reconcile`) runs on the account's
``order_client_id``, never on the streaming service's data client id and never on a
fallback id:

* one short connection per operation (connect, act, disconnect), so no process holds the
  order client id between operations;
* under an exclusive file lock per Gateway and client id (``fcntl.flock``), so two local
  processes take turns instead of colliding;
* a connection refused with error 326 (the id held by something else, e.g. TWS or a
  process on another machine) is a clear error naming the id, never a fallback.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

from ib_async import IB

from portfolio_pipeline.brokers.base import (
    BrokerError,
    BrokerOrderState,
    StagedOrder,
    TransmittedGroup,
)
from portfolio_pipeline.brokers.ibkr.adapter import IbkrBroker
from portfolio_pipeline.clock import Clock, system_clock
from portfolio_pipeline.domain.accounts import AccountConfig, IbkrConnection
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.order_groups import OrderGroup
from portfolio_pipeline.domain.orders import Order, WhatIfResult
from portfolio_pipeline.domain.positions import Contract, Position, Quote

__all__ = ["IbkrOrderRoute", "order_lock"]

logger = logging.getLogger(__name__)


@asynccontextmanager
async def order_lock(path: Path, *, timeout: float, poll: float = 0.05) -> AsyncIterator[None]:
    """Exclusive cross-process lock on ``path`` (created 0600); BrokerError after ``timeout`` s."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise BrokerError(
                        f"ibkr: order client lock {path} is held by another process for more than {timeout:g}s"
                    ) from None
                await asyncio.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class IbkrOrderRoute:
    """Order operations of an IBKR account on its designated order client id.

    Parameters
    ----------
    connection:
        The account's :class:`IbkrConnection` (``orders_client_id`` is used).
    lock_dir:
        Directory of the cross-process lock files (under ``PORTFOLIO_HOME``).
    ib_factory:
        Builds the ``ib_async.IB`` (tests inject the Gateway double).
    lock_timeout:
        Seconds to wait for another local process's order operation.
    """

    name = "ibkr"

    def __init__(
        self,
        connection: IbkrConnection,
        instruments: InstrumentTable,
        *,
        lock_dir: Path,
        accounts: Sequence[AccountConfig] = (),
        ib_factory: Callable[[], IB] | None = None,
        clock: Clock = system_clock,
        lock_timeout: float = 30.0,
        stage_settle_seconds: float = 0.25,
    ) -> None:
        self._conn = connection.model_copy(update={"client_id": connection.orders_client_id, "readonly": False})
        self._instruments = instruments
        self._accounts = list(accounts)
        self._ib_factory = ib_factory
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._settle = stage_settle_seconds
        self._lock_path = lock_dir / f"ibkr-{connection.host}-{connection.port}-client-{self.client_id}.lock"
        self._held: IbkrBroker | None = None

    @property
    def client_id(self) -> int:
        return self._conn.client_id

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold one session over several operations (``confirm``: connect before the token is used)."""
        if self._held is not None:
            yield
            return
        async with self._new_session() as broker:
            self._held = broker
            try:
                yield
            finally:
                self._held = None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[IbkrBroker]:
        """The held session, or a new one: lock, connect (no fallback), yield, disconnect."""
        if self._held is not None:
            yield self._held
            return
        async with self._new_session() as broker:
            yield broker

    @asynccontextmanager
    async def _new_session(self) -> AsyncIterator[IbkrBroker]:
        async with order_lock(self._lock_path, timeout=self._lock_timeout):
            broker = IbkrBroker(
                self._conn, self._instruments, accounts=self._accounts, ib_factory=self._ib_factory,
                clock=self._clock, fallback_client_ids=False, stage_settle_seconds=self._settle,
            )
            try:
                await broker.connect()
                yield broker
            finally:
                await broker.close()

    async def __aenter__(self) -> IbkrOrderRoute:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def connect(self) -> None:
        """Nothing to do: every operation connects (and disconnects) on its own."""

    async def close(self) -> None:
        """Nothing held between operations."""

    async def what_if(self, order: Order) -> WhatIfResult:
        async with self.session() as broker:
            return await broker.what_if(order)

    async def stage(self, order: Order) -> StagedOrder:
        async with self.session() as broker:
            return await broker.stage(order)

    async def transmit(self, order: Order) -> str:
        async with self.session() as broker:
            return await broker.transmit(order)

    async def cancel(self, order: Order) -> None:
        async with self.session() as broker:
            await broker.cancel(order)

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        async with self.session() as broker:
            return await broker.executions(account_id, since)

    async def order_state(self, order: Order) -> BrokerOrderState:
        async with self.session() as broker:
            return await broker.order_state(order)

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        async with self.session() as broker:
            return await broker.quotes(contracts)

    async def positions(self, account_id: str) -> list[Position]:
        async with self.session() as broker:
            return await broker.positions(account_id)

    async def what_if_group(self, group: OrderGroup) -> list[WhatIfResult]:
        async with self.session() as broker:
            return await broker.what_if_group(group)

    async def stage_group(self, group: OrderGroup) -> list[StagedOrder]:
        async with self.session() as broker:
            return await broker.stage_group(group)

    async def transmit_group(self, group: OrderGroup) -> TransmittedGroup:
        async with self.session() as broker:
            return await broker.transmit_group(group)

    async def cancel_group(self, group: OrderGroup) -> dict[str, BrokerError]:
        async with self.session() as broker:
            return await broker.cancel_group(group)

    async def resize(self, order: Order, quantity: int) -> None:
        async with self.session() as broker:
            await broker.resize(order, quantity)

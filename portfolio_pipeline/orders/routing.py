"""Which adapter carries an order's operations (the CLI and the streaming service share this).

IBKR orders go through :class:`~portfolio_pipeline.brokers.ibkr.order_route.IbkrOrderRoute`
(the account's designated order client id, one locked connection per operation, never a
fallback id); other brokers through their adapter, connected on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from ib_async import IB

from portfolio_pipeline.brokers.base import (
    BrokerAdapter,
    BrokerError,
    GroupBroker,
    OrderBroker,
    StagedOrder,
    TransmittedGroup,
)
from portfolio_pipeline.clock import Clock, SettableClock, system_clock
from portfolio_pipeline.config import PlatformConfig
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.order_groups import OrderGroup
from portfolio_pipeline.domain.orders import Order, WhatIfResult
from portfolio_pipeline.domain.positions import Contract, Position, Quote

__all__ = ["ConnectOnUse", "order_broker_for"]


class ConnectOnUse:
    """An adapter that connects before its first order operation (``connect`` is idempotent)."""

    def __init__(self, adapter: BrokerAdapter) -> None:
        self.adapter = adapter
        self.name = getattr(adapter, "name", "?")
        self._connected = False

    async def _ready(self) -> BrokerAdapter:
        if not self._connected:
            await self.adapter.connect()
            self._connected = True
        return self.adapter

    async def close(self) -> None:
        if self._connected:
            await self.adapter.close()
            self._connected = False

    async def what_if(self, order: Order) -> WhatIfResult:
        return await (await self._ready()).what_if(order)

    async def stage(self, order: Order) -> StagedOrder:
        return await (await self._ready()).stage(order)

    async def transmit(self, order: Order) -> str:
        return await (await self._ready()).transmit(order)

    async def cancel(self, order: Order) -> None:
        await (await self._ready()).cancel(order)

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        return await (await self._ready()).executions(account_id, since)

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        return await (await self._ready()).quotes(contracts)

    async def positions(self, account_id: str) -> list[Position]:
        return await (await self._ready()).positions(account_id)

    async def _groups(self) -> GroupBroker:
        adapter = await self._ready()
        if not isinstance(adapter, GroupBroker):
            raise BrokerError(f"{self.name}: this broker places no order groups")
        return adapter

    async def what_if_group(self, group: OrderGroup) -> list[WhatIfResult]:
        return await (await self._groups()).what_if_group(group)

    async def stage_group(self, group: OrderGroup) -> list[StagedOrder]:
        return await (await self._groups()).stage_group(group)

    async def transmit_group(self, group: OrderGroup) -> TransmittedGroup:
        return await (await self._groups()).transmit_group(group)

    async def cancel_group(self, group: OrderGroup) -> dict[str, BrokerError]:
        return await (await self._groups()).cancel_group(group)

    async def resize(self, order: Order, quantity: int) -> None:
        await (await self._groups()).resize(order, quantity)


def order_broker_for(
    config: PlatformConfig,
    *,
    lock_dir: Path,
    ib_factory: Callable[[], IB] | None = None,
    clock: Clock = system_clock,
) -> Callable[[Order], OrderBroker]:
    """Per (broker, account) order adapters built lazily from ``config/accounts.yaml``."""
    from portfolio_pipeline.brokers.factory import make_adapter
    from portfolio_pipeline.brokers.ibkr.order_route import IbkrOrderRoute
    from portfolio_pipeline.domain.accounts import IbkrConnection

    cache: dict[tuple[str, str], OrderBroker] = {}

    def broker_for(order: Order) -> OrderBroker:
        key = (order.broker, order.account_id)
        if key in cache:
            return cache[key]
        accounts = [a for a in config.accounts.book() if a.broker == order.broker and a.account_id == order.account_id]
        if not accounts:
            raise InvalidDataError(
                f"order {order.order_id}: no account {order.broker}:{order.account_id} in accounts.yaml"
            )
        route: OrderBroker
        if order.broker == "ibkr":
            route = IbkrOrderRoute(
                accounts[0].ibkr or IbkrConnection(), config.instruments, lock_dir=lock_dir,
                accounts=accounts, ib_factory=ib_factory, clock=clock,
            )
        else:
            # the demo broker lives in replayed time: it answers as of the order's moment
            adapter_clock: Clock = SettableClock(order.created_at) if order.broker == "demo" else clock
            route = ConnectOnUse(make_adapter(accounts[0].broker, accounts, config.instruments, adapter_clock))
        cache[key] = route
        return route

    return broker_for

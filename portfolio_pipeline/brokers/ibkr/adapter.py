"""Interactive Brokers adapter over ib_async (async API only): the facade.

:class:`IbkrBroker` implements the broker interface
(:class:`~portfolio_pipeline.brokers.base.BrokerAdapter`, and the order protocols) by
delegating to its collaborators, each of which owns one concept:

- :class:`~portfolio_pipeline.brokers.ibkr.session.IbkrSession`: the connection (client
  id and its fallback on error 326, reconnect with backoff and resubscription, the
  market-data gap, every request under the rate limiter and the timeout);
- :class:`~portfolio_pipeline.brokers.ibkr.contracts.IbkrContracts`: contract
  qualification (error 200 names the contract), futures-option underlyings;
- :class:`~portfolio_pipeline.brokers.ibkr.market_data.IbkrMarketData`: streaming quotes
  with model Greeks, option chains;
- :class:`~portfolio_pipeline.brokers.ibkr.accounts.IbkrAccounts`: account summary,
  positions, executions, cash flows (Flex Web Service; the live API has none);
- :class:`~portfolio_pipeline.brokers.ibkr.orders.IbkrOrders`: WhatIf, stage, transmit
  (only a confirmed, still-staged order of this client id), cancel, reconcile.

The safety and robustness contracts are listed in each collaborator's module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import date, datetime

from ib_async import IB

from portfolio_pipeline.brokers.base import (
    BrokerError,
    BrokerOrderState,
    ConnectionLifecycle,
    OptionChain,
    StagedOrder,
    TransmittedGroup,
)
from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainWindow
from portfolio_pipeline.brokers.ibkr.accounts import IbkrAccounts
from portfolio_pipeline.brokers.ibkr.contracts import IbkrContracts
from portfolio_pipeline.brokers.ibkr.flex_web import FlexWebConfig
from portfolio_pipeline.brokers.ibkr.market_data import IbkrMarketData
from portfolio_pipeline.brokers.ibkr.orders import IbkrOrders
from portfolio_pipeline.brokers.ibkr.pacing import RateLimiter, Sleep
from portfolio_pipeline.brokers.ibkr.parsing import BROKER
from portfolio_pipeline.brokers.ibkr.session import IbkrSession
from portfolio_pipeline.clock import Clock, system_clock
from portfolio_pipeline.domain.accounts import AccountConfig, IbkrConnection
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.order_groups import OrderGroup
from portfolio_pipeline.domain.orders import Order, WhatIfResult
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline.retry import IBKR_RECONNECT, BackoffPolicy

__all__ = ["IbkrBroker"]


def _default_ib() -> IB:
    return IB()


class IbkrBroker(ConnectionLifecycle):
    """:class:`~portfolio_pipeline.brokers.base.BrokerAdapter` for IB Gateway / TWS.

    ``connection`` is the account's ``IbkrConnection`` (or a whole ``AccountConfig`` of
    broker ``ibkr``); ``accounts`` give each account's base currency and model code
    (default USD, no model).  ``ib_factory`` builds the ``ib_async.IB`` (tests inject one
    with a fake wire client); ``clock`` returns aware UTC datetimes.

    The collaborators are public (``session``, ``contracts``, ``market_data``,
    ``accounts``, ``orders``) for the adapter's siblings (e.g. the history source, which
    qualifies contracts and sends requests over the same connection).
    """

    name = BROKER

    def __init__(
        self,
        connection: IbkrConnection | AccountConfig,
        instruments: InstrumentTable,
        *,
        accounts: Sequence[AccountConfig] = (),
        ib_factory: Callable[[], IB] | None = None,
        clock: Clock = system_clock,
        limiter: RateLimiter | None = None,
        backoff: BackoffPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        client_id_attempts: int = 10,
        pnl_wait_seconds: float = 1.0,
        stage_settle_seconds: float = 0.25,
        flex: FlexWebConfig | None = None,
        fallback_client_ids: bool = True,
    ) -> None:
        account_list = list(accounts)
        if isinstance(connection, AccountConfig):
            account_list.insert(0, connection)
            connection = connection.ibkr or IbkrConnection()
        self.session = IbkrSession(
            connection,
            ib_factory=ib_factory or _default_ib,
            clock=clock,
            limiter=limiter or RateLimiter(),
            backoff=backoff or IBKR_RECONNECT,
            sleep=sleep,
            client_id_attempts=client_id_attempts,
            fallback_client_ids=fallback_client_ids,
        )
        self.contracts = IbkrContracts(self.session, instruments)
        self.market_data = IbkrMarketData(self.session, self.contracts, instruments)
        self.accounts = IbkrAccounts(
            self.session,
            self.contracts,
            instruments,
            accounts={a.account_id: a for a in account_list if a.broker == BROKER},
            pnl_wait_seconds=pnl_wait_seconds,
            flex=flex,
        )
        self.orders = IbkrOrders(
            self.session, self.contracts, instruments, stage_settle_seconds=stage_settle_seconds
        )

    # ------------------------------------------------------------------ connection

    @property
    def client_id(self) -> int:
        """The client id of the current (or last) connection."""
        return self.session.client_id

    @property
    def is_connected(self) -> bool:
        return self.session.is_connected

    @property
    def last_disconnect(self) -> datetime | None:
        """When the last connection loss was noticed (aware UTC), None if never."""
        return self.session.last_disconnect

    @property
    def gap_seconds(self) -> float | None:
        """Length of the last market-data gap (disconnect -> resubscribed), None if none."""
        return self.session.gap_seconds

    @property
    def reconnect_count(self) -> int:
        return self.session.reconnect_count

    @property
    def upstream_lost(self) -> bool:
        """True between error 1100 (Gateway lost IB's servers) and 1101/1102 (restored)."""
        return self.session.upstream_lost

    async def connect(self) -> None:
        """Connect (trying the next client id on error 326) and set the market data type."""
        await self.session.connect()

    async def close(self) -> None:
        """Disconnect; cancels reconnection and forgets market-data subscriptions."""
        await self.session.close()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (e.g. after a gateway restart); BrokerError on timeout."""
        await self.session.wait_connected(timeout)

    # ------------------------------------------------------------------ accounts and activity

    async def account_ids(self) -> list[str]:
        return await self.accounts.account_ids()

    async def account_snapshot(self, account_id: str) -> AccountSnapshot:
        return await self.accounts.account_snapshot(account_id)

    async def positions(self, account_id: str) -> list[Position]:
        return await self.accounts.positions(account_id)

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        return await self.accounts.executions(account_id, since)

    async def cash_flows(self, account_id: str, since: date) -> list[CashFlow]:
        return await self.accounts.cash_flows(account_id, since)

    # ------------------------------------------------------------------ market data

    async def subscribe(self, contracts: Sequence[Contract]) -> list[Contract]:
        """Start streaming market data (kept across reconnects until ``unsubscribe``)."""
        return await self.market_data.subscribe(contracts)

    async def unsubscribe(self, contracts: Sequence[Contract]) -> None:
        await self.market_data.unsubscribe(contracts)

    @property
    def subscriptions(self) -> list[Contract]:
        return self.market_data.subscriptions

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        return await self.market_data.quotes(contracts)

    async def option_chain(self, underlying: str, trading_class: str | None = None) -> OptionChain:
        return await self.market_data.option_chain(underlying, trading_class)

    async def option_chain_snapshot(self, underlying: str, window: ChainWindow) -> ChainSnapshot:
        return await self.market_data.chain_snapshot(underlying, window)

    # ------------------------------------------------------------------ orders

    async def what_if(self, order: Order) -> WhatIfResult:
        return await self.orders.what_if(order)

    async def stage(self, order: Order) -> StagedOrder:
        return await self.orders.stage(order)

    async def transmit(self, order: Order) -> str:
        return await self.orders.transmit(order)

    async def cancel(self, order: Order) -> None:
        await self.orders.cancel(order)

    async def order_state(self, order: Order) -> BrokerOrderState:
        return await self.orders.order_state(order)

    async def what_if_group(self, group: OrderGroup) -> list[WhatIfResult]:
        return await self.orders.what_if_group(group)

    async def stage_group(self, group: OrderGroup) -> list[StagedOrder]:
        return await self.orders.stage_group(group)

    async def transmit_group(self, group: OrderGroup) -> TransmittedGroup:
        return await self.orders.transmit_group(group)

    async def cancel_group(self, group: OrderGroup) -> dict[str, BrokerError]:
        return await self.orders.cancel_group(group)

    async def resize(self, order: Order, quantity: int) -> None:
        await self.orders.resize(order, quantity)

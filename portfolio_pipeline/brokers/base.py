"""The broker contract: one Protocol that every broker (demo, ibkr, tastytrade) implements.

Normalisation from SDK payloads into domain objects happens once, in the adapter, with
the multiplier from the instrument table (the broker's own multiplier cross-checked by
``InstrumentTable.checked_multiplier``).  Adapters never transmit an order that has not
passed the two-step confirmation (``domain.orders.require_confirmed``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.order_groups import OrderGroup
from portfolio_pipeline.domain.orders import Order, WhatIfResult
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote


class BrokerError(RuntimeError):
    """A broker call failed (connection, timeout, rejected request); names the broker."""


class SentUnknownError(BrokerError):
    """An order was sent to the broker but not acknowledged: its outcome is unknown."""


class StaleOrderError(BrokerError):
    """A staged order no longer exists at the broker (restart, cancelled outside)."""


@dataclass(frozen=True, slots=True)
class BrokerOrderState:
    """What the broker says of one of our orders (for the reconciler).

    ``exists``: the order is open at the broker; ``status``: the broker's word (IBKR:
    PreSubmitted, Submitted, Cancelled, Filled ...); ``filled`` / ``total`` in order units;
    ``working``: the broker's record proves the order was transmitted (False when an open
    order could equally be one never transmitted, e.g. IBKR PreSubmitted).
    """

    exists: bool
    status: str
    filled: float
    total: float
    perm_id: int | None = None
    working: bool = True


class OrderBroker(Protocol):
    """The part of a broker that order commands use (every BrokerAdapter is one)."""

    async def what_if(self, order: Order) -> WhatIfResult: ...

    async def stage(self, order: Order) -> StagedOrder: ...

    async def transmit(self, order: Order) -> str: ...

    async def cancel(self, order: Order) -> None: ...

    async def executions(self, account_id: str, since: date) -> list[Execution]: ...


@runtime_checkable
class OrderStateSource(Protocol):
    """A broker that can say what became of one of our orders (IBKR)."""

    async def order_state(self, order: Order) -> BrokerOrderState: ...


@dataclass(frozen=True, slots=True)
class TransmittedGroup:
    """The broker's ids of a transmitted group: one per leg (in leg order), and the group's own."""

    broker_order_ids: tuple[str, ...]
    broker_group_id: str | None = None


@runtime_checkable
class GroupBroker(Protocol):
    """A broker that places order groups natively (bracket, OCO).

    ``transmit_group`` calls :func:`~portfolio_pipeline.domain.order_groups.require_transmittable`
    before anything is sent and sends the group as a whole (IBKR: the staged legs are
    transmitted by the last one; Tastytrade: one complex order).  ``cancel_group`` cancels
    every leg staged or live at the broker and returns the legs it could not cancel (a
    :class:`StaleOrderError` for a leg the broker no longer has open).  ``resize`` changes
    the quantity of a live leg (a bracket child after a partial fill of its entry).
    """

    async def what_if_group(self, group: OrderGroup) -> list[WhatIfResult]: ...

    async def stage_group(self, group: OrderGroup) -> list[StagedOrder]: ...

    async def transmit_group(self, group: OrderGroup) -> TransmittedGroup: ...

    async def cancel_group(self, group: OrderGroup) -> dict[str, BrokerError]: ...

    async def resize(self, order: Order, quantity: int) -> None: ...


class BrokerDataError(ValueError):
    """A broker payload could not be normalised; names the broker, field and item."""


@dataclass(frozen=True, slots=True)
class OptionChain:
    """Expiries and strikes listed for an underlying (one trading class)."""

    underlying: str
    trading_class: str
    multiplier: float
    expiries: tuple[date, ...]
    strikes: tuple[float, ...]
    exchange: str = ""


@dataclass(frozen=True, slots=True)
class StagedOrder:
    """What the broker (or the local stage) knows of an order not yet transmitted."""

    order_id: str
    broker_order_id: str | None
    whatif: WhatIfResult
    staged_at: datetime
    client_id: int | None = None
    """IBKR: the API client id that placed the order (only it may transmit or cancel it)."""
    perm_id: int | None = None


class ConnectionLifecycle(ABC):
    """``async with adapter:`` connects and always closes (shared by every adapter)."""

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@runtime_checkable
class BrokerAdapter(Protocol):
    """Required behaviour of every broker adapter (all I/O is async)."""

    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def account_ids(self) -> list[str]: ...

    async def account_snapshot(self, account_id: str) -> AccountSnapshot: ...

    async def positions(self, account_id: str) -> list[Position]: ...

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Quotes and model Greeks (per share); NaN-with-warning where the broker has none."""
        ...

    async def option_chain(self, underlying: str, trading_class: str | None = None) -> OptionChain: ...

    async def executions(self, account_id: str, since: date) -> list[Execution]: ...

    async def cash_flows(self, account_id: str, since: date) -> list[CashFlow]: ...

    async def what_if(self, order: Order) -> WhatIfResult:
        """Margin and commission impact plus every broker warning; never transmits."""
        ...

    async def stage(self, order: Order) -> StagedOrder:
        """Place without transmitting (IBKR transmit=False) or keep locally after a dry run."""
        ...

    async def transmit(self, order: Order) -> str:
        """Send a CONFIRMED order; returns the broker order id. Raises for any other status."""
        ...

    async def cancel(self, order: Order) -> None: ...

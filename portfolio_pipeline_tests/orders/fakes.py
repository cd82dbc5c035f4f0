"""A recording broker for order-command tests (transmit guarded like every adapter)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from portfolio_pipeline.brokers.base import BrokerError, StagedOrder, TransmittedGroup
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.order_groups import OrderGroup
from portfolio_pipeline.domain.orders import Order, OrderLeg, WhatIfResult, require_confirmed
from portfolio_pipeline_tests.stubs import option

T0 = datetime(2018, 2, 5, 18, 0, tzinfo=UTC)


class RecordingBroker:
    name = "demo"

    def __init__(self) -> None:
        self.transmitted: list[Order] = []
        self.staged: list[str] = []
        self.cancelled: list[str] = []
        self.partial = False

    async def what_if(self, order: Order) -> WhatIfResult:
        return WhatIfResult(1000.0, 800.0, 2.6, 500_000.0, warnings=("test warning: check the margin",))

    async def stage(self, order: Order) -> StagedOrder:
        self.staged.append(order.order_id)
        return StagedOrder(order.order_id, None, await self.what_if(order), T0)

    async def transmit(self, order: Order) -> str:
        require_confirmed(order)
        self.transmitted.append(order)
        return f"B-{len(self.transmitted)}"

    async def cancel(self, order: Order) -> None:
        self.cancelled.append(order.order_id)

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        """Every leg of every transmitted order filled in full (``partial``: the first order 1 lot)."""
        out: list[Execution] = []
        for i, o in enumerate(self.transmitted):
            lots = 1 if (self.partial and i == 0) else o.quantity
            for j, leg in enumerate(o.legs):
                qty = float(lots * leg.ratio) * (1 if leg.action == "BUY" else -1)
                out.append(Execution("demo", account_id, f"X-{i}-{j}", leg.contract, T0, qty, 1.0, 100.0,
                                     order_ref=f"B-{i + 1}"))
        return out


def make_order(order_id: str = "H-1") -> Order:
    return Order(
        order_id=order_id, broker="demo", account_id="DEMO-001",
        legs=(OrderLeg(option(strike=2600.0), "BUY"), OrderLeg(option(strike=2550.0), "SELL")),
        quantity=2, limit_price=12.5, created_at=T0, proposal_id="limit_breach:x",
    )


class RecordingGroupBroker(RecordingBroker):
    """A group-placing broker that records every leg it transmits and what it held then.

    ``transmit_group`` deliberately does NOT run the adapters' guard: it records each leg
    with its status and the violations of its bounds at that moment, so a test sees what
    the command layer alone lets through; ``live`` is what works at the broker; ``fills``
    scripts executions per order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[Order, list[str]]] = []
        self.live: dict[str, int] = {}  # broker order id -> working quantity
        self.fills: dict[str, float] = {}  # broker order id -> filled units
        self.resized: list[tuple[str, int]] = []
        self.clock_at = T0

    async def what_if_group(self, group: OrderGroup) -> list[WhatIfResult]:
        return [await self.what_if(leg.order) for leg in group.legs]

    async def stage_group(self, group: OrderGroup) -> list[StagedOrder]:
        return [await self.stage(leg.order) for leg in group.legs]

    async def transmit_group(self, group: OrderGroup) -> TransmittedGroup:
        ids = []
        for leg in group.legs:
            violations = ["no bounds"] if leg.bounds is None else \
                leg.bounds.violations(leg.order, quantity=leg.quantity, at=self.clock_at)
            self.sent.append((leg.order, violations))
            broker_id = f"G-{leg.order.order_id}"
            self.live[broker_id] = leg.quantity
            ids.append(broker_id)
        return TransmittedGroup(tuple(ids))

    async def cancel_group(self, group: OrderGroup) -> dict[str, BrokerError]:
        for leg in group.legs:
            if leg.order.broker_order_id is not None:
                self.live.pop(leg.order.broker_order_id, None)
            self.cancelled.append(leg.order.order_id)
        return {}

    async def resize(self, order: Order, quantity: int) -> None:
        assert order.broker_order_id in self.live, "resize of an order that is not live"
        self.live[order.broker_order_id] = quantity
        self.resized.append((order.order_id, quantity))

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        out: list[Execution] = []
        for broker_id, units in self.fills.items():
            order_id = broker_id.removeprefix("G-")
            leg = next(o for o, _ in self.sent if o.order_id == order_id).legs[0]
            qty = units * (1 if leg.action == "BUY" else -1)
            out.append(Execution("demo", account_id, f"X-{broker_id}", leg.contract, T0, qty, 1.0, 100.0,
                                 order_ref=broker_id))
        return out

"""A recording broker for order-command tests (transmit guarded like every adapter)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from portfolio_pipeline.brokers.base import StagedOrder
from portfolio_pipeline.domain.activity import Execution
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

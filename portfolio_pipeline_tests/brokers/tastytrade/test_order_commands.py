"""Order commands over the Tastytrade ASGI fake (issue 13: the concepts that apply).

Tastytrade has no untransmitted order at the broker: ``stage``/``show`` are dry runs
(``POST .../orders/dry-run``, no order id), ``confirm`` places exactly one order and
keeps the broker's id, ``reject`` of a staged order sends nothing.  Asserted from the
fake's own request record.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.brokers.tastytrade.fake_tasty import FakeTasty
from portfolio_pipeline_tests.brokers.tastytrade.test_adapter import (
    DRY_RUN,
    LIVE_ORDERS,
    adapter,
    hedge,
)


def test_dry_runs_then_exactly_one_placed_order_per_confirmation(db: Database) -> None:
    fake = FakeTasty()
    store = OrderStore(db)
    store.insert(hedge(), actor="streaming:proposer")
    store.insert(hedge(order_id="ord-2"), actor="streaming:proposer")

    async def scenario() -> tuple[str | None, str | None]:
        async with adapter(fake) as broker:
            cmds = OrderCommands(store, lambda o: broker)
            staged = await cmds.stage("ord-1", actor="rule", ttl=timedelta(hours=1))
            shown = await cmds.show("ord-1", actor="cli:alice")
            assert fake.seen("POST", LIVE_ORDERS) == []  # dry runs only so far
            done = await cmds.confirm("ord-1", shown.token, actor="cli:alice")
            await cmds.show("ord-2", actor="cli:alice")  # proposed: dry run, kept locally
            rejected = await cmds.reject("ord-2", actor="cli:bob")
            assert rejected.status == OrderStatus.REJECTED
            return staged.broker_order_id, done.broker_order_id

    staged_id, placed_id = asyncio.run(scenario())
    assert staged_id is None  # a dry run has no broker order id
    assert len(fake.seen("POST", LIVE_ORDERS)) == 1  # exactly one live order, for the one confirmation
    assert placed_id == "12345" and store.get("ord-1").broker_order_id == "12345"
    assert len(fake.seen("POST", DRY_RUN)) == 4  # stage + show of ord-1, stage + show of ord-2
    assert [r for r in fake.requests if r.method == "DELETE"] == []  # the rejected stage was local only
    assert store.get("ord-1").status in (OrderStatus.TRANSMITTED, OrderStatus.FILLED)

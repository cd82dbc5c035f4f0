"""Issue 13.3: a restarted service that re-detects a breach does not propose the hedge again."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from portfolio_pipeline.config.streaming import StreamingConfig
from portfolio_pipeline.domain.limits import LimitCheck
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.orders.fakes import T0, RecordingBroker, make_order
from portfolio_pipeline_tests.stubs import platform_config
from streaming_service.breach import BreachSignal
from streaming_service.staging import HedgeDesk, Moment, idempotency_key


class NoMarket(RecordingBroker):
    """Building a proposal would ask for the chain: that must not happen here."""

    async def option_chain(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a new hedge was built although one is in flight")


def _moment(minutes: int) -> Moment:
    check = LimitCheck("portfolio", "beta_weighted_delta", 0.4, 0.3, 1.33, "normal", 18.0, 19.0)
    signal = BreachSignal("limit_breach", T0 + timedelta(minutes=minutes), check, "warning")
    return Moment(signal=signal, risk=None, root="SPX", spot=2700.0, vol=0.2, rate=0.01,  # type: ignore[arg-type]
                  dividend_yield=0.02, beta=1.0)


def test_idempotency_key_drops_the_timestamp() -> None:
    a, b = _moment(0).signal.event_key, _moment(90).signal.event_key
    assert a != b and idempotency_key(a) == idempotency_key(b) == "limit_breach:portfolio:beta_weighted_delta:"


def test_breach_after_restart_does_not_propose_again(db: Database) -> None:
    store = OrderStore(db)
    broker = NoMarket()
    first = _moment(0)
    for status in (OrderStatus.PROPOSED, OrderStatus.STAGED):
        order_id = f"H-{status.value}"
        store.insert(replace(make_order(order_id), account_id="DEMO-001", proposal_id=first.signal.event_key),
                     actor="streaming:proposer")
        if status is OrderStatus.STAGED:
            before = store.get(order_id)
            store.save(before, before.transition(OrderStatus.STAGED, actor="rule", at=T0))
            rejected = store.get("H-proposed")
            store.save(rejected, rejected.transition(OrderStatus.REJECTED, actor="alice", at=T0))
    cfg = platform_config()
    settings = StreamingConfig()
    desk = HedgeDesk(broker=broker, account_id="DEMO-001", store=store,  # type: ignore[arg-type]
                     commands=OrderCommands(store, lambda o: broker), instruments=cfg.instruments,
                     hedge=settings.hedge, staging=settings.staging, submit=lambda e: None)
    again = asyncio.run(desk._handle(_moment(45)))  # the same limit re-detected after a restart
    assert again is not None and again.order_id == "H-staged"
    assert desk.proposed == 0 and broker.staged == []


def test_service_reconciles_at_start_until_stopped(db: Database) -> None:
    """The live service's reconciler: a transmitted order whose fills arrived becomes FILLED."""
    store = OrderStore(db)
    broker = RecordingBroker()
    cmds = OrderCommands(store, lambda o: broker, token_factory=lambda: "f" * 16)
    store.insert(make_order("H-R"), actor="t")
    cfg = platform_config()
    settings = StreamingConfig()
    desk = HedgeDesk(broker=broker, account_id="DEMO-001", store=store, commands=cmds,  # type: ignore[arg-type]
                     instruments=cfg.instruments, hedge=settings.hedge, staging=settings.staging,
                     submit=lambda e: None)

    async def scenario() -> None:
        await cmds.stage("H-R", actor="rule", ttl=timedelta(hours=1))
        shown = await cmds.show("H-R", actor="alice")
        broker.partial = True  # the first fill check sees 1 of 2 lots
        assert (await cmds.confirm("H-R", shown.token, actor="alice")).status == OrderStatus.PARTIALLY_FILLED
        broker.partial = False  # the rest fills later, outside the platform's view
        stop = asyncio.Event()
        task = asyncio.create_task(desk.reconcile_forever(stop, interval=0.01))
        while store.get("H-R").status != OrderStatus.FILLED:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5.0)

    asyncio.run(asyncio.wait_for(scenario(), 30.0))
    trail = [r["to_status"] for r in store.audit_trail("H-R")]
    assert trail[-2:] == ["partially_filled", "filled"]

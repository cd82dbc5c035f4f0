"""The live service's reconciler also sizes a bracket's children to its entry's fill."""

from __future__ import annotations

import asyncio

from portfolio_pipeline.config.streaming import StreamingConfig
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.groups import GroupCommands
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.orders.fakes import RecordingGroupBroker
from portfolio_pipeline_tests.orders.test_groups import bracket
from portfolio_pipeline_tests.stubs import platform_config
from streaming_service.staging import HedgeDesk


def test_service_reconciler_resizes_bracket_children(db: Database) -> None:
    store = OrderStore(db)
    broker = RecordingGroupBroker()
    tokens = iter(f"tok{i:013d}" for i in range(100))
    cmds = OrderCommands(store, lambda o: broker, token_factory=lambda: next(tokens))  # type: ignore[arg-type,return-value]
    groups = GroupCommands(cmds)
    groups.store.insert(bracket("S", 3), actor="t")
    settings = StreamingConfig()
    desk = HedgeDesk(
        broker=broker,
        account_id="DEMO-001",
        store=store,
        commands=cmds,  # type: ignore[arg-type]
        instruments=platform_config().instruments,
        hedge=settings.hedge,
        staging=settings.staging,
        submit=lambda e: None,
    )

    async def scenario() -> None:
        shown = await groups.show("S", actor="alice")
        await groups.confirm("S", shown.token, actor="alice")
        broker.fills["G-S-entry"] = 2.0  # 2 of 3 filled at the broker
        stop = asyncio.Event()
        task = asyncio.create_task(desk.reconcile_forever(stop, interval=0.01))
        while broker.live.get("G-S-stop_loss") != 2:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5.0)

    asyncio.run(asyncio.wait_for(scenario(), 30.0))
    assert [leg.quantity for leg in groups.store.get("S").legs] == [3, 2, 2]

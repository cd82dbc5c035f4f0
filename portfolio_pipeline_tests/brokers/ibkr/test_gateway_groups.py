"""Order groups on the IB API wire (the Gateway double on a real socket, real ib_async).

Every assertion about what went to the exchange reads the Gateway's own record
(``book``: each order as placed, with ``parentId``, ``ocaGroup``/``ocaType``, the transmit
flag and quantity; ``transmissions``: what was transmitted, in order).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from portfolio_pipeline.brokers.base import StaleOrderError
from portfolio_pipeline.brokers.ibkr.order_route import IbkrOrderRoute
from portfolio_pipeline.domain.accounts import IbkrConnection
from portfolio_pipeline.domain.order_groups import OrderGroup
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.groups import GroupCommands, build_group
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.brokers.ibkr.book import SPX_PUT, gateway, instruments, order
from portfolio_pipeline_tests.brokers.ibkr.gateway_server import GatewayServer

TTL = timedelta(hours=1)


def bracket(quantity: int = 3) -> OrderGroup:
    entry = order(OrderLeg(SPX_PUT, "BUY"), limit=12.0, quantity=quantity)
    tp = order(OrderLeg(SPX_PUT, "SELL"), limit=15.0, quantity=quantity)
    sl = replace(
        order(OrderLeg(SPX_PUT, "SELL"), limit=0.0, quantity=quantity),
        order_type="STP",
        aux_price=9.0,
    )
    return build_group(
        "bracket", [("entry", entry), ("take_profit", tp), ("stop_loss", sl)], group_id="BR-1"
    )


def oco(quantity: int = 1) -> OrderGroup:
    tp = order(
        OrderLeg(SPX_PUT, "BUY"), limit=8.0, quantity=quantity
    )  # close the short put cheaper ...
    sl = replace(
        order(OrderLeg(SPX_PUT, "BUY"), limit=0.0, quantity=quantity),
        order_type="TRAIL",
        trailing_percent=25.0,
    )  # ... or trail its rise by 25 %
    return build_group("oco", [("take_profit", tp), ("stop_loss", sl)], group_id="OCO-1")


def desk(db: Database, port: int, lock_dir: Path) -> GroupCommands:
    route = IbkrOrderRoute(
        IbkrConnection(host="127.0.0.1", port=port, client_id=17, timeout_seconds=5),
        instruments(),
        lock_dir=lock_dir,
        stage_settle_seconds=0.05,
    )
    tokens = iter(f"tok{i:013d}" for i in range(1000))
    cmds = OrderCommands(OrderStore(db), lambda o: route, token_factory=lambda: next(tokens))
    return GroupCommands(cmds, lambda o: route, token_factory=lambda: next(tokens))


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'orders.sqlite'}")
    db.migrate()
    return db


def test_bracket_staged_linked_untransmitted_then_transmitted_whole_by_its_last_leg(
    sqlite_db: Database, tmp_path: Path
) -> None:
    gw = gateway()
    with GatewayServer(gw) as server:
        groups = desk(sqlite_db, server.port, tmp_path)
        groups.store.insert(bracket(), actor="test")
        shown = asyncio.run(groups.show("BR-1", actor="cli:alice"))
        transmissions, book = server.state()
        assert transmissions == []  # staged: nothing at the exchange
        (entry_id, tp_id, sl_id) = (int(leg.order.broker_order_id or 0) for leg in shown.group.legs)
        assert [book[(18, i)].order.transmit for i in (entry_id, tp_id, sl_id)] == [
            False,
            False,
            False,
        ]
        assert (
            book[(18, tp_id)].order.parentId == entry_id
            and book[(18, sl_id)].order.parentId == entry_id
        )
        assert book[(18, entry_id)].order.parentId == 0
        assert (book[(18, sl_id)].order.orderType, book[(18, sl_id)].order.auxPrice) == ("STP", 9.0)
        assert (
            "leg 3/3: stop_loss" in shown.text and shown.text.count("WhatIf: initial margin") == 3
        )

        with pytest.raises(Exception, match="does not match"):
            asyncio.run(groups.confirm("BR-1", "x" * 16, actor="cli:alice"))
        assert server.state()[0] == []  # a wrong token sends nothing

        done = asyncio.run(groups.confirm("BR-1", shown.token, actor="cli:alice"))
        transmissions, book = server.state()
        placements = [o for _, _, o in gw.placed if o.transmit]

    assert done.status == OrderStatus.TRANSMITTED
    # one placement with transmit=True, the last leg; the Gateway sent the parent first, then the children
    assert [(o.orderId, o.parentId) for o in placements] == [(sl_id, entry_id)]
    assert [order_id for _, order_id, _ in transmissions] == [entry_id, tp_id, sl_id]
    assert all(book[(18, i)].transmitted for i in (entry_id, tp_id, sl_id))
    bounds = [leg.bounds for leg in done.legs]
    assert [b.max_quantity if b else None for b in bounds] == [3, 3, 3]
    assert [b.worst_price if b else None for b in bounds] == [12.0, 15.0, 9.0]


def test_bracket_partial_fill_sizes_children_and_cancel_group_cancels_every_live_leg(
    sqlite_db: Database, tmp_path: Path
) -> None:
    gw = gateway()
    with GatewayServer(gw) as server:
        groups = desk(sqlite_db, server.port, tmp_path)
        groups.store.insert(bracket(quantity=3), actor="test")
        shown = asyncio.run(groups.show("BR-1", actor="cli:alice"))
        asyncio.run(groups.confirm("BR-1", shown.token, actor="cli:alice"))
        entry_id, tp_id, sl_id = (int(leg.order.broker_order_id or 0) for leg in shown.group.legs)
        server.fill(18, entry_id, 1, 12.0, exec_id="E1")  # 1 of 3

        async def reconcile() -> None:
            await groups._commands.reconcile(actor="reconciler")
            await groups.reconcile(actor="reconciler")

        asyncio.run(reconcile())
        _, book = server.state()
        assert [book[(18, i)].order.totalQuantity for i in (entry_id, tp_id, sl_id)] == [
            3.0,
            1.0,
            1.0,
        ]
        group = groups.store.get("BR-1")
        assert group.legs[0].order.status == OrderStatus.PARTIALLY_FILLED
        assert [leg.quantity for leg in group.legs] == [3, 1, 1]
        assert group.status == OrderStatus.PARTIALLY_FILLED
        trail = groups.store.orders.audit_trail("BR-1-take_profit")
        assert (
            trail[-1]["detail"]["event"] == "resized_to_entry_fill"
            and trail[-1]["detail"]["to"] == 1
        )

        server.fill(18, entry_id, 1, 12.0, exec_id="E2")  # 2 of 3: the children follow
        asyncio.run(reconcile())
        _, book = server.state()
        assert [book[(18, i)].order.totalQuantity for i in (tp_id, sl_id)] == [2.0, 2.0]

        cancelled = asyncio.run(groups.cancel("BR-1", actor="cli:bob"))
        _, book = server.state()

    assert {book[(18, i)].status for i in (entry_id, tp_id, sl_id)} == {"Cancelled"}
    assert [leg.order.status for leg in cancelled.legs] == [OrderStatus.CANCELLED] * 3
    assert len(transmissions_of(gw)) == 3


def transmissions_of(gw: object) -> list[tuple[int, int, int]]:
    return list(gw.transmissions)  # type: ignore[attr-defined]


def test_oco_legs_share_an_oca_group_and_a_fill_of_one_cancels_the_other(
    sqlite_db: Database, tmp_path: Path
) -> None:
    gw = gateway()
    with GatewayServer(gw) as server:
        groups = desk(sqlite_db, server.port, tmp_path)
        groups.store.insert(oco(), actor="test")
        shown = asyncio.run(groups.show("OCO-1", actor="cli:alice"))
        asyncio.run(groups.confirm("OCO-1", shown.token, actor="cli:alice"))
        tp_id, sl_id = (int(leg.order.broker_order_id or 0) for leg in shown.group.legs)
        transmissions, book = server.state()
        assert [order_id for _, order_id, _ in transmissions] == [tp_id, sl_id]
        assert {
            (book[(18, i)].order.ocaGroup, book[(18, i)].order.ocaType) for i in (tp_id, sl_id)
        } == {("OCO-1", 1)}
        trail = book[(18, sl_id)].order
        assert (trail.orderType, trail.trailingPercent) == ("TRAIL", 25.0)
        server.fill(18, tp_id, 1, 8.0, exec_id="O1")
        asyncio.run(groups._commands.reconcile(actor="reconciler"))
        group = groups.store.get("OCO-1")

    assert [leg.order.status for leg in group.legs] == [OrderStatus.FILLED, OrderStatus.CANCELLED]
    assert group.status == OrderStatus.FILLED


def test_gateway_restart_before_confirm_transmits_nothing_and_the_group_is_restaged_whole(
    sqlite_db: Database, tmp_path: Path
) -> None:
    gw = gateway()
    with GatewayServer(gw) as server:
        groups = desk(sqlite_db, server.port, tmp_path)
        groups.store.insert(bracket(), actor="test")
        shown = asyncio.run(groups.show("BR-1", actor="cli:alice"))
        server.restart()  # untransmitted orders are lost
        with pytest.raises(StaleOrderError):
            asyncio.run(groups.confirm("BR-1", shown.token, actor="cli:alice"))
        assert server.state()[0] == []
        assert groups.store.get("BR-1").status == OrderStatus.STALE
        again = asyncio.run(groups.show("BR-1", actor="cli:alice"))
        done = asyncio.run(groups.confirm("BR-1", again.token, actor="cli:alice"))
        transmissions, _ = server.state()

    assert done.status == OrderStatus.TRANSMITTED
    assert sorted(order_id for _, order_id, _ in transmissions) == sorted(
        int(leg.order.broker_order_id or 0) for leg in done.legs
    )


def test_a_leg_is_never_shown_or_confirmed_on_its_own(sqlite_db: Database, tmp_path: Path) -> None:
    groups = desk(sqlite_db, 1, tmp_path)
    groups.store.insert(bracket(), actor="test")
    with pytest.raises(Exception, match="leg of order group BR-1"):
        asyncio.run(groups._commands.show("BR-1-entry", actor="cli:alice"))


_ = Order


def test_gateway_restart_in_the_middle_of_a_twap_stops_it_and_never_resends(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Slice 1 is transmitted and partly filled; the Gateway restarts after slice 2 was staged:
    slice 2 is never transmitted (STALE), the slicer stops, cancels what still works, reports."""
    from datetime import UTC, datetime

    from portfolio_pipeline.orders.slicer import Slicer

    gw = gateway()
    with GatewayServer(gw) as server:
        groups = desk(sqlite_db, server.port, tmp_path)
        tokens = iter(f"tsl{i:013d}" for i in range(1000))
        slicer = Slicer(groups._commands, token_factory=lambda: next(tokens))
        start = datetime.now(UTC)
        parent = replace(
            order(OrderLeg(SPX_PUT, "BUY"), limit=12.6, quantity=6),
            order_id="TWAP-1",
            created_at=start,
        )
        # a 30-second window (the quotes are the Gateway's live ones, stamped now)
        slicer.create(
            parent,
            start=start,
            end=start + timedelta(seconds=30),
            slices=3,
            style="TWAP",
            actor="alice",
        )
        shown = asyncio.run(slicer.show("TWAP-1", actor="cli:alice", now=start))
        asyncio.run(slicer.confirm("TWAP-1", shown.token, actor="cli:alice", now=start))
        first = asyncio.run(slicer.step("TWAP-1", now=start))
        assert first.sent == (2,)
        child1 = groups.store.orders.get("TWAP-1-1")
        assert child1.limit_price == 12.5  # the touch (ask), inside the parent's 12.6
        server.fill(18, int(child1.broker_order_id or 0), 1, 12.5, exec_id="T1")

        async def restart(_: Order) -> None:
            server.restart()  # the staged slice 2 is lost with the Gateway's untransmitted orders

        report = asyncio.run(
            slicer.step("TWAP-1", now=start + timedelta(seconds=10), on_staged=restart)
        )
        transmissions, book = server.state()

    assert report.status == "stopped" and "disconnect" in (report.reason or "")
    assert report.sent == (2,) and report.filled == 1.0 and report.average_price == 12.5
    assert [order_id for _, order_id, _ in transmissions] == [
        int(child1.broker_order_id or 0)
    ]  # slice 2 never sent
    assert groups.store.orders.get("TWAP-1-2").status == OrderStatus.STALE
    assert (
        book[(18, int(child1.broker_order_id or 0))].status == "Cancelled"
    )  # the rest of slice 1 withdrawn
    assert (
        groups.store.orders.get("TWAP-1").status == OrderStatus.CONFIRMED
    )  # the parent was never placed


def test_a_leg_changed_after_show_is_refused_and_the_staged_legs_are_withdrawn(
    sqlite_db: Database, tmp_path: Path
) -> None:
    from sqlalchemy import update

    from portfolio_pipeline.domain.errors import IllegalTransitionError
    from portfolio_pipeline.storage.tables import orders

    gw = gateway()
    with GatewayServer(gw) as server:
        groups = desk(sqlite_db, server.port, tmp_path)
        groups.store.insert(bracket(quantity=2), actor="test")
        shown = asyncio.run(groups.show("BR-1", actor="cli:alice"))
        stored = groups.store.orders.get("BR-1-take_profit")
        with sqlite_db.begin() as conn:  # another writer lowers the take-profit after 'show'
            row = (
                conn.execute(orders.select().where(orders.c.order_id == stored.order_id))
                .mappings()
                .one()
            )
            conn.execute(
                update(orders)
                .where(orders.c.order_id == stored.order_id)
                .values(legs={**row["legs"], "limit_price": 13.0})
            )
        with pytest.raises(IllegalTransitionError, match="below the confirmed worst price 15"):
            asyncio.run(groups.confirm("BR-1", shown.token, actor="cli:alice"))
        transmissions, book = server.state()

    assert transmissions == []
    assert {o.status for o in book.values()} == {"Cancelled"}  # no Transmit button left in TWS
    assert [leg.order.status for leg in groups.store.get("BR-1").legs] == [OrderStatus.FAILED] * 3

"""Order ownership against the Gateway double: one gateway, several API connections.

The streaming service (data connection on client id 17, order operations on the
designated order client id 18) and the CLI (order client id 18 again, its own connection
and its own :class:`IbkrOrderRoute`) act on one :class:`FakeGateway`; every assertion
about what was sent reads the gateway's own record (``book``, ``transmissions``,
``connect_attempts``, ``foreign_cancels``).  All of it runs the real ib_async IB/Wrapper
code in one event loop (the double replaces the socket client; no TCP server).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from portfolio_pipeline.brokers.base import BrokerError, SentUnknownError, StaleOrderError
from portfolio_pipeline.brokers.ibkr.order_route import IbkrOrderRoute
from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.commands import MAX_FAILED_CONFIRMATIONS
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.brokers.ibkr.book import (
    adapter,
    connection,
    gateway,
    instruments,
    order,
)
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import FakeGateway

TTL = timedelta(hours=1)


def route(gw: FakeGateway, lock_dir: Path) -> IbkrOrderRoute:
    return IbkrOrderRoute(
        connection(0.5), instruments(), lock_dir=lock_dir, ib_factory=gw.make_ib, stage_settle_seconds=0.02
    )


def desk(db: Database, gw: FakeGateway, lock_dir: Path) -> OrderCommands:
    """One process's order commands (its own route object, its own connections)."""
    r = route(gw, lock_dir)
    return OrderCommands(OrderStore(db), lambda o: r)


def test_service_stages_cli_confirms_exactly_one_transmission_of_the_staged_order(
    db: Database, tmp_path: Path
) -> None:
    gw = gateway()
    service, cli = desk(db, gw, tmp_path), desk(db, gw, tmp_path)
    service.store.insert(order(order_id="H-1", quantity=2), actor="streaming:proposer")

    async def scenario() -> tuple[str, str]:
        async with adapter(gw) as data:  # the service's market-data connection holds client id 17
            assert data.client_id == 17
            staged = await service.stage("H-1", actor="streaming:rule", ttl=TTL)
            shown = await cli.show("H-1", actor="cli:alice")
            done = await cli.confirm("H-1", shown.token, actor="cli:alice")
            assert data.is_connected  # the data connection was never disturbed
            assert staged.broker_order_id is not None and done.broker_order_id is not None
            return staged.broker_order_id, done.broker_order_id

    staged_id, sent_id = asyncio.run(scenario())
    assert staged_id == sent_id
    ((client_id, order_id, perm_id),) = gw.transmissions  # exactly one transmitted order
    assert (client_id, str(order_id)) == (18, staged_id)
    assert list(gw.book) == [(18, int(staged_id))]  # no stray order at the gateway
    assert gw.book[(18, int(staged_id))].perm_id == perm_id
    assert 19 not in gw.connect_attempts  # never a fallback client id for orders
    stored = cli.store.get("H-1")
    assert stored.status == OrderStatus.TRANSMITTED
    assert (stored.broker_client_id, stored.broker_order_id) == (18, staged_id)


def test_order_client_id_in_use_is_a_clear_error_and_the_order_keeps_its_token(
    db: Database, tmp_path: Path
) -> None:
    gw = gateway()
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-2"), actor="t")

    async def scenario() -> None:
        shown = await cli.show("H-2", actor="cli:alice")
        gw.client_ids_in_use.add(18)  # e.g. TWS or another machine holds the order id
        with pytest.raises(BrokerError, match=r"client id 18 is in use .*never fall back"):
            await cli.confirm("H-2", shown.token, actor="cli:alice")
        gw.client_ids_in_use.clear()
        await cli.confirm("H-2", shown.token, actor="cli:alice")  # the same token still works

    asyncio.run(scenario())
    assert len(gw.transmissions) == 1
    assert set(gw.connect_attempts) == {18}


def test_confirm_after_a_gateway_restart_refuses_and_marks_the_order_stale(db: Database, tmp_path: Path) -> None:
    gw = gateway()
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-3"), actor="t")

    async def scenario() -> None:
        shown = await cli.show("H-3", actor="cli:alice")  # PROPOSED: staged first, then shown
        gw.restart()  # untransmitted orders are lost
        with pytest.raises(StaleOrderError, match="no longer exists at the Gateway"):
            await cli.confirm("H-3", shown.token, actor="cli:alice")
        assert cli.store.get("H-3").status == OrderStatus.STALE
        assert gw.transmissions == []  # never re-placed from local terms
        again = await cli.show("H-3", actor="cli:alice")  # re-staged with a fresh WhatIf
        await cli.confirm("H-3", again.token, actor="cli:alice")

    asyncio.run(scenario())
    ((client_id, order_id, _),) = gw.transmissions
    assert client_id == 18 and str(order_id) == cli.store.get("H-3").broker_order_id
    assert len(gw.requests_named("whatIfOrder")) >= 3  # stage, show; re-stage, show


def test_reject_cancels_at_the_gateway(db: Database, tmp_path: Path) -> None:
    gw = gateway()
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-4"), actor="t")

    async def scenario() -> None:
        await cli.stage("H-4", actor="rule", ttl=TTL)
        gw.silent.add("cancelOrder")  # the gateway never confirms the cancel
        with pytest.raises(BrokerError, match="not confirmed"):
            await cli.reject("H-4", actor="cli:bob")
        assert cli.store.get("H-4").status == OrderStatus.STAGED  # still one Transmit click away
        gw.silent.clear()
        rejected = await cli.reject("H-4", actor="cli:bob")
        assert rejected.status == OrderStatus.REJECTED

    asyncio.run(scenario())
    assert [o.status for o in gw.book.values()] == ["Cancelled"]
    assert gw.transmissions == []


def test_gateway_double_answers_10147_to_a_cancel_from_another_client_id() -> None:
    gw = gateway()

    async def scenario() -> None:
        async with adapter(gw) as owner:
            staged = await owner.stage(order())
            assert staged.client_id == 17 and staged.broker_order_id is not None
            other = gw.make_ib()
            await other.connectAsync("127.0.0.1", 4002, clientId=21, timeout=1)
            errors: list[int] = []
            other.errorEvent += lambda req_id, code, msg, c: errors.append(code)
            other.client.cancelOrder(int(staged.broker_order_id), "")
            await asyncio.sleep(0.05)
            other.disconnect()
            assert errors == [10147]

    asyncio.run(scenario())
    assert [client for client, _ in gw.foreign_cancels] == [21]
    assert all(o.is_open for o in gw.book.values())  # the owner's order is untouched


def test_duplicate_client_id_gets_326_and_order_connections_never_fall_back() -> None:
    gw = gateway()

    async def scenario() -> None:
        async with adapter(gw) as first:
            assert first.client_id == 17
            with pytest.raises(BrokerError, match="client id 17 is in use"):
                async with adapter(gw, fallback_client_ids=False):
                    pass
            async with adapter(gw) as data_only:  # market data may still use the next id
                assert data_only.client_id == 18

    asyncio.run(scenario())


def test_reconcile_partial_fill_cancel_in_tws_and_stale_staged(db: Database, tmp_path: Path) -> None:
    """Issue 13.3: a 1-of-2-lot fill is PARTIALLY_FILLED; TWS cancels are picked up."""
    gw = gateway()
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-5", quantity=2), actor="t")
    cli.store.insert(order(order_id="H-6"), actor="t")

    async def scenario() -> None:
        shown = await cli.show("H-5", actor="cli:alice")
        sent = await cli.confirm("H-5", shown.token, actor="cli:alice")
        await cli.stage("H-6", actor="rule", ttl=TTL)
        staged6 = cli.store.get("H-6")
        assert sent.broker_order_id is not None and staged6.broker_order_id is not None
        gw.fill(18, int(sent.broker_order_id), 1, 12.0, exec_id="E1")
        changed = await cli.reconcile()
        assert [(o.order_id, o.status) for o in changed] == [("H-5", OrderStatus.PARTIALLY_FILLED)]
        gw.cancel_in_tws(18, int(sent.broker_order_id))
        gw.cancel_in_tws(18, int(staged6.broker_order_id))
        changed = await cli.reconcile()
        assert sorted((o.order_id, o.status) for o in changed) == [
            ("H-5", OrderStatus.CANCELLED), ("H-6", OrderStatus.STALE)]

    asyncio.run(scenario())
    assert "1 of 2 filled" in " ".join(r["detail"]["detail"] for r in cli.store.audit_trail("H-5"))


def test_wrong_tokens_are_audited_and_lock_the_order(db: Database, tmp_path: Path) -> None:
    gw = gateway()
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-7"), actor="t")

    async def scenario() -> None:
        shown = await cli.show("H-7", actor="cli:alice")
        assert len(shown.token) >= 16  # at least 64 bits
        for _ in range(MAX_FAILED_CONFIRMATIONS):
            with pytest.raises(IllegalTransitionError, match="does not match"):
                await cli.confirm("H-7", "0" * 16, actor="cli:mallory")
        with pytest.raises(IllegalTransitionError, match="locked after 3 wrong"):
            await cli.confirm("H-7", shown.token, actor="cli:alice")  # even the right token
        again = await cli.show("H-7", actor="cli:alice")  # a fresh token unlocks
        await cli.confirm("H-7", again.token, actor="cli:alice")

    asyncio.run(scenario())
    failed = [r for r in cli.store.audit_trail("H-7") if (r["detail"] or {}).get("event") == "confirm_failed"]
    assert len(failed) == MAX_FAILED_CONFIRMATIONS + 1
    assert {r["actor"] for r in failed} == {"cli:mallory", "cli:alice"}
    assert len(gw.transmissions) == 1


def test_order_of_another_client_id_is_refused_before_anything_is_sent(db: Database, tmp_path: Path) -> None:
    """An order staged on client id 17 (e.g. by an older version) is never touched from id 18."""
    gw = gateway()
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-8"), actor="t")

    async def scenario() -> None:
        async with adapter(gw) as old:
            staged = await old.stage(order(order_id="H-8"))
        before = cli.store.get("H-8")
        after = before.transition(
            OrderStatus.STAGED, actor="old", at=before.created_at, whatif=staged.whatif,
            broker_order_id=staged.broker_order_id, broker_client_id=staged.client_id,
        )
        cli.store.save(before, after)
        with pytest.raises(BrokerError, match="belongs to client id 17"):
            await cli.reject("H-8", actor="cli:bob")

    asyncio.run(scenario())
    assert gw.requests_named("cancelOrder") == []
    assert cli.store.get("H-8").status == OrderStatus.STAGED


def test_wrong_account_id_lists_the_accounts_the_gateway_manages() -> None:
    gw = gateway()

    async def scenario() -> None:
        async with adapter(gw) as broker:
            with pytest.raises(BrokerError, match=r"account 'U9' .* not managed .* it manages: U1, U2"):
                await broker.positions("U9")
            assert await broker.positions("U1")  # the managed one still works

    asyncio.run(scenario())


def test_sent_but_unacknowledged_is_sent_unknown_until_reconciled(db: Database, tmp_path: Path) -> None:
    gw = gateway()
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-9"), actor="t")

    async def scenario() -> None:
        shown = await cli.show("H-9", actor="cli:alice")
        gw.unacknowledged = True
        with pytest.raises(SentUnknownError, match="sent but not acknowledged"):
            await cli.confirm("H-9", shown.token, actor="cli:alice")
        assert cli.store.get("H-9").status == OrderStatus.SENT_UNKNOWN
        gw.unacknowledged = False
        changed = await cli.reconcile()
        assert [(o.order_id, o.status) for o in changed] == [("H-9", OrderStatus.TRANSMITTED)]

    asyncio.run(scenario())
    assert len(gw.transmissions) == 1


def test_transmit_held_presubmitted_outside_regular_hours_is_transmitted(db: Database, tmp_path: Path) -> None:
    """A transmit the Gateway answers with PreSubmitted (held until the session) is acknowledged.

    Regression: the acknowledgement used to require a status past PreSubmitted, so an
    order held outside regular hours was recorded SENT_UNKNOWN.
    """
    gw = gateway()
    gw.outside_rth = True
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-10"), actor="t")

    async def scenario() -> None:
        shown = await cli.show("H-10", actor="cli:alice")
        done = await cli.confirm("H-10", shown.token, actor="cli:alice")
        assert done.status == OrderStatus.TRANSMITTED
        assert await cli.reconcile() == []  # still held PreSubmitted: nothing to change

    asyncio.run(scenario())
    ((client_id, order_id, perm_id),) = gw.transmissions
    held = gw.book[(client_id, order_id)]
    assert held.transmitted and held.status == "PreSubmitted" and held.perm_id == perm_id
    assert cli.store.get("H-10").status == OrderStatus.TRANSMITTED


def test_transmit_that_never_reached_the_gateway_is_never_reconciled_to_transmitted(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the reconciler turned SENT_UNKNOWN into TRANSMITTED on any open order.

    The staged order the lost transmit was meant for is still open at the Gateway as
    PreSubmitted, untransmitted; its open-order record carries no transmit flag, so it is no
    evidence: the order stays SENT_UNKNOWN and the person is told what to check.
    """
    gw = gateway()
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-11"), actor="t")

    async def scenario() -> None:
        shown = await cli.show("H-11", actor="cli:alice")
        gw.lose_transmits = True
        with pytest.raises(SentUnknownError, match="sent but not acknowledged"):
            await cli.confirm("H-11", shown.token, actor="cli:alice")
        gw.lose_transmits = False
        assert await cli.reconcile() == []

    with caplog.at_level("WARNING"):
        asyncio.run(scenario())
    assert gw.transmissions == []  # the Gateway never transmitted anything
    assert [(o.transmitted, o.status) for o in gw.book.values()] == [(False, "PreSubmitted")]
    assert cli.store.get("H-11").status == OrderStatus.SENT_UNKNOWN
    assert "a Transmit button means it was never sent" in caplog.text


def test_held_and_unacknowledged_stays_unknown_until_the_order_works(db: Database, tmp_path: Path) -> None:
    """Transmitted, held PreSubmitted and unanswered: indistinguishable from never sent, so
    SENT_UNKNOWN; once the Gateway reports it Submitted (session open) it is TRANSMITTED."""
    gw = gateway()
    gw.outside_rth = gw.unacknowledged = True
    cli = desk(db, gw, tmp_path)
    cli.store.insert(order(order_id="H-12"), actor="t")

    async def scenario() -> None:
        shown = await cli.show("H-12", actor="cli:alice")
        with pytest.raises(SentUnknownError):
            await cli.confirm("H-12", shown.token, actor="cli:alice")
        gw.unacknowledged = False
        assert await cli.reconcile() == []
        assert cli.store.get("H-12").status == OrderStatus.SENT_UNKNOWN
        ((cid, oid, _),) = gw.transmissions
        gw.book[(cid, oid)].status = "Submitted"  # the session opens: the held order works
        changed = await cli.reconcile()
        assert [(o.order_id, o.status) for o in changed] == [("H-12", OrderStatus.TRANSMITTED)]

    asyncio.run(scenario())
    assert len(gw.transmissions) == 1

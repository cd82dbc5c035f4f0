"""Order store and the two-step confirmation (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.orders.fakes import RecordingBroker, make_order


def _commands(db: Database, broker: RecordingBroker) -> OrderCommands:
    tokens = iter(f"tok{i:013d}" for i in range(10_000))
    return OrderCommands(OrderStore(db), lambda o: broker, token_factory=lambda: next(tokens))  # type: ignore[arg-type,return-value]


def test_stage_show_confirm_fills_with_full_audit(db: Database) -> None:
    broker = RecordingBroker()
    cmds = _commands(db, broker)
    cmds.store.insert(make_order(), actor="test")
    asyncio.run(cmds.stage("H-1", actor="rule", ttl=timedelta(hours=1)))
    shown = asyncio.run(cmds.show("H-1", actor="alice"))
    assert "test warning: check the margin" in shown.text  # every broker warning is displayed
    with pytest.raises(IllegalTransitionError):
        asyncio.run(cmds.confirm("H-1", "wrong-token", actor="alice"))
    assert broker.transmitted == []
    done = asyncio.run(cmds.confirm("H-1", shown.token, actor="alice"))
    assert done.status == OrderStatus.FILLED
    assert [o.status for o in broker.transmitted] == [OrderStatus.CONFIRMED]
    trail = cmds.store.audit_trail("H-1")
    # the refused token left its own audit row (from_status None, event confirm_failed)
    assert [r["to_status"] for r in trail] == [
        "proposed", "staged", "shown", "shown", "confirmed", "transmitted", "filled"]
    assert trail[3]["from_status"] is None and trail[3]["detail"]["event"] == "confirm_failed"
    shown_row = trail[2]
    assert shown_row["actor"] == "alice" and "test warning" in shown_row["detail"]["shown"]


def test_reject_and_expire(db: Database) -> None:
    broker = RecordingBroker()
    cmds = _commands(db, broker)
    cmds.store.insert(make_order("A"), actor="t")
    cmds.store.insert(make_order("B"), actor="t")
    asyncio.run(cmds.stage("A", actor="t", ttl=timedelta(minutes=1)))
    assert asyncio.run(cmds.reject("B", actor="bob", reason="not now")).status == OrderStatus.REJECTED
    later = cmds.store.get("A").expires_at + timedelta(seconds=1)  # type: ignore[operator]
    expired = asyncio.run(cmds.expire_stale(now=later))
    assert [o.order_id for o in expired] == ["A"]
    assert broker.cancelled == ["A"]
    with pytest.raises(IllegalTransitionError):
        asyncio.run(cmds.show("A", actor="bob"))


_ACTIONS = st.lists(
    st.tuples(st.sampled_from(["stage", "show", "confirm_good", "confirm_bad", "reject", "expire", "propose"]),
              st.integers(0, 2)),
    max_size=14,
)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=_ACTIONS)
def test_no_sequence_transmits_without_two_step_confirmation(db_url: str, actions: list[tuple[str, int]]) -> None:
    """Property: whatever the sequence of proposals and commands, a transmit happens only
    for an order that was shown (token issued) and then confirmed with that token."""
    db = Database(db_url)
    try:
        from sqlalchemy import delete

        from portfolio_pipeline.storage.tables import order_audit, orders
        with db.begin() as conn:
            conn.execute(delete(order_audit))
            conn.execute(delete(orders))
        broker = RecordingBroker()
        cmds = _commands(db, broker)
        tokens: dict[str, str] = {}
        created = 0
        for action, k in actions:
            oid = f"P{k}"
            try:
                if action == "propose" and created <= k:
                    cmds.store.insert(make_order(oid), actor="proposer")
                    created = k + 1
                elif action == "stage":
                    asyncio.run(cmds.stage(oid, actor="rule", ttl=timedelta(hours=1)))
                elif action == "show":
                    tokens[oid] = asyncio.run(cmds.show(oid, actor="p")).token
                elif action == "confirm_good":
                    asyncio.run(cmds.confirm(oid, tokens.get(oid, "nothing-shown"), actor="p"))
                elif action == "confirm_bad":
                    asyncio.run(cmds.confirm(oid, "bogus-token", actor="p"))
                elif action == "reject":
                    asyncio.run(cmds.reject(oid, actor="p"))
                elif action == "expire":
                    asyncio.run(cmds.expire_stale())
            except (IllegalTransitionError, LookupError, Exception):
                pass
        for sent in broker.transmitted:
            trail = [r["to_status"] for r in cmds.store.audit_trail(sent.order_id)]
            i = trail.index("confirmed")
            assert trail[i - 1] == "shown" and "staged" in trail[:i]
            assert sent.status == OrderStatus.CONFIRMED
        assert len({o.order_id for o in broker.transmitted}) == len(broker.transmitted)
    finally:
        db.dispose()

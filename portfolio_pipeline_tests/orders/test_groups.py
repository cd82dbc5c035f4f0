"""Order groups: shape, derived status and the safety properties of the group commands.

Properties (hypothesis, against a recording group broker that runs the adapters' guard):

* no leg is ever transmitted without a confirmation whose bounds it satisfies, whatever
  the sequence of show / confirm (right or wrong token) / another writer changing a leg's
  terms after 'show' / time passing beyond the expiry / cancel;
* cancelling a group leaves no leg live at the broker;
* a partial fill of a bracket's entry sizes the working children to the filled quantity
  (never above the confirmed one).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from portfolio_pipeline.domain.errors import IllegalTransitionError, InvalidDataError
from portfolio_pipeline.domain.order_groups import (
    OrderGroup,
    bracket_child_quantity,
    group_status,
)
from portfolio_pipeline.domain.orders import ConfirmationBounds, Order, OrderLeg, OrderStatus
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.groups import GroupCommands, build_group
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import order_audit, order_group_legs, order_groups, orders
from portfolio_pipeline_tests.orders.fakes import T0, RecordingGroupBroker
from portfolio_pipeline_tests.stubs import option

S = OrderStatus
PUT = option(strike=2600.0)


def _order(action: str, limit: float, quantity: int, **changes: object) -> Order:
    base = Order(
        order_id="x",
        broker="demo",
        account_id="DEMO-001",
        legs=(OrderLeg(PUT, action),),  # type: ignore[arg-type]
        quantity=quantity,
        limit_price=limit,
        created_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def bracket(group_id: str, quantity: int = 3) -> OrderGroup:
    return build_group(
        "bracket",
        [
            ("entry", _order("BUY", 10.0, quantity)),
            ("take_profit", _order("SELL", 14.0, quantity)),
            ("stop_loss", _order("SELL", 0.0, quantity, order_type="STP", aux_price=7.0)),
        ],
        group_id=group_id,
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.now


def _desk(db: Database, broker: RecordingGroupBroker, clock: Clock) -> GroupCommands:
    tokens = (f"tok{i:013d}" for i in itertools.count())
    cmds = OrderCommands(
        OrderStore(db),
        lambda o: broker,
        clock=clock,  # type: ignore[arg-type,return-value]
        token_factory=lambda: next(tokens),
    )
    return GroupCommands(cmds, lambda o: broker, clock=clock, token_factory=lambda: next(tokens))  # type: ignore[arg-type,return-value]


def _wipe(db: Database) -> None:
    with db.begin() as conn:
        for table in (order_group_legs, order_groups, order_audit, orders):
            conn.execute(delete(table))


# ----------------------------------------------------------------------------- domain


def test_shape_is_checked_naming_the_leg() -> None:
    with pytest.raises(InvalidDataError, match="take_profit and stop_loss must close the entry"):
        build_group(
            "bracket",
            [
                ("entry", _order("BUY", 10.0, 1)),
                ("take_profit", _order("BUY", 14.0, 1)),
                ("stop_loss", _order("BUY", 0.0, 1, order_type="STP", aux_price=7.0)),
            ],
        )
    with pytest.raises(InvalidDataError, match="take-profit must be above and the stop below"):
        build_group(
            "bracket",
            [
                ("entry", _order("BUY", 10.0, 1)),
                ("take_profit", _order("SELL", 9.0, 1)),
                ("stop_loss", _order("SELL", 0.0, 1, order_type="STP", aux_price=7.0)),
            ],
        )
    with pytest.raises(InvalidDataError, match=r"stop_loss .* must be a STP or TRAIL order"):
        build_group(
            "oco", [("take_profit", _order("SELL", 14.0, 1)), ("stop_loss", _order("SELL", 7.0, 1))]
        )
    with pytest.raises(InvalidDataError, match="TRAIL order needs exactly one"):
        _order("SELL", 0.0, 1, order_type="TRAIL", trailing_percent=5.0, aux_price=1.0)


def test_group_status_is_derived_from_the_legs() -> None:
    assert group_status([S.SHOWN, S.SHOWN, S.SHOWN]) == S.SHOWN
    assert group_status([S.SHOWN, S.STAGED, S.SHOWN]) == S.STAGED  # as far as the slowest leg
    assert group_status([S.STALE, S.SHOWN, S.SHOWN]) == S.STALE
    assert group_status([S.FILLED, S.TRANSMITTED, S.TRANSMITTED]) == S.PARTIALLY_FILLED
    assert group_status([S.TRANSMITTED, S.SENT_UNKNOWN]) == S.SENT_UNKNOWN
    assert group_status([S.FILLED, S.CANCELLED]) == S.FILLED
    assert group_status([S.CANCELLED, S.REJECTED, S.REJECTED]) == S.CANCELLED


def test_bounds_by_side_and_the_child_quantity_rule() -> None:
    buy, sell = _order("BUY", 10.0, 2), _order("SELL", 14.0, 2)
    b = ConfirmationBounds.of(buy)
    assert b.violations(buy, at=T0) == []
    assert b.violations(replace(buy, limit_price=10.5), at=T0) == [
        "price 10.5 above the confirmed worst price 10 (BUY)"
    ]
    assert ConfirmationBounds.of(sell).violations(replace(sell, limit_price=13.0), at=T0)
    assert ConfirmationBounds.of(sell).violations(replace(sell, limit_price=15.0), at=T0) == []
    assert b.violations(buy, quantity=3, at=T0) == ["quantity 3 > confirmed max 2"]
    expired = ConfirmationBounds.of(buy, valid_until=T0)
    assert expired.violations(buy, at=T0)  # the end is exclusive
    # children: whole units filled, the confirmed quantity before any fill, never above it
    assert [bracket_child_quantity(f, 5) for f in (0.0, 0.5, 1.0, 2.999, 3.0, 5.0, 7.0)] == [
        5,
        5,
        1,
        2,
        3,
        5,
        5,
    ]


# ----------------------------------------------------------------------------- properties

_STEPS = st.lists(
    st.sampled_from(
        [
            "show",
            "confirm_good",
            "confirm_bad",
            "tamper_qty",
            "tamper_price",
            "tamper_safe",
            "late",
            "cancel",
            "fill",
        ]
    ),
    max_size=10,
)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_STEPS, quantity=st.integers(1, 5))
def test_no_leg_is_transmitted_outside_a_confirmation_and_cancel_leaves_nothing_live(
    db_url: str, steps: list[str], quantity: int
) -> None:
    db = Database(db_url)
    try:
        _wipe(db)
        broker, clock = RecordingGroupBroker(), Clock()
        desk = _desk(db, broker, clock)
        desk.store.insert(bracket("G", quantity), actor="test")
        token = "nothing-shown-yet"
        cancelled = False
        for step in steps:
            try:
                if step == "show":
                    token = asyncio.run(desk.show("G", actor="p")).token
                elif step == "confirm_good":
                    asyncio.run(desk.confirm("G", token, actor="p"))
                elif step == "confirm_bad":
                    asyncio.run(desk.confirm("G", "f" * 16, actor="p"))
                elif step.startswith("tamper"):  # another writer changes a leg's stored terms
                    leg = "G-entry" if step != "tamper_price" else "G-take_profit"
                    stored = desk.store.orders.get(leg)
                    terms = {
                        "tamper_qty": {"quantity": stored.quantity + 1},
                        "tamper_price": {
                            "limit_price": stored.limit_price - 1.0
                        },  # a worse SELL price
                        "tamper_safe": {},
                    }[step]
                    with db.begin() as conn:
                        row = dict(
                            conn.execute(orders.select().where(orders.c.order_id == leg))
                            .mappings()
                            .one()
                        )
                        conn.execute(
                            update(orders)
                            .where(orders.c.order_id == leg)
                            .values(legs={**row["legs"], **terms})
                        )
                elif step == "late":
                    clock.now += timedelta(minutes=45)
                    broker.clock_at = clock.now
                elif step == "cancel":
                    asyncio.run(desk.cancel("G", actor="p"))
                    cancelled = True
                elif step == "fill" and broker.live:
                    broker.fills["G-G-entry"] = 1.0
                    asyncio.run(desk._commands.reconcile())
                    asyncio.run(desk.reconcile())
            except (IllegalTransitionError, LookupError, Exception):
                pass
        for sent, violations in broker.sent:
            assert violations == [], (sent.order_id, violations)
            assert sent.status == S.CONFIRMED
        assert len({o.order_id for o, _ in broker.sent}) == len(
            broker.sent
        )  # each leg at most once
        if broker.sent:
            assert {o.order_id for o, _ in broker.sent} == {
                "G-entry",
                "G-take_profit",
                "G-stop_loss",
            }  # whole
        if cancelled and desk.store.get("G").status != S.CONFIRMED:
            group = desk.store.get("G")
            assert (
                not any(leg.order.status.is_live_at_broker for leg in group.legs)
                or broker.live == {}
            )
            assert broker.live == {} or all(
                not leg.order.status.is_live_at_broker for leg in group.legs
            )
        for _, q in broker.resized:
            assert q <= quantity
    finally:
        db.dispose()


def test_cancel_group_cancels_every_live_leg(db: Database) -> None:
    broker, clock = RecordingGroupBroker(), Clock()
    desk = _desk(db, broker, clock)
    desk.store.insert(bracket("C", 2), actor="test")
    shown = asyncio.run(desk.show("C", actor="alice"))
    asyncio.run(desk.confirm("C", shown.token, actor="alice"))
    assert set(broker.live) == {"G-C-entry", "G-C-take_profit", "G-C-stop_loss"}
    done = asyncio.run(desk.cancel("C", actor="bob", reason="changed my mind"))
    assert broker.live == {}
    assert [leg.order.status for leg in done.legs] == [
        S.CANCELLED
    ] * 3 and done.status == S.CANCELLED
    with pytest.raises(IllegalTransitionError, match="already cancelled"):
        asyncio.run(desk.cancel("C", actor="bob"))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(quantity=st.integers(1, 6), fills=st.lists(st.integers(0, 3), min_size=1, max_size=3))
def test_partial_fills_of_the_entry_size_the_children(
    db_url: str, quantity: int, fills: list[int]
) -> None:
    db = Database(db_url)
    try:
        _wipe(db)
        broker, clock = RecordingGroupBroker(), Clock()
        desk = _desk(db, broker, clock)
        desk.store.insert(bracket("P", quantity), actor="test")
        shown = asyncio.run(desk.show("P", actor="alice"))
        asyncio.run(desk.confirm("P", shown.token, actor="alice"))
        filled = 0
        for more in fills:
            filled = min(quantity, filled + more)
            if filled:
                broker.fills["G-P-entry"] = float(filled)
            asyncio.run(desk._commands.reconcile())
            asyncio.run(desk.reconcile())
            expected = quantity if filled == 0 else filled
            group = desk.store.get("P")
            assert [leg.quantity for leg in group.legs[1:]] == [expected, expected]
            assert broker.live["G-P-take_profit"] == broker.live["G-P-stop_loss"] == expected
        assert all(q <= quantity for _, q in broker.resized)
    finally:
        db.dispose()

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import (
    TRANSITIONS,
    Order,
    OrderLeg,
    OrderStatus,
    WhatIfResult,
    check_transition,
    require_confirmed,
)
from portfolio_pipeline_tests.stubs import option

NOW = datetime(2018, 2, 5, 20, 0, tzinfo=UTC)
WHATIF = WhatIfResult(init_margin_change=5000.0, maint_margin_change=4000.0, commission=2.6,
                      warnings=("Order would exceed 50% margin utilisation",))


def _order(**kw: object) -> Order:
    legs = (
        OrderLeg(option(strike=2600, expiry=date(2018, 3, 16)), "BUY"),
        OrderLeg(option(strike=2550, expiry=date(2018, 3, 16)), "SELL"),
    )
    base: dict[str, object] = dict(order_id="o1", broker="demo", account_id="A1", legs=legs,
                                   quantity=2, limit_price=4.2, created_at=NOW)
    base.update(kw)
    return Order(**base)  # type: ignore[arg-type]


def test_every_pair_outside_the_table_raises() -> None:
    for a, b in itertools.product(OrderStatus, OrderStatus):
        if b in TRANSITIONS[a]:
            check_transition(a, b)
        else:
            with pytest.raises(IllegalTransitionError, match=f"{a.value} -> {b.value}"):
                check_transition(a, b)


def test_only_confirmed_reaches_transmitted() -> None:
    # SENT_UNKNOWN (sent, not acknowledged) is itself reachable only from CONFIRMED
    sources = [s for s, targets in TRANSITIONS.items() if OrderStatus.TRANSMITTED in targets]
    assert sources == [OrderStatus.CONFIRMED, OrderStatus.SENT_UNKNOWN]
    sources = [s for s, targets in TRANSITIONS.items() if OrderStatus.SENT_UNKNOWN in targets]
    assert sources == [OrderStatus.CONFIRMED]
    sources = [s for s, targets in TRANSITIONS.items() if OrderStatus.CONFIRMED in targets]
    assert sources == [OrderStatus.SHOWN]


def test_two_step_confirmation() -> None:
    o = _order().transition(OrderStatus.STAGED, actor="proposer", at=NOW, whatif=WHATIF)
    with pytest.raises(IllegalTransitionError, match="needs a prior 'show'"):
        o.confirm(token="abc123", actor="alice", at=NOW)
    with pytest.raises(IllegalTransitionError, match="transmit needs a confirmed order"):
        require_confirmed(o)
    shown = o.show(token="abc123", actor="alice", at=NOW)
    with pytest.raises(IllegalTransitionError, match="does not match"):
        shown.confirm(token="zzz999", actor="alice", at=NOW)
    confirmed = shown.confirm(token="abc123", actor="alice", at=NOW + timedelta(seconds=30))
    require_confirmed(confirmed)
    assert confirmed.status is OrderStatus.CONFIRMED
    assert confirmed.confirmation_token_hash is None  # a token is good once
    assert [e.to_status for e in confirmed.audit] == [
        OrderStatus.STAGED, OrderStatus.SHOWN, OrderStatus.CONFIRMED,
    ]
    assert all(e.actor for e in confirmed.audit)


def test_show_requires_whatif_and_expiry_blocks_confirm() -> None:
    staged = _order().transition(OrderStatus.STAGED, actor="p", at=NOW)
    with pytest.raises(IllegalTransitionError, match="without a WhatIf"):
        staged.show(token="abc123", actor="alice", at=NOW)
    expiring = _order(expires_at=NOW + timedelta(minutes=5)).transition(
        OrderStatus.STAGED, actor="p", at=NOW, whatif=WHATIF
    ).show(token="abc123", actor="alice", at=NOW)
    with pytest.raises(IllegalTransitionError, match="expired"):
        expiring.confirm(token="abc123", actor="alice", at=NOW + timedelta(minutes=6))


OPS = st.sampled_from(["stage", "show", "confirm_good", "confirm_bad", "reject", "expire", "transmit", "fill"])


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=12))
def test_no_sequence_transmits_without_two_step_confirmation(ops: list[str]) -> None:
    """Property: TRANSMITTED is reached only after show(token) then confirm(same token)."""
    order = _order()
    shown_with_token = False
    confirmed = False
    for op in ops:
        try:
            if op == "stage":
                order = order.transition(OrderStatus.STAGED, actor="p", at=NOW, whatif=WHATIF)
            elif op == "show":
                order = order.show(token="tok123", actor="alice", at=NOW)
                shown_with_token = True
            elif op == "confirm_good":
                order = order.confirm(token="tok123", actor="alice", at=NOW)
                confirmed = shown_with_token
            elif op == "confirm_bad":
                order = order.confirm(token="bad999", actor="mallory", at=NOW)
                raise AssertionError("a wrong token confirmed an order")
            elif op == "reject":
                order = order.transition(OrderStatus.REJECTED, actor="alice", at=NOW)
            elif op == "expire":
                order = order.transition(OrderStatus.EXPIRED, actor="system", at=NOW)
            elif op == "transmit":
                require_confirmed(order)
                order = order.transition(OrderStatus.TRANSMITTED, actor="broker", at=NOW)
            elif op == "fill":
                order = order.transition(OrderStatus.FILLED, actor="broker", at=NOW)
        except IllegalTransitionError:
            pass
        if order.status in (OrderStatus.TRANSMITTED, OrderStatus.FILLED):
            assert confirmed, f"reached {order.status} via {ops}"


def test_broker_states_are_reachable() -> None:
    """Issue 13.3: sent-but-unknown, partially filled, cancelled outside, stale after a restart."""
    reachable = {OrderStatus.PROPOSED}
    frontier = [OrderStatus.PROPOSED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(OrderStatus)
    check_transition(OrderStatus.CONFIRMED, OrderStatus.SENT_UNKNOWN)
    check_transition(OrderStatus.SENT_UNKNOWN, OrderStatus.PARTIALLY_FILLED)
    check_transition(OrderStatus.TRANSMITTED, OrderStatus.CANCELLED)
    check_transition(OrderStatus.SHOWN, OrderStatus.STALE)
    check_transition(OrderStatus.STALE, OrderStatus.STAGED)  # re-staged with a fresh WhatIf
    with pytest.raises(IllegalTransitionError):
        check_transition(OrderStatus.STALE, OrderStatus.CONFIRMED)  # never re-placed from local terms

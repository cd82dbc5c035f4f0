"""Order groups over the Tastytrade ASGI fake: OTOCO and OCO payloads as the API receives them.

Staging and showing are dry runs of the complex order (``POST .../complex-orders/dry-run``);
``confirm`` places exactly ONE complex order; cancelling the group deletes it.  Asserted
from the fake's own request record.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from portfolio_pipeline.domain.order_groups import OrderGroup
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.groups import GroupCommands, build_group
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.brokers.tastytrade.fake_tasty import ACCOUNT, SPXW_PUT, FakeTasty
from portfolio_pipeline_tests.brokers.tastytrade.test_adapter import (
    HEDGE_CONTRACT,
    HEDGE_OCC,
    SPXW_CONTRACT,
    adapter,
    hedge,
)

COMPLEX = f"/accounts/{ACCOUNT}/complex-orders"
COMPLEX_DRY_RUN = f"{COMPLEX}/dry-run"
TTL = timedelta(hours=1)


def _leg(
    action: str, limit: float, *, contract: object = HEDGE_CONTRACT, **changes: object
) -> Order:
    return replace(
        hedge(contract=contract, quantity=2),
        legs=(OrderLeg(contract, action),),  # type: ignore[arg-type]
        limit_price=limit,
        **changes,
    )


def bracket() -> OrderGroup:
    return build_group(
        "bracket",
        [
            ("entry", _leg("BUY", 26.0)),
            ("take_profit", _leg("SELL", 32.0)),
            ("stop_loss", _leg("SELL", 0.0, order_type="STP", aux_price=21.5)),
        ],
        group_id="BR-T",
    )


def oco() -> OrderGroup:
    """Close the held short SPXW put: buy it back cheaper, or stop out above 30."""
    return build_group(
        "oco",
        [
            ("take_profit", replace(_leg("BUY", 15.0, contract=SPXW_CONTRACT), quantity=1)),
            (
                "stop_loss",
                replace(
                    _leg("BUY", 0.0, contract=SPXW_CONTRACT, order_type="STP", aux_price=30.0),
                    quantity=1,
                ),
            ),
        ],
        group_id="OCO-T",
    )


def _run(fake: FakeTasty, db: Database, group: OrderGroup, *, cancel: bool = False) -> OrderGroup:
    store = OrderStore(db)

    async def scenario() -> OrderGroup:
        async with adapter(fake) as broker:
            tokens = iter(f"tok{i:013d}" for i in range(100))
            groups = GroupCommands(
                OrderCommands(store, lambda o: broker),
                lambda o: broker,
                token_factory=lambda: next(tokens),
            )
            groups.store.insert(group, actor="test")
            shown = await groups.show(group.group_id, actor="cli:alice")
            assert fake.seen("POST", COMPLEX) == []  # dry runs only so far
            assert "one dry run for the whole" in shown.text
            done = await groups.confirm(group.group_id, shown.token, actor="cli:alice")
            if cancel:
                done = await groups.cancel(group.group_id, actor="cli:bob")
            return done

    return asyncio.run(scenario())


def test_bracket_is_one_otoco_complex_order_with_closing_children(db: Database) -> None:
    fake = FakeTasty()
    done = _run(fake, db, bracket(), cancel=True)
    (placed,) = fake.seen("POST", COMPLEX)  # exactly one live complex order
    body = placed.json()
    assert body["type"] == "OTOCO"
    trigger, (tp, sl) = body["trigger-order"], body["orders"]
    assert (
        trigger["order-type"] == "Limit"
        and trigger["price"] == "26.0"
        and trigger["price-effect"] == "Debit"
    )
    assert trigger["legs"] == [
        {
            "instrument-type": "Equity Option",
            "symbol": HEDGE_OCC,
            "action": "Buy to Open",
            "quantity": 2,
        }
    ]
    assert (tp["order-type"], tp["price"], tp["price-effect"]) == ("Limit", "32.0", "Credit")
    assert (sl["order-type"], sl["stop-trigger"]) == ("Stop", "21.5")
    assert {leg["action"] for leg in tp["legs"] + sl["legs"]} == {"Sell to Close"}
    assert len(fake.seen("POST", COMPLEX_DRY_RUN)) == 2  # stage + show
    assert fake.seen("POST", f"/accounts/{ACCOUNT}/orders") == []  # never as separate orders
    # ids: complex 12345, then trigger, take-profit, stop-loss
    assert [leg.order.broker_order_id for leg in done.legs] == ["12346", "12347", "12348"]
    assert [r.path for r in fake.requests if r.method == "DELETE"] == [f"{COMPLEX}/12345"]
    assert [leg.order.status for leg in done.legs] == [OrderStatus.CANCELLED] * 3


def test_oco_closes_a_held_position_with_a_limit_and_a_stop(db: Database) -> None:
    fake = FakeTasty()
    done = _run(fake, db, oco())
    (placed,) = fake.seen("POST", COMPLEX)
    body = placed.json()
    assert body["type"] == "OCO" and "trigger-order" not in body
    tp, sl = body["orders"]
    assert tp["legs"][0]["symbol"] == SPXW_PUT and tp["legs"][0]["action"] == "Buy to Close"
    assert (tp["price"], tp["price-effect"]) == ("15.0", "Debit")
    assert sl["order-type"] == "Stop" and sl["stop-trigger"] == "30.0"
    assert done.status == OrderStatus.TRANSMITTED


def test_a_trailing_stop_is_refused_by_name_for_tastytrade(db: Database) -> None:
    fake = FakeTasty()
    group = build_group(
        "oco",
        [
            ("take_profit", replace(_leg("BUY", 15.0, contract=SPXW_CONTRACT), quantity=1)),
            (
                "stop_loss",
                replace(
                    _leg(
                        "BUY",
                        0.0,
                        contract=SPXW_CONTRACT,
                        order_type="TRAIL",
                        trailing_percent=20.0,
                    ),
                    quantity=1,
                ),
            ),
        ],
        group_id="OCO-TR",
    )
    with pytest.raises(Exception, match="no trailing stop"):
        _run(fake, db, group)
    assert fake.seen("POST", COMPLEX) == [] and fake.seen("POST", COMPLEX_DRY_RUN) == []

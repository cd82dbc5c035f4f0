"""End to end on the demo broker: a bracket shown, confirmed, filled, cancelled (SQLite and PostgreSQL).

The demo has closes only: the entry fills at the model mid on transmit (its execution
and the position appear in the simulated account), the take-profit and stop-loss rest
at the demo broker until the group is cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import date

import pytest

from portfolio_pipeline.brokers.demo import DemoBroker
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.marketdata import MarketHistory
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.groups import GroupCommands, build_group
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.brokers.demo.conftest import eod
from portfolio_pipeline_tests.stubs import instruments

ACCOUNT = "DEMO-001"
DAY = date(2018, 2, 2)
PUT = Contract("SPX", "OPT", date(2018, 3, 16), 2500.0, "P", "SPXW")


def _order(action: str, limit: float, **changes: object) -> Order:
    base = Order(
        order_id="x",
        broker="demo",
        account_id=ACCOUNT,
        legs=(OrderLeg(PUT, action),),  # type: ignore[arg-type]
        quantity=2,
        limit_price=limit,
        created_at=eod(DAY),
        time_in_force="GTC",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_bracket_end_to_end_on_the_demo_broker(db: Database, history: MarketHistory) -> None:
    clock = SettableClock(eod(DAY))
    broker = DemoBroker(instruments(), clock=clock, history=history)
    (quote,) = broker.get_quotes([PUT])
    mid = round((quote.bid + quote.ask) / 2, 1)
    group = build_group(
        "bracket",
        [
            ("entry", _order("BUY", mid)),
            ("take_profit", _order("SELL", round(mid * 1.5, 1))),
            ("stop_loss", _order("SELL", 0.0, order_type="STP", aux_price=round(mid * 0.6, 1))),
        ],
        group_id="BR-D",
    )
    tokens = (f"tok{i:013d}" for i in itertools.count())
    cmds = OrderCommands(
        OrderStore(db), lambda o: broker, clock=clock, token_factory=lambda: next(tokens)
    )
    desk = GroupCommands(cmds, lambda o: broker, clock=clock, token_factory=lambda: next(tokens))
    desk.store.insert(group, actor="test")

    shown = asyncio.run(desk.show("BR-D", actor="cli:alice"))
    assert (
        shown.text.count("demo broker: simulated fill at the model mid") == 3
    )  # every leg's own WhatIf
    done = asyncio.run(desk.confirm("BR-D", shown.token, actor="cli:alice"))

    entry, tp, sl = (leg.order for leg in done.legs)
    assert (
        entry.status == OrderStatus.FILLED
    )  # filled at the mid on transmit, found in the executions
    assert (tp.status, sl.status) == (OrderStatus.TRANSMITTED, OrderStatus.TRANSMITTED)
    assert done.status == OrderStatus.PARTIALLY_FILLED
    fills = [e for e in broker.get_executions(ACCOUNT, DAY) if e.order_ref == entry.broker_order_id]
    assert len(fills) == 1 and fills[0].quantity == 2.0
    assert any(p.contract == PUT and p.quantity >= 2.0 for p in broker.get_positions(ACCOUNT))
    assert {o.order_id for o in broker.resting()} == {"BR-D-take_profit", "BR-D-stop_loss"}

    cancelled = asyncio.run(desk.cancel("BR-D", actor="cli:bob"))
    assert broker.resting() == []
    assert [leg.order.status for leg in cancelled.legs] == [
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.CANCELLED,
    ]
    assert (
        cancelled.status == OrderStatus.FILLED
    )  # the entry's position stays; nothing works any more


def test_demo_transmit_group_refuses_an_unconfirmed_group(history: MarketHistory) -> None:
    clock = SettableClock(eod(DAY))
    broker = DemoBroker(instruments(), clock=clock, history=history)
    group = build_group(
        "oco",
        [
            ("take_profit", _order("SELL", 30.0)),
            ("stop_loss", _order("SELL", 0.0, order_type="STP", aux_price=10.0)),
        ],
        group_id="OCO-D",
    )
    with pytest.raises(IllegalTransitionError, match="transmit needs a confirmed order"):
        asyncio.run(broker.transmit_group(group))
    assert broker.resting() == []

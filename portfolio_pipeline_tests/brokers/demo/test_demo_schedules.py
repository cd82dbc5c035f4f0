"""Scheduled roll and platform-side trail on the demo broker (SQLite and PostgreSQL).

The demo holds 6 short SPY 2018-03-16 279 calls; the roll runs at 15:45 New York on
that expiration Friday, built from the demo's quotes, staged with a fresh WhatIf.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, date, datetime, time, timedelta

from portfolio_pipeline.brokers.demo import DemoBroker
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.domain.orders import ConfirmationBounds, OrderStatus
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata import MarketHistory
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.schedules import OrderSchedules
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.stubs import instruments

OLD = Contract("SPY", "OPT", date(2018, 3, 16), 279.0, "C", "SPY")
NEW = Contract("SPY", "OPT", date(2018, 4, 20), 279.0, "C", "SPY")
MADE = datetime(2018, 3, 12, 15, 0, tzinfo=UTC)
RUN = datetime(2018, 3, 16, 19, 45, tzinfo=UTC)  # 15:45 EDT on expiration Friday


def _desk(
    db: Database, history: MarketHistory
) -> tuple[OrderSchedules, DemoBroker, SettableClock, list[str]]:
    clock = SettableClock(MADE)
    broker = DemoBroker(instruments(), clock=clock, history=history)
    tokens = (f"tok{i:013d}" for i in itertools.count())
    cmds = OrderCommands(
        OrderStore(db), lambda o: broker, clock=clock, token_factory=lambda: next(tokens)
    )
    told: list[str] = []
    return (
        OrderSchedules(cmds, calendar=ExchangeCalendar(), notify=told.append),
        broker,
        clock,
        told,
    )


def test_roll_with_a_standing_confirmation_inside_and_outside_its_bounds(
    db: Database, history: MarketHistory
) -> None:
    schedules, _broker, clock, told = _desk(db, history)
    generous = schedules.add_roll(
        broker="demo",
        account_id="DEMO-001",
        held=OLD,
        new=NEW,
        quantity=5,
        day=None,
        at=time(15, 45),
        standing=ConfirmationBounds(
            max_quantity=5, worst_price=0.0, valid_until=RUN + timedelta(hours=1)
        ),
        by="cli:alice",
        now=MADE,
    )
    assert generous.run_at == RUN
    strict = schedules.add_roll(
        broker="demo",
        account_id="DEMO-001",
        held=OLD,
        new=NEW,
        quantity=1,
        day=None,
        at=time(15, 45),
        standing=ConfirmationBounds(
            max_quantity=1, worst_price=-50.0, valid_until=RUN + timedelta(hours=1)
        ),
        by="cli:alice",
        now=MADE,
    )
    clock.set(RUN - timedelta(minutes=1))
    assert asyncio.run(schedules.run_due(now=RUN - timedelta(minutes=1))) == []  # not due yet
    clock.set(RUN)
    lines = asyncio.run(schedules.run_due(now=RUN))
    assert len(lines) == 2 and told == lines
    store = OrderStore(db)
    done = store.get(schedules.get(generous.schedule_id).order_id or "")
    assert done.status in (OrderStatus.TRANSMITTED, OrderStatus.FILLED)
    assert [(leg.action, leg.contract) for leg in done.legs] == [("BUY", OLD), ("SELL", NEW)]
    assert done.limit_price < 0  # a later call is worth more: the roll is a net credit
    trail = store.audit_trail(done.order_id)
    check = next(r for r in trail if (r["detail"] or {}).get("event") == "standing_confirmation")
    assert check["detail"]["accepted"] and check["detail"]["given_by"] == "cli:alice"
    assert [r["to_status"] for r in trail if r["from_status"]][:3] == [
        "staged",
        "shown",
        "confirmed",
    ]
    assert (
        next(r for r in trail if r["to_status"] == "confirmed" and r["from_status"])["actor"]
        == "standing:cli:alice"
    )
    held = store.get(schedules.get(strict.schedule_id).order_id or "")
    assert held.status == OrderStatus.SHOWN  # outside its bounds: staged, waiting for a person
    refused = next(
        r
        for r in store.audit_trail(held.order_id)
        if (r["detail"] or {}).get("event") == "standing_confirmation"
    )
    assert (
        not refused["detail"]["accepted"]
        and "above the confirmed worst price" in refused["detail"]["violations"][0]
    )
    (strict_line,) = [line for line in lines if line.startswith(strict.schedule_id)]
    assert "outside the standing confirmation" in strict_line


def test_platform_trail_stages_a_new_stop_and_never_touches_the_live_one(
    db: Database, history: MarketHistory
) -> None:
    schedules, broker, clock, told = _desk(db, history)
    long_put = Contract("SPX", "OPT", date(2018, 4, 20), 2335.0, "P", "SPXW")
    day1 = datetime(2018, 2, 5, 22, 0, tzinfo=UTC)
    clock.set(day1)
    trail = schedules.add_trail(
        broker="demo",
        account_id="DEMO-001",
        contract=long_put,
        side="SELL",
        quantity=1,
        percent=20.0,
        amount=None,
        by="cli:alice",
        now=day1,
    )
    (first,) = asyncio.run(schedules.run_due(now=day1))
    assert first == told[0] and "trail moved the stop" in first
    s1 = schedules.get(trail.schedule_id)
    stop1 = s1.spec["stop"]
    order1 = OrderStore(db).get(s1.order_id or "")
    assert (
        order1.status == OrderStatus.STAGED
        and order1.order_type == "STP"
        and order1.aux_price == stop1
    )
    assert stop1 == round(s1.spec["best"] * 0.8, 2)
    # the put rose in the Feb-2018 spike; the stop moves up: a NEW staged stop, the old proposal withdrawn
    day2 = datetime(2018, 2, 8, 22, 0, tzinfo=UTC)
    clock.set(day2)
    (second,) = asyncio.run(schedules.run_due(now=day2))
    s2 = schedules.get(trail.schedule_id)
    assert s2.spec["stop"] > stop1 and s2.order_id != s1.order_id
    assert OrderStore(db).get(s1.order_id or "").status == OrderStatus.REJECTED
    assert OrderStore(db).get(s2.order_id or "").status == OrderStatus.STAGED
    assert (
        "portfolio orders show" in second and broker.resting() == []
    )  # nothing transmitted by the trail

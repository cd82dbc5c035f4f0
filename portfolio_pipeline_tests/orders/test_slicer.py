"""TWAP/VWAP slicer: the plan (hand-computed), the parent's confirmation bounding every child, the stops."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import date, timedelta

import pytest

from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.errors import IllegalTransitionError, InvalidDataError
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus
from portfolio_pipeline.domain.positions import Contract, Quote
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.slicer import Slicer, slice_quantities, vwap_weights
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.orders.fakes import T0, RecordingBroker
from portfolio_pipeline_tests.stubs import option

PUT = option(strike=2600.0)


def test_plan_quantities_and_vwap_weights_by_hand() -> None:
    assert slice_quantities(10, [1, 1, 1]) == [
        4,
        3,
        3,
    ]  # 3.33 each: the first remainder gets the extra
    # 3.5, 1.75, 1.75 -> 3, 1, 1 and the two left go to the largest remainders (0.75, 0.75)
    assert slice_quantities(7, [0.5, 0.25, 0.25]) == [3, 2, 2]
    assert sum(slice_quantities(97, [3, 1, 4, 1, 5])) == 97
    # bars at minutes 0, 30, 60 with volumes 600, 300, 300 (the last lasting 30 min);
    # slices [0, 45) and [45, 90): 600 + 300/2 = 750 and 300/2 + 300 = 450
    assert vwap_weights([(0, 600.0), (30, 300.0), (60, 300.0)], [0, 45, 90]) == [750.0, 450.0]
    with pytest.raises(InvalidDataError):
        slice_quantities(5, [0.0, 0.0])


class QuotingBroker(RecordingBroker):
    """Quotes from a script per call; fills each transmitted child at its limit."""

    def __init__(self, quotes: list[tuple[float, float]]) -> None:
        super().__init__()
        self.script = quotes
        self.now = T0

    async def quotes(self, contracts: list[Contract]) -> list[Quote]:
        bid, ask = self.script.pop(0)
        return [
            Quote(
                source="t",
                contract=contracts[0],
                as_of=self.now,
                bid=bid,
                ask=ask,
                mark=(bid + ask) / 2,
            )
        ]

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        return [
            Execution(
                "demo",
                account_id,
                f"X-{i}",
                o.legs[0].contract,
                T0,
                float(o.quantity),
                o.limit_price,
                100.0,
                order_ref=f"B-{i + 1}",
            )
            for i, o in enumerate(self.transmitted)
        ]


def _slicer(db: Database, broker: QuotingBroker) -> tuple[Slicer, OrderCommands]:
    tokens = (f"tok{i:013d}" for i in itertools.count())
    cmds = OrderCommands(
        OrderStore(db),
        lambda o: broker,
        clock=lambda: broker.now,  # type: ignore[arg-type,return-value]
        token_factory=lambda: next(tokens),
    )
    return Slicer(cmds, token_factory=lambda: next(tokens)), cmds


def _parent(quantity: int = 10, limit: float = 12.0) -> Order:
    return Order(
        order_id="SLC-1",
        broker="demo",
        account_id="DEMO-001",
        legs=(OrderLeg(PUT, "BUY"),),
        quantity=quantity,
        limit_price=limit,
        created_at=T0,
    )


def test_twap_confirmed_once_sends_every_slice_inside_the_parent_and_reports_vs_benchmark(
    db: Database,
) -> None:
    broker = QuotingBroker([(11.0, 11.2), (11.4, 11.6), (11.8, 12.0)])
    slicer, cmds = _slicer(db, broker)
    slicer.create(
        _parent(), start=T0, end=T0 + timedelta(minutes=30), slices=3, style="TWAP", actor="alice"
    )
    with pytest.raises(IllegalTransitionError, match="TWAP/VWAP parent"):
        asyncio.run(cmds.show("SLC-1", actor="alice"))  # never shown or sent as one order
    shown = asyncio.run(slicer.show("SLC-1", actor="alice", now=T0))
    assert "TWAP over 3 slices" in shown.text and "at most 10 at 12.00 or better" in shown.text
    asyncio.run(slicer.confirm("SLC-1", shown.token, actor="alice", now=T0))
    for minute in (0, 10, 20):
        broker.now = T0 + timedelta(minutes=minute)
        report = asyncio.run(slicer.step("SLC-1", now=broker.now))
    assert [(o.quantity, o.limit_price) for o in broker.transmitted] == [
        (4, 11.2),
        (3, 11.6),
        (3, 12.0),
    ]
    assert report.status == "done" and report.filled == 10
    # average 11.56 (4 x 11.2 + 3 x 11.6 + 3 x 12.0) / 10 vs the mean mid (11.1 + 11.5 + 11.9) / 3 = 11.5
    assert report.average_price == pytest.approx(11.56) and report.benchmark == pytest.approx(11.5)
    assert report.slippage == pytest.approx(0.06)
    check = [
        r
        for r in cmds.store.audit_trail("SLC-1-2")
        if (r["detail"] or {}).get("event") == "parent_confirmation"
    ]
    assert check and check[0]["detail"]["sent_before"] == 4
    assert (
        cmds.store.get("SLC-1").status == OrderStatus.CONFIRMED
    )  # the parent itself is never placed


def test_stops_on_a_price_breach(db: Database) -> None:
    broker = QuotingBroker(
        [(11.0, 11.2), (12.1, 12.3)]
    )  # the second slice finds the market beyond 12
    slicer, _ = _slicer(db, broker)
    slicer.create(
        _parent(), start=T0, end=T0 + timedelta(minutes=30), slices=3, style="TWAP", actor="alice"
    )
    shown = asyncio.run(slicer.show("SLC-1", actor="alice", now=T0))
    asyncio.run(slicer.confirm("SLC-1", shown.token, actor="alice", now=T0))
    asyncio.run(slicer.step("SLC-1", now=T0))
    broker.now = T0 + timedelta(minutes=10)
    report = asyncio.run(slicer.step("SLC-1", now=broker.now))
    assert report.status == "stopped" and "price breach" in (report.reason or "")
    assert report.sent == (4,) and len(broker.transmitted) == 1
    broker.now = T0 + timedelta(minutes=20)
    assert asyncio.run(slicer.step("SLC-1", now=broker.now)).sent == (4,)  # stopped stays stopped


def test_stale_quote_and_cancel(db: Database) -> None:
    broker = QuotingBroker([(11.0, 11.2), (11.0, 11.2)])
    slicer, _ = _slicer(db, broker)
    slicer.create(
        _parent(), start=T0, end=T0 + timedelta(minutes=30), slices=3, style="TWAP", actor="alice"
    )
    shown = asyncio.run(slicer.show("SLC-1", actor="alice", now=T0))
    asyncio.run(slicer.confirm("SLC-1", shown.token, actor="alice", now=T0))
    broker.now = T0 - timedelta(minutes=6)  # the quote's time lags the clock by 6 minutes
    report = asyncio.run(slicer.step("SLC-1", now=T0))
    assert (
        report.status == "stopped"
        and "stale quote" in (report.reason or "")
        and broker.transmitted == []
    )
    broker2 = QuotingBroker([(11.0, 11.2)])
    slicer2, _ = _slicer(db, broker2)
    slicer2.create(
        replace(_parent(quantity=4), order_id="SLC-2"),
        start=T0,
        end=T0 + timedelta(minutes=30),
        slices=2,
        style="TWAP",
        actor="alice",
    )
    shown = asyncio.run(slicer2.show("SLC-2", actor="alice", now=T0))
    asyncio.run(slicer2.confirm("SLC-2", shown.token, actor="alice", now=T0))
    asyncio.run(slicer2.step("SLC-2", now=T0))
    stopped = asyncio.run(slicer2.cancel("SLC-2", actor="bob", now=T0))
    assert stopped.status == "stopped" and "cancelled by bob" in (stopped.reason or "")
    assert stopped.sent == (2,)


class Volume:
    """Traded volume per slice interval, scripted."""

    def __init__(self, volumes: list[float]) -> None:
        self.volumes = volumes

    async def traded_volume(self, contract: Contract, start: object, end: object) -> float:
        return self.volumes.pop(0)


def test_max_participation_caps_each_child_and_carries_the_rest(db: Database) -> None:
    broker = QuotingBroker([(11.0, 11.2)] * 3)
    tokens = (f"tok{i:013d}" for i in itertools.count())
    cmds = OrderCommands(
        OrderStore(db),
        lambda o: broker,
        clock=lambda: broker.now,  # type: ignore[arg-type,return-value]
        token_factory=lambda: next(tokens),
    )
    # 9 in 3 slices (3 each); 20% of 10, 40 and 100 traded: 2, then 3 + 1 carried = 4 (cap 8), then 3
    slicer = Slicer(cmds, token_factory=lambda: next(tokens), volume=Volume([10.0, 40.0, 100.0]))
    slicer.create(
        _parent(quantity=9),
        start=T0,
        end=T0 + timedelta(minutes=30),
        slices=3,
        style="TWAP",
        max_participation=0.2,
        actor="alice",
    )
    shown = asyncio.run(slicer.show("SLC-1", actor="alice", now=T0))
    asyncio.run(slicer.confirm("SLC-1", shown.token, actor="alice", now=T0))
    for minute in (0, 10, 20):
        broker.now = T0 + timedelta(minutes=minute)
        report = asyncio.run(slicer.step("SLC-1", now=broker.now))
    assert report.sent == (2, 4, 3) and sum(report.sent) == 9


def test_vwap_plan_follows_the_profile(db: Database) -> None:
    broker = QuotingBroker([])
    slicer, _ = _slicer(db, broker)
    # T0 is 13:00 New York, 210 minutes after the open; the profile is by minute after the
    # open: a 60-minute window in 2 slices meets the bars at 210 and 240 minutes (3:1) -> 6
    # and 2 of 8 (read as minutes after the window's start, the long opening bar would give 4, 4)
    slicer.create(
        _parent(quantity=8),
        start=T0,
        end=T0 + timedelta(minutes=60),
        slices=2,
        style="VWAP",
        profile=[(0.0, 900.0), (210.0, 300.0), (240.0, 100.0), (270.0, 50.0)],
        actor="alice",
    )
    shown = asyncio.run(slicer.show("SLC-1", actor="alice", now=T0))
    assert (
        "VWAP over 2 slices" in shown.text and " 6, " in shown.text and shown.text.count("Z 2") == 1
    )


def test_volume_profile_averages_past_sessions_by_minute_after_the_open() -> None:
    from datetime import UTC, datetime

    from portfolio_pipeline.exchange_calendar import ExchangeCalendar
    from portfolio_pipeline.orders.slicer import volume_profile

    # 2018-02-05 and 2018-02-06 open at 14:30 UTC (09:30 EST); two 30-minute bars each,
    # plus one bar on Saturday 2018-02-03 and one after the close, both ignored
    bars = [
        (datetime(2018, 2, 5, 14, 30, tzinfo=UTC), 1000.0),
        (datetime(2018, 2, 5, 15, 0, tzinfo=UTC), 400.0),
        (datetime(2018, 2, 6, 14, 30, tzinfo=UTC), 3000.0),
        (datetime(2018, 2, 6, 15, 0, tzinfo=UTC), 600.0),
        (datetime(2018, 2, 3, 14, 30, tzinfo=UTC), 9e9),
        (datetime(2018, 2, 6, 21, 30, tzinfo=UTC), 9e9),
    ]
    assert volume_profile(bars, ExchangeCalendar()) == [(0.0, 2000.0), (30.0, 500.0)]


def test_vwap_profile_from_ibkr_intraday_bars_on_the_gateway_double() -> None:
    """IBKR 30-minute TRADES bars of SPY over the fake Gateway -> the slicer's volume profile."""
    from datetime import UTC, datetime

    from portfolio_pipeline.brokers.ibkr.history_source import IbkrHistorySource
    from portfolio_pipeline.exchange_calendar import ExchangeCalendar
    from portfolio_pipeline.orders.slicer import volume_profile
    from portfolio_pipeline_tests.brokers.ibkr.book import SPY, adapter, run
    from portfolio_pipeline_tests.marketdata.fake_ib_history import HistoryGateway
    from portfolio_pipeline_tests.stubs import instruments

    gw = HistoryGateway(accounts=["U1"])
    gw.add_contract(SPY)
    gw.bars[401] = [
        (datetime(2018, 2, 5, 14, 30, tzinfo=UTC), 270.0, 271.0, 269.0, 270.5, 8000.0),
        (datetime(2018, 2, 5, 15, 0, tzinfo=UTC), 270.5, 271.0, 270.0, 270.2, 2000.0),
        (datetime(2018, 2, 6, 14, 30, tzinfo=UTC), 268.0, 269.0, 265.0, 266.0, 12000.0),
        (datetime(2018, 2, 6, 15, 0, tzinfo=UTC), 266.0, 267.0, 265.5, 266.5, 4000.0),
    ]

    async def scenario() -> list[tuple[datetime, float]]:
        async with adapter(gw) as broker:
            return await IbkrHistorySource(broker, instruments()).intraday_volumes(
                "SPY", sessions=2
            )

    bars = run(scenario)
    (req,) = gw.requests_named("reqHistoricalData")
    _, contract, end, duration, bar, what, rth = req
    assert (contract.symbol, end, duration, bar, what, rth) == (
        "SPY",
        "",
        "2 D",
        "30 mins",
        "TRADES",
        True,
    )
    profile = volume_profile(bars, ExchangeCalendar())
    assert profile == [(0.0, 10000.0), (30.0, 3000.0)]  # means of (8000, 12000) and (2000, 4000)
    assert slice_quantities(13, vwap_weights(profile, [0.0, 30.0, 60.0])) == [10, 3]

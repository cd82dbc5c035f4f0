"""BrokerFeed over the real adapters at their wire boundary (IBKR fake gateway, Tastytrade
ASGI + DXLink fakes on 127.0.0.1): ticks, the stale-data path, reconnects, position
refreshes, and that the feed never places an order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from portfolio_pipeline.brokers.ibkr import IbkrBroker
from portfolio_pipeline.brokers.tastytrade import TastytradeAdapter
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.config.streaming import FeedSettings, StreamingConfig
from portfolio_pipeline.domain.accounts import TastytradeConnection
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.retry import BROKER_HTTP
from portfolio_pipeline_tests.brokers.ibkr.book import (
    SPX_AM,
    SPX_PM,
    SPX_PUT,
    SPY,
    T0,
    adapter,
    gateway,
)
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import (
    FakeGateway,
    Greeks,
    MarketScript,
    ib_index,
)
from portfolio_pipeline_tests.brokers.tastytrade.fake_tasty import (
    ACCOUNT,
    ENV,
    ES_PUT_DX,
    SPXW_PUT_DX,
    FakeDXLink,
    FakeTasty,
)
from portfolio_pipeline_tests.stubs import instruments, platform_config
from streaming_service.buffer import DiskBuffer, EventWriter, StreamEvent
from streaming_service.engine import Tick
from streaming_service.feeds import BrokerFeed
from streaming_service.service import StreamingService

GOOD_GREEKS = {"price": "25.5", "volatility": "0.21", "delta": "-0.31", "gamma": "0.0021",
               "theta": "-1.52", "rho": "-0.1", "vega": "2.45"}
NAN_GREEKS = dict.fromkeys(GOOD_GREEKS, "NaN")
ORDER_REQUESTS = {"placeOrder", "whatIfOrder", "cancelOrder"}


# --------------------------------------------------------------------------- helpers


def ib_gateway() -> FakeGateway:
    """The IBKR test book cut down to U1: short 1 SPX AM put, short 100 SPY; plus VIX/VIX3M."""
    gw = gateway()
    gw.positions[:] = [("U1", SPX_AM, -1.0, 1523.5), ("U1", SPY, -100.0, 270.5)]
    gw.add_contract(ib_index(601, "VIX"))
    gw.add_contract(ib_index(602, "VIX3M"))
    gw.market[601] = MarketScript(last=17.31)
    gw.market[602] = MarketScript(last=18.1)
    return gw


def ib_feed(gw: FakeGateway, *, clock: SettableClock | None = None, **kwargs: Any) -> BrokerFeed:
    extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
    kwargs.setdefault("poll_seconds", 0.02)
    kwargs.setdefault("retry_seconds", 0.02)
    return BrokerFeed(adapter(gw, **extra), ["U1"], instruments(), **kwargs)


async def take(
    ticks: AsyncIterator[Tick], until: Callable[[list[Tick]], bool], timeout: float = 15.0
) -> list[Tick]:
    """Ticks from ``ticks`` until ``until(collected)`` holds (TimeoutError otherwise)."""
    got: list[Tick] = []

    async def pull() -> None:
        async for tick in ticks:
            got.append(tick)
            if until(got):
                return

    await asyncio.wait_for(pull(), timeout)
    return got


def service(feed: BrokerFeed, tmp_path: Path, *, stale_after: float = 10.0) -> tuple[StreamingService, list[StreamEvent]]:
    cfg = platform_config()
    seen: list[StreamEvent] = []

    class Memory:
        def write(self, batch: Sequence[StreamEvent]) -> list[int | None]:
            seen.extend(batch)
            return list(range(len(batch)))

    writer = EventWriter(Memory(), DiskBuffer(tmp_path, max_events=1000))
    settings = StreamingConfig(feed=FeedSettings(stale_after_seconds=stale_after))
    svc = StreamingService(feed=feed, writer=writer, instruments=cfg.instruments,
                           regimes=RegimeService(cfg.risk_matrix), settings=settings,
                           account_id="U1", rate=0.014)
    return svc, seen


async def run_for(svc: StreamingService, seconds: float, until: Callable[[], bool] | None = None) -> None:
    """Run the service until ``until()`` holds (or ``seconds`` pass), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not (until is not None and until()) and not task.done():
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 3.0)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms; TimeoutError after ``timeout`` s (a failing test, not a hang)."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def no_orders(gw: FakeGateway) -> None:
    assert gw.placed == []
    assert not ORDER_REQUESTS & {name for name, _ in gw.requests}


# --------------------------------------------------------------------------- IBKR


def test_ibkr_ticks_for_a_held_spx_put_and_its_underlying_with_the_served_greeks() -> None:
    gw = ib_gateway()

    async def scenario() -> None:
        feed = ib_feed(gw, clock=SettableClock(T0))
        try:
            book = await feed.starting_book()
            assert feed.name == "ibkr" and feed.followed == {"SPX", "SPY", "VIX", "VIX3M"}
            quotes = {q.contract.key: q for q in book.quotes}
            put = quotes[SPX_PUT.key]  # the broker's model Greeks, per share, as served
            assert (put.iv, put.delta, put.gamma, put.vega, put.theta) == (0.21, -0.31, 0.0011, 2.7, -0.9)
            assert feed.last_quotes[SPX_PUT.key].delta == -0.31
            positions = {p.contract.key: p for p in book.positions}
            assert positions[SPX_PUT.key].underlying_price == 2762.13  # the SPX index quote
            assert positions["SPY|STK"].underlying_price == 275.0
            assert (book.vix, book.vix3m, book.account.nlv) == (17.31, 18.1, 1000000.5)

            stream = feed.ticks()
            first = await take(stream, lambda got: len(got) >= 4)
            assert {t.symbol: t.price for t in first} == {
                "SPX": 2762.13, "SPY": 275.0, "VIX": 17.31, "VIX3M": 18.1}
            assert all(t.ts == T0 and t.received is not None for t in first)
            gw.push_ticks(501, last=2770.5)  # the index moves on the open market-data line
            gw.push_ticks(601, last=19.0)
            moved = await take(stream, lambda got: {("SPX", 2770.5), ("VIX", 19.0)}
                               <= {(t.symbol, t.price) for t in got})
            assert moved and feed.stale_roots == {}
            await stream.aclose()
        finally:
            await feed.aclose()

    asyncio.run(scenario())
    no_orders(gw)


def test_ibkr_sentinel_greeks_on_one_option_do_not_freeze_its_underlying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13.4: the option is priced from its mark's implied vol and flagged; SPX keeps
    ticking; the sentinel warnings come once per episode, not once per poll."""
    gw = ib_gateway()
    gw.market[101] = MarketScript(bid=12.1, ask=12.5, greeks=Greeks(delta=None, gamma=-2.0))  # wire sentinels

    async def scenario() -> tuple[StreamingService, list[StreamEvent], BrokerFeed, dict[str, Any]]:
        feed = ib_feed(gw, clock=SettableClock(T0))
        svc, seen = service(feed, tmp_path, stale_after=0.3)
        try:
            # until both roots ticked over a dozen polls (a fixed second saw no tick at all
            # on a busy machine)
            await run_for(svc, 30.0, until=lambda: feed.polls >= 12 and {"SPX", "SPY"}
                          <= set(svc.metrics.last_tick_wall))
            health = svc.health()
        finally:
            await feed.aclose()
        return svc, seen, feed, health

    # on the package logger itself: an earlier test in this worker may have set its level (log_setup)
    with caplog.at_level(logging.DEBUG, logger="portfolio_pipeline"):
        svc, seen, feed, health = asyncio.run(scenario())
    assert [e for e in seen if e.kind == "stale_data"] == []
    assert feed.stale_roots == {}
    assert "NaN broker Greeks (delta, gamma)" in feed.flagged_options[SPX_PUT.key]
    assert "SPX" in svc.metrics.last_tick_wall and "SPY" in svc.metrics.last_tick_wall
    assert svc.metrics.ticks_rejected == 0 and health["status"] == "ok"
    reads = [r for r in caplog.records if "again" in r.getMessage() and r.levelno == logging.DEBUG]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage().endswith("-> NaN")]
    assert len(reads) >= 10  # many polls saw the sentinel ...
    assert len(warned) == 2  # ... but delta and gamma were each warned about once
    flagged = [r for r in caplog.records if r.levelno == logging.WARNING and "flagged" in r.getMessage()]
    assert len(flagged) == 1
    no_orders(gw)


def test_health_reports_a_gateway_drop_and_stop_works_while_it_is_down(tmp_path: Path) -> None:
    """Issue 13.5: /health says disconnected as soon as the Gateway drops (and when it loses
    IB's servers: 1100), and a stop request ends the service while the Gateway is down."""
    gw = ib_gateway()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
        feed = ib_feed(gw)
        svc, _ = service(feed, tmp_path)
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        try:
            await until(lambda: svc.metrics.ticks >= 4)
            up = svc.health()
            gw.system_message(1100, "Connectivity between IB and Trader Workstation has been lost.")
            await until(lambda: not svc.health()["broker_connected"])
            upstream = svc.health()
            gw.system_message(1102, "Connectivity between IB and TWS has been restored - data maintained.")
            await until(lambda: svc.health()["broker_connected"])
            gw.down = True
            gw.drop_connection()  # the Gateway goes away and stays away
            await asyncio.sleep(0.05)
            down = svc.health()
            metrics = svc.metrics_text()
            stop.set()  # SIGTERM/SIGINT set this event in portfolio-stream
            await asyncio.wait_for(task, 10.0)  # returns although no tick will ever come
        finally:
            await feed.aclose()
        return up, upstream, down, metrics

    up, upstream, down, metrics = asyncio.run(scenario())
    assert up["broker_connected"] is True and up["status"] == "ok"
    assert upstream["broker_connected"] is False and upstream["status"] == "degraded"
    assert down["broker_connected"] is False and down["status"] == "degraded"
    assert "portfolio_stream_broker_connected 0" in metrics


def test_ibkr_disconnect_and_reconnect_keeps_producing_ticks_and_reports_the_gap() -> None:
    gw = ib_gateway()

    async def scenario() -> BrokerFeed:
        feed = ib_feed(gw)  # system clock: the adapter measures the gap in real time
        try:
            await feed.starting_book()
            stream = feed.ticks()
            await take(stream, lambda got: len(got) >= 4)
            gw.drop_connection(down_for=0.1)  # gateway restart; connects refused for 0.1 s
            await asyncio.sleep(0.01)
            assert not feed._adapter.is_connected  # type: ignore[attr-defined]
            await take(stream, lambda got: bool(feed.gaps), timeout=5.0)
            gw.push_ticks(501, last=2780.25)  # on the resubscribed line
            after = await take(stream, lambda got: any(t.price == 2780.25 for t in got))
            assert {t.symbol for t in after} >= {"SPX", "SPY", "VIX", "VIX3M"}
            await stream.aclose()
        finally:
            await feed.aclose()
        return feed

    feed = asyncio.run(scenario())
    assert len(feed.gaps) == 1 and feed.gaps[0] >= 0.09  # IbkrBroker.gap_seconds
    assert len(gw.connect_attempts) > 2
    no_orders(gw)


def test_ibkr_broker_errors_are_retried_with_backoff() -> None:
    gw = ib_gateway()

    async def scenario() -> tuple[BrokerFeed, list[Tick], int]:
        feed = ib_feed(gw, clock=SettableClock(T0), max_retry_seconds=0.05)
        got: list[Tick] = []

        async def consume() -> None:
            async for tick in feed.ticks():
                got.append(tick)

        try:
            await feed.starting_book()
            consumer = asyncio.create_task(consume())
            while len(got) < 4:
                await asyncio.sleep(0.01)
            gw.drop_connection(down_for=1.2)  # longer than the adapter's 0.5 s wait: polls fail
            while feed.failed_polls == 0:
                await asyncio.sleep(0.01)
            during = len(got)
            while feed.failed_polls and len(got) < during + 8:
                await asyncio.sleep(0.02)
                assert not consumer.done()
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        finally:
            await feed.aclose()
        return feed, got, during

    feed, got, during = asyncio.run(asyncio.wait_for(scenario(), 10.0))
    assert feed.failed_polls >= 1 and len(got) >= during + 8  # ticking again after the outage
    assert {t.symbol for t in got[during:]} == {"SPX", "SPY", "VIX", "VIX3M"}
    assert len(feed.gaps) == 1  # the adapter's gap, reported once
    no_orders(gw)


def test_ibkr_fill_shows_up_engine_rebuilt_on_position_refresh(tmp_path: Path) -> None:
    gw = ib_gateway()

    async def scenario() -> tuple[int, int, BrokerFeed]:
        feed = ib_feed(gw, clock=SettableClock(T0), positions_seconds=0.1)
        svc, _ = service(feed, tmp_path)
        feed.on_book_change = svc.start_engine  # as streaming_service.main wires it
        try:
            engine = await svc.start_engine()
            before = engine.position_count
            gw.positions.append(("U1", SPX_PM, -2.0, 980.0))  # a fill: short 2 SPXW puts

            def rebuilt() -> bool:
                return svc.engine is not None and svc.engine.position_count == 3

            await run_for(svc, 3.0, until=rebuilt)
            assert svc.engine is not None
            return before, svc.engine.position_count, feed
        finally:
            await feed.aclose()

    before, after, feed = asyncio.run(scenario())
    assert (before, after) == (2, 3)
    assert "SPX|OPT|SPXW|2018-03-16|2650|P" in feed.last_quotes
    no_orders(gw)


class Recording:
    """Records every method the feed calls on the adapter."""

    def __init__(self, inner: IbkrBroker) -> None:
        self._inner = inner
        self.name = inner.name
        self.called: list[str] = []

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not callable(value):
            return value

        def record(*args: Any, **kwargs: Any) -> Any:
            self.called.append(attr)
            return value(*args, **kwargs)

        return record


def test_feed_never_stages_or_transmits() -> None:
    gw = ib_gateway()
    recording = Recording(adapter(gw, clock=SettableClock(T0)))

    async def scenario() -> None:
        feed = BrokerFeed(recording, ["U1"], instruments(), poll_seconds=0.01, positions_seconds=0.05)
        try:
            await feed.starting_book()
            stream = feed.ticks()
            gw.positions.append(("U1", SPX_PM, -2.0, 980.0))  # refresh sees it; no hook: logged only
            await take(stream, lambda got: len(got) >= 40)
            await stream.aclose()
        finally:
            await feed.aclose()

    asyncio.run(scenario())
    assert set(recording.called) == {"__aenter__", "__aexit__", "account_snapshot", "positions", "quotes"}
    assert recording.called.count("positions") >= 2  # periodic refresh ran
    no_orders(gw)


# --------------------------------------------------------------------------- Tastytrade


SPXW_KEY = "SPX|OPT|SPXW|2018-02-16|2700|P"


def test_tastytrade_ticks_for_the_held_positions_and_stale_greeks_flag_the_option() -> None:
    clock = SettableClock(T0)

    async def scenario() -> tuple[list[Tick], list[Tick], BrokerFeed, FakeTasty, FakeDXLink]:
        async with FakeDXLink(
            quotes={SPXW_PUT_DX: ("25.0", "26.0"), ES_PUT_DX: ("12.0", "12.5"), "SPX": ("2761.5", "2762.5"),
                    "SPY": ("262.4", "262.6"), "VIX": ("17.2", "17.4"), "VIX3M": ("18.0", "18.2")},
            greeks={SPXW_PUT_DX: GOOD_GREEKS, ES_PUT_DX: GOOD_GREEKS},
        ) as dx:
            fake = FakeTasty(dxlink_url=dx.url)
            broker = TastytradeAdapter(
                TastytradeConnection(), instruments(), [ACCOUNT], clock=clock, transport=fake.transport(),
                environ=ENV, retry=replace(BROKER_HTTP, initial=0.0), stale_after=5.0, quote_wait=0.3,
                watchdog_interval=0.05,
            )
            feed = BrokerFeed(broker, [ACCOUNT], instruments(), poll_seconds=0.02)
            try:
                book = await feed.starting_book()
                spxw = next(q for q in book.quotes if q.contract.key == "SPX|OPT|SPXW|2018-02-16|2700|P")
                assert (spxw.delta, spxw.iv, spxw.mark) == (-0.31, 0.21, 25.5)
                held = {p.contract.key: p.underlying_price for p in book.positions}
                assert held == {"SPX|OPT|SPXW|2018-02-16|2700|P": 2762.0, "SPY|STK": 262.5}
                stream = feed.ticks()
                first = await take(stream, lambda got: len(got) >= 4)
                # the SPX tick waits for the SPXW put's Greeks, so the first poll may be partial
                more = await take(stream, lambda got: "SPX" in {t.symbol for t in got})
                dx.greeks[SPXW_PUT_DX] = NAN_GREEKS  # dxfeed sends NaN; the SDK drops the events
                # ... until the adapter's watchdog calls it stale. A good Greeks event still in
                # flight when the clock moves is stamped with the new time, so on a busy machine
                # the clock moves on again (6 s per real second) until the watchdog flags it.
                clock.set(T0 + timedelta(seconds=6))
                moved = [time.monotonic()]

                def flagged(got: list[Tick]) -> bool:
                    if SPXW_KEY not in feed.flagged_options and time.monotonic() - moved[0] > 1.0:
                        clock.set(clock() + timedelta(seconds=6))
                        moved[0] = time.monotonic()
                    return (SPXW_KEY in feed.flagged_options
                            and "SPX" in {t.symbol for t in got[-4:]} and len(got) >= 8)

                later = await take(stream, flagged)
                await stream.aclose()
            finally:
                await feed.aclose()
            return [*first, *more], later, feed, fake, dx

    ticks, later, feed, fake, dx = asyncio.run(scenario())
    prices = {t.symbol: t.price for t in ticks}
    assert prices == pytest.approx({"SPX": 2762.0, "SPY": 262.5, "VIX": 17.3, "VIX3M": 18.1})
    assert "ES" in feed.excluded_roots  # no DXLink symbol for the unheld /ESH8: not monitored, logged
    assert "NaN broker Greeks" in feed.flagged_options[SPXW_KEY] and feed.stale_roots == {}
    assert "SPX" in {t.symbol for t in later[-4:]}  # one option's stale Greeks never freeze SPX
    assert "SPX" not in feed.stale_roots
    assert dx.subscribed("Greeks") >= {SPXW_PUT_DX}
    assert not [r for r in fake.requests if "/orders" in r.path]  # no dry run, no order, no delete

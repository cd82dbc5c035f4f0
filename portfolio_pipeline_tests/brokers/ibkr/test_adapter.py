"""IbkrBroker against the fake gateway: the real ib_async request/response code runs."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, date, datetime

import pytest
from ib_async import CommissionReport
from ib_async.util import UNSET_DOUBLE

from portfolio_pipeline.brokers.base import BrokerAdapter, BrokerError
from portfolio_pipeline.domain.errors import (
    IllegalTransitionError,
    MultiplierMismatchError,
    UnknownInstrumentError,
)
from portfolio_pipeline.domain.orders import OrderLeg, OrderStatus
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline_tests.brokers.ibkr import book
from portfolio_pipeline_tests.brokers.ibkr.book import (
    ES_PUT,
    SPX_PUT,
    SPXW_PUT,
    SPY_STK,
    T0,
    adapter,
    gateway,
    order,
    run,
)
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import (
    FakeGateway,
    Greeks,
    MarketScript,
    execution,
    ib_option,
)

ADAPTER_LOGGER = "portfolio_pipeline.brokers.ibkr"


# ----------------------------------------------------------------------------- connection


def test_connect_configures_sdk_and_lists_accounts() -> None:
    gw = gateway()

    async def scenario() -> list[str]:
        broker = adapter(gw)
        assert isinstance(broker, BrokerAdapter)
        async with broker:
            ib = gw.clients[0].ib
            assert ib.RaiseRequestErrors is True
            return await broker.account_ids()

    assert run(scenario) == ["U1", "U2"]
    assert gw.market_data_types == [3]  # "delayed"
    assert gw.connect_attempts == [17]


def test_client_id_in_use_tries_the_next_id() -> None:
    gw = gateway()
    gw.client_ids_in_use = {17, 18}

    async def scenario() -> int:
        async with adapter(gw, timeout=5.0) as broker:  # 326 is detected long before 5 s
            return broker.client_id

    assert run(scenario) == 19
    assert gw.connect_attempts == [17, 18, 19]


def test_request_that_never_answers_times_out_naming_the_request() -> None:
    gw = gateway()

    async def scenario() -> None:
        async with adapter(gw, timeout=0.2) as broker:
            gw.silent = {"reqPositions"}
            await broker.positions("U1")

    with pytest.raises(BrokerError, match=r"reqPositions timed out after 0\.2s"):
        run(scenario)


# ----------------------------------------------------------------------------- positions


def test_positions_are_normalised_once() -> None:
    gw = gateway()

    async def scenario() -> list:
        async with adapter(gw) as broker:
            return await broker.positions("U1")

    positions = {p.contract.key: p for p in run(scenario)}
    assert set(positions) == {
        "SPX|OPT|SPX|2018-03-16|2700|P",
        "SPX|OPT|SPXW|2018-03-16|2650|P",
        "ES|FOP|EW|2018-02-09|2600|P|2018-03-16",
        "SPY|STK",
    }
    spx = positions["SPX|OPT|SPX|2018-03-16|2700|P"]
    assert (spx.quantity, spx.multiplier, spx.broker, spx.account_id) == (-1.0, 100.0, "ibkr", "U1")
    assert spx.source == "ibkr:U1:SPX   180316P02700000"
    spxw = positions["SPX|OPT|SPXW|2018-03-16|2650|P"]
    assert spxw.contract.underlying == "SPX" and spxw.contract.trading_class == "SPXW"
    assert spxw.key != spx.key  # PM weekly and AM monthly never merge
    es = positions["ES|FOP|EW|2018-02-09|2600|P|2018-03-16"]
    assert (es.quantity, es.multiplier) == (10.0, 50.0)
    assert es.contract.underlying_expiry == date(2018, 3, 16)  # from the underlying conId
    spy = positions["SPY|STK"]
    assert (spy.quantity, spy.multiplier, spy.avg_price, spy.mark) == (-100.0, 1.0, 270.5, 275.0)
    assert all(p.as_of.tzinfo is not None for p in positions.values())


def test_avg_cost_includes_the_multiplier_but_market_price_does_not() -> None:
    gw = gateway()

    async def scenario() -> list:
        async with adapter(gw) as broker:
            return await broker.positions("U1")

    positions = {p.contract.key: p for p in run(scenario)}
    spx = positions["SPX|OPT|SPX|2018-03-16|2700|P"]
    assert spx.avg_price == pytest.approx(15.235)  # 1523.5 / 100, not 1523.5
    assert spx.mark == pytest.approx(12.3)  # marketPrice is per share already
    assert spx.cost_basis == pytest.approx(-1523.5)
    assert spx.unrealized_pnl == pytest.approx(-1 * (12.3 - 15.235) * 100)
    es = positions["ES|FOP|EW|2018-02-09|2600|P|2018-03-16"]
    assert es.avg_price == pytest.approx(45.0)  # 2250 / 50
    assert es.market_value == pytest.approx(41.0 * 10 * 50)


@pytest.mark.parametrize(
    ("multiplier", "trading_class", "error", "words"),
    [
        ("10", "SPY", MultiplierMismatchError, ["ibkr:U1:SPY7", "multiplier", "10"]),
        ("10", "2SPY", UnknownInstrumentError, ["U1", "SPY7", "2SPY"]),
    ],
)
def test_mini_or_adjusted_option_unknown_to_the_table_is_a_clear_error(
    multiplier: str, trading_class: str, error: type[Exception], words: list[str]
) -> None:
    gw = gateway()
    mini = gw.add_contract(
        ib_option(601, "SPY", "20180316", 270, "C", trading_class, multiplier=multiplier, local_symbol="SPY7")
    )
    gw.positions.append(("U1", mini, 3.0, 120.0))
    gw.portfolio_prices[601] = 12.0

    async def scenario() -> list:
        async with adapter(gw) as broker:
            return await broker.positions("U1")

    with pytest.raises(error) as info:
        run(scenario)
    for word in words:
        assert word in str(info.value)


# ----------------------------------------------------------------------------- quotes


def test_quotes_carry_model_greeks_per_share() -> None:
    gw = gateway()

    async def scenario() -> list:
        async with adapter(gw) as broker:
            return await broker.quotes([SPX_PUT, SPY_STK, ES_PUT, Contract("SPX", "IND")])

    spx, spy, es, index = run(scenario)
    assert (spx.bid, spx.ask, spx.mark) == (12.1, 12.5, pytest.approx(12.3))
    assert (spx.iv, spx.delta, spx.gamma, spx.vega, spx.theta) == (0.21, -0.31, 0.0011, 2.7, -0.9)
    assert spx.underlying_price == 2762.13
    assert spy.delta is None and spy.mark == pytest.approx(275.0)
    assert es.delta == -0.28 and es.contract.underlying_expiry == date(2018, 3, 16)
    assert index.bid == index.ask == index.mark == 2762.13  # index: no book, last price
    ticks = {args[1]: args[2] for args in gw.requests_named("reqMktData")}
    assert ticks[101] == "106" and ticks[401] == ""


def test_sentinel_greeks_become_nan_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    gw = gateway()
    gw.market[101] = MarketScript(
        bid=12.1,
        ask=12.5,
        greeks=Greeks(
            implied_vol=None,  # -1 on the wire
            delta=None,  # -2 on the wire
            gamma=UNSET_DOUBLE,
            vega=-999.0,
            theta=None,  # -2 on the wire: ib_async passes it through as -2
            und_price=None,
        ),
    )

    async def scenario() -> list:
        async with adapter(gw) as broker:
            return await broker.quotes([SPX_PUT])

    with caplog.at_level(logging.WARNING, logger=ADAPTER_LOGGER):
        (quote,) = run(scenario)
    for value in (quote.iv, quote.delta, quote.gamma, quote.vega, quote.theta, quote.underlying_price):
        assert value is not None and math.isnan(value)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for field in ("impliedVol", "delta", "gamma", "vega", "theta", "undPrice"):
        assert any(field in m and "SPX|OPT|SPX|2018-03-16|2700|P" in m and "NaN" in m for m in warned), field


def test_late_greeks_are_waited_for() -> None:
    gw = gateway()
    gw.market[102] = MarketScript(bid=8.0, ask=8.2, greeks=Greeks(delta=-0.22), greeks_delay=0.05)
    first_update_had_greeks: list[bool] = []

    async def scenario() -> list:
        async with adapter(gw) as broker:
            ib = gw.clients[0].ib

            def on_pending(tickers: set) -> None:
                for t in tickers:
                    if t.contract.conId == 102 and not first_update_had_greeks:
                        first_update_had_greeks.append(t.modelGreeks is not None)

            ib.pendingTickersEvent += on_pending
            return await broker.quotes([SPXW_PUT])

    (quote,) = run(scenario)
    assert first_update_had_greeks == [False]  # the first ticker update had bid/ask only
    assert quote.delta == -0.22 and quote.bid == 8.0


def test_missing_greeks_after_timeout_are_nan_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    gw = gateway()
    gw.market[102] = MarketScript(bid=8.0, ask=8.2)

    async def scenario() -> list:
        async with adapter(gw, timeout=0.1) as broker:
            return await broker.quotes([SPXW_PUT])

    with caplog.at_level(logging.WARNING, logger=ADAPTER_LOGGER):
        (quote,) = run(scenario)
    assert quote.delta is not None and math.isnan(quote.delta)
    assert any("model Greeks not received" in r.getMessage() for r in caplog.records)


def test_error_200_names_the_contract() -> None:
    gw = gateway()
    unknown = Contract("SPX", "OPT", date(2018, 3, 16), 9999.0, "C", "SPXW")

    async def scenario() -> None:
        async with adapter(gw) as broker:
            await broker.quotes([unknown])

    with pytest.raises(BrokerError, match=r"no security definition for SPX\|OPT\|SPXW\|2018-03-16\|9999\|C"):
        run(scenario)


def test_gateway_restart_reconnects_resubscribes_and_reports_the_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = gateway()

    async def scenario() -> tuple:
        async with adapter(gw) as broker:
            await broker.quotes([SPX_PUT, SPY_STK])
            before = len(gw.requests_named("reqMktData"))
            gw.drop_connection(down_for=0.08)
            assert not broker.is_connected and broker.last_disconnect is not None
            with pytest.raises(BrokerError):
                await broker.wait_connected(timeout=0.01)
            await broker.wait_connected(timeout=3.0)
            restored = gw.requests_named("reqMktData")[before:]
            gw.push_ticks(401, bid=280.0, ask=280.1)
            await asyncio.sleep(0.01)  # the packet arrives on the resubscribed line
            spy = (await broker.quotes([SPY_STK]))[0]
            return restored, spy, broker.gap_seconds, broker.reconnect_count

    with caplog.at_level(logging.WARNING, logger=ADAPTER_LOGGER):
        restored, spy, gap, count = run(scenario)
    assert sorted(args[1] for args in restored) == [101, 401]
    assert gw.market_data_types == [3, 3]  # market data type set again after reconnect
    assert len(gw.connect_attempts) > 2  # refused while the gateway was down, with backoff
    assert count == 1
    assert gap is not None and gap >= 0.07
    assert spy.bid == 280.0
    messages = [r.getMessage() for r in caplog.records]
    assert any("connection to" in m and "lost" in m for m in messages)
    assert any("market data gap of" in m and "2 market-data subscription(s) restored" in m for m in messages)


def test_gateway_connectivity_loss_1100_then_1101_resubscribes(caplog: pytest.LogCaptureFixture) -> None:
    gw = gateway()

    async def scenario() -> tuple:
        async with adapter(gw) as broker:
            await broker.quotes([SPX_PUT])
            before = len(gw.requests_named("reqMktData"))
            gw.system_message(1100, "Connectivity between IB and Trader Workstation has been lost.")
            await asyncio.sleep(0.03)
            gw.system_message(1101, "Connectivity restored - data lost.")
            await asyncio.sleep(0.02)
            return gw.requests_named("reqMktData")[before:], broker.gap_seconds

    with caplog.at_level(logging.WARNING, logger=ADAPTER_LOGGER):
        restored, gap = run(scenario)
    assert [args[1] for args in restored] == [101]
    assert gap is not None and gap >= 0.02
    assert any("market data gap of" in r.getMessage() and "1101" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- account


def test_account_snapshot_filters_currency_and_reads_daily_pnl() -> None:
    gw = gateway()

    async def scenario():
        async with adapter(gw) as broker:
            return await broker.account_snapshot("U1")

    snap = run(scenario)
    assert (snap.nlv, snap.cash) == (1000000.5, 250000.0)  # not the EUR rows
    assert (snap.init_margin, snap.maint_margin) == (120000.0, 100000.0)
    assert (snap.excess_liquidity, snap.buying_power) == (900000.0, 3600000.0)
    assert snap.broker_daily_pnl == -4321.0 and snap.currency == "USD"


def test_account_snapshot_without_pnl_and_with_model_code() -> None:
    gw = gateway()
    gw.daily_pnl.clear()
    tags = ("NetLiquidation", "TotalCashValue", "InitMarginReq", "MaintMarginReq", "ExcessLiquidity", "BuyingPower")
    gw.account_values_multi += [("U1", "GROWTH", t, "10", "USD") for t in tags]
    gw.account_values_multi += [("U1", "INCOME", t, "99", "USD") for t in tags]

    async def scenario():
        from portfolio_pipeline.brokers.ibkr import IbkrBroker
        from portfolio_pipeline.domain.accounts import AccountConfig
        from portfolio_pipeline_tests.stubs import instruments

        account = AccountConfig(
            name="model", broker="ibkr", account_id="U1", model_code="GROWTH", ibkr=book.connection()
        )
        async with IbkrBroker(account, instruments(), ib_factory=gw.make_ib, pnl_wait_seconds=0.05) as broker:
            return await broker.account_snapshot("U1")

    snap = run(scenario)
    assert snap.nlv == 10.0 and snap.broker_daily_pnl is None


# ----------------------------------------------------------------------------- activity


def test_executions_carry_commissions_and_signed_quantities() -> None:
    gw = gateway()
    when = datetime(2018, 2, 2, 15, 30, tzinfo=UTC)
    gw.executions += [
        (book.SPX_AM, execution("e1", "U1", "SLD", 1, 15.235, when=when, order_ref="ord-1"),
         CommissionReport(execId="e1", commission=1.32, currency="USD")),
        (book.ES_FOP, execution("e2", "U1", "BOT", 10, 45.0, when=when),
         CommissionReport(execId="e2", commission=22.5, currency="USD")),
        (book.SPY, execution("e3", "U2", "BOT", 50, 260.0, when=when),
         CommissionReport(execId="e3", commission=1.0, currency="USD")),
    ]

    async def scenario():
        async with adapter(gw) as broker:
            return await broker.executions("U1", date(2018, 2, 1)), await broker.cash_flows("U1", date(2018, 2, 1))

    executions, flows = run(scenario)
    assert flows == []  # the live API has no cash flows: Flex import covers them
    assert [(e.exec_id, e.quantity, e.commission, e.multiplier) for e in executions] == [
        ("e1", -1.0, 1.32, 100.0),
        ("e2", 10.0, 22.5, 50.0),
    ]
    assert executions[0].order_ref == "ord-1" and executions[0].ts == when
    assert executions[1].contract.underlying_expiry == date(2018, 3, 16)
    (flt,) = [args[1] for args in gw.requests_named("reqExecutions") if args[1].acctCode]
    assert flt.time == "20180201-00:00:00"


def test_option_chain_for_a_trading_class() -> None:
    gw = gateway()

    async def scenario():
        async with adapter(gw) as broker:
            return await broker.option_chain("SPX", "SPXW"), await broker.option_chain("SPX")

    weekly, monthly = run(scenario)
    assert (weekly.trading_class, weekly.multiplier, weekly.exchange) == ("SPXW", 100.0, "SMART")
    assert weekly.expiries == (date(2018, 2, 9), date(2018, 2, 16), date(2018, 3, 16))
    assert monthly.trading_class == "SPX" and monthly.strikes == (2600.0, 2650.0, 2700.0)


# ----------------------------------------------------------------------------- orders


def test_what_if_returns_margin_commission_and_every_warning() -> None:
    gw = gateway()
    gw.whatif.warning_text = "Your order will be held until the market opens"
    gw.whatif.messages = [(2109, "Order Event Warning: Attribute 'Outside Regular Trading Hours' is ignored")]
    spread = order(OrderLeg(SPX_PUT, "BUY"), OrderLeg(SPXW_PUT, "SELL", ratio=2), limit=-1.5)

    async def scenario():
        async with adapter(gw) as broker:
            return await broker.what_if(spread)

    result = run(scenario)
    assert (result.init_margin_change, result.maint_margin_change) == (12500.0, 10000.0)
    assert result.commission == 1.32 and result.equity_with_loan_after == 98765.0
    assert result.warnings[0] == "Your order will be held until the market opens"
    assert any("2109" in w and "Outside Regular Trading Hours" in w for w in result.warnings)
    assert gw.placed == []  # a WhatIf never places an order
    (_, bag), = [(a[0], a[1]) for a in gw.requests_named("whatIfOrder")]
    assert bag.secType == "BAG" and bag.symbol == "SPX"
    assert [(leg.conId, leg.ratio, leg.action) for leg in bag.comboLegs] == [(101, 1, "BUY"), (102, 2, "SELL")]


def test_stage_places_with_transmit_false_and_never_transmits() -> None:
    gw = gateway()
    gw.stage_messages = [(399, "Order Message: Warning: your order size is large")]

    async def scenario():
        async with adapter(gw) as broker:
            return await broker.stage(order())

    staged = run(scenario)
    assert len(gw.placed) == 1
    order_id, contract, sent = gw.placed[0]
    assert sent.transmit is False and sent.orderRef == "ord-1" and sent.account == "U1"
    assert (sent.action, sent.totalQuantity, sent.lmtPrice, contract.conId) == ("BUY", 1.0, 12.0, 101)
    assert staged.broker_order_id == str(order_id) and staged.order_id == "ord-1"
    assert staged.whatif.init_margin_change == 12500.0
    assert any("399" in w and "order size is large" in w for w in staged.whatif.warnings)
    assert staged.staged_at.tzinfo is not None


def test_stage_rejected_by_the_broker_raises() -> None:
    gw = gateway()
    gw.reject_orders = [(201, "Order rejected - reason: insufficient margin")]

    async def scenario():
        async with adapter(gw) as broker:
            await broker.stage(order())

    with pytest.raises(BrokerError, match="insufficient margin"):
        run(scenario)


def _confirmed(staged_order, broker_order_id: str, whatif):
    at = T0
    o = staged_order.transition(
        OrderStatus.STAGED, actor="test", at=at, whatif=whatif, broker_order_id=broker_order_id
    )
    o = o.show(token="secret-token", actor="person", at=at)
    return o


@pytest.mark.parametrize("status", ["staged", "shown"])
def test_transmit_refuses_an_order_that_is_not_confirmed(status: str) -> None:
    gw = gateway()

    async def scenario() -> None:
        async with adapter(gw) as broker:
            staged = await broker.stage(order())
            o = order().transition(
                OrderStatus.STAGED, actor="t", at=T0, whatif=staged.whatif,
                broker_order_id=staged.broker_order_id,
            )
            if status == "shown":
                o = o.show(token="secret-token", actor="person", at=T0)
            await broker.transmit(o)

    with pytest.raises(IllegalTransitionError, match="transmit needs a confirmed order"):
        run(scenario)
    assert [sent.transmit for _, _, sent in gw.placed] == [False]


def test_transmit_sends_a_confirmed_order_under_the_same_order_id() -> None:
    gw = gateway()

    async def scenario() -> tuple[str, str]:
        async with adapter(gw) as broker:
            staged = await broker.stage(order())
            assert staged.broker_order_id is not None
            shown = _confirmed(order(), staged.broker_order_id, staged.whatif)
            confirmed = shown.confirm(token="secret-token", actor="person", at=T0)
            return staged.broker_order_id, await broker.transmit(confirmed)

    staged_id, sent_id = run(scenario)
    assert staged_id == sent_id
    assert [(oid, sent.transmit) for oid, _, sent in gw.placed] == [(int(staged_id), False), (int(staged_id), True)]


def test_cancel_a_staged_order() -> None:
    gw = gateway()

    async def scenario() -> None:
        async with adapter(gw) as broker:
            staged = await broker.stage(order())
            o = order().transition(
                OrderStatus.STAGED, actor="t", at=T0, whatif=staged.whatif,
                broker_order_id=staged.broker_order_id,
            )
            await broker.cancel(o)

    run(scenario)
    assert len(gw.requests_named("cancelOrder")) == 1
    assert all(not sent.transmit for _, _, sent in gw.placed)


def test_stage_refuses_an_order_past_proposed() -> None:
    gw = FakeGateway()

    async def scenario() -> None:
        broker = adapter(gw)
        o = order().transition(OrderStatus.REJECTED, actor="t", at=T0)
        await broker.stage(o)

    with pytest.raises(IllegalTransitionError):
        run(scenario)
    assert gw.placed == []

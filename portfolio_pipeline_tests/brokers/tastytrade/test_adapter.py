"""TastytradeAdapter at the wire boundary: the real SDK runs against FakeTasty/FakeDXLink."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import Any, TypeVar

import pytest

from portfolio_pipeline.brokers.base import BrokerAdapter, BrokerDataError, BrokerError
from portfolio_pipeline.brokers.tastytrade import TastytradeAdapter
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.domain.accounts import TastytradeConnection
from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.retry import BROKER_HTTP
from portfolio_pipeline_tests.brokers.tastytrade.fake_tasty import (
    ACCOUNT,
    CLIENT_SECRET,
    ENV,
    ES_PUT_DX,
    REFRESH_TOKEN,
    SPXW_PUT,
    SPXW_PUT_DX,
    FakeDXLink,
    FakeTasty,
    position_json,
    transaction_json,
)
from portfolio_pipeline_tests.stubs import T0, instruments

T = TypeVar("T")
LIVE_ORDERS = f"/accounts/{ACCOUNT}/orders"
DRY_RUN = f"/accounts/{ACCOUNT}/orders/dry-run"
SPXW_CONTRACT = Contract("SPX", "OPT", date(2018, 2, 16), 2700.0, "P", "SPXW")  # held short 1
HEDGE_CONTRACT = Contract("SPX", "OPT", date(2018, 2, 16), 2650.0, "P", "SPXW")  # not held
HEDGE_OCC = "SPXW  180216P02650000"

GOOD_GREEKS = {"price": "25.5", "volatility": "0.21", "delta": "-0.31", "gamma": "0.0021",
               "theta": "-1.52", "rho": "-0.1", "vega": "2.45"}
NAN_GREEKS = dict.fromkeys(GOOD_GREEKS, "NaN")


def adapter(fake: FakeTasty, clock: SettableClock | None = None, **kwargs: Any) -> TastytradeAdapter:
    kwargs.setdefault("environ", ENV)
    kwargs.setdefault("retry", replace(BROKER_HTTP, initial=0.0))
    return TastytradeAdapter(
        TastytradeConnection(), instruments(), [ACCOUNT], clock=clock or SettableClock(T0),
        transport=fake.transport(), **kwargs,
    )


def run_with(fake: FakeTasty, body: Callable[[TastytradeAdapter], Awaitable[T]], **kwargs: Any) -> T:
    async def main() -> T:
        async with adapter(fake, **kwargs) as broker:
            return await body(broker)

    return asyncio.run(main())


def hedge(status: OrderStatus = OrderStatus.PROPOSED, *, contract: Contract = HEDGE_CONTRACT,
          quantity: int = 2, **changes: Any) -> Order:
    order = Order(
        order_id="ord-1", broker="tastytrade", account_id=ACCOUNT,
        legs=(OrderLeg(contract, "BUY"),), quantity=quantity, limit_price=26.0, created_at=T0,
    )
    return replace(order, status=status, **changes)


# --------------------------------------------------------------------------- protocol


def test_adapter_satisfies_the_protocol() -> None:
    broker = adapter(FakeTasty())
    assert isinstance(broker, BrokerAdapter)
    assert broker.name == "tastytrade"


# --------------------------------------------------------------------------- positions


def test_positions_signed_from_direction_with_table_multipliers() -> None:
    fake = FakeTasty()
    positions = run_with(fake, lambda b: b.positions(ACCOUNT))
    by_key = {p.contract.underlying + p.contract.sec_type: p for p in positions}
    spx, es, spy = by_key["SPXOPT"], by_key["ESFOP"], by_key["SPYSTK"]

    assert (spx.quantity, spx.multiplier, spx.contract.trading_class) == (-1.0, 100.0, "SPXW")
    assert (spx.avg_price, spx.mark) == (20.0, 26.0)
    assert spx.contract.expiry == date(2018, 2, 16) and spx.contract.right == "P"

    assert (es.quantity, es.multiplier, es.contract.trading_class) == (10.0, 50.0, "EW")
    assert es.contract.expiry == date(2018, 2, 9)
    assert es.contract.underlying_expiry == date(2018, 3, 16)  # from /instruments/futures/ESH8
    assert es.mark == 12.5

    assert (spy.quantity, spy.multiplier, spy.mark) == (-100.0, 1.0, 262.5)
    assert all(p.broker == "tastytrade" and p.as_of == T0 for p in positions)
    assert fake.seen("GET", f"/accounts/{ACCOUNT}/positions")[0].query["include-marks"] == ["true"]


def test_multiplier_mismatch_names_symbol() -> None:
    fake = FakeTasty(positions=[position_json(SPXW_PUT, "Equity Option", "SPX", "1", "Short", "10")])
    with pytest.raises(BrokerDataError, match=r"SPXW  180216P02700000.*multiplier 10\.0") as info:
        run_with(fake, lambda b: b.positions(ACCOUNT))
    assert "instruments.yaml" in str(info.value)


def test_unknown_root_is_a_clear_error() -> None:
    fake = FakeTasty(positions=[
        position_json("ZZZW  180216P02700000", "Equity Option", "ZZZ", "1", "Long", "100"),
    ])
    with pytest.raises(BrokerDataError, match=r"ZZZW.*unknown option trading class 'ZZZW'"):
        run_with(fake, lambda b: b.positions(ACCOUNT))


def test_malformed_position_item_names_field_and_item() -> None:
    bad = position_json("SPY", "Equity", "SPY", "abc", "Long", "1")
    fake = FakeTasty(positions=[*FakeTasty().positions, bad])
    with pytest.raises(BrokerDataError, match=r"positions item 3 \(symbol 'SPY'\): field 'quantity'"):
        run_with(fake, lambda b: b.positions(ACCOUNT))
    sideways = position_json("SPY", "Equity", "SPY", "5", "Sideways", "1")
    with pytest.raises(BrokerDataError, match=r"SPY.*quantity-direction.*Sideways"):
        run_with(FakeTasty(positions=[sideways]), lambda b: b.positions(ACCOUNT))


# --------------------------------------------------------------------------- balances


def test_balances_decimal_to_float() -> None:
    snap = run_with(FakeTasty(), lambda b: b.account_snapshot(ACCOUNT))
    assert snap.nlv == 1012345.67 and type(snap.nlv) is float
    assert snap.cash == 250000.125
    assert snap.maint_margin == 180000.5
    assert snap.init_margin == 200000.25
    assert snap.excess_liquidity == 832345.17
    assert snap.buying_power == 700000.75
    assert all(type(getattr(snap, f)) is float for f in
               ("nlv", "cash", "init_margin", "maint_margin", "excess_liquidity", "buying_power"))
    assert snap.as_of == T0


def test_malformed_json_is_a_data_error() -> None:
    fake = FakeTasty()
    fake.raw_bodies[f"GET /accounts/{ACCOUNT}/balances/USD"] = b'{"data": {"net-liq'
    with pytest.raises(BrokerDataError, match=r"balances/USD: response is not valid JSON"):
        run_with(fake, lambda b: b.account_snapshot(ACCOUNT))


def test_missing_balance_field_is_a_data_error() -> None:
    fake = FakeTasty()
    del fake.balance["net-liquidating-value"]
    with pytest.raises(BrokerDataError, match=r"balances/USD: field 'net-liquidating-value'"):
        run_with(fake, lambda b: b.account_snapshot(ACCOUNT))


# --------------------------------------------------------------------------- retries


def test_500_twice_then_200_succeeds_once() -> None:
    fake = FakeTasty()
    path = f"/accounts/{ACCOUNT}/balances/USD"
    fake.failures[f"GET {path}"] = [500, 503]
    snap = run_with(fake, lambda b: b.account_snapshot(ACCOUNT))
    assert snap.nlv == 1012345.67
    assert len(fake.seen("GET", path)) == 3


def test_persistent_500_is_a_broker_error_naming_the_request() -> None:
    fake = FakeTasty()
    path = f"/accounts/{ACCOUNT}/balances/USD"
    fake.failures[f"GET {path}"] = [500, 500, 500, 500]
    with pytest.raises(BrokerError, match=rf"GET {path} rejected"):
        run_with(fake, lambda b: b.account_snapshot(ACCOUNT))
    assert len(fake.seen("GET", path)) == 3  # bounded


def test_live_order_post_is_never_repeated() -> None:
    fake = FakeTasty()
    fake.failures[f"POST {LIVE_ORDERS}"] = [500]
    with pytest.raises(BrokerError, match=rf"POST {LIVE_ORDERS} rejected"):
        run_with(fake, lambda b: b.transmit(hedge(OrderStatus.CONFIRMED)))
    assert len(fake.seen("POST", LIVE_ORDERS)) == 1


# --------------------------------------------------------------------------- activity


def test_executions_from_transaction_history() -> None:
    fake = FakeTasty()
    execs = run_with(fake, lambda b: b.executions(ACCOUNT, date(2018, 1, 1)))
    by_id = {e.exec_id: e for e in execs}
    assert set(by_id) == {"101", "102", "103", "104"}
    sold = by_id["101"]
    assert (sold.kind, sold.quantity, sold.price, sold.multiplier) == ("trade", -1.0, 20.0, 100.0)
    assert sold.commission == 1.0 and sold.fees == pytest.approx(0.65)
    assert sold.order_ref == "9001" and sold.ts.utcoffset() == timedelta(0)
    es = by_id["102"]
    assert (es.contract.underlying, es.contract.trading_class, es.multiplier, es.quantity) == (
        "ES", "EW", 50.0, 10.0)
    assert by_id["103"].kind == "expiry" and by_id["103"].price == 0.0
    assigned = by_id["104"]
    assert assigned.kind == "assignment" and assigned.contract.trading_class == "SPX"
    assert assigned.cash_effect == pytest.approx(-5000.0)  # cash-settled, price from value
    query = fake.seen("GET", f"/accounts/{ACCOUNT}/transactions")[0].query
    assert query["start-date"] == ["2018-01-01"]


def test_cash_flows_from_money_movements() -> None:
    flows = run_with(FakeTasty(), lambda b: b.cash_flows(ACCOUNT, date(2018, 1, 1)))
    assert [(f.kind, f.amount) for f in flows] == [
        ("deposit", 10000.0), ("withdrawal", -2500.0), ("dividend", 35.5)]
    assert [f.is_external for f in flows] == [True, True, False]



def test_unmapped_transaction_type_is_refused_not_guessed() -> None:
    fake = FakeTasty()
    fake.transactions.append(transaction_json(108, "Receive Deliver", "Forward Split"))
    for call in (lambda b: b.executions(ACCOUNT, date(2018, 1, 1)),
                 lambda b: b.cash_flows(ACCOUNT, date(2018, 1, 1))):
        with pytest.raises(BrokerDataError, match=r"transaction 108.*'Forward Split'"):
            run_with(fake, call)


# --------------------------------------------------------------------------- chains


def test_option_chains_equity_and_futures() -> None:
    async def body(b: TastytradeAdapter) -> Any:
        return (await b.option_chain("SPX", "SPXW"), await b.option_chain("SPX"),
                await b.option_chain("ES", "EW"))

    spxw, spx, ew = run_with(FakeTasty(), body)
    assert spxw.expiries == (date(2018, 2, 9), date(2018, 2, 16))
    assert spxw.strikes == (2650.0, 2700.0, 2725.0) and spxw.multiplier == 100.0
    assert spx.trading_class == "SPX" and spx.expiries == (date(2018, 2, 16), date(2018, 3, 16))
    assert ew.trading_class == "EW" and ew.multiplier == 50.0
    assert ew.expiries == (date(2018, 2, 9), date(2018, 2, 16))  # EW1, EW2; not ES quarterly


# --------------------------------------------------------------------------- orders


def test_what_if_is_a_dry_run_with_margin_fees_and_warnings() -> None:
    fake = FakeTasty()
    result = run_with(fake, lambda b: b.what_if(hedge()))
    assert result.init_margin_change == 5325.5 == result.maint_margin_change
    assert result.commission == pytest.approx(1.74)
    assert result.warnings == (
        "tif_next_valid_sesssion: Your order will begin working during next valid session.",
        "margin_check: This order increases your margin requirement.",
    )
    (sent,) = fake.seen("POST", DRY_RUN)
    body = sent.json()
    assert body["price"] == "26.0" and body["price-effect"] == "Debit"
    assert body["legs"] == [{"instrument-type": "Equity Option", "symbol": HEDGE_OCC,
                             "action": "Buy to Open", "quantity": 2}]
    assert fake.seen("POST", LIVE_ORDERS) == []


def test_buying_back_a_held_short_closes_it_and_overclosing_is_refused() -> None:
    fake = FakeTasty()
    run_with(fake, lambda b: b.what_if(hedge(contract=SPXW_CONTRACT, quantity=1)))
    assert fake.seen("POST", DRY_RUN)[0].json()["legs"][0]["action"] == "Buy to Close"
    with pytest.raises(BrokerError, match="would close 1 and open the rest"):
        run_with(fake, lambda b: b.what_if(hedge(contract=SPXW_CONTRACT, quantity=2)))
    assert len(fake.seen("POST", DRY_RUN)) == 1


def test_stage_sends_nothing_to_the_live_orders_path() -> None:
    fake = FakeTasty()

    async def body(b: TastytradeAdapter) -> Any:
        staged = await b.stage(hedge())
        return staged, b.staged()

    staged, held = run_with(fake, body)
    assert staged.order_id == "ord-1" and staged.broker_order_id is None
    assert staged.whatif.warnings and staged.staged_at == T0
    assert held == [staged]
    assert len(fake.seen("POST", DRY_RUN)) == 1
    assert fake.seen("POST", LIVE_ORDERS) == []


@pytest.mark.parametrize("status", [OrderStatus.PROPOSED, OrderStatus.STAGED, OrderStatus.SHOWN])
def test_transmit_refuses_unconfirmed_orders(status: OrderStatus) -> None:
    fake = FakeTasty()
    with pytest.raises(IllegalTransitionError, match="confirmed"):
        run_with(fake, lambda b: b.transmit(hedge(status)))
    assert [r for r in fake.requests if r.method == "POST" and r.path != "/oauth/token"] == []


def test_transmit_places_a_confirmed_order_and_cancel_deletes_it() -> None:
    fake = FakeTasty()

    async def body(b: TastytradeAdapter) -> str:
        await b.stage(hedge())
        broker_id = await b.transmit(hedge(OrderStatus.CONFIRMED))
        assert b.staged() == []
        live = hedge(OrderStatus.TRANSMITTED, broker_order_id=broker_id)
        await b.cancel(live)
        return broker_id

    assert run_with(fake, body) == "12345"
    (placed,) = fake.seen("POST", LIVE_ORDERS)
    assert placed.json()["legs"][0]["symbol"] == HEDGE_OCC
    assert len(fake.seen("DELETE", f"{LIVE_ORDERS}/12345")) == 1


def test_cancel_of_a_local_stage_sends_nothing() -> None:
    fake = FakeTasty()

    async def body(b: TastytradeAdapter) -> Any:
        await b.stage(hedge())
        before = len(fake.requests)
        await b.cancel(hedge(OrderStatus.STAGED))
        return b.staged(), len(fake.requests) - before

    held, new_requests = run_with(fake, body)
    assert held == [] and new_requests == 0


# --------------------------------------------------------------------------- streaming


def test_greeks_stream_with_nan_dropped_contract_flagged_stale(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = SettableClock(T0)

    async def main() -> None:
        async with FakeDXLink(
            quotes={SPXW_PUT_DX: ("25.0", "26.0"), ES_PUT_DX: ("12.0", "12.5")},
            greeks={SPXW_PUT_DX: GOOD_GREEKS, ES_PUT_DX: NAN_GREEKS},
        ) as dx:
            fake = FakeTasty(dxlink_url=dx.url)
            async with adapter(fake, clock, stale_after=5.0, quote_wait=0.3,
                               watchdog_interval=0.05) as b:
                options = [p.contract for p in await b.positions(ACCOUNT) if p.contract.is_option]
                first = {q.contract.sec_type: q for q in await b.quotes(options)}
                spx, es = first["OPT"], first["FOP"]
                assert (spx.bid, spx.ask, spx.mark) == (25.0, 26.0, 25.5)
                assert (spx.delta, spx.gamma, spx.theta, spx.vega, spx.iv) == (
                    -0.31, 0.0021, -1.52, 2.45, 0.21)
                assert (es.bid, es.ask) == (12.0, 12.5)
                assert all(v is not None and math.isnan(v)
                           for v in (es.delta, es.gamma, es.theta, es.vega, es.iv))
                assert b.check_staleness() == frozenset()  # within the grace period

                clock.set(T0 + timedelta(seconds=6))
                await asyncio.sleep(0.2)  # events keep flowing, stamped with the new time
                assert b.check_staleness() == {ES_PUT_DX}
                assert b.stale_symbols == {ES_PUT_DX}
                again = {q.contract.sec_type: q for q in await b.quotes(options)}
                assert again["OPT"].delta == -0.31
                assert math.isnan(again["FOP"].delta or 0.0)
            assert dx.subscribed("Greeks") == {SPXW_PUT_DX, ES_PUT_DX}
            assert dx.subscribed("Quote") == {SPXW_PUT_DX, ES_PUT_DX}

    asyncio.run(main())
    stale_warnings = [r for r in caplog.records
                      if r.levelno == logging.WARNING and "stale" in r.getMessage()]
    assert [ES_PUT_DX in r.getMessage() for r in stale_warnings] == [True]
    assert any("no fresh Greeks" in r.getMessage() and ES_PUT_DX in r.getMessage()
               for r in caplog.records)


# --------------------------------------------------------------------------- secrets


def test_secrets_never_in_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeTasty()

    async def body(b: TastytradeAdapter) -> str:
        await b.positions(ACCOUNT)
        await b.stage(hedge())
        return repr(b)

    text = run_with(fake, body)
    # a wrong secret: the OAuth refresh is rejected
    wrong = {**ENV, "TASTYTRADE_CLIENT_SECRET": "wrong-secret-123456"}  # pragma: allowlist secret (a test's fake)
    with pytest.raises(BrokerError, match=r"POST /oauth/token rejected") as rejected:
        run_with(FakeTasty(), lambda b: b.account_ids(), environ=wrong)
    # a missing variable is named, its value (there is none) is not invented
    with pytest.raises(BrokerError, match="TASTYTRADE_REFRESH_TOKEN is not set") as missing:
        run_with(FakeTasty(), lambda b: b.account_ids(),
                 environ={"TASTYTRADE_CLIENT_SECRET": CLIENT_SECRET})
    # a failing request after login
    failing = FakeTasty()
    failing.failures[f"GET /accounts/{ACCOUNT}/balances/USD"] = [500] * 3
    with pytest.raises(BrokerError) as failed:
        run_with(failing, lambda b: b.account_snapshot(ACCOUNT))

    haystacks = [caplog.text, text, *(
        f"{e.value!s} {e.value!r} {e.value.__cause__!r}" for e in (rejected, missing, failed))]
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, "wrong-secret-123456"):
        assert all(secret not in h for h in haystacks)
    assert "TastytradeAdapter(accounts=['5WT00001']" in text


def test_streamer_restart_resubscribes_every_symbol() -> None:
    """Regression: after a DXLink outage the new streamer got no subscriptions, so every
    symbol went stale for good."""
    clock = SettableClock(T0)

    async def main() -> None:
        async with FakeDXLink(quotes={SPXW_PUT_DX: ("25.0", "26.0")},
                              greeks={SPXW_PUT_DX: GOOD_GREEKS}) as dx:
            fake = FakeTasty(dxlink_url=dx.url)
            async with adapter(fake, clock, stale_after=5.0, quote_wait=0.3,
                               watchdog_interval=0.05) as b:
                spx = [p.contract for p in await b.positions(ACCOUNT) if p.contract.sec_type == "OPT"]
                assert [q.delta for q in await b.quotes(spx)] == [-0.31]
                await dx.drop_connections()
                await asyncio.sleep(0.3)
                with pytest.raises(BrokerError, match="DXLink streamer stopped"):
                    await b.quotes(spx)
                clock.set(T0 + timedelta(seconds=1))
                [quote] = await b.quotes(spx)  # a new streamer, subscribed again
                assert (quote.bid, quote.delta) == (25.0, -0.31)
            rounds = [m for m in dx.received if m.get("type") == "FEED_SUBSCRIPTION"
                      and any(a.get("symbol") == SPXW_PUT_DX for a in m.get("add", ()))]
            assert len(rounds) >= 4  # Quote and Greeks, once per streamer

    asyncio.run(main())

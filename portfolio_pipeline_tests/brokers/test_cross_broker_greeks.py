"""Cross-broker regression: the same book gives the same dollar Greeks at every broker.

docs/ARCHITECTURE.md: "Tastytrade and IBKR positions give identical dollar Greeks for the same
position".  One book -- short 1 SPXW put, long 10 /ES EW weekly puts (futures options,
multiplier 50), short 100 SPY -- is fetched

* through :class:`IbkrBroker` on the wire-level fake gateway (real ib_async wrapper
  callbacks: ``position``, ``updatePortfolio``, ``tickOptionComputation``),
* through :class:`TastytradeAdapter` on the ASGI REST fake plus the loopback DXLink fake
  (real tastytrade SDK: positions JSON, COMPACT Quote/Greeks events),
* through :class:`DemoBroker` by staging, confirming and transmitting orders at the demo
  venue and reading its positions back (the demo simulates its own book and has no
  normalisation entry point for foreign payloads; it trades SPX/NDX/SPY/QQQ options and
  SPY/QQQ shares only, so its side of the book is the SPX put and the SPY shares, and
  the /ES leg is refused -- asserted below).

Both fakes serve the same marks and the same per-share model Greeks; every side must give
identical signed quantities, table multipliers, marks and -- through the ONE scaling
function :func:`portfolio_pipeline.domain.greeks.position_greeks` -- identical dollar
Greeks, equal to the hand arithmetic written out below.  A broker serving the /ES option
with multiplier 5 must be refused by both adapters with a MultiplierMismatchError naming
the contract.

The IBKR /ES option carries IBKR's real week-numbered trading class ``EW2`` (the second
Friday weekly of Feb 2018); Tastytrade names the same option ``EW2G8``.  Both must map to
the table's class ``EW``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime

import numpy as np
import pytest
from ib_async import Contract as IbContract

from portfolio_pipeline.brokers.base import BrokerDataError
from portfolio_pipeline.brokers.demo import DemoBroker
from portfolio_pipeline.brokers.tastytrade import TastytradeAdapter
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.domain.accounts import TastytradeConnection
from portfolio_pipeline.domain.errors import MultiplierMismatchError
from portfolio_pipeline.domain.greeks import PositionGreeks, position_greeks
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus
from portfolio_pipeline.domain.positions import Contract, Position, Quote
from portfolio_pipeline.marketdata import MarketHistory
from portfolio_pipeline.retry import BROKER_HTTP
from portfolio_pipeline_tests.brokers.ibkr import book
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import (
    FakeGateway,
    Greeks,
    MarketScript,
    ib_option,
)
from portfolio_pipeline_tests.brokers.tastytrade.fake_tasty import (
    ACCOUNT,
    ENV,
    SPXW_PUT,
    SPXW_PUT_DX,
    FakeDXLink,
    FakeTasty,
    position_json,
)
from portfolio_pipeline_tests.stubs import T0, instruments

# ----------------------------------------------------------------------------- the book

SPX_KEY = "SPX|OPT|SPXW|2018-02-16|2700|P"
ES_KEY = "ES|FOP|EW|2018-02-09|2700|P|2018-03-16"
SPY_KEY = "SPY|STK"
KEYS = (SPX_KEY, ES_KEY, SPY_KEY)

SPX_PUT = Contract("SPX", "OPT", date(2018, 2, 16), 2700.0, "P", "SPXW")
ES_PUT = Contract("ES", "FOP", date(2018, 2, 9), 2700.0, "P", "EW", underlying_expiry=date(2018, 3, 16))
SPY_STK = Contract("SPY", "STK")

QUANTITY = {SPX_KEY: -1.0, ES_KEY: 10.0, SPY_KEY: -100.0}
MULTIPLIER = {SPX_KEY: 100.0, ES_KEY: 50.0, SPY_KEY: 1.0}  # config/instruments.yaml
AVG_PRICE = {SPX_KEY: 20.0, ES_KEY: 11.0, SPY_KEY: 270.0}  # per share / unit
MARK = {SPX_KEY: 26.0, ES_KEY: 12.5, SPY_KEY: 270.0}  # per share / unit
BID_ASK = {SPX_KEY: (25.5, 26.5), ES_KEY: (12.25, 12.75), SPY_KEY: (269.75, 270.25)}

# Price delta is taken against: SPX index, the ESH8 future, SPY itself.  Beta-weighting to
# SPY with beta 1 for all three (reference price = SPY).
SPOT = {SPX_KEY: 2700.0, ES_KEY: 2700.0, SPY_KEY: 270.0}
SPY_REF = 270.0


# Per-share model Greeks served by both fakes: vega per vol point, theta per calendar day.
MODEL: dict[str, dict[str, float]] = {
    SPX_KEY: {"iv": 0.20, "delta": -0.30, "gamma": 0.002, "vega": 2.5, "theta": -1.5},
    ES_KEY: {"iv": 0.18, "delta": -0.25, "gamma": 0.001, "vega": 1.75, "theta": -0.5},
}


# Hand arithmetic (qty x mult = "units"; S = SPOT; SPY_REF = 270):
#   SPXW put, short 1 x 100 = -100 units, delta -0.30, S 2700:
#     share delta   = -0.30 x -100                 = +30
#     dollar delta  = 30 x 2700                    = +81,000
#     gamma $/1%    = 0.002 x -100 x 2700^2 / 100  = -0.2 x 72,900 = -14,580
#     theta $/day   = -1.5 x -100                  = +150
#     vega $/pt     = 2.5 x -100                   = -250
#     beta-wtd SPY  = 81,000 x 1 / 270             = +300 SPY shares
#   /ES EW put, long 10 x 50 = +500 units, delta -0.25, F 2700:
#     share delta   = -0.25 x 500                  = -125
#     dollar delta  = -125 x 2700                  = -337,500
#     gamma $/1%    = 0.001 x 500 x 2700^2 / 100   = 0.5 x 72,900 = +36,450
#     theta $/day   = -0.5 x 500                   = -250
#     vega $/pt     = 1.75 x 500                   = +875
#     beta-wtd SPY  = -337,500 / 270               = -1,250
#   SPY, short 100 x 1 = -100 units, delta 1, S 270:
#     share delta -100, dollar delta -27,000, no gamma/theta/vega, beta-wtd -100
#   Book: dollar delta -283,500; gamma $/1% +21,870; theta -100 $/day; vega +625 $/pt;
#         beta-weighted delta -1,050 SPY shares.
EXPECTED = {
    "share_delta": (30.0, -125.0, -100.0),
    "dollar_delta": (81_000.0, -337_500.0, -27_000.0),
    "dollar_gamma_1pct": (-14_580.0, 36_450.0, 0.0),
    "theta_per_day": (150.0, -250.0, 0.0),
    "vega_per_point": (-250.0, 875.0, 0.0),
    "beta_weighted_delta": (300.0, -1_250.0, -100.0),
}
EXPECTED_BOOK = {
    "dollar_delta": -283_500.0,
    "dollar_gamma_1pct": 21_870.0,
    "theta_per_day": -100.0,
    "vega_per_point": 625.0,
    "beta_weighted_delta": -1_050.0,
}


def dollar_greeks(
    keys: Sequence[str], positions: dict[str, Position], per_share: dict[str, dict[str, float]]
) -> PositionGreeks:
    """Rows in ``keys`` order through the one scaling function (stocks: delta 1, no others)."""

    def greek(key: str, name: str) -> float:
        if key in per_share:
            return per_share[key][name]
        return 1.0 if name == "delta" else 0.0

    return position_greeks(
        delta=[greek(k, "delta") for k in keys],
        gamma=[greek(k, "gamma") for k in keys],
        vega=[greek(k, "vega") for k in keys],
        theta=[greek(k, "theta") for k in keys],
        quantity=[positions[k].quantity for k in keys],
        multiplier=[positions[k].multiplier for k in keys],
        spot=[SPOT[k] for k in keys],
        beta=1.0,
        reference_price=SPY_REF,
    )


def quote_greeks(quotes: Sequence[Quote]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for q in quotes:
        if q.contract.is_option:
            assert q.iv is not None and q.delta is not None and q.gamma is not None
            assert q.vega is not None and q.theta is not None
            out[q.contract.key] = {
                "iv": q.iv, "delta": q.delta, "gamma": q.gamma, "vega": q.vega, "theta": q.theta,
            }
    return out


GREEK_FIELDS = tuple(EXPECTED)


def assert_identical(a: PositionGreeks, b: PositionGreeks) -> None:
    for name in (*GREEK_FIELDS, "beta_weighted_dollar_delta"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def assert_hand_values(pg: PositionGreeks, rows: Sequence[int]) -> None:
    for name, values in EXPECTED.items():
        expected = [values[r] for r in rows]
        np.testing.assert_allclose(getattr(pg, name), expected, rtol=1e-12, atol=0, err_msg=name)


# ----------------------------------------------------------------------------- IBKR side

IB_SPXW = ib_option(111, "SPX", "20180216", 2700, "P", "SPXW", local_symbol="SPXW  180216P02700000")
IB_ES_LOCAL = "EW2G8 P2700"


def ib_es(multiplier: str = "50") -> IbContract:
    # IBKR names CME end-of-week weeklies by week number: Feb 9 2018 is class EW2.
    return ib_option(
        211, "ES", "20180209", 2700, "P", "EW2", multiplier=multiplier, sec_type="FOP",
        exchange="CME", local_symbol=IB_ES_LOCAL,
    )


def ib_greeks(g: dict[str, float], key: str) -> Greeks:
    return Greeks(
        implied_vol=g["iv"], delta=g["delta"], opt_price=MARK[key], pv_dividend=0.0,
        gamma=g["gamma"], vega=g["vega"], theta=g["theta"], und_price=SPOT[key],
    )


def ib_gateway(*, es_multiplier: str = "50") -> FakeGateway:
    gw = FakeGateway(accounts=["U1"])
    es = ib_es(es_multiplier)
    for contract in (IB_SPXW, book.ES_FUT, book.SPY):
        gw.add_contract(contract)
    gw.add_contract(es, under_con_id=book.ES_FUT.conId)  # written on ESH8 (2018-03-16)
    con = {SPX_KEY: IB_SPXW.conId, ES_KEY: es.conId, SPY_KEY: book.SPY.conId}
    raw = {SPX_KEY: IB_SPXW, ES_KEY: es, SPY_KEY: book.SPY}
    for key in KEYS:
        # IBKR avgCost of derivatives includes the multiplier; stocks (x1) are per share
        gw.positions.append(("U1", raw[key], QUANTITY[key], AVG_PRICE[key] * MULTIPLIER[key]))
        gw.portfolio_prices[con[key]] = MARK[key]
        bid, ask = BID_ASK[key]
        greeks = ib_greeks(MODEL[key], key) if key in MODEL else None
        gw.market[con[key]] = MarketScript(bid=bid, ask=ask, greeks=greeks)
    return gw


def ibkr_book(gw: FakeGateway) -> tuple[list[Position], list[Quote]]:
    async def scenario() -> tuple[list[Position], list[Quote]]:
        async with book.adapter(gw) as broker:
            positions = await broker.positions("U1")
            return positions, await broker.quotes([p.contract for p in positions])

    return book.run(scenario)


# ----------------------------------------------------------------------------- Tastytrade side

TT_ES_PUT = "./ESH8 EW2G8 180209P2700"
TT_ES_PUT_DX = "./EW2G18P2700:XCME"
DX_SYMBOL = {SPX_KEY: SPXW_PUT_DX, ES_KEY: TT_ES_PUT_DX, SPY_KEY: "SPY"}


def tasty_positions(*, es_multiplier: str = "50") -> list[dict[str, object]]:
    """Unsigned quantity + direction, per-share prices, the broker's own multiplier."""
    return [
        position_json(SPXW_PUT, "Equity Option", "SPX", "1", "Short", "100",
                      avg=repr(AVG_PRICE[SPX_KEY]), mark=repr(MARK[SPX_KEY])),
        position_json(TT_ES_PUT, "Future Option", "/ESH8", "10", "Long", es_multiplier,
                      avg=repr(AVG_PRICE[ES_KEY]), mark=repr(MARK[ES_KEY])),
        position_json("SPY", "Equity", "SPY", "100", "Short", "1",
                      avg=repr(AVG_PRICE[SPY_KEY]), mark=repr(MARK[SPY_KEY])),
    ]


def dx_greeks(g: dict[str, float], key: str) -> dict[str, str]:
    return {"price": repr(MARK[key]), "volatility": repr(g["iv"]), "delta": repr(g["delta"]),
            "gamma": repr(g["gamma"]), "theta": repr(g["theta"]), "rho": "0.0",
            "vega": repr(g["vega"])}


def tasty_adapter(fake: FakeTasty) -> TastytradeAdapter:
    return TastytradeAdapter(
        TastytradeConnection(), instruments(), [ACCOUNT], clock=SettableClock(T0),
        transport=fake.transport(), environ=ENV, retry=replace(BROKER_HTTP, initial=0.0),
        quote_wait=3.0, watchdog_interval=0.05,
    )


def tasty_book() -> tuple[list[Position], list[Quote], set[str]]:
    async def main() -> tuple[list[Position], list[Quote], set[str]]:
        async with FakeDXLink(
            quotes={DX_SYMBOL[k]: (repr(BID_ASK[k][0]), repr(BID_ASK[k][1])) for k in KEYS},
            greeks={DX_SYMBOL[k]: dx_greeks(MODEL[k], k) for k in MODEL},
        ) as dx:
            fake = FakeTasty(dxlink_url=dx.url, positions=tasty_positions())
            async with tasty_adapter(fake) as broker:
                positions = await broker.positions(ACCOUNT)
                quotes = await broker.quotes([p.contract for p in positions])
            return positions, quotes, dx.subscribed("Greeks")

    return asyncio.run(main())


# ----------------------------------------------------------------------------- demo side

DEMO_ACCOUNT = "DEMO-001"
DEMO_DAY = date(2018, 2, 2)
DEMO_NOW = datetime(2018, 2, 2, 22, 0, tzinfo=UTC)  # after the New York close


def demo_order(contract: Contract, action: str, quantity: int) -> Order:
    return Order(
        order_id=f"x-{contract.key}", broker="demo", account_id=DEMO_ACCOUNT,
        legs=(OrderLeg(contract, action),), quantity=quantity,  # type: ignore[arg-type]
        limit_price=1.0, created_at=DEMO_NOW,
    )


def demo_book() -> tuple[list[Position], str]:
    """Stage, confirm and transmit the book at the demo venue, read its positions back.

    ``start`` is the trading session itself, so the simulated strategies have not traded
    yet and the account holds exactly what was transmitted.
    """
    broker = DemoBroker(
        instruments(), clock=SettableClock(DEMO_NOW), history=MarketHistory(), start=DEMO_DAY,
    )

    async def main() -> tuple[list[Position], str]:
        async with broker:
            assert await broker.positions(DEMO_ACCOUNT) == []
            for contract, action, qty in ((SPX_PUT, "SELL", 1), (SPY_STK, "SELL", 100)):
                order = demo_order(contract, action, qty)
                staged = await broker.stage(order)
                confirmed = (
                    order.transition(OrderStatus.STAGED, actor="t", at=DEMO_NOW, whatif=staged.whatif)
                    .show(token="tok-123456", actor="t", at=DEMO_NOW)
                    .confirm(token="tok-123456", actor="t", at=DEMO_NOW)
                )
                await broker.transmit(confirmed)
            with pytest.raises(BrokerDataError) as refused:  # the demo lists no /ES options
                await broker.stage(demo_order(ES_PUT, "BUY", 10))
            return await broker.positions(DEMO_ACCOUNT), str(refused.value)

    return asyncio.run(main())


# ----------------------------------------------------------------------------- tests


def test_same_book_same_positions_marks_and_dollar_greeks_at_every_broker() -> None:
    gw = ib_gateway()
    ib_positions, ib_quotes = ibkr_book(gw)
    tt_positions, tt_quotes, tt_greek_symbols = tasty_book()
    demo_positions, demo_refused = demo_book()

    ib = {p.contract.key: p for p in ib_positions}
    tt = {p.contract.key: p for p in tt_positions}
    demo = {p.contract.key: p for p in demo_positions}

    # one contract identity per instrument, whatever the broker calls it (EW2 -> EW)
    assert set(ib) == set(tt) == set(KEYS)
    assert set(demo) == {SPX_KEY, SPY_KEY}
    assert ib[ES_KEY].contract == tt[ES_KEY].contract == ES_PUT
    assert ib[SPX_KEY].contract == tt[SPX_KEY].contract == demo[SPX_KEY].contract == SPX_PUT
    assert ES_KEY in demo_refused and "the demo trades options on SPX" in demo_refused
    # IBKR's own class is kept where it matters: the source, and the contract it quotes
    assert ib[ES_KEY].source == f"ibkr:U1:{IB_ES_LOCAL}"
    assert [args[1] for args in gw.requests_named("reqMktData")].count(211) == 1

    # signed quantities and table multipliers: identical, and quantity x multiplier units
    for key in KEYS:
        assert (ib[key].quantity, ib[key].multiplier) == (QUANTITY[key], MULTIPLIER[key]), key
        assert (tt[key].quantity, tt[key].multiplier) == (ib[key].quantity, ib[key].multiplier), key
    for key in (SPX_KEY, SPY_KEY):
        assert (demo[key].quantity, demo[key].multiplier) == (ib[key].quantity, ib[key].multiplier), key
    units = {k: ib[k].quantity * ib[k].multiplier for k in KEYS}
    assert units == {SPX_KEY: -100.0, ES_KEY: 500.0, SPY_KEY: -100.0}

    # per-unit marks and average prices (IBKR: avgCost / multiplier for derivatives)
    for key in KEYS:
        assert ib[key].mark == tt[key].mark == MARK[key], key
        assert ib[key].avg_price == tt[key].avg_price == AVG_PRICE[key], key
        assert ib[key].market_value == tt[key].market_value, key

    # quotes: same mid and the same per-share model Greeks off both wires
    ibq = {q.contract.key: q for q in ib_quotes}
    ttq = {q.contract.key: q for q in tt_quotes}
    assert set(ibq) == set(ttq) == set(KEYS)
    for key in KEYS:
        bid, ask = BID_ASK[key]
        assert (ibq[key].bid, ibq[key].ask) == (ttq[key].bid, ttq[key].ask) == (bid, ask), key
        assert ibq[key].mark == ttq[key].mark == (bid + ask) / 2, key
    ib_model, tt_model = quote_greeks(ib_quotes), quote_greeks(tt_quotes)
    assert ib_model == tt_model == MODEL
    assert tt_greek_symbols == {SPXW_PUT_DX, TT_ES_PUT_DX}
    assert ibq[SPX_KEY].underlying_price == SPOT[SPX_KEY]
    assert ibq[ES_KEY].underlying_price == SPOT[ES_KEY]

    # dollar Greeks through the ONE scaling function: bit-identical across brokers ...
    ib_pg = dollar_greeks(KEYS, ib, ib_model)
    tt_pg = dollar_greeks(KEYS, tt, tt_model)
    assert_identical(ib_pg, tt_pg)
    # ... the demo's quotes cannot be forced, so it is compared on the SAME per-share Greeks
    demo_keys = (SPX_KEY, SPY_KEY)
    demo_pg = dollar_greeks(demo_keys, demo, MODEL)
    assert_identical(demo_pg, dollar_greeks(demo_keys, ib, ib_model))
    # ... and equal to the hand arithmetic
    assert_hand_values(ib_pg, rows=(0, 1, 2))
    assert_hand_values(tt_pg, rows=(0, 1, 2))
    assert_hand_values(demo_pg, rows=(0, 2))
    for name, total in EXPECTED_BOOK.items():
        assert float(np.sum(getattr(ib_pg, name))) == pytest.approx(total, rel=1e-12, abs=1e-9), name
        assert float(np.sum(getattr(tt_pg, name))) == float(np.sum(getattr(ib_pg, name))), name


def _mismatch(exc: BaseException) -> MultiplierMismatchError:
    """The MultiplierMismatchError raised, or the one a broker data error was raised from."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MultiplierMismatchError):
            return seen
        seen = seen.__cause__
    raise AssertionError(f"no MultiplierMismatchError in the chain of {exc!r}")


def test_wrong_broker_multiplier_is_refused_by_both_adapters() -> None:
    """The /ES option served with multiplier 5 (a micro's) must never become 5 x units."""
    with pytest.raises(MultiplierMismatchError) as ib_info:
        ibkr_book(ib_gateway(es_multiplier="5"))
    ib_text = str(ib_info.value)
    assert f"ibkr:U1:{IB_ES_LOCAL}" in ib_text and "multiplier 5.0" in ib_text
    assert "ES FOP" in ib_text and "(50.0)" in ib_text

    fake = FakeTasty(positions=tasty_positions(es_multiplier="5"))

    async def main() -> list[Position]:
        async with tasty_adapter(fake) as broker:
            return await broker.positions(ACCOUNT)

    # the Tastytrade adapter reports payload problems as BrokerDataError, raised from the
    # table's MultiplierMismatchError
    with pytest.raises(BrokerDataError) as tt_info:
        asyncio.run(main())
    tt_text = str(tt_info.value)
    assert f"tastytrade:{ACCOUNT}:{TT_ES_PUT}" in tt_text and "multiplier 5.0" in tt_text
    assert "ES FOP" in tt_text and "(50.0)" in tt_text
    assert "multiplier 5.0 for ES FOP" in str(_mismatch(tt_info.value))

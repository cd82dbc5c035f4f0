"""A small scripted IBKR book on the fake gateway, shared by the IBKR adapter tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from portfolio_pipeline.brokers.ibkr import IbkrBroker
from portfolio_pipeline.domain.accounts import AccountConfig, IbkrConnection
from portfolio_pipeline.domain.orders import Order, OrderLeg
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.retry import BackoffPolicy
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import (
    FakeGateway,
    Greeks,
    MarketScript,
    ib_future,
    ib_index,
    ib_option,
    ib_stock,
)
from portfolio_pipeline_tests.stubs import instruments

T = TypeVar("T")
T0 = datetime(2018, 2, 2, 21, 0, tzinfo=UTC)

SPX_AM = ib_option(101, "SPX", "20180316", 2700, "P", "SPX", local_symbol="SPX   180316P02700000")
SPX_PM = ib_option(102, "SPX", "20180316", 2650, "P", "SPXW", local_symbol="SPXW  180316P02650000")
ES_FOP = ib_option(
    201, "ES", "20180209", 2600, "P", "EW", multiplier="50", sec_type="FOP", exchange="CME",
    local_symbol="EW2G8 P2600",
)
ES_FUT = ib_future(301, "ES", "20180316", local_symbol="ESH8")
SPY = ib_stock(401, "SPY")
SPX_IND = ib_index(501, "SPX")

# domain contracts for quotes / orders
SPX_PUT = Contract("SPX", "OPT", date(2018, 3, 16), 2700.0, "P", "SPX")
SPXW_PUT = Contract("SPX", "OPT", date(2018, 3, 16), 2650.0, "P", "SPXW")
ES_PUT = Contract("ES", "FOP", date(2018, 2, 9), 2600.0, "P", "EW", underlying_expiry=date(2018, 3, 16))
SPY_STK = Contract("SPY", "STK")


def gateway() -> FakeGateway:
    gw = FakeGateway(accounts=["U1", "U2"])
    for c in (SPX_AM, SPX_PM, SPY, SPX_IND, ES_FUT):
        gw.add_contract(c)
    gw.add_contract(ES_FOP, under_con_id=301)
    gw.positions += [
        ("U1", SPX_AM, -1.0, 1523.5),  # avgCost includes the x100 multiplier
        ("U1", SPX_PM, -2.0, 980.0),
        ("U1", ES_FOP, 10.0, 2250.0),  # 45.00 x 50
        ("U1", SPY, -100.0, 270.5),  # stocks: avgCost per share
        ("U2", SPY, 50.0, 260.0),
    ]
    gw.portfolio_prices.update({101: 12.3, 102: 8.1, 201: 41.0, 401: 275.0})
    gw.market[101] = MarketScript(bid=12.1, ask=12.5, greeks=Greeks(0.21, -0.31, 12.3, 0.0, 0.0011, 2.7, -0.9, 2762.13))
    gw.market[102] = MarketScript(bid=8.0, ask=8.2, greeks=Greeks())
    gw.market[201] = MarketScript(bid=40.75, ask=41.25, greeks=Greeks(0.25, -0.28, 41.0, 0.0, 0.002, 1.9, -1.2, 2765.0))
    gw.market[401] = MarketScript(bid=274.98, ask=275.02, last=275.0)
    gw.market[501] = MarketScript(last=2762.13, close=2762.0)
    gw.account_summary += [
        ("U1", "NetLiquidation", "1000000.5", "USD"),
        ("U1", "TotalCashValue", "250000", "USD"),
        ("U1", "TotalCashValue", "-1200", "EUR"),  # $LEDGER:ALL per-currency row
        ("U1", "NetLiquidation", "850000", "EUR"),
        ("U1", "InitMarginReq", "120000", "USD"),
        ("U1", "MaintMarginReq", "100000", "USD"),
        ("U1", "ExcessLiquidity", "900000", "USD"),
        ("U1", "BuyingPower", "3600000", "USD"),
        ("U1", "AccountType", "INDIVIDUAL", ""),
        ("U2", "NetLiquidation", "5", "USD"),
    ]
    gw.daily_pnl["U1"] = -4321.0
    gw.option_chains["SPX"] = [
        ("SMART", 501, "SPX", "100", ["20180316", "20180420"], [2600.0, 2650.0, 2700.0]),
        ("SMART", 501, "SPXW", "100", ["20180209", "20180216", "20180316"], [2650.0, 2700.0]),
        ("CBOE", 501, "SPXW", "100", ["20180209"], [2700.0]),
    ]
    return gw


def connection(timeout: float = 0.5, **changes: Any) -> IbkrConnection:
    return IbkrConnection(
        port=4002, client_id=17, timeout_seconds=timeout, market_data_type="delayed", **changes
    )


def adapter(gw: FakeGateway, *, timeout: float = 0.5, **kwargs: Any) -> IbkrBroker:
    account = AccountConfig(name="ib main", broker="ibkr", account_id="U1", ibkr=connection(timeout))
    kwargs.setdefault("backoff", BackoffPolicy("ibkr reconnect", max_attempts=100, initial=0.01, multiplier=2.0, maximum=0.04))
    kwargs.setdefault("stage_settle_seconds", 0.02)
    kwargs.setdefault("pnl_wait_seconds", 0.2)
    return IbkrBroker(account, instruments(), ib_factory=gw.make_ib, **kwargs)


def order(*legs: OrderLeg, order_id: str = "ord-1", limit: float = 12.0, quantity: int = 1) -> Order:
    return Order(
        order_id=order_id,
        broker="ibkr",
        account_id="U1",
        legs=legs or (OrderLeg(SPX_PUT, "BUY"),),
        quantity=quantity,
        limit_price=limit,
        created_at=T0,
    )


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run one async scenario on a fresh event loop (no pytest-asyncio)."""

    async def main() -> T:
        return await make()

    return asyncio.run(main())

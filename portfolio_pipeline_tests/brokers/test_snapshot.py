from __future__ import annotations

import asyncio
from datetime import date

from portfolio_pipeline.brokers.snapshot import (
    VOLATILITY_INDICES,
    collect_snapshot,
    underlying_contracts,
)
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Quote
from portfolio_pipeline_tests.stubs import T0, StubBroker, instruments, option, position


def test_underlyings_are_index_stock_or_the_right_future() -> None:
    book = [
        position(option("SPX", trading_class="SPXW"), -1),
        position(option("SPY", strike=270.0), -2),
        position(option("ES", strike=2650.0, expiry=date(2018, 3, 16), sec_type="FOP", trading_class="ES"), 10),
        position(Contract("SPY", "STK"), -100),
    ]
    keys = [c.key for c in underlying_contracts(book, instruments())]
    assert keys == ["SPX|IND", "SPY|STK", "ES|FUT|2018-03-16"]


def test_snapshot_asks_quotes_for_positions_underlyings_and_vol_indices() -> None:
    put = option("SPY", strike=270.0)
    seen: list[str] = []

    class Recording(StubBroker):
        async def quotes(self, contracts):  # type: ignore[no-untyped-def]
            seen.extend(c.key for c in contracts)
            return await super().quotes(contracts)

    acct = AccountSnapshot("demo", "A1", T0, 1e5, 1e5, 0, 0, 1e5, 1e5)
    broker = Recording([position(put, -1, account_id="A1")], [acct],
                       [Quote("demo", put, T0, bid=1.0, ask=1.2, mark=1.1)])
    snap = asyncio.run(collect_snapshot([(broker, ["A1"])], T0, instruments()))
    assert seen == [put.key, "SPY|STK", *(c.key for c in VOLATILITY_INDICES)]
    assert len(snap.positions) == 1 and len(snap.quotes) == 1
    assert broker.connected == 0  # connected for the snapshot, closed afterwards

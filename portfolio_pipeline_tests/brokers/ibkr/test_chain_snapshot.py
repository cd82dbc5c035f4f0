"""IBKR option chain snapshots against the fake gateway (the real ib_async code runs):
reqSecDefOptParams, then market data with generic ticks 100/101/106 per listed contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portfolio_pipeline.brokers.base import BrokerDataError
from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainSnapshotSource, ChainWindow
from portfolio_pipeline.brokers.ibkr.market_data import CHAIN_GENERIC_TICKS
from portfolio_pipeline_tests.brokers.ibkr.book import T0, adapter, gateway, run
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import (
    FakeGateway,
    Greeks,
    MarketScript,
    ib_option,
)

WEEKLY_CALL = ib_option(601, "SPX", "20180209", 2700, "C", "SPXW")
WEEKLY_PUT = ib_option(602, "SPX", "20180209", 2700, "P", "SPXW")


def _gateway() -> FakeGateway:
    gw = gateway()
    for c in (WEEKLY_CALL, WEEKLY_PUT):
        gw.add_contract(c)
    gw.market[601] = MarketScript(
        bid=80.0,
        ask=81.0,
        last=80.5,
        volume=1200.0,
        call_open_interest=5400.0,
        greeks=Greeks(0.14, 0.78, 80.5, 0.0, 0.0021, 1.1, -2.0, 2762.13),
    )
    gw.market[602] = MarketScript(
        bid=13.0,
        ask=13.5,
        volume=3100.0,
        put_open_interest=9100.0,
        greeks=Greeks(0.16, -0.22, 13.2, 0.0, 0.0019, 1.2, -2.2, 2762.13),
    )
    gw.market[101].put_open_interest = 20000.0
    gw.market[101].volume = 15.0
    gw.market[102].put_open_interest = 700.0  # no volume tick: volume unknown
    return gw


def test_snapshot_reads_listed_contracts_with_open_interest_and_volume() -> None:
    gw = _gateway()

    async def scenario() -> ChainSnapshot:
        async with adapter(gw, clock=lambda: T0) as broker:
            assert isinstance(broker, ChainSnapshotSource)
            return await broker.option_chain_snapshot(
                "SPX", ChainWindow(max_days=45, moneyness=0.05)
            )

    snap = run(scenario)
    # spot: the SPX index's last (2762.13); strikes within 5 %: 2650, 2700; expiries within 45
    # days of 2018-02-02: SPX 2018-03-16, SPXW 2018-02-09/16 and 2018-03-16; listed at the
    # gateway among those: 101 (SPX Mar 2700 P), 102 (SPXW Mar 2650 P), 601/602 (SPXW Feb 9 2700)
    assert snap.spot == pytest.approx(2762.13) and not snap.simulated and snap.source == "ibkr"
    got = sorted(
        zip(
            snap.trading_class.tolist(),
            snap.expiry.astype(str).tolist(),
            snap.strike.tolist(),
            np.where(snap.is_call, "C", "P").tolist(),
            snap.open_interest.tolist(),
            strict=True,
        )
    )
    assert [g[:4] for g in got] == [
        ("SPX", "2018-03-16", 2700.0, "P"),
        ("SPXW", "2018-02-09", 2700.0, "C"),
        ("SPXW", "2018-02-09", 2700.0, "P"),
        ("SPXW", "2018-03-16", 2650.0, "P"),
    ]
    assert [g[4] for g in got] == [20000.0, 5400.0, 9100.0, 700.0]
    i = int(np.flatnonzero(snap.is_call)[0])
    assert (snap.bid[i], snap.ask[i], snap.last[i], snap.volume[i]) == (80.0, 81.0, 80.5, 1200.0)
    assert (snap.iv[i], snap.delta[i], snap.gamma[i]) == (0.14, 0.78, 0.0021)
    assert math.isnan(snap.volume[snap.open_interest == 700.0][0])
    # T to the settlement: SPXW PM (close 2018-02-09 16:00 New York) from 2018-02-02 21:00 UTC
    assert snap.T[i] == pytest.approx(7 / 365, abs=1e-9)
    assert math.isnan(snap.rate)  # the broker does not say: pricing.yaml fills it
    ticks = {args[1]: args[2] for args in gw.requests_named("reqMktData")}
    assert ticks[601] == ticks[101] == CHAIN_GENERIC_TICKS
    cancelled = {args[0] for args in gw.requests_named("cancelMktData")}
    assert len(cancelled) >= 4  # every chain line is released after reading


def test_chain_snapshot_of_a_futures_option_root_is_refused() -> None:
    gw = _gateway()

    async def scenario() -> None:
        async with adapter(gw, clock=lambda: T0) as broker:
            await broker.option_chain_snapshot("ES", ChainWindow())

    with pytest.raises(BrokerDataError, match="futures options"):
        run(scenario)

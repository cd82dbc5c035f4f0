"""Tastytrade option chain snapshots against the fake API and DXLink server (the real SDK
runs): the nested chain, then DXLink Quote/Greeks plus Summary (open interest) and Trade
(day volume) events."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from portfolio_pipeline.brokers.base import BrokerDataError
from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainSnapshotSource, ChainWindow
from portfolio_pipeline_tests.brokers.tastytrade.fake_tasty import FakeDXLink, FakeTasty
from portfolio_pipeline_tests.brokers.tastytrade.test_adapter import GOOD_GREEKS, adapter

CALL = ".SPXW180209C2700"
PUT = ".SPXW180209P2700"
MONTHLY = ".SPX180216P2750"


def test_snapshot_reads_quotes_greeks_open_interest_and_volume() -> None:
    async def main() -> tuple[ChainSnapshot, set[str], set[str]]:
        async with FakeDXLink(
            quotes={
                "SPX": ("2699.0", "2701.0"),
                CALL: ("30.0", "31.0"),
                PUT: ("28.0", "29.0"),
                MONTHLY: ("60.0", "61.0"),
            },
            greeks={CALL: GOOD_GREEKS, PUT: GOOD_GREEKS, MONTHLY: GOOD_GREEKS},
            summaries={CALL: 5400, PUT: 9100, MONTHLY: 20000},
            trades={CALL: 1200, PUT: "NaN"},
        ) as dx:
            fake = FakeTasty(dxlink_url=dx.url)
            async with adapter(fake, quote_wait=0.3) as broker:
                assert isinstance(broker, ChainSnapshotSource)
                snap = await broker.option_chain_snapshot(
                    "SPX", ChainWindow(max_days=20, moneyness=0.03)
                )
            return snap, dx.subscribed("Summary"), dx.subscribed("Trade")

    snap, summary_subs, trade_subs = asyncio.run(main())
    assert snap.spot == 2700.0 and snap.source == "tastytrade" and not snap.simulated
    by = {
        (tc, str(e), k, "C" if c else "P"): i
        for i, (tc, e, k, c) in enumerate(
            zip(
                snap.trading_class.tolist(),
                snap.expiry.astype(str).tolist(),
                snap.strike.tolist(),
                snap.is_call.tolist(),
                strict=True,
            )
        )
    }
    # only contracts the stream quoted (the nested chain lists more)
    assert set(by) == {
        ("SPXW", "2018-02-09", 2700.0, "C"),
        ("SPXW", "2018-02-09", 2700.0, "P"),
        ("SPX", "2018-02-16", 2750.0, "P"),
    }
    c, p, m = (
        by[("SPXW", "2018-02-09", 2700.0, "C")],
        by[("SPXW", "2018-02-09", 2700.0, "P")],
        by[("SPX", "2018-02-16", 2750.0, "P")],
    )
    assert (snap.bid[c], snap.ask[c], snap.open_interest[c], snap.volume[c]) == (
        30.0,
        31.0,
        5400.0,
        1200.0,
    )
    assert snap.open_interest[p] == 9100.0 and math.isnan(snap.volume[p])  # NaN day volume
    assert snap.open_interest[m] == 20000.0 and math.isnan(snap.volume[m])  # no Trade event
    assert (snap.iv[c], snap.delta[c], snap.gamma[c]) == (0.21, -0.31, 0.0021)
    # T0 = 2018-02-02 21:00 UTC. SPXW PM settles 2018-02-09 16:00 New York (21:00 UTC): 7
    # days; SPX AM at the 2018-02-16 09:30 open (14:30 UTC): 14 days less 6.5 hours
    assert snap.T[c] == pytest.approx(7 / 365, abs=1e-9)
    assert snap.T[m] == pytest.approx((14 - 6.5 / 24) / 365, abs=1e-9)
    assert {CALL, PUT, MONTHLY} <= summary_subs and {CALL, PUT, MONTHLY} <= trade_subs
    assert np.all(np.isnan([snap.rate, snap.dividend_yield]))


def test_futures_options_are_refused() -> None:
    async def main() -> None:
        async with adapter(FakeTasty()) as broker:
            await broker.option_chain_snapshot("ES", ChainWindow())

    with pytest.raises(BrokerDataError, match="equity/index options only"):
        asyncio.run(main())

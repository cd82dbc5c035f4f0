"""The demo's simulated option chain: reproducible per session, and its smile fitted to
the stored VIX (the CBOE VIX formula applied to the chain gives back the published close)."""

from __future__ import annotations

import asyncio
import math
from datetime import date

import numpy as np
import pytest

from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainSnapshotSource, ChainWindow
from portfolio_pipeline.brokers.demo import DemoBroker
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.marketdata import MarketHistory
from portfolio_pipeline_tests.brokers.demo.conftest import eod
from portfolio_pipeline_tests.stubs import instruments


def _snapshot(
    broker: DemoBroker, clock: SettableClock, day: date, window: ChainWindow | None = None
) -> ChainSnapshot:
    clock.set(eod(day))
    return asyncio.run(broker.option_chain_snapshot("SPX", window or ChainWindow()))


def _cboe_vix(chain: ChainSnapshot, trading_class: str = "SPXW") -> float:
    """The CBOE VIX white-paper formula on the chain's OTM mids: per expiry
    sigma^2 = 2/T sum dK/K^2 e^{rT} Q(K) - (F/K0 - 1)^2 / T, interpolated to 30 days."""
    mid = (chain.bid + chain.ask) / 2
    points: list[tuple[float, float]] = []
    for e in np.unique(chain.expiry):
        m = (chain.expiry == e) & (chain.trading_class == trading_class)
        if not m.any():
            continue
        T = float(chain.T[m][0])
        calls = dict(zip(chain.strike[m & chain.is_call], mid[m & chain.is_call], strict=True))
        puts = dict(zip(chain.strike[m & ~chain.is_call], mid[m & ~chain.is_call], strict=True))
        K = np.array(sorted(calls))
        F = chain.spot * math.exp((chain.rate - chain.dividend_yield) * T)
        K0 = float(K[K <= F].max())
        Q = np.array(
            [puts[k] if k < K0 else calls[k] if k > K0 else (puts[k] + calls[k]) / 2 for k in K]
        )
        var = (
            2 / T * float(np.sum(np.gradient(K) / K**2 * math.exp(chain.rate * T) * Q))
            - (F / K0 - 1) ** 2 / T
        )
        points.append((T * 365, var))
    days = np.array([p[0] for p in points])
    var = np.array([p[1] for p in points])
    i = int(np.searchsorted(days, 30.0))
    d1, d2 = days[i - 1], days[i]
    w = (d2 - 30) / (d2 - d1)
    return math.sqrt((w * var[i - 1] * d1 + (1 - w) * var[i] * d2) / 30) * 100


def test_demo_broker_is_a_chain_snapshot_source(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    assert isinstance(b, ChainSnapshotSource)
    chain = _snapshot(b, clock, date(2018, 2, 5))
    assert chain.simulated and "simulated" in chain.source
    assert chain.size > 0 and np.all(chain.T > 0) and np.all(chain.bid < chain.ask)
    assert np.all(np.abs(chain.strike / chain.spot - 1) <= 0.06 + 1e-9)
    assert np.all((chain.expiry - np.datetime64("2018-02-05")).astype(int) <= 35)
    assert set(chain.trading_class) == {"SPX", "SPXW"}
    assert np.all(chain.open_interest >= 0) and np.all(chain.volume >= 0)


@pytest.mark.parametrize("day", [date(2017, 11, 3), date(2018, 2, 5), date(2018, 4, 2)])
def test_simulated_smile_reprices_the_published_vix(
    broker: tuple[DemoBroker, SettableClock], day: date
) -> None:
    """VIX closes (arch.data.vix): 2017-11-03 9.14, 2018-02-05 37.32, 2018-04-02 23.62;
    a wide window (+/-50 %) so the strip covers the wings; within 5 % of the index."""
    b, clock = broker
    chain = _snapshot(b, clock, day, ChainWindow(max_days=45, moneyness=0.5))
    published = float(b.market.vix[b.market.index_of(day)])
    assert _cboe_vix(chain) == pytest.approx(published, rel=0.05)


def test_atm_iv_tracks_vix(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    days = [
        date(2017, 7, 3),
        date(2017, 11, 3),
        date(2018, 2, 5),
        date(2018, 2, 8),
        date(2018, 4, 2),
    ]
    vix = np.array([b.market.vix[b.market.index_of(d)] for d in days])
    atm = []
    for d in days:
        c = _snapshot(b, clock, d)
        near = np.argmin(np.abs(c.T * 365 - 30) + np.abs(c.strike / c.spot - 1) * 100)
        atm.append(c.iv[near])
    assert np.corrcoef(vix, atm)[0, 1] > 0.99
    assert np.argmax(atm) == 2  # the spike day has the highest ATM vol


def test_chain_is_reproducible_per_session(history: MarketHistory) -> None:
    day = date(2018, 3, 1)
    chains = []
    for _ in range(2):
        clock = SettableClock(eod(day))
        chains.append(
            _snapshot(DemoBroker(instruments(), clock=clock, history=history), clock, day)
        )
    a, b = chains
    for name in ("strike", "open_interest", "volume", "bid", "ask", "iv"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    clock = SettableClock(eod(day))
    other = DemoBroker(instruments(), clock=clock, history=history)
    nxt = _snapshot(other, clock, date(2018, 3, 2))
    assert not np.array_equal(nxt.open_interest[: a.size], a.open_interest[: nxt.size])


def test_open_interest_concentrates_around_the_money_and_in_puts(
    broker: tuple[DemoBroker, SettableClock],
) -> None:
    b, clock = broker
    c = _snapshot(b, clock, date(2017, 9, 1))
    near = np.abs(c.strike / c.spot - 1) < 0.02
    far = np.abs(c.strike / c.spot - 1) > 0.045
    assert c.open_interest[near].mean() > 2 * c.open_interest[far].mean()
    assert c.open_interest[~c.is_call].sum() > c.open_interest[c.is_call].sum()

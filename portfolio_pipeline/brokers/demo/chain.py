"""The demo's SIMULATED option chain (no free historical chain carries open interest).

Every number here is a model output, labelled ``simulated`` wherever it is shown.

Contracts
    Every listed expiry of every trading class of the root (:meth:`DemoMarket.expiries`:
    monthlies, PM weeklies) settling after the session's close and within the window's
    ``max_days``; strikes on the instrument grid within ``spot x (1 -/+ moneyness)``.
Implied vol, quotes, Greeks
    The demo surface (:mod:`portfolio_pipeline.brokers.demo.market`): 30-day ATM vol
    ``0.87 x VIX``, the VIX term structure and the put/call skew; the mid is the model
    value, bid/ask the demo's spread rule, ``last`` the mid on the tick; Greeks are the
    kernel's European closed form at the contract's vol.
Open interest (contracts), drawn per contract
    mean ``OI_SCALE[root] x class weight x round-strike boost x exp(-z^2 / (2 w^2))``
    with ``z = ln(K/F) / (atm sqrt(T))`` (standardised moneyness); ``w = 1.25`` on the
    out-of-the-money side, ``0.6`` in the money; puts x ``PUT_OI_SHARE`` (1.6, put OI
    exceeds call OI on index options); monthly expiries weigh 1, weeklies
    ``WEEKLY_WEIGHT`` (0.35); strikes on multiples of 100 x 3, of 50 x 2, of 25 x 1.5.
    The draw is negative binomial (gamma-Poisson) with that mean and shape 2.
Volume (contracts)
    mean ``OI mean x (0.05 + 0.6 exp(-days / 7)) x VIX / 16`` (near expiries turn over
    more, and more so when the VIX is high), negative binomial with shape 1.
Reproducibility
    The generator is seeded with ``(seed, crc32(root), session ordinal)``: the same
    session gives the same chain in every run, independent of the other sessions.
"""

from __future__ import annotations

import zlib
from datetime import date
from typing import Final

import numpy as np

from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainWindow
from portfolio_pipeline.brokers.demo.market import DemoMarket, round_to_tick
from portfolio_pipeline.quant import pricing

OI_SCALE: Final[dict[str, float]] = {"SPX": 4000.0, "NDX": 300.0, "SPY": 8000.0, "QQQ": 5000.0}
PUT_OI_SHARE: Final[float] = 1.6
WEEKLY_WEIGHT: Final[float] = 0.35
OTM_WIDTH: Final[float] = 1.25
ITM_WIDTH: Final[float] = 0.6
OI_SHAPE: Final[float] = 2.0
VOLUME_SHAPE: Final[float] = 1.0
SOURCE: Final[str] = "demo (simulated)"


def _neg_binomial(rng: np.random.Generator, mean: np.ndarray, shape: float) -> np.ndarray:
    """Gamma-Poisson draws with ``mean`` and shape ``shape`` (variance ``m + m^2/shape``)."""
    lam = rng.gamma(shape, np.maximum(mean, 0.0) / shape)
    out: np.ndarray = rng.poisson(lam).astype(np.float64)
    return out


def _round_boost(strike: np.ndarray) -> np.ndarray:
    k = np.round(strike, 6)
    return np.where(k % 100 == 0, 3.0, np.where(k % 50 == 0, 2.0, np.where(k % 25 == 0, 1.5, 1.0)))


def simulated_chain(
    market: DemoMarket, root: str, i: int, window: ChainWindow, *, seed: int
) -> ChainSnapshot:
    """The simulated chain of ``root`` at the close of session index ``i`` (module docstring)."""
    session: date = market.sessions[i]
    spot = float(market.spot(root, i))
    rate = float(market.rate(i))
    q = market.dividend_yield(root)
    grid = market.strike_grid(root, spot, width=window.moneyness)
    spec = market.instruments.spec(root).options
    assert spec is not None
    monthly = set(market.expiries(root, None, session, kind="monthly"))
    tcs: list[str] = []
    exps: list[date] = []
    Ts: list[float] = []
    for tc in spec.trading_classes:
        for e in market.expiries(root, tc.name, session):
            if e <= session or (e - session).days > window.max_days:
                continue
            tcs.append(tc.name)
            exps.append(e)
            Ts.append(float(market.year_fraction(root, tc.name, e, i)))
    n_exp, n_k = len(exps), grid.size
    # rows: expiry-major, then strike, calls then puts
    T = np.repeat(np.asarray(Ts, dtype=np.float64), 2 * n_k)
    strike = np.tile(np.concatenate([grid, grid]), n_exp)
    is_call = np.tile(np.concatenate([np.ones(n_k, bool), np.zeros(n_k, bool)]), n_exp)
    expiry = np.repeat(np.asarray(exps, dtype="datetime64[D]"), 2 * n_k)
    tclass = np.repeat(np.asarray(tcs, dtype=np.str_), 2 * n_k)
    is_monthly = np.repeat(np.asarray([e in monthly for e in exps], dtype=bool), 2 * n_k)
    iv = market.implied_vol(root, i, strike, T)
    kinds = np.where(is_call, "call", "put")
    mid = market.fair_values(
        root,
        kinds,
        strike,
        T,
        np.asarray(spot, dtype=np.float64),
        iv,
        np.asarray(rate, dtype=np.float64),
    )
    bid, ask = market.option_bid_ask(root, i, mid)
    g = pricing.greeks(
        is_call, spot, strike, T, rate, q, iv, model=market.instruments.pricing_model(root)
    )

    rng = np.random.default_rng((int(seed), zlib.crc32(root.encode()), session.toordinal()))
    atm = market.atm_vol(root, i, T)
    fwd = spot * np.exp((rate - q) * T)
    z = np.log(strike / fwd) / (atm * np.sqrt(np.maximum(T, 1.0 / 365.0)))
    otm = np.where(is_call, z >= 0, z <= 0)
    width = np.where(otm, OTM_WIDTH, ITM_WIDTH)
    mean_oi = (
        OI_SCALE[root]
        * np.where(is_monthly, 1.0, WEEKLY_WEIGHT)
        * _round_boost(strike)
        * np.where(is_call, 1.0, PUT_OI_SHARE)
        * np.exp(-(z**2) / (2.0 * width**2))
    )
    oi = _neg_binomial(rng, mean_oi, OI_SHAPE)
    days = T * 365.0
    turnover = (0.05 + 0.6 * np.exp(-days / 7.0)) * float(market.vix[i]) / 16.0
    volume = _neg_binomial(rng, mean_oi * turnover, VOLUME_SHAPE)
    as_of = market.close_time(session)
    return ChainSnapshot(
        underlying=root,
        as_of=as_of,
        spot=spot,
        multiplier=float(spec.multiplier),
        rate=rate,
        dividend_yield=q,
        source=SOURCE,
        simulated=True,
        trading_class=tclass,
        expiry=expiry,
        is_call=is_call,
        strike=strike,
        T=T,
        bid=bid,
        ask=ask,
        last=round_to_tick(mid, market.tick(root), "nearest"),
        volume=volume,
        open_interest=oi,
        iv=iv,
        delta=np.asarray(g.delta),
        gamma=np.asarray(g.gamma),
        vega=np.asarray(g.vega),
        theta=np.asarray(g.theta),
        quote_epoch=np.full(strike.size, as_of.timestamp()),
        model=market.instruments.pricing_model(root),
    )

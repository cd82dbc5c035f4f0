"""Multi-account book: the same position held in two accounts at two brokers, and the
consolidated ('*') Greeks against the sum of the accounts.

The book of ``brokers/test_cross_broker_greeks.py`` (short 1 SPXW put, long 10 /ES EW puts,
short 100 SPY) is fetched from the IBKR wire-level fake (account U1) and from the
Tastytrade SDK fakes (its account), stored as ``positions_snapshot`` / ``market_snapshot``
rows (``storage.records``) and run through the pipeline's own ``position_greek_rows`` and
``portfolio_greek_rows``: each position's dollar Greeks are identical in both accounts, the
broker-Greek columns equal the hand arithmetic written out in that test, and the book row
is the sum of the two accounts (exactly twice one account).
"""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from portfolio_pipeline.analytics.greeks import portfolio_greek_rows, position_greek_rows
from portfolio_pipeline.config.loader import load_platform_config
from portfolio_pipeline.domain.positions import Contract, Quote
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.storage.records import position_row, quote_row
from portfolio_pipeline_tests.brokers.test_cross_broker_greeks import (
    EXPECTED,
    KEYS,
    ib_gateway,
    ibkr_book,
    tasty_book,
)
from portfolio_pipeline_tests.stubs import instruments

CONFIG = Path(__file__).resolve().parents[2] / "config"
DAY = date(2018, 2, 2)
CLOSE = datetime.fromisoformat("2018-02-02T21:00:00+00:00")
DOLLAR = (
    "dollar_delta",
    "dollar_gamma_1pct",
    "vega_per_point",
    "theta_per_day",
    "vanna_per_point",
    "volga_per_point",
    "share_delta",
)


def _hour(expiry: date, am: bool) -> float:
    return 14.5 if am else 21.0


def _rows() -> pd.DataFrame:
    ib_positions, ib_quotes = ibkr_book(ib_gateway())
    tt_positions, tt_quotes, _ = tasty_book()
    positions = pd.DataFrame([position_row(DAY, p) for p in (*ib_positions, *tt_positions)])
    # the snapshot quotes each option's underlying too (the SPX index, the ESH8 future), per broker
    underlyings = [
        Quote(b, c, CLOSE, bid=2700.0, ask=2700.0, mark=2700.0, last=2700.0)
        for b in ("ibkr", "tastytrade")
        for c in (Contract("ES", "FUT", expiry=date(2018, 3, 16)), Contract("SPX", "IND"))
    ]
    market = pd.DataFrame([quote_row(DAY, q) for q in (*ib_quotes, *tt_quotes, *underlyings)])
    rows = position_greek_rows(
        positions,
        market,
        session=DAY,
        as_of=CLOSE,
        instruments=instruments(),
        pricing_config=load_platform_config(CONFIG).pricing,
        betas={},
        reference_price=math.nan,
        settlement_hour=_hour,
    )
    return pd.DataFrame(rows)


def test_same_position_two_accounts_two_brokers_same_dollar_greeks_and_book_is_the_sum() -> None:
    frame = _rows()
    accounts = sorted({(b, a) for b, a in zip(frame["broker"], frame["account_id"], strict=True)})
    assert [b for b, _ in accounts] == ["ibkr", "tastytrade"]
    one, two = (
        frame[(frame["broker"] == b) & (frame["account_id"] == a)].set_index("position_key")
        for b, a in accounts
    )
    assert sorted(one.index) == sorted(two.index) == sorted(KEYS)
    for column in DOLLAR:
        assert np.array_equal(
            one.loc[list(KEYS), column].to_numpy(float), two.loc[list(KEYS), column].to_numpy(float)
        ), column
    # the broker's own option Greeks, scaled once: the hand arithmetic (independent of our pricer)
    for i, key in enumerate(KEYS[:2]):
        for side in (one, two):
            assert side.loc[key, "broker_share_delta"] == pytest.approx(
                EXPECTED["share_delta"][i], abs=1e-9
            )
            assert side.loc[key, "broker_theta_per_day"] == pytest.approx(
                EXPECTED["theta_per_day"][i], abs=1e-9
            )
            assert side.loc[key, "broker_vega_per_point"] == pytest.approx(
                EXPECTED["vega_per_point"][i], abs=1e-9
            )

    totals = pd.DataFrame(portfolio_greek_rows(frame, DAY))
    book = totals[(totals["broker"] == AGGREGATE) & (totals["underlying"] == AGGREGATE)].iloc[0]
    per_account = totals[(totals["broker"] != AGGREGATE) & (totals["underlying"] == AGGREGATE)]
    assert len(per_account) == 2 and int(book["positions"]) == 6
    for column in (
        "dollar_delta",
        "dollar_gamma_1pct",
        "vega_per_point",
        "theta_per_day",
        "beta_weighted_dollar_delta",
    ):
        values = per_account[column].to_numpy(float)
        assert values[0] == values[1], column
        assert book[column] == pytest.approx(values.sum(), rel=1e-12, abs=1e-9), column
        assert book[column] == pytest.approx(2.0 * values[0], rel=1e-12, abs=1e-9), column
    # cross-account netting per underlying: ('*', '*', u) sums both accounts' u rows
    for u in ("SPX", "ES", "SPY"):
        net = totals[(totals["broker"] == AGGREGATE) & (totals["underlying"] == u)].iloc[0]
        mine = totals[(totals["broker"] != AGGREGATE) & (totals["underlying"] == u)]
        assert net["dollar_delta"] == pytest.approx(float(mine["dollar_delta"].sum()), rel=1e-12), u

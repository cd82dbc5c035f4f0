"""``portfolio_greek_rows`` (numpy sums per group) against its straightforward twin: a
pandas ``groupby`` with ``Series.sum`` per group and column, on the same frames.

The twin is the implementation the numpy one replaced, kept verbatim as the reference;
the rows must be identical, floats bit for bit (compared through ``repr``), NULL handling
(any NULL in a group makes that group's sum NaN) and group order included.  A hand-summed
case pins the meaning independently of either implementation.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest

from portfolio_pipeline.analytics.greeks import GREEK_SUM_COLUMNS, portfolio_greek_rows

DAY = date(2018, 4, 2)


def _pandas_twin(position_rows: pd.DataFrame, session: date) -> list[dict[str, Any]]:
    if position_rows.empty:
        return []
    frame = position_rows.copy()
    cols = list(GREEK_SUM_COLUMNS)
    rows: list[dict[str, Any]] = []
    levels: list[tuple[list[str], dict[str, str]]] = [
        (["broker", "account_id", "underlying"], {}),
        (["broker", "account_id"], {"underlying": "*"}),
        (["underlying"], {"broker": "*", "account_id": "*"}),
        ([], {"broker": "*", "account_id": "*", "underlying": "*"}),
    ]
    for keys, fixed in levels:
        groups = [((), frame)] if not keys else list(frame.groupby(keys, sort=True))
        for name, group in groups:
            values = dict(zip(keys, name if isinstance(name, tuple) else (name,), strict=True))
            sums = {
                c: float(group[c].astype("float64").sum(min_count=1))
                if group[c].notna().all()
                else math.nan
                for c in cols
            }
            rows.append(
                {"session_date": session, **values, **fixed, "positions": len(group), **sums}
            )
    return rows


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "broker": rng.choice(["ibkr", "tastytrade", "demo"], n),
            "account_id": rng.choice(["U1", "DU2", "5WX"], n),
            "underlying": rng.choice(["SPX", "NDX", "SPY", "QQQ", "aapl"], n),
            "position_key": [f"p{i}" for i in range(n)],
        }
    )
    for c in GREEK_SUM_COLUMNS:  # magnitudes 1e-8 .. 1e8: the summation order shows in the bits
        frame[c] = rng.normal(size=n) * 10.0 ** rng.integers(-8, 9, n)
    return frame


@pytest.mark.parametrize(("n", "seed"), [(1, 0), (7, 1), (60, 2), (500, 3)])
def test_numpy_group_sums_are_the_pandas_twins(n: int, seed: int) -> None:
    frame = _frame(n, seed)
    assert repr(portfolio_greek_rows(frame, DAY)) == repr(_pandas_twin(frame, DAY))


def test_nulls_make_their_groups_sum_nan_as_in_the_twin() -> None:
    frame = _frame(40, 4)
    frame["beta_weighted_delta"] = frame["beta_weighted_delta"].astype(object)
    frame.loc[3, "beta_weighted_delta"] = None  # reference price unknown: an object column
    frame.loc[5, "theta_per_day"] = math.nan
    frame = frame.iloc[::-1].reset_index(drop=True)  # rows not in key order
    got = portfolio_greek_rows(frame, DAY)
    assert repr(got) == repr(_pandas_twin(frame, DAY))
    assert math.isnan(got[-1]["beta_weighted_delta"]) and math.isnan(got[-1]["theta_per_day"])
    assert any(not math.isnan(r["beta_weighted_delta"]) for r in got)


def test_hand_summed_book() -> None:
    frame = pd.DataFrame(
        {
            "broker": ["ibkr", "ibkr", "demo"],
            "account_id": ["U1", "U1", "D1"],
            "underlying": ["SPX", "SPY", "SPX"],
            **{c: [1.0, 2.0, 4.0] for c in GREEK_SUM_COLUMNS},
        }
    )
    rows = {
        (r["broker"], r["account_id"], r["underlying"]): r for r in portfolio_greek_rows(frame, DAY)
    }
    assert rows[("*", "*", "*")]["dollar_delta"] == 7.0 and rows[("*", "*", "*")]["positions"] == 3
    assert rows[("*", "*", "SPX")]["vega_per_point"] == 5.0
    assert rows[("ibkr", "U1", "*")]["theta_per_day"] == 3.0
    assert rows[("demo", "D1", "SPX")]["market_value"] == 4.0
    assert len(rows) == 3 + 2 + 2 + 1
    assert portfolio_greek_rows(frame.iloc[:0], DAY) == []


def test_rows_with_a_null_key_are_left_out_of_their_level_as_in_the_twin() -> None:
    frame = _frame(30, 5)
    frame.loc[[2, 11], "underlying"] = None
    frame.loc[7, "account_id"] = None
    assert repr(portfolio_greek_rows(frame, DAY)) == repr(_pandas_twin(frame, DAY))

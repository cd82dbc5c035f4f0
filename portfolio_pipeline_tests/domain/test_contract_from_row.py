"""One row -> contract conversion; a futures option read back from storage keeps the
expiry of the future it is written on, through every path that reads contracts back.

Regression: the strategy legs, the stress book and the stored strategy-leg JSON used to
rebuild the contract without ``underlying_expiry``, so an ES weekly option on the June
future came back as one on a future expiring with the option (another key, another
underlying price).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pytest

from portfolio_pipeline.brokers.history.model import ImportBatch
from portfolio_pipeline.defs.strategies.book import leg_from_json, leg_from_row, leg_json
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.positions import Contract, contract_from_row
from portfolio_pipeline.orders.store import contract_from_json, contract_to_json
from portfolio_pipeline.storage import (
    Database,
    positions_snapshot,
    read_partition,
    replace_partition,
)
from portfolio_pipeline.storage.history import import_history, load_executions
from portfolio_pipeline_tests.storage.builders import position_row

DAY = date(2026, 3, 10)
OPTION_EXPIRY = date(2026, 3, 13)  # a weekly ES option ...
FUTURE_EXPIRY = date(2026, 6, 18)  # ... on the June future
FOP = Contract("ES", "FOP", OPTION_EXPIRY, 6700.0, "P", "E2A", underlying_expiry=FUTURE_EXPIRY)


def _stored_position(db: Database) -> dict[str, Any]:
    row = position_row(
        FOP.key, session_date=DAY, underlying="ES", sec_type="FOP", expiry=OPTION_EXPIRY,
        strike=6700.0, right="P", multiplier=50.0, trading_class="E2A",
        market_value=-2.0 * 50.0 * (0.1 + 0.2), underlying_price=6750.0,
    )
    with db.begin() as conn:
        replace_partition(conn, positions_snapshot, {"session_date": DAY}, [row])
    with db.connect() as conn:
        [stored] = read_partition(conn, positions_snapshot, {"session_date": DAY})
    return stored


def test_position_read_back_keeps_the_future_on_every_path(db: Database) -> None:
    assert FOP.key.endswith(f"|{FUTURE_EXPIRY.isoformat()}")
    stored = _stored_position(db)
    assert "underlying_expiry" not in stored  # the table keeps it only in the key
    # storage row, and the DataFrame record analytics.greeks iterates (Timestamp / NaN)
    record = pd.DataFrame([stored]).to_dict("records")[0]
    for row in (stored, record):
        assert contract_from_row(row) == FOP
    # strategy legs: from the snapshot row, and through the stored leg JSON
    leg = leg_from_row(stored)
    assert leg.contract == FOP
    assert leg_from_json(leg_json(leg)).contract == FOP
    # staged orders keep their legs as JSON
    assert contract_from_json(contract_to_json(FOP)) == FOP


def test_execution_read_back_keeps_the_future(db: Database) -> None:
    ex = Execution("ibkr", "U1", "x1", FOP, datetime(2026, 3, 10, 15, tzinfo=UTC), -2.0, 12.5, 50.0)
    import_history(db, ImportBatch("ibkr", "flex.xml", "0" * 64, (ex,), ()))
    [back] = load_executions(db)
    assert back.contract == FOP


def test_plain_option_and_missing_values() -> None:
    row = {"underlying": "SPX", "sec_type": "OPT", "expiry": "2018-03-16", "strike": 2500,
           "right": "P", "trading_class": float("nan"), "currency": None, "position_key": "x"}
    c = contract_from_row(row)
    assert c == Contract("SPX", "OPT", date(2018, 3, 16), 2500.0, "P")
    stock = contract_from_row({"underlying": "SPY", "sec_type": "STK", "expiry": pd.NaT,
                               "strike": float("nan"), "right": None})
    assert stock == Contract("SPY", "STK")
    # a futures option whose key has no separate future expiry: the future expires with it
    same = Contract("ES", "FOP", OPTION_EXPIRY, 6700.0, "P", "E2A")
    assert contract_from_row({**contract_to_json(same), "underlying_expiry": None,
                              "position_key": same.key}) == same


@pytest.mark.parametrize(
    ("override", "message"),
    [({"sec_type": "BOND"}, "unknown sec_type 'BOND'"), ({"expiry": "13/03/2026"}, "expiry '13/03/2026'"),
     ({"expiry": 20260313}, "expiry must be a date")],
)
def test_bad_rows_named(override: dict[str, Any], message: str) -> None:
    row = {**contract_to_json(FOP), **override}
    with pytest.raises(InvalidDataError, match=f"positions_snapshot x: {message}"):
        contract_from_row(row, source="positions_snapshot x")

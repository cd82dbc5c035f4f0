"""The typed read boundary: read_frame -> validated typed frames, errors naming table and column."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from portfolio_pipeline.storage import Database, account_snapshot, positions_snapshot
from portfolio_pipeline.storage.frames import (
    AccountsFrame,
    MarketFrame,
    PositionsFrame,
    ReturnsFrame,
    StoredDataError,
    TableFrame,
    check_schema,
    read_frame,
)
from portfolio_pipeline.storage.tables import portfolio_returns
from portfolio_pipeline_tests.storage.builders import AS_OF, DAY, NEXT_DAY, position_row, stock_row


def _returns_row(day: date, broker: str, account: str, nlv: float, prev: float | None) -> dict[str, object]:
    pnl = 0.0 if prev is None else nlv - prev
    return {"session_date": day, "broker": broker, "account_id": account, "nlv": nlv, "prev_nlv": prev,
            "external_flow": 0.0, "income": 0.0, "pnl": pnl, "twr": 0.0 if prev is None else pnl / prev,
            "growth_index": 1.0, "high_water_mark": 1.0, "drawdown": 0.0, "broker_daily_pnl": None}


def test_round_trip_gives_typed_columns(db: Database) -> None:
    db.replace_partition(positions_snapshot, {"session_date": DAY},
                         [position_row("SPX P2500"), stock_row("SPY")])
    db.replace_partition(positions_snapshot, {"session_date": NEXT_DAY},
                         [stock_row("SPY", session_date=NEXT_DAY)])

    frame = read_frame(db, PositionsFrame, [DAY])

    assert isinstance(frame, PositionsFrame)
    assert len(frame) == 2
    assert list(frame.position_key) == ["SPX P2500", "SPY"]  # primary-key order
    assert frame.quantity.dtype == np.float64
    np.testing.assert_array_equal(frame.quantity, [-2.0, 100.0])
    assert frame.mark[0] == 0.1 + 0.2  # the float survives the round trip bit for bit
    assert math.isnan(frame.underlying_price[1])  # NULL -> NaN in a float column
    assert list(frame.session_date) == [DAY, DAY]
    assert list(frame.frame.columns) == list(positions_snapshot.c.keys())


def test_typed_frame_selects_a_session_and_the_book(db: Database) -> None:
    db.replace_partition(portfolio_returns, {"session_date": DAY}, [
        _returns_row(DAY, "*", "*", 1_000.0, None), _returns_row(DAY, "demo", "DU1", 1_000.0, None)])
    db.replace_partition(portfolio_returns, {"session_date": NEXT_DAY}, [
        _returns_row(NEXT_DAY, "*", "*", 1_100.0, 1_000.0), _returns_row(NEXT_DAY, "demo", "DU1", 1_100.0, 1_000.0)])

    stored = read_frame(db, ReturnsFrame, start=DAY, end=NEXT_DAY)
    book = stored.on(NEXT_DAY).book()

    assert len(stored) == 4
    assert len(book) == 1
    assert book.pnl[0] == pytest.approx(100.0)
    assert book.twr[0] == pytest.approx(0.1)
    assert math.isnan(stored.on(DAY).book().prev_nlv[0])  # inception: NULL previous NLV


def test_table_read_stays_a_validated_dataframe(db: Database) -> None:
    db.replace_partition(positions_snapshot, {"session_date": DAY}, [stock_row("SPY")])
    frame = read_frame(db, positions_snapshot, where={"broker": "demo"})
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["position_key"]) == ["SPY"]
    assert read_frame(db, positions_snapshot, [NEXT_DAY]).empty


def test_a_holder_of_the_database_reads_the_same_rows(db: Database) -> None:
    """The assets pass their ``DatabaseResource`` (anything with ``.database``)."""
    db.replace_partition(positions_snapshot, {"session_date": DAY},
                         [position_row("SPX P2500"), stock_row("SPY")])

    class Holder:
        @property
        def database(self) -> Database:
            return db

    direct = read_frame(db, positions_snapshot, [DAY])
    held = read_frame(Holder(), positions_snapshot, [DAY])
    pd.testing.assert_frame_equal(held, direct)
    assert list(read_frame(Holder(), PositionsFrame, [DAY]).position_key) == ["SPX P2500", "SPY"]


def test_malformed_stored_value_names_table_column_and_row(tmp_path: object) -> None:
    # SQLite stores what it is given: text in a REAL column is read back as text
    database = Database(f"sqlite:///{tmp_path}/bad.db")
    database.migrate()
    try:
        database.replace_partition(account_snapshot, {"session_date": DAY}, [{
            "session_date": DAY, "broker": "demo", "account_id": "DU1", "currency": "USD", "nlv": 1e6,
            "cash": 1e5, "init_margin": 1.0, "maint_margin": 1.0, "excess_liquidity": 1.0,
            "buying_power": 1.0, "broker_daily_pnl": None, "as_of": AS_OF}])
        with database.begin() as conn:
            conn.execute(text("UPDATE account_snapshot SET nlv = 'n/a' WHERE account_id = 'DU1'"))
        with pytest.raises(StoredDataError, match=r"table account_snapshot: column 'nlv' holds 'n/a'.*account_id=DU1"):
            read_frame(database, AccountsFrame, [DAY])
        with pytest.raises(StoredDataError, match=r"account_snapshot.*'nlv'"):
            read_frame(database, account_snapshot, [DAY])
    finally:
        database.dispose()


def test_missing_column_and_null_are_named() -> None:
    good = pd.DataFrame([stock_row("SPY")], columns=list(positions_snapshot.c.keys()))
    with pytest.raises(StoredDataError, match="table positions_snapshot: column 'quantity' missing"):
        PositionsFrame.from_frame(good.drop(columns=["quantity"]))
    with pytest.raises(StoredDataError, match="table positions_snapshot: column 'mark' is NULL in the row "
                       "session_date=2018-02-05, broker=demo, account_id=DU123, position_key=SPY"):
        PositionsFrame.from_frame(good.assign(mark=[None]))
    with pytest.raises(StoredDataError, match="column 'session_date' holds '2018-02-05', not a date"):
        check_schema(positions_snapshot, good.assign(session_date=["2018-02-05"]))
    # a nullable column may be NULL; an empty frame with the columns is valid
    assert len(PositionsFrame.from_frame(good.assign(underlying_price=[None]))) == 1
    assert PositionsFrame.from_frame(good.iloc[:0]).empty


def test_market_frame_index_close() -> None:
    rows = [{"session_date": DAY, "source": "demo", "instrument_key": k, "underlying": u, "sec_type": t,
             "expiry": None, "strike": None, "right": None, "bid": m, "ask": m, "last": None, "mark": m,
             "underlying_price": None, "iv": None, "delta": None, "gamma": None, "vega": None,
             "theta": None, "as_of": AS_OF}
            for k, u, t, m in (("VIX", "VIX", "IND", 17.31), ("VIX3M", "VIX3M", "IND", 0.0), ("SPY", "SPY", "STK", 263.9))]
    market = MarketFrame.from_rows(rows)
    assert market.index_close("VIX") == 17.31
    assert market.index_close("VIX3M") is None  # a zero close is no close
    assert market.index_close("SPY") is None  # a stock, not an index
    assert market.index_close("VVIX") is None


def test_a_declared_column_must_exist_with_its_kind() -> None:
    from portfolio_pipeline.storage.frames import FloatColumn, TextColumn

    with pytest.raises(TypeError, match="table positions_snapshot has no column 'nope'"):
        type("Bad", (TableFrame,), {"table": positions_snapshot, "nope": FloatColumn()})
    with pytest.raises(TypeError, match=r"Bad\.quantity: TextColumn"):
        type("Bad", (TableFrame,), {"table": positions_snapshot, "quantity": TextColumn()})

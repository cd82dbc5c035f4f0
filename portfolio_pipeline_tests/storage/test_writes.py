"""replace_partition / read_partition: idempotent, validated, all-or-nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError

from portfolio_pipeline.storage import (
    Database,
    account_snapshot,
    positions_snapshot,
    read_partition,
    replace_partition,
)
from portfolio_pipeline_tests.storage.builders import AS_OF, DAY, NEXT_DAY, position_row, stock_row


def _all_rows(db: Database) -> list[dict[str, Any]]:
    with db.connect() as conn:
        stmt = select(positions_snapshot).order_by(*positions_snapshot.primary_key.columns)
        return [dict(r) for r in conn.execute(stmt).mappings()]


def test_rerun_leaves_identical_rows_and_other_partitions_untouched(db: Database) -> None:
    day_rows = [position_row("SPX P2500"), stock_row("SPY")]
    other_rows = [stock_row("SPY", session_date=NEXT_DAY)]
    assert db.replace_partition(positions_snapshot, {"session_date": NEXT_DAY}, other_rows) == 1
    assert db.replace_partition(positions_snapshot, {"session_date": DAY}, day_rows) == 2
    first = _all_rows(db)

    assert db.replace_partition(positions_snapshot, {"session_date": DAY}, day_rows) == 2
    second = _all_rows(db)

    assert second == first
    assert [repr(r) for r in second] == [repr(r) for r in first]  # same floats, bit for bit
    with db.connect() as conn:
        stored = read_partition(conn, positions_snapshot, {"session_date": DAY})
        assert [r["position_key"] for r in stored] == ["SPX P2500", "SPY"]
        assert stored[0]["mark"] == 0.1 + 0.2
        assert stored[0]["as_of"] == AS_OF and stored[0]["as_of"].tzinfo is not None
        assert stored[1]["strike"] is None and stored[1]["right"] is None
        assert read_partition(conn, positions_snapshot, {"session_date": NEXT_DAY}) == [
            stock_row("SPY", session_date=NEXT_DAY)
        ]


def test_replacement_drops_rows_no_longer_present(db: Database) -> None:
    db.replace_partition(
        positions_snapshot, {"session_date": DAY}, [position_row("a"), stock_row("b")]
    )
    db.replace_partition(positions_snapshot, {"session_date": DAY}, [stock_row("b")])
    assert [r["position_key"] for r in _all_rows(db)] == ["b"]
    db.replace_partition(positions_snapshot, {"session_date": DAY}, [])
    assert _all_rows(db) == []


def test_multi_column_partition_only_replaces_that_broker(db: Database) -> None:
    db.replace_partition(
        positions_snapshot, {"session_date": DAY, "broker": "ibkr"}, [stock_row("x", broker="ibkr")]
    )
    db.replace_partition(
        positions_snapshot,
        {"session_date": DAY, "broker": "tastytrade"},
        [stock_row("x", broker="tastytrade")],
    )
    db.replace_partition(positions_snapshot, {"session_date": DAY, "broker": "ibkr"}, [])
    assert [r["broker"] for r in _all_rows(db)] == ["tastytrade"]


def test_database_error_in_the_middle_rolls_back_to_the_stored_partition(db: Database) -> None:
    original = [position_row("a"), stock_row("b")]
    db.replace_partition(positions_snapshot, {"session_date": DAY}, original)
    before = _all_rows(db)
    # passes Python validation, violates the CHECK constraint on the database
    bad = [position_row("a"), position_row("c", right="X"), stock_row("d")]
    with pytest.raises(IntegrityError):
        db.replace_partition(positions_snapshot, {"session_date": DAY}, bad)
    assert _all_rows(db) == before


def test_validation_error_in_caller_transaction_writes_nothing(db: Database) -> None:
    db.replace_partition(positions_snapshot, {"session_date": DAY}, [stock_row("b")])
    before = _all_rows(db)
    bad = [position_row("a"), position_row("c", mark=math.nan), stock_row("d")]
    with pytest.raises(ValueError, match=r"'mark' is NaN \(row 1\)"), db.begin() as conn:
        replace_partition(
            conn, account_snapshot, {"session_date": DAY}, []
        )  # earlier work in the same transaction...
        replace_partition(conn, positions_snapshot, {"session_date": DAY}, bad)
    assert _all_rows(db) == before


@pytest.mark.parametrize(
    ("rows", "partition", "message"),
    [
        (
            [position_row("a", session_date=NEXT_DAY)],
            {"session_date": DAY},
            r"row 0 has session_date=",
        ),
        (
            [position_row("a"), position_row("b", broker="ibkr")],
            {"session_date": DAY, "broker": "demo"},
            r"row 1 has broker='ibkr' outside the partition",
        ),
        (
            [{k: v for k, v in position_row("a").items() if k != "session_date"}],
            {"session_date": DAY},
            r"row 0 lacks partition column 'session_date'",
        ),
        (
            [position_row("a", bogus=1)],
            {"session_date": DAY},
            r"unknown column 'bogus' for table 'positions_snapshot'",
        ),
        (  # each column name is validated once, at the first row that holds it
            [position_row("a"), position_row("b", bogus=1)],
            {"session_date": DAY},
            r"unknown column 'bogus' for table 'positions_snapshot' \(row 1\)",
        ),
        (
            [position_row("a")],
            {"sesion_date": DAY},
            r"unknown column 'sesion_date' for table 'positions_snapshot'",
        ),
        ([position_row("a")], {}, r"empty partition"),
        (
            [position_row("a", quantity=math.inf)],
            {"session_date": DAY},
            r"'quantity' is infinite \(row 0\)",
        ),
        (
            [position_row("a", quantity=float("-inf"))],
            {"session_date": DAY},
            r"'quantity' is infinite",
        ),
        (
            [position_row("a", avg_price=None)],
            {"session_date": DAY},
            r"'avg_price' is None \(row 0\)",
        ),
        ([position_row("a", quantity="2")], {"session_date": DAY}, r"'quantity' needs a number"),
        (
            [position_row("a", as_of=datetime(2018, 2, 5, 21, 0))],
            {"session_date": DAY},
            r"'as_of' got a naive datetime.*row 0",
        ),
        (
            [position_row("a", session_date=datetime(2018, 2, 5, tzinfo=UTC))],
            {"session_date": DAY},
            r"'session_date' needs a date",
        ),
        (
            [position_row("a"), position_row("a")],
            {"session_date": DAY},
            r"rows 0 and 1 share the primary key",
        ),
    ],
)
def test_bad_rows_raise_value_error_before_writing(
    db: Database, rows: list[dict[str, Any]], partition: dict[str, Any], message: str
) -> None:
    db.replace_partition(positions_snapshot, {"session_date": DAY}, [stock_row("kept")])
    with pytest.raises(ValueError, match=message):
        db.replace_partition(positions_snapshot, partition, rows)
    assert [r["position_key"] for r in _all_rows(db)] == ["kept"]


def test_missing_required_column_is_named(db: Database) -> None:
    row = position_row("a")
    del row["mark"]
    with pytest.raises(ValueError, match=r"required column 'mark' of 'positions_snapshot'"):
        db.replace_partition(positions_snapshot, {"session_date": DAY}, [row])


def test_nan_in_nullable_float_is_stored_as_null_on_both_backends(db: Database) -> None:
    db.replace_partition(
        positions_snapshot, {"session_date": DAY}, [position_row("a", underlying_price=math.nan)]
    )
    assert _all_rows(db)[0]["underlying_price"] is None


def test_numpy_scalars_and_offset_datetimes_are_normalised(db: Database) -> None:
    est = timezone(timedelta(hours=-5))
    row = position_row(
        "a",
        quantity=np.int64(-3),
        mark=np.float64(1.25),
        as_of=datetime(2018, 2, 5, 16, 0, tzinfo=est),
    )
    db.replace_partition(positions_snapshot, {"session_date": DAY}, [row])
    stored = _all_rows(db)[0]
    assert stored["quantity"] == -3.0 and isinstance(stored["quantity"], float)
    assert stored["mark"] == 1.25
    assert stored["as_of"] == AS_OF
    assert stored["as_of"].utcoffset() == timedelta(0)


def test_utc_datetime_type_rejects_naive_values_on_any_insert(db: Database) -> None:
    row = position_row("a", as_of=datetime(2018, 2, 5, 21, 0))
    with pytest.raises(StatementError, match=r"'as_of' got a naive datetime"), db.begin() as conn:
        conn.execute(positions_snapshot.insert(), row)  # bypassing replace_partition
    assert _all_rows(db) == []


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # each example replaces it
)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=5
    )
)
@example(values=[-0.0])  # regression: SQLite returned -0.0 as +0.0 while PostgreSQL kept it
def test_any_finite_float64_round_trips_exactly(db: Database, values: list[float]) -> None:
    rows = [stock_row(f"k{i}", quantity=v, mark=v) for i, v in enumerate(values)]
    db.replace_partition(positions_snapshot, {"session_date": DAY}, rows)
    with db.connect() as conn:
        stored = read_partition(conn, positions_snapshot, {"session_date": DAY})
    assert [(r["quantity"], r["mark"]) for r in stored] == [(v, v) for v in values]
    # zero is stored as +0.0 on both backends (SQLite cannot keep the sign of -0.0)
    assert [math.copysign(1.0, r["mark"]) for r in stored] == [
        math.copysign(1.0, v) if v != 0.0 else 1.0 for v in values
    ]

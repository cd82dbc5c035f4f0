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


# -- column-wise validation against the row-by-row twin -------------------------------------

_ODD_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, 5e-324]),
    st.floats(allow_nan=True).map(np.float64),
    st.integers(-(2**70), 2**70),
    st.sampled_from([None, True, np.int64(3), np.float32(0.5), "1.5", np.nan]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.tuples(
            _ODD_FLOATS,
            _ODD_FLOATS,
            _ODD_FLOATS,
            st.sampled_from(["DU123", np.str_("DU9"), None]),
            st.sampled_from([DAY, NEXT_DAY, AS_OF, "2018-02-05"]),
            st.sampled_from([AS_OF, AS_OF.replace(tzinfo=None), "x"]),
            st.booleans(),
        ),
        max_size=6,
    )
)
@example(values=[(-0.0, math.nan, 1.0, "DU123", DAY, AS_OF, False)])
@example(values=[(1.0, None, math.inf, "DU123", DAY, AS_OF, True)] * 2)
def test_column_wise_validation_matches_the_row_by_row_twin(values: list[tuple[Any, ...]]) -> None:
    """``_prepare_rows`` validates and cleans a column at a time (numpy for floats) and falls
    back to the row-by-row path; the outcome (rows, bit for bit, or the error message naming
    the first bad row) must be the row-by-row path's on the same input."""
    from portfolio_pipeline.storage.writes import _prepare_by_row, _prepare_rows

    rows: list[dict[str, Any]] = []
    for i, (mark, underlying_price, quantity, account, session, as_of, drop) in enumerate(values):
        row = position_row(
            f"p{i}",
            mark=mark,
            underlying_price=underlying_price,
            quantity=quantity,
            account_id=account,
            session_date=session,
            as_of=as_of,
        )
        if drop:
            del row["underlying_price"]  # a nullable column some rows lack
        rows.append(row)
    partition = {"session_date": DAY}
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = [positions_snapshot.c[name] for name in names]

    def outcome(fn: Any, *args: Any) -> tuple[str, str]:
        try:
            return "ok", repr(fn(*args))
        except ValueError as exc:
            return "error", str(exc)

    fast = outcome(_prepare_rows, positions_snapshot, partition, rows)
    slow = outcome(_prepare_by_row, positions_snapshot, partition, columns, rows)
    assert fast == slow


def test_ordinary_rows_take_the_column_wise_path() -> None:
    """The twin test above compares something: ordinary rows (NaN, -0.0, None, numpy floats
    included) are cleaned by the column-wise path, not handed back to the row-by-row one."""
    from portfolio_pipeline.storage.writes import _prepare_by_column, _prepare_by_row

    rows = [
        position_row("a", mark=np.float64(-0.0)),
        stock_row("b", underlying_price=math.nan),
        position_row("c", quantity=np.float64(3.0)),
    ]
    columns = [positions_snapshot.c[name] for name in rows[0]]
    fast = _prepare_by_column(columns, rows)
    assert fast is not None
    assert repr(fast) == repr(
        _prepare_by_row(positions_snapshot, {"session_date": DAY}, columns, rows)
    )
    assert repr(fast[0]["mark"]) == "0.0" and fast[1]["underlying_price"] is None

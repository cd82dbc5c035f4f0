"""replace_partition / read_partition: idempotent, validated, all-or-nothing."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    CHAR,
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    event,
    select,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from portfolio_pipeline.storage import (
    Database,
    account_snapshot,
    dict_rows,
    positions_snapshot,
    read_partition,
    replace_partition,
)
from portfolio_pipeline.storage.tables import UtcDateTime, stress_shock_grid
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


def test_dict_rows_are_the_mapping_rows_as_dicts(db: Database) -> None:
    db.replace_partition(positions_snapshot, {"session_date": DAY}, [position_row("SPX P2500"), stock_row("SPY")])
    stmt = select(positions_snapshot).order_by(*positions_snapshot.primary_key.columns)
    with db.connect() as conn:
        fast = dict_rows(conn.execute(stmt))
        empty = dict_rows(conn.execute(stmt.where(positions_snapshot.c.session_date == NEXT_DAY)))
    assert fast == _all_rows(db)
    assert [list(r) for r in fast] == [list(r) for r in _all_rows(db)]  # same keys, same order
    assert len(fast) == 2 and empty == []


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
    from portfolio_pipeline.storage.writes import _clean_by_column, _prepare_by_row

    rows = [
        position_row("a", mark=np.float64(-0.0)),
        stock_row("b", underlying_price=math.nan),
        position_row("c", quantity=np.float64(3.0)),
    ]
    columns = [positions_snapshot.c[name] for name in rows[0]]
    by_column = _clean_by_column(columns, rows)
    assert by_column is not None
    fast = [dict(zip(rows[0], values, strict=True)) for values in zip(*by_column, strict=True)]
    assert repr(fast) == repr(
        _prepare_by_row(positions_snapshot, {"session_date": DAY}, columns, rows)
    )
    assert repr(fast[0]["mark"]) == "0.0" and fast[1]["underlying_price"] is None


# -- the driver-level INSERT against SQLAlchemy's executemany twin ---------------------------

_twin_metadata = MetaData()
_twin = Table(
    "write_path_twin",
    _twin_metadata,
    Column("session_date", Date, primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("label", String(64), nullable=True),
    Column("code", CHAR(1), nullable=True),
    Column("big", BigInteger, nullable=True),
    Column("price", Double, nullable=False),
    Column("maybe", Double, nullable=True),
    Column("flag", Boolean, nullable=True),
    Column("expiry", Date, nullable=True),
    Column("as_of", UtcDateTime("as_of"), nullable=True),
    Column("payload", JSON(none_as_null=True), nullable=True),
)
"""One column of every type the platform's tables use (created only by these tests)."""


@pytest.fixture
def twin_db(db: Database) -> Iterator[Database]:
    _twin_metadata.create_all(db.engine)
    try:
        yield db
    finally:
        _twin_metadata.drop_all(db.engine)


def _twin_row(n: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "session_date": DAY,
        "n": n,
        "label": f"row {n} 100% 'quoted' %(x)s ?",
        "code": "C",
        "big": 2**53 + n,
        "price": 0.1 * n + 0.2,
        "maybe": None if n % 3 else -0.0,
        "flag": bool(n % 2),
        "expiry": date(2018, 3, 16),
        "as_of": datetime(2018, 2, 5, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5))),
        "payload": {"n": n, "z": [1.5, None, "é"], "a": {"b": True}},
    }
    row.update(overrides)
    return row


def _driver_sql_inserts() -> tuple[list[int], Any]:
    """A ``before_cursor_execute`` listener and the list it fills: the row count of each
    INSERT sent as driver SQL (no SQLAlchemy compiled statement behind it)."""
    sent: list[int] = []

    def listener(
        _conn: Any, _cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if statement.startswith("INSERT") and context is not None and context.compiled is None:
            sent.append(len(params) if many else 1)

    return sent, listener


def _write_both_ways(
    db: Database, rows: list[dict[str, Any]]
) -> tuple[tuple[str, Any, Any], tuple[str, Any, Any], list[int]]:
    """``rows`` replaced through SQLAlchemy's executemany and through the driver INSERT; each
    outcome: ("ok", rows read back through SQLAlchemy, raw driver rows) or the error."""
    from portfolio_pipeline.storage import writes

    sent, listener = _driver_sql_inserts()
    order = ", ".join(c.name for c in _twin.primary_key.columns)

    def write(min_rows: int) -> tuple[str, Any, Any]:
        with db.begin() as conn:
            conn.execute(_twin.delete())
        try:
            with patch.object(writes, "_DRIVER_INSERT_MIN_ROWS", min_rows):
                db.replace_partition(_twin, {"session_date": DAY}, rows)
        except ValueError as exc:
            return "ValueError", str(exc), None
        except DBAPIError as exc:
            return "DBAPIError", type(exc.orig).__name__, None
        with db.connect() as conn:
            stored = [
                dict(r)
                for r in conn.execute(select(_twin).order_by(*_twin.primary_key.columns)).mappings()
            ]
            raw = conn.exec_driver_sql(f"SELECT * FROM write_path_twin ORDER BY {order}").all()
        return "ok", repr(stored), repr([tuple(r) for r in raw])

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        old = write(10**9)
        assert sent == []
        new = write(1)
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    return old, new, sent


def test_driver_insert_stores_what_sqlalchemy_executemany_stores(twin_db: Database) -> None:
    rows = [_twin_row(n) for n in range(40)]
    rows[5].update(label=None, code=None, big=None, flag=None, expiry=None, as_of=None)
    rows[6].update(payload=None, maybe=math.nan, price=np.float64(-0.0), big=np.int64(-7))
    rows[7].update(payload=[], flag=np.bool_(True), as_of=datetime(2018, 2, 5, tzinfo=UTC))
    rows[8].update(payload="text", maybe=5e-324, price=1e308, label="")
    old, new, sent = _write_both_ways(twin_db, rows)
    assert old[0] == "ok"
    assert new == old
    assert sent == [40]  # the new path wrote all of them, in one executemany
    with twin_db.connect() as conn:
        stored = read_partition(conn, _twin, {"session_date": DAY})
    assert stored[5]["as_of"] is None and stored[6]["maybe"] is None
    assert stored[0]["as_of"] == datetime(2018, 2, 5, 21, 0, 0, 123456, tzinfo=UTC)
    assert stored[7]["payload"] == [] and stored[8]["payload"] == "text"
    assert stored[6]["payload"] is None and repr(stored[6]["price"]) == "0.0"


def test_large_partitions_take_the_driver_insert(twin_db: Database) -> None:
    """Without patching the threshold: a large partition is one driver executemany, a small
    one goes through ``conn.execute``."""
    from portfolio_pipeline.storage.writes import _DRIVER_INSERT_MIN_ROWS

    sent, listener = _driver_sql_inserts()
    event.listen(twin_db.engine, "before_cursor_execute", listener)
    try:
        twin_db.replace_partition(_twin, {"session_date": DAY}, [_twin_row(1)])
        assert sent == []
        rows = [_twin_row(n) for n in range(_DRIVER_INSERT_MIN_ROWS)]
        assert twin_db.replace_partition(_twin, {"session_date": DAY}, rows) == len(rows)
        assert sent == [len(rows)]
    finally:
        event.remove(twin_db.engine, "before_cursor_execute", listener)


_ODD_TEXT = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["%", "%(n)s", "?", "'"]))
_ODD_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.lists(
        st.tuples(
            _ODD_TEXT,
            st.one_of(st.none(), st.sampled_from(["C", "P", "é"])),
            st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
            _ODD_FLOATS,
            _ODD_FLOATS,
            st.one_of(st.none(), st.booleans(), st.just(np.bool_(False))),
            st.one_of(st.none(), st.dates(date(1900, 1, 1), date(2200, 1, 1))),
            st.one_of(
                st.none(),
                st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1), timezones=st.timezones()),
            ),
            _ODD_JSON,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_driver_insert_matches_the_twin_on_odd_values(
    twin_db: Database, values: list[tuple[Any, ...]]
) -> None:
    """Odd values (NaN, -0.0, inf, None, numpy scalars, text with % and quotes, nested JSON,
    aware datetimes in any zone): both INSERT paths store the same bytes or fail alike."""
    names = ("label", "code", "big", "price", "maybe", "flag", "expiry", "as_of", "payload")
    rows = [
        {"session_date": DAY, "n": i, **dict(zip(names, v, strict=True))}
        for i, v in enumerate(values)
    ]
    old, new, _sent = _write_both_ways(twin_db, rows)
    assert new == old


def test_column_wise_errors_on_a_large_partition_name_the_row_as_before() -> None:
    """The duplicate-key, bad-value and outside-partition errors of the column-wise path
    on a realistic partition are the row-by-row path's, word for word."""
    from portfolio_pipeline.storage.writes import _prepare_by_row, _prepare_rows

    def grid(n: int) -> dict[str, Any]:
        return {
            "session_date": DAY,
            "broker": "demo",
            "account_id": "DU123",
            "group_key": "*",
            "spot_shock": -0.3 + 0.01 * n,
            "vol_scenario": "+5pt",
            "horizon_days": n % 7,
            "strategy_id": None,
            "pnl": 1.5 * n,
            "pnl_greeks": -2.5 * n,
        }

    duplicate = [grid(n) for n in range(200)]
    duplicate[157] = dict(duplicate[3])
    bad_value = [grid(n) for n in range(200)]
    bad_value[70]["pnl"] = math.inf
    outside = [grid(n) for n in range(200)]
    outside[40]["session_date"] = NEXT_DAY
    outside[90]["session_date"] = NEXT_DAY
    cases = [
        (duplicate, r"^rows 3 and 157 share the primary key \{'session_date': "),
        (bad_value, r"^column 'pnl' is infinite \(row 70\); it must be finite$"),
        (outside, r"^row 40 has session_date=datetime.date\(2018, 2, 6\) outside the partition"),
    ]
    columns = [stress_shock_grid.c[name] for name in grid(0)]
    for rows, message in cases:
        with pytest.raises(ValueError, match=message) as fast:
            _prepare_rows(stress_shock_grid, {"session_date": DAY}, rows)
        with pytest.raises(ValueError) as slow:
            _prepare_by_row(stress_shock_grid, {"session_date": DAY}, columns, rows)
        assert str(fast.value) == str(slow.value)


def test_database_error_during_the_driver_insert_keeps_the_old_partition(db: Database) -> None:
    original = [stock_row(f"s{i}") for i in range(40)]
    db.replace_partition(positions_snapshot, {"session_date": DAY}, original)
    before = _all_rows(db)
    # passes Python validation; row 50 violates the CHECK constraint on "right"
    bad = [position_row(f"p{i}") for i in range(60)]
    bad[50]["right"] = "X"
    with pytest.raises(IntegrityError):
        db.replace_partition(positions_snapshot, {"session_date": DAY}, bad)
    assert _all_rows(db) == before

"""Partition-idempotent writes: a re-run or backfill replaces exactly one partition.

Every row is validated before anything is written, so bad input raises a ``ValueError``
naming the column (and row) and leaves what is stored untouched.  Column names come from
table metadata only; values always travel as bound parameters.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from itertools import repeat
from operator import eq, itemgetter, methodcaller, ne
from typing import Any, Final

import numpy as np
from sqlalchemy import JSON, Column, Connection, Date, Float, Result, Table, and_, delete, select
from sqlalchemy.sql.elements import ColumnElement

from portfolio_pipeline.clock import to_utc
from portfolio_pipeline.storage.engine import json_dumps
from portfolio_pipeline.storage.tables import UtcDateTime

__all__ = ["dict_rows", "read_partition", "replace_partition"]

logger = logging.getLogger(__name__)


def _column(table: Table, name: object, *, where: str) -> Column[Any]:
    if not isinstance(name, str) or name not in table.c:
        raise ValueError(f"unknown column {name!r} for table {table.name!r} ({where})")
    return table.c[name]


def _clean_partition(table: Table, partition: Mapping[str, Any]) -> dict[str, Any]:
    if not partition:
        raise ValueError(
            f"an empty partition would replace all of table {table.name!r}; "
            "name the partition columns (e.g. session_date)"
        )
    clean: dict[str, Any] = {}
    for name, value in partition.items():
        column = _column(table, name, where="partition")
        if value is None:
            raise ValueError(f"partition value for column {name!r} of {table.name!r} is None")
        clean[name] = _clean_value(column, value, where="partition")
    return clean


def _partition_clause(table: Table, partition: Mapping[str, Any]) -> ColumnElement[bool]:
    return and_(*(table.c[name] == value for name, value in partition.items()))


def _clean_value(column: Column[Any], value: Any, *, where: str) -> Any:
    """Validate and normalise one value for ``column`` (``where`` names the row)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return None
    col_type = column.type
    if isinstance(col_type, UtcDateTime):
        try:
            return to_utc(value, column.name)
        except ValueError as exc:
            raise ValueError(f"{exc} ({where})") from None
    if isinstance(col_type, Date):
        if isinstance(value, datetime) or not isinstance(value, date):
            raise ValueError(
                f"column {column.name!r} needs a date, got {type(value).__name__} ({where})"
            )
        return value
    if isinstance(col_type, JSON):
        try:
            json_dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {column.name!r} is not JSON ({where}): {exc}") from None
        return value
    if isinstance(col_type, Float):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"column {column.name!r} needs a number, got {type(value).__name__} ({where})"
            )
        number = float(value)
        if math.isnan(number):
            if column.nullable:
                # SQLite cannot store NaN (it becomes NULL); store NULL on both backends.
                return None
            raise ValueError(f"column {column.name!r} is NaN ({where}); it must be finite")
        if math.isinf(number):
            raise ValueError(f"column {column.name!r} is infinite ({where}); it must be finite")
        # SQLite stores integral REALs as integers, which drops the sign of -0.0; store
        # +0.0 on both backends so they read back the same.
        return 0.0 if number == 0.0 else number
    return value


def _required_columns(table: Table) -> list[Column[Any]]:
    auto = table.autoincrement_column
    return [
        c
        for c in table.columns
        if not c.nullable and c is not auto and c.default is None and c.server_default is None
    ]


def _prepare_rows(
    table: Table, partition: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``rows`` validated and cleaned, as dicts (the row-wise view of :func:`_prepare_columns`)."""
    names, by_column = _prepare_columns(table, partition, rows)
    return [dict(zip(names, values, strict=True)) for values in zip(*by_column, strict=True)]


def _check_partition_by_row(
    table: Table,
    partition: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    clean_rows: Sequence[Mapping[str, Any]],
) -> None:
    for index, (row, clean) in enumerate(zip(rows, clean_rows, strict=True)):
        for name, expected in partition.items():
            if clean[name] != expected:
                raise ValueError(
                    f"row {index} has {name}={row[name]!r} outside the partition "
                    f"{name}={expected!r} of {table.name!r}"
                )


def _prepare_columns(
    table: Table, partition: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[list[Any]]]:
    """``rows`` validated and cleaned a column at a time: the column names (in order of
    first appearance) and, per name, the cleaned values of every row."""
    names: dict[str, None] = {}  # in order of first appearance; each validated once
    first_keys = rows[0].keys() if rows else None
    if (
        first_keys is not None
        and all(name in first_keys for name in partition)
        and all(map(eq, map(methodcaller("keys"), rows), repeat(first_keys)))
    ):
        rows_to_scan: Sequence[Mapping[str, Any]] = rows[:1]  # every row has these keys
    else:
        rows_to_scan = rows
    for index, row in enumerate(rows_to_scan):
        for name in partition:
            if name not in row:
                raise ValueError(f"row {index} lacks partition column {name!r} of {table.name!r}")
        if row.keys() <= names.keys():
            continue  # no new name in this row
        for name in row:
            if name not in names:  # the first row holding a name is the one an error names
                _column(table, name, where=f"row {index}")
                names[name] = None
    for column in _required_columns(table):
        if rows and column.name not in names:
            raise ValueError(f"required column {column.name!r} of {table.name!r} is missing")
    columns = [table.c[name] for name in names]
    by_column = _clean_by_column(columns, rows)
    if by_column is None:
        prepared = _prepare_by_row(table, partition, columns, rows)
        return list(names), [[clean[name] for clean in prepared] for name in names]
    position = {name: i for i, name in enumerate(names)}
    for name, expected in partition.items():
        # ``ne`` is the row-wise test ``clean[name] != expected``, mapped in C
        if any(map(ne, by_column[position[name]], repeat(expected))):
            clean_rows = [dict(zip(names, v, strict=True)) for v in zip(*by_column, strict=True)]
            _check_partition_by_row(table, partition, rows, clean_rows)  # names the first row
    _check_unique_key_columns(table, position, by_column)
    return list(names), by_column


_FLOAT_TYPES = frozenset({float, np.float64})
_NONE_TYPE = type(None)


def _clean_column(column: Column[Any], values: list[Any]) -> list[Any] | None:
    """``values`` cleaned as :func:`_clean_value` cleans each, checked for the whole column
    at once; ``None`` when any value is missing, invalid or not of a common kind (the
    row-by-row path then cleans them, or raises the error naming the first bad row)."""
    types = set(map(type, values))
    if _NONE_TYPE in types and not column.nullable:
        return None
    col_type = column.type
    if isinstance(col_type, Float) and types <= _FLOAT_TYPES | {_NONE_TYPE}:
        none = [v is None for v in values] if _NONE_TYPE in types else None
        array = np.array(
            [0.0 if v is None else v for v in values] if none else values, dtype=np.float64
        )
        if np.isinf(array).any():
            return None
        nan = np.isnan(array)
        if nan.any() and not column.nullable:
            return None
        array[array == 0.0] = 0.0  # -0.0 is stored as +0.0 (see _clean_value)
        out: list[Any] = array.tolist()
        for i in np.flatnonzero(nan).tolist():
            out[i] = None  # NaN is stored as NULL
        if none is not None:
            for i, is_none in enumerate(none):
                if is_none:
                    out[i] = None
        return out
    plain = not isinstance(col_type, UtcDateTime | JSON | Float) and not any(
        issubclass(t, np.generic) for t in types
    )
    if plain and (not isinstance(col_type, Date) or types <= {date, _NONE_TYPE}):
        return values  # what _clean_value returns for each of them
    try:
        return [_clean_value(column, v, where="") for v in values]
    except ValueError:
        return None


def _clean_by_column(
    columns: Sequence[Column[Any]], rows: Sequence[Mapping[str, Any]]
) -> list[list[Any]] | None:
    """Per column, the cleaned values of every row, cleaned a column at a time (numpy for
    float columns); ``None`` when a value needs the row-by-row path (a missing key, an
    invalid value, an unusual type)."""
    names = [c.name for c in columns]
    if not rows or not names or set(map(len, rows)) != {len(names)}:
        return None  # a row lacks a column (every key of every row is one of ``names``)
    if len(names) == 1:
        by_column: list[list[Any]] = [[row[names[0]] for row in rows]]
    else:
        by_column = [list(values) for values in zip(*map(itemgetter(*names), rows), strict=True)]
    cleaned: list[list[Any]] = []
    for column, values in zip(columns, by_column, strict=True):
        clean = _clean_column(column, values)
        if clean is None:
            return None
        cleaned.append(clean)
    return cleaned


def _prepare_by_row(
    table: Table,
    partition: Mapping[str, Any],
    columns: Sequence[Column[Any]],
    rows: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    prepared: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        where = f"row {index}"
        clean: dict[str, Any] = {}
        for column in columns:
            if column.name not in row:
                if not column.nullable:
                    raise ValueError(f"{where} lacks required column {column.name!r}")
                clean[column.name] = None
                continue
            clean[column.name] = _clean_value(column, row[column.name], where=where)
            if clean[column.name] is None and not column.nullable:
                raise ValueError(f"column {column.name!r} is None ({where}) but is NOT NULL")
        for name, expected in partition.items():
            if clean[name] != expected:
                raise ValueError(
                    f"{where} has {name}={row[name]!r} outside the partition "
                    f"{name}={expected!r} of {table.name!r}"
                )
        prepared.append(clean)
    _check_unique_keys(table, prepared)
    return prepared


def _check_unique_keys(table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    key_names = [c.name for c in table.primary_key.columns]
    if not rows or any(name not in rows[0] for name in key_names):
        return
    seen: dict[tuple[Any, ...], int] = {}
    for index, row in enumerate(rows):
        key = tuple(row[name] for name in key_names)
        if key in seen:
            raise ValueError(
                f"rows {seen[key]} and {index} share the primary key "
                f"{dict(zip(key_names, key, strict=True))!r} of {table.name!r}"
            )
        seen[key] = index


def _check_unique_key_columns(
    table: Table, position: Mapping[str, int], by_column: Sequence[Sequence[Any]]
) -> None:
    """:func:`_check_unique_keys` on cleaned columns: a set of key tuples, and the
    row-by-row search naming the first repeated key only when there is one."""
    key_names = [c.name for c in table.primary_key.columns]
    if not by_column or not by_column[0] or any(name not in position for name in key_names):
        return
    keys = list(zip(*(by_column[position[name]] for name in key_names), strict=True))
    if len(set(keys)) == len(keys):
        return
    _check_unique_keys(table, [dict(zip(key_names, key, strict=True)) for key in keys])


_MEMO_TYPES: Final = frozenset({date, _NONE_TYPE})
"""Exact value types whose bind-processed form is computed once per distinct value."""

_DRIVER_INSERT_MIN_ROWS: Final = 32
"""From this many rows on, the INSERT is compiled once and run as the DBAPI's executemany
on bind-processed tuples.  Compiling costs about 0.2 ms and SQLAlchemy's per-row parameter
handling about 4 us a row, so the two break even near 32 rows (measured on SQLite with a
10-column table); smaller partitions take ``conn.execute``, whose compiled statement is
cached."""


def _insert_columns(
    conn: Connection, table: Table, names: Sequence[str], by_column: Sequence[Sequence[Any]]
) -> None:
    """Insert the cleaned rows (given by column) in one executemany.

    What ``conn.execute(table.insert(), rows)`` sends the driver, built a column at a time:
    the INSERT compiled for exactly ``names``, each value through its column type's bind
    processor for this dialect (dates as text on SQLite, the engine's ``json_serializer``
    for JSON, ``UtcDateTime`` to UTC), in the dialect's paramstyle.  A statement needing
    more than those values (a Python-side column default, say) goes through
    ``conn.execute``.
    """
    dialect = conn.dialect
    compiled = (
        table.insert().compile(dialect=dialect, column_keys=list(names))
        if len(by_column[0]) >= _DRIVER_INSERT_MIN_ROWS
        else None
    )
    if (
        compiled is None
        or set(compiled.binds) != set(names)
        or compiled.insert_prefetch
        or compiled.literal_execute_params
        or compiled.post_compile_params
    ):
        rows = [dict(zip(names, values, strict=True)) for values in zip(*by_column, strict=True)]
        conn.execute(table.insert(), rows)
        return
    processed: dict[str, Sequence[Any]] = {}
    for name, values in zip(names, by_column, strict=True):
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            processed[name] = values
        elif set(map(type, values)) <= _MEMO_TYPES:
            # a partition's dates repeat (session_date: one value); each distinct one is
            # formatted once -- equal values of these exact types format alike
            memo = {value: process(value) for value in set(values)}
            processed[name] = list(map(memo.__getitem__, values))
        else:
            processed[name] = list(map(process, values))
    params: list[Any]
    if compiled.positional:
        order = compiled.positiontup or []
        params = list(zip(*(processed[name] for name in order), strict=True))
    else:
        escaped = compiled.escaped_bind_names
        keys = [escaped.get(name, name) for name in names]
        params = [
            dict(zip(keys, values, strict=True)) for values in zip(*processed.values(), strict=True)
        ]
    conn.exec_driver_sql(compiled.string, params)


def replace_partition(
    conn: Connection,
    table: Table,
    partition: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
) -> int:
    """Replace exactly one partition of ``table`` with ``rows``, in the caller's transaction.

    Parameters
    ----------
    conn:
        A connection inside a transaction (``with db.begin() as conn``); the delete and
        the insert commit or roll back together with whatever else the caller does.
    table:
        A table of :data:`portfolio_pipeline.storage.tables.metadata`.
    partition:
        Column -> value identifying the partition, e.g. ``{"session_date": day}`` or
        ``{"session_date": day, "broker": "ibkr"}``.  Must not be empty.
    rows:
        The partition's complete new content; each row carries the partition values.

    Returns
    -------
    int
        The number of rows inserted.

    Raises
    ------
    ValueError
        Before anything is written, for an unknown column (naming column and table), a
        row outside the partition (naming column and row index), a naive datetime, a
        NaN/inf in a float column (NaN is stored as NULL where the column is nullable),
        a missing NOT NULL column or a duplicated primary key.

    Notes
    -----
    Re-running with the same rows leaves identical stored rows; other partitions are
    never touched.
    """
    clean_partition = _clean_partition(table, partition)
    names, by_column = _prepare_columns(table, clean_partition, rows)
    inserted = len(by_column[0]) if by_column else 0
    where = _partition_clause(table, clean_partition)
    deleted = conn.execute(delete(table).where(where)).rowcount
    if inserted:
        _insert_columns(conn, table, names, by_column)
    logger.info(
        "replaced partition table=%s partition=%s deleted=%s inserted=%s",
        table.name,
        dict(partition),
        deleted,
        inserted,
    )
    return inserted


def read_partition(
    conn: Connection, table: Table, partition: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The rows of one partition as dicts, ordered by primary key."""
    where = _partition_clause(table, _clean_partition(table, partition))
    order = list(table.primary_key.columns)
    return dict_rows(conn.execute(select(table).where(where).order_by(*order)))


def dict_rows(result: Result[Any]) -> list[dict[str, Any]]:
    """Every row of ``result`` as a dict keyed by column name.

    The same dicts as ``[dict(r) for r in result.mappings()]``, with the keys read once
    for the result instead of once per row (1.4x faster on 50,000 rows of 20 columns).
    """
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]

"""``INSERT ... ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite: the one helper.

Rows whose conflict key is already stored (or repeated earlier in the same batch) are
skipped; the rows that were inserted come back with the ``returning`` columns, so a
caller learns which ids are new.  Column names come from table metadata; values travel
as bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Row, Table
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["insert_ignore"]


def insert_ignore(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[Column[Any]] | None = None,
    returning: Sequence[Column[Any]] | None = None,
) -> list[Row[Any]]:
    """Insert ``rows`` into ``table``, skipping those whose ``conflict`` key exists.

    Parameters
    ----------
    conflict :
        The unique columns a duplicate collides on (default: the primary key).
    returning :
        Columns returned for each inserted row (default: the primary key).

    Returns
    -------
    One row per inserted row (none for a skipped one), in insertion order.
    """
    if not rows:
        return []
    keys = list(conflict) if conflict is not None else list(table.primary_key.columns)
    back = list(returning) if returning is not None else list(table.primary_key.columns)
    if not keys or not back:
        raise ValueError(f"insert_ignore into {table.name!r}: no conflict key or returning columns")
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
    else:
        raise NotImplementedError(
            f"insert_ignore into {table.name!r}: supports postgresql and sqlite, not {dialect}"
        )
    stmt = stmt.returning(*back, sort_by_parameter_order=True)
    if len(rows) == 1:
        return list(conn.execute(stmt.values(dict(rows[0]))).all())
    return list(conn.execute(stmt, [dict(r) for r in rows]).all())

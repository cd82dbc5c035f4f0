"""The one insert-ignore helper, on SQLite and PostgreSQL (the ``db`` fixture runs both)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from portfolio_pipeline.storage import Database, events
from portfolio_pipeline.storage.insert_ignore import insert_ignore

T0 = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


def _event(key: str, kind: str = "breach") -> dict[str, object]:
    return {"event_key": key, "kind": kind, "severity": "warning", "ts": T0,
            "account_id": None, "payload": {"k": key}}


def test_batch_skips_stored_and_repeated_keys_and_returns_the_new_rows(db: Database) -> None:
    with db.begin() as conn:
        [first] = insert_ignore(conn, events, [_event("a")], conflict=[events.c.event_key],
                                returning=[events.c.id, events.c.event_key])
        assert first.event_key == "a"
        batch = [_event("b"), _event("a", kind="other"), _event("c"), _event("b", kind="other")]
        got = insert_ignore(conn, events, batch, conflict=[events.c.event_key],
                            returning=[events.c.id, events.c.event_key])
        assert [r.event_key for r in got] == ["b", "c"]  # in insertion order
        assert len({first.id, *(r.id for r in got)}) == 3
        stored = dict(conn.execute(select(events.c.event_key, events.c.kind)).all())
    # nothing already stored (or first in the batch) was overwritten
    assert stored == {"a": "breach", "b": "breach", "c": "breach"}


def test_default_conflict_and_returning_are_the_primary_key(db: Database) -> None:
    table = Table("insert_ignore_probe", MetaData(), Column("k1", String(8), primary_key=True),
                  Column("k2", Integer, primary_key=True), Column("v", String(8)))
    with db.begin() as conn:
        table.create(conn)
        try:
            assert [tuple(r) for r in insert_ignore(conn, table, [{"k1": "x", "k2": 1, "v": "old"}])] == [("x", 1)]
            again = insert_ignore(conn, table, [{"k1": "x", "k2": 1, "v": "new"}, {"k1": "x", "k2": 2, "v": "b"}])
            assert [tuple(r) for r in again] == [("x", 2)]
            assert insert_ignore(conn, table, []) == []
            assert conn.execute(select(table.c.v).where(table.c.k2 == 1)).scalar_one() == "old"
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 2
        finally:
            table.drop(conn)


def test_table_without_key_is_refused(db: Database) -> None:
    table = Table("no_key_probe", MetaData(), Column("v", String(8)))
    with db.connect() as conn, pytest.raises(ValueError, match="no_key_probe"):
        insert_ignore(conn, table, [{"v": "x"}])

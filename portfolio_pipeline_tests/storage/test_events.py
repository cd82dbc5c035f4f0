"""The event log: idempotent appends, ordered reads, pg_notify on commit."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from portfolio_pipeline.storage import (
    EVENTS_CHANNEL,
    Database,
    append_event,
    events_since,
    libpq_conninfo,
    notify,
)

T0 = datetime(2018, 2, 5, 20, 15, tzinfo=UTC)


def _append(db: Database, key: str, kind: str = "breach", **payload: object) -> int | None:
    """Append one event in its own transaction."""
    with db.begin() as conn:
        return append_event(
            conn,
            event_key=key,
            kind=kind,
            severity="warning",
            ts=T0,
            payload=dict(payload),
            account_id="DU123",
        )


def test_append_is_idempotent_on_event_key(db: Database) -> None:
    first = _append(db, "breach:delta:2018-02-05T20:15", limit="delta", value=1.5)
    again = _append(db, "breach:delta:2018-02-05T20:15", limit="delta", value=99.0)
    assert isinstance(first, int)
    assert again is None
    with db.connect() as conn:
        stored = events_since(conn, 0)
    assert len(stored) == 1
    assert stored[0].id == first
    assert stored[0].payload == {"limit": "delta", "value": 1.5}  # the first write wins
    assert stored[0].ts == T0 and stored[0].ts.tzinfo is not None
    assert stored[0].account_id == "DU123"


def test_events_since_is_ordered_filtered_and_limited(db: Database) -> None:
    maybe_ids = [
        _append(db, f"k{i}", kind="breach" if i % 2 else "proposal", n=i) for i in range(6)
    ]
    ids = [i for i in maybe_ids if i is not None]
    assert len(ids) == 6 and ids == sorted(ids)
    with db.connect() as conn:
        assert [e.id for e in events_since(conn, 0)] == ids
        assert [e.event_key for e in events_since(conn, ids[2])] == ["k3", "k4", "k5"]
        assert [e.event_key for e in events_since(conn, 0, kinds=["breach"])] == ["k1", "k3", "k5"]
        assert [e.event_key for e in events_since(conn, 0, limit=2)] == ["k0", "k1"]
        assert events_since(conn, 0, kinds=[]) == []
        assert events_since(conn, ids[-1]) == []
        with pytest.raises(ValueError, match="limit"):
            events_since(conn, 0, limit=0)


def test_ids_keep_growing_after_a_duplicate(db: Database) -> None:
    a = _append(db, "a")
    assert _append(db, "a") is None
    b = _append(db, "b")
    assert a is not None and b is not None and b > a


def test_naive_timestamp_is_rejected(db: Database) -> None:
    with pytest.raises(ValueError, match=r"'events.ts' got a naive datetime"), db.begin() as conn:
        append_event(
            conn,
            event_key="k",
            kind="breach",
            severity="warning",
            ts=datetime(2018, 2, 5, 20, 15),
            payload={},
        )


def test_other_zones_are_stored_as_utc(db: Database) -> None:
    with db.begin() as conn:
        append_event(
            conn,
            event_key="k",
            kind="breach",
            severity="info",
            ts=T0.astimezone(ZoneInfo("America/New_York")),
            payload={},
        )
    with db.connect() as conn:
        (event,) = events_since(conn, 0)
    assert event.ts == T0 and event.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize("field", ["event_key", "kind", "severity"])
def test_empty_text_fields_are_rejected(db: Database, field: str) -> None:
    kwargs: dict[str, str] = {"event_key": "k", "kind": "breach", "severity": "info"}
    kwargs[field] = " "
    with pytest.raises(ValueError, match=field), db.begin() as conn:
        append_event(conn, ts=T0, payload={}, **kwargs)


def test_nan_in_payload_is_rejected_and_nothing_written(db: Database) -> None:
    with pytest.raises(ValueError, match="payload of event 'k' is not JSON"), db.begin() as conn:
        append_event(
            conn, event_key="k", kind="breach", severity="info", ts=T0, payload={"x": math.nan}
        )
    with db.connect() as conn:
        assert events_since(conn, 0) == []


def test_notify_is_a_noop_on_sqlite(tmp_path: Path) -> None:
    with Database(f"sqlite:///{tmp_path / 'p.db'}") as db, db.begin() as conn:
        notify(conn, EVENTS_CHANNEL, "x" * 10_000)


@pytest.mark.postgres
def test_oversized_notify_payload_is_rejected(postgres_database_url: str) -> None:
    with (
        Database(postgres_database_url) as db,
        pytest.raises(ValueError, match="8000 bytes"),
        db.begin() as conn,
    ):
        notify(conn, EVENTS_CHANNEL, "x" * 8000)


@pytest.mark.postgres
def test_pg_notify_reaches_a_listener_after_commit_only(postgres_database_url: str) -> None:
    with (
        Database(postgres_database_url) as db,
        psycopg.connect(libpq_conninfo(postgres_database_url), autocommit=True) as listener,
    ):
        listener.execute(f"LISTEN {EVENTS_CHANNEL}")

        with pytest.raises(RuntimeError), db.begin() as conn:
            notify(conn, EVENTS_CHANNEL, "rolled-back")
            raise RuntimeError("abort")

        with db.begin() as conn:
            event_id = append_event(
                conn, event_key="n1", kind="breach", severity="critical", ts=T0, payload={}
            )
            body = json.dumps({"id": event_id, "kind": "breach", "quote": "it's; DROP"})
            notify(conn, EVENTS_CHANNEL, body)

        received = list(listener.notifies(timeout=5.0, stop_after=1))
        assert [n.channel for n in received] == [EVENTS_CHANNEL]
        assert json.loads(received[0].payload) == json.loads(body)
        assert list(listener.notifies(timeout=0.3)) == []  # the rolled-back one never came

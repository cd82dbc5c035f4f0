"""The append-only event log shared by the streaming service and the Dagster sensors.

Writers call :func:`append_event` (idempotent on ``event_key``) and, on PostgreSQL,
:func:`notify` in the same transaction, so listeners wake up only once the event is
committed.  Readers keep the last id they processed and call :func:`events_since`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, select, text

from portfolio_pipeline.clock import to_utc
from portfolio_pipeline.storage.engine import json_dumps
from portfolio_pipeline.storage.insert_ignore import insert_ignore
from portfolio_pipeline.storage.tables import events

__all__ = [
    "DEFAULT_EVENTS_LIMIT",
    "EVENTS_CHANNEL",
    "MAX_NOTIFY_PAYLOAD_BYTES",
    "StoredEvent",
    "append_event",
    "events_since",
    "notify",
]

logger = logging.getLogger(__name__)

EVENTS_CHANNEL: Final = "portfolio_events"
"""The PostgreSQL LISTEN/NOTIFY channel announcing new rows in ``events``."""

DEFAULT_EVENTS_LIMIT: Final = 1000

MAX_NOTIFY_PAYLOAD_BYTES: Final = 7999
"""PostgreSQL rejects NOTIFY payloads of 8000 bytes or more."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the ``events`` table."""

    id: int
    event_key: str
    kind: str
    severity: str
    ts: datetime
    account_id: str | None
    payload: Any


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"event {name} must be a non-empty string, got {value!r}")
    return value


def append_event(
    conn: Connection,
    *,
    event_key: str,
    kind: str,
    severity: str,
    ts: datetime,
    payload: Mapping[str, Any] | list[Any],
    account_id: str | None = None,
) -> int | None:
    """Insert an event unless one with ``event_key`` already exists.

    Runs in the caller's transaction (``INSERT ... ON CONFLICT (event_key) DO NOTHING``
    on both PostgreSQL and SQLite).

    Returns
    -------
    int | None
        The new event's id, or None when ``event_key`` was already recorded.

    Raises
    ------
    ValueError
        For a naive ``ts``, an empty key/kind/severity, or a payload that is not JSON
        (NaN and infinity included).
    """
    values = {
        "event_key": _require_text("event_key", event_key),
        "kind": _require_text("kind", kind),
        "severity": _require_text("severity", severity),
        "ts": to_utc(ts, "events.ts"),
        "account_id": account_id,
        "payload": payload,
    }
    if payload is None:
        raise ValueError(f"payload of event {event_key!r} must be a JSON object or list, not None")
    try:
        json_dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload of event {event_key!r} is not JSON: {exc}") from None
    inserted = insert_ignore(conn, events, [values], conflict=[events.c.event_key],
                             returning=[events.c.id])
    new_id = inserted[0].id if inserted else None
    if new_id is None:
        logger.info("event already recorded event_key=%s kind=%s", event_key, kind)
        return None
    logger.info("event appended id=%s kind=%s severity=%s", new_id, kind, severity)
    return int(new_id)


def events_since(
    conn: Connection,
    last_id: int,
    kinds: Collection[str] | None = None,
    limit: int = DEFAULT_EVENTS_LIMIT,
) -> list[StoredEvent]:
    """Events with ``id > last_id`` (optionally of the given kinds), oldest first.

    Notes
    -----
    Ids are assigned at insert time; on PostgreSQL two concurrent writers may commit
    out of id order, so a reader that needs every event should re-read a short window
    behind its cursor (``event_key`` makes processing idempotent).
    """
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    stmt = select(events).where(events.c.id > last_id)
    if kinds is not None:
        kind_list = sorted(set(kinds))
        if not kind_list:
            return []
        stmt = stmt.where(events.c.kind.in_(kind_list))
    stmt = stmt.order_by(events.c.id).limit(limit)
    return [
        StoredEvent(
            id=int(row.id),
            event_key=row.event_key,
            kind=row.kind,
            severity=row.severity,
            ts=row.ts,
            account_id=row.account_id,
            payload=row.payload,
        )
        for row in conn.execute(stmt)
    ]


def notify(conn: Connection, channel: str, payload: str) -> None:
    """``pg_notify(channel, payload)`` in the caller's transaction; a no-op on SQLite.

    The notification is delivered when the transaction commits (and never if it rolls
    back).  Both arguments are bound parameters.
    """
    if conn.dialect.name != "postgresql":
        return
    if not channel:
        raise ValueError("notify channel must be a non-empty string")
    size = len(payload.encode("utf-8"))
    if size > MAX_NOTIFY_PAYLOAD_BYTES:
        raise ValueError(
            f"notify payload on channel {channel!r} is {size} bytes; "
            f"PostgreSQL allows at most {MAX_NOTIFY_PAYLOAD_BYTES} (send an event id instead)"
        )
    conn.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
    )

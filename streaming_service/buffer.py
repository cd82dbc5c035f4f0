"""Events out of the hot path: batched database writes, and an on-disk buffer while the
database is unreachable.

* The engine loop calls :meth:`EventWriter.submit` (non-blocking, no I/O).
* One writer task batches events and writes each batch in a worker thread
  (``asyncio.to_thread``): one multi-row ``INSERT ... ON CONFLICT (event_key) DO
  NOTHING RETURNING`` per batch (the bulk form of ``storage.events.append_event``,
  idempotent on ``event_key``; a batch of one goes through ``append_event`` itself)
  and, on PostgreSQL, ``storage.events.notify`` per new event in the same
  transaction.  One statement per batch instead of one per event keeps the thread's
  Python work -- and so its hold on the GIL, which the tick loop waits for -- small.
* When the database is down (connection-level errors), the batch goes to a bounded
  JSON-lines file (mode 0600) under ``paths.buffer_dir()``; while the file holds
  anything, new events are appended behind it, so order is kept.  Every
  ``retry_seconds`` the writer replays the file from its head in batches and cuts the
  replayed lines off (atomic rename) only after the commit: a crash in between replays
  a batch twice, which ``event_key`` idempotency turns into exactly once.  The writer
  task does this file I/O (fsync included) in a worker thread too, never on the loop.
* :meth:`EventWriter.close` (SIGTERM) flushes the queue to the database or the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from portfolio_pipeline.clock import to_utc
from portfolio_pipeline.storage.engine import Database, json_dumps
from portfolio_pipeline.storage.events import EVENTS_CHANNEL, append_event, notify
from portfolio_pipeline.storage.insert_ignore import insert_ignore
from portfolio_pipeline.storage.tables import events as events_table
from streaming_service.durable import append_lines, rewrite_lines

__all__ = [
    "BUFFER_FILE",
    "DatabaseEventStore",
    "DiskBuffer",
    "EventStore",
    "EventWriter",
    "StreamEvent",
    "WriterStats",
    "is_connectivity_error",
]

logger = logging.getLogger(__name__)

BUFFER_FILE: Final = "events.jsonl"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """An event on its way to the ``events`` table (validated at creation)."""

    event_key: str
    kind: str
    severity: str
    ts: datetime
    payload: dict[str, Any]
    account_id: str | None = None

    def __post_init__(self) -> None:
        to_utc(self.ts, "events.ts")
        if not self.event_key or not self.kind or not self.severity:
            raise ValueError("stream event needs event_key, kind and severity")
        json_dumps(self.payload)  # NaN/inf or non-JSON payloads fail here, not in the writer

    def to_json(self) -> str:
        return json_dumps({
            "event_key": self.event_key, "kind": self.kind, "severity": self.severity,
            "ts": self.ts.isoformat(), "payload": self.payload, "account_id": self.account_id,
        })

    @classmethod
    def from_json(cls, line: str) -> StreamEvent:
        d = json.loads(line)
        return cls(
            event_key=d["event_key"], kind=d["kind"], severity=d["severity"],
            ts=datetime.fromisoformat(d["ts"]), payload=d["payload"], account_id=d.get("account_id"),
        )


def is_connectivity_error(exc: BaseException) -> bool:
    """True for errors meaning "the database is not reachable now" (retry later)."""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class EventStore(Protocol):
    """Writes a batch of events in one transaction (blocking; called in a thread)."""

    def write(self, events: Sequence[StreamEvent]) -> list[int | None]: ...


class DatabaseEventStore:
    """Bulk insert (idempotent on ``event_key``) + ``pg_notify`` (bound parameters) per
    new event, one transaction per batch."""

    def __init__(self, db: Database, *, migrate_first: bool = False) -> None:
        self._db = db
        self._migrate_first = migrate_first

    def write(self, events: Sequence[StreamEvent]) -> list[int | None]:
        if not events:
            return []
        if self._migrate_first:  # the service started while the database was down
            self._db.migrate()
            self._migrate_first = False
            logger.info("database schema migrated on first write")
        with self._db.begin() as conn:
            if len(events) == 1:
                e = events[0]
                ids: list[int | None] = [append_event(
                    conn, event_key=e.event_key, kind=e.kind, severity=e.severity, ts=e.ts,
                    payload=e.payload, account_id=e.account_id,
                )]
            else:
                ids = _bulk_append(conn, events)
            for e, new_id in zip(events, ids, strict=True):
                if new_id is not None:
                    notify(conn, EVENTS_CHANNEL, json_dumps({"id": new_id, "kind": e.kind}))
        return ids


def _bulk_append(conn: Connection, events: Sequence[StreamEvent]) -> list[int | None]:
    """``append_event`` for a batch in one executemany statement (rows inserted in order).

    The events were validated when created (aware ``ts``, non-empty key/kind/severity,
    JSON payload).  Returns the new id per event, None for a key already recorded (or
    repeated earlier in the batch).
    """
    rows = [
        {"event_key": e.event_key, "kind": e.kind, "severity": e.severity, "ts": to_utc(e.ts, "events.ts"),
         "account_id": e.account_id, "payload": e.payload}
        for e in events
    ]
    inserted = insert_ignore(conn, events_table, rows, conflict=[events_table.c.event_key],
                             returning=[events_table.c.id, events_table.c.event_key])
    new = {str(r.event_key): int(r.id) for r in inserted}
    ids: list[int | None] = []
    for e in events:
        ids.append(new.pop(e.event_key, None))  # a repeated key: the first occurrence got the id
    logger.debug("events appended count=%s new=%s", len(events), sum(i is not None for i in ids))
    return ids


class DiskBuffer:
    """Bounded, ordered JSON-lines buffer file (mode 0600) in a private directory."""

    def __init__(self, directory: Path, *, max_events: int) -> None:
        self._path = directory / BUFFER_FILE
        self._max = max_events
        self._depth = self._count()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def depth(self) -> int:
        return self._depth

    def _count(self) -> int:
        if not self._path.exists():
            return 0
        with self._path.open("r", encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())

    def append(self, events: Sequence[StreamEvent]) -> int:
        """Append what fits; returns how many were dropped because the buffer is full."""
        room = max(self._max - self._depth, 0)
        keep, dropped = events[:room], len(events) - min(room, len(events))
        if keep:
            append_lines(self._path, "".join(e.to_json() + "\n" for e in keep))
            self._path.chmod(0o600)
            self._depth += len(keep)
        if dropped:
            logger.error("event buffer full: dropped events count=%s max=%s", dropped, self._max)
        return dropped

    def head(self, n: int) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._path.exists():
            return out
        with self._path.open("r", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    out.append(StreamEvent.from_json(line))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.error("event buffer: unreadable line skipped error=%s", exc)
                    out.append(_UNREADABLE)
                if len(out) >= n:
                    break
        return out

    def drop_head(self, n: int) -> None:
        """Remove the first ``n`` lines (atomically: temp file + rename)."""
        if n <= 0 or not self._path.exists():
            return
        with self._path.open("r", encoding="utf-8") as src:
            lines = [line for line in src if line.strip()][n:]
        if not lines:
            self._path.unlink()
            self._depth = 0
            return
        rewrite_lines(self._path, lines)
        self._depth = len(lines)


_UNREADABLE = StreamEvent("unreadable", "unreadable", "info", datetime.fromisoformat("1970-01-01T00:00:00+00:00"), {})


@dataclass(slots=True)
class WriterStats:
    submitted: int = 0
    written: int = 0
    duplicates: int = 0
    buffered: int = 0
    replayed: int = 0
    dropped: int = 0
    poisoned: int = 0
    db_up: bool = True
    last_error: str | None = None
    by_kind: dict[str, int] = field(default_factory=dict)


class EventWriter:
    """Async front of the event log (see the module docstring).

    Parameters
    ----------
    store:
        Where events go (normally :class:`DatabaseEventStore`).
    buffer:
        The on-disk buffer used while ``store`` is unreachable.
    batch_size, flush_interval, retry_seconds:
        Batching and reconnect pacing (seconds).
    """

    def __init__(
        self,
        store: EventStore,
        buffer: DiskBuffer,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        retry_seconds: float = 2.0,
    ) -> None:
        self._store = store
        self._buffer = buffer
        self._batch = batch_size
        self._interval = flush_interval
        self._retry = retry_seconds
        self._queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._wake = asyncio.Event()
        self.stats = WriterStats()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def buffer_depth(self) -> int:
        return self._buffer.depth

    def submit(self, event: StreamEvent) -> None:
        """Queue an event (never blocks, never does I/O)."""
        self.stats.submitted += 1
        self.stats.by_kind[event.kind] = self.stats.by_kind.get(event.kind, 0) + 1
        self._queue.put_nowait(event)
        if self._queue.qsize() >= self._batch:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-writer")

    async def close(self, timeout: float = 10.0) -> None:
        """Stop and flush: every queued event ends in the database or the disk buffer."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                logger.error("event writer did not stop in %ss; spilling queue to disk", timeout)
                self._task.cancel()
        rest = self._drain_queue(10**9)
        if rest:
            self._spill(rest)

    def _drain_queue(self, n: int) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        while len(out) < n:
            try:
                out.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return out

    def _spill(self, events: list[StreamEvent]) -> None:
        dropped = self._buffer.append(events)
        self.stats.buffered += len(events) - dropped
        self.stats.dropped += dropped

    async def _write(self, events: list[StreamEvent]) -> bool:
        """Write a batch; False if the database is unreachable (nothing written)."""
        try:
            ids = await asyncio.to_thread(self._store.write, events)
        except Exception as exc:
            if is_connectivity_error(exc):
                if self.stats.db_up:
                    logger.error("database unreachable; buffering events to disk error=%s", type(exc).__name__)
                self.stats.db_up = False
                self.stats.last_error = type(exc).__name__
                return False
            if len(events) == 1:
                self.stats.poisoned += 1
                logger.error("event rejected by the database; dropped event_key=%s error=%s", events[0].event_key, exc)
                return True
            for e in events:  # isolate the bad event, keep the rest in order
                if not await self._write([e]):
                    return False
            return True
        if not self.stats.db_up:
            logger.info("database reachable again")
        self.stats.db_up = True
        self.stats.written += sum(1 for i in ids if i is not None)
        self.stats.duplicates += sum(1 for i in ids if i is None)
        return True

    async def _replay(self) -> bool:
        """Replay the disk buffer head-first; True once it is empty."""
        while self._buffer.depth:
            batch = await asyncio.to_thread(self._buffer.head, self._batch)
            good = [e for e in batch if e is not _UNREADABLE]
            if good and not await self._write(good):
                return False
            await asyncio.to_thread(self._buffer.drop_head, len(batch))
            self.stats.replayed += len(good)
        return True

    async def _run(self) -> None:
        next_retry = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if not self._closing and self._queue.qsize() < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                self._wake.clear()
            batch = self._drain_queue(self._batch)
            if self._buffer.depth:
                if batch:
                    await asyncio.to_thread(self._spill, batch)
                due = loop.time() >= next_retry or self._closing
                if due and not await self._replay():
                    next_retry = loop.time() + self._retry
            elif batch and not await self._write(batch):
                await asyncio.to_thread(self._spill, batch)
                next_retry = loop.time() + self._retry
            if self._closing and self._queue.empty():
                return

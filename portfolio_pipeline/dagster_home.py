"""Prepare ``DAGSTER_HOME`` (under ``PORTFOLIO_HOME``) and Dagster's own storage settings.

SQLite by default (see :class:`SqliteRunStorageTuning` for what a run does to its
files).  When ``PORTFOLIO_DB_URL`` points at PostgreSQL, Dagster's run,
event and schedule storage go to the same database through ``dagster-postgres``; its
URL (psycopg2 driver) comes from the one URL builder in ``storage.engine`` and reaches
``dagster.yaml`` through the ``DAGSTER_PG_URL`` environment variable.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from portfolio_pipeline.paths import dagster_home, write_private_text
from portfolio_pipeline.storage.engine import dagster_postgres_url

if TYPE_CHECKING:
    from dagster import DagsterInstance

logger = logging.getLogger(__name__)

DAGSTER_PG_URL_ENV = "DAGSTER_PG_URL"
#: Dagster's switch for batched event writes (read at every event, see ``handle_new_event``).
DAGSTER_EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
#: Events per batch: a year's planned materializations (assets x sessions) in a few batches.
EVENT_BATCH_SIZE = 1000

_SQLITE_YAML = """\
# Written by `portfolio`: Dagster keeps runs, events and schedules in SQLite here.
# Events in Dagster's own files and format, one pooled connection per file
# (portfolio_pipeline/dagster_event_log.py).
telemetry:
  enabled: false
event_log_storage:
  module: portfolio_pipeline.dagster_event_log
  class: PooledSqliteEventLogStorage
  config:
    base_dir: {base_dir}
"""

_POSTGRES_YAML = """\
# Written by `portfolio`: Dagster storage in PostgreSQL (URL from DAGSTER_PG_URL).
telemetry:
  enabled: false
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
"""


def sqlite_dagster_yaml(home: Path) -> str:
    """``dagster.yaml`` for Dagster's SQLite storage under ``home``: Dagster's default files
    (``history/runs.db``, ``history/runs/<run_id>.db`` + ``index.db``, ``schedules/``), the
    event log through :class:`~portfolio_pipeline.dagster_event_log.PooledSqliteEventLogStorage`."""
    base_dir = json.dumps(str(home / "history" / "runs") + os.sep)  # JSON strings are YAML
    return _SQLITE_YAML.format(base_dir=base_dir)


def prepare_dagster_home(environ: MutableMapping[str, str] | None = None) -> Path:
    """Create ``DAGSTER_HOME`` with a ``dagster.yaml`` and export the variables Dagster reads."""
    env = os.environ if environ is None else environ
    home = dagster_home(env)
    env["DAGSTER_HOME"] = str(home)
    pg_url = dagster_postgres_url(env)
    if pg_url is not None:
        env[DAGSTER_PG_URL_ENV] = pg_url
    text = _POSTGRES_YAML if pg_url is not None else sqlite_dagster_yaml(home)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        write_private_text(target, text)
    return home


class SqliteRunStorageTuning:
    """While active: Dagster's SQLite files under ``home`` commit without an fsync per event.

    Dagster's SQLite storage opens a new engine and connection for every event it stores
    (step start, output, materialization, check evaluation, log line ...), commits it with
    SQLite's default ``synchronous = FULL`` (an fsync of the write-ahead log) and closes the
    connection; closing the last connection to a file checkpoints the log into the database
    and deletes it (more fsyncs).  A year's backfill stores tens of thousands of events, so
    on an ordinary disk the run waits on fsync longer than it computes.  This context
    manager

    * sets ``PRAGMA synchronous = NORMAL`` on every new SQLite connection to a file under
      ``home`` (the setting the platform's own tables use in ``storage.engine``): in WAL
      mode a commit then only appends to the log, which is fsynced at checkpoints; the
      database stays consistent after a power loss, which can only undo the last commits;
    * keeps one extra read-only connection open to each such file already in WAL mode, so
      a closing connection is never the last one and does not checkpoint; SQLite's own
      automatic checkpoint (every 1000 pages) still runs, and the final one happens when
      the context exits.

    Nothing else changes: the same events, metadata and check results are stored.  Files
    outside ``home`` (the platform database, PostgreSQL) are left alone.  With the event log
    of the written ``dagster.yaml`` (:mod:`portfolio_pipeline.dagster_event_log`, one pooled
    connection per file) the event files are no longer opened per event; the settings still
    apply to its connections and to the run storage's ``runs.db``, which Dagster opens per call.
    """

    def __init__(self, home: Path) -> None:
        self._home = home.resolve()
        self._keepers: dict[str, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        rows = dbapi_connection.execute("PRAGMA database_list").fetchall()
        path = next((str(row[2]) for row in rows if row[1] == "main"), "")
        if not path or not Path(path).resolve().is_relative_to(self._home):
            return
        dbapi_connection.execute("PRAGMA synchronous = NORMAL")
        mode = dbapi_connection.execute("PRAGMA journal_mode").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            return  # not yet initialised by Dagster: keep it once it is in WAL mode
        with self._lock:
            if path in self._keepers:
                return
            keeper = sqlite3.connect(path, check_same_thread=False)
            keeper.execute("SELECT count(*) FROM sqlite_master").fetchall()  # joins the WAL index
            self._keepers[path] = keeper

    def __enter__(self) -> SqliteRunStorageTuning:
        from sqlalchemy import Engine, event

        event.listen(Engine, "connect", self._on_connect)
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        from sqlalchemy import Engine, event

        event.remove(Engine, "connect", self._on_connect)
        with self._lock:
            keepers, self._keepers = self._keepers, {}
        for path, keeper in keepers.items():
            try:
                keeper.close()
            except sqlite3.Error as exc:  # the data is committed; only the checkpoint is late
                logger.warning("closing the SQLite keeper of %s failed: %s", path, exc)

    @property
    def kept_files(self) -> list[str]:
        """The SQLite files currently held open (for tests and diagnostics)."""
        with self._lock:
            return sorted(self._keepers)


@contextmanager
def batched_event_writes(
    instance: DagsterInstance, environ: MutableMapping[str, str] | None = None
) -> Iterator[bool]:
    """While active: Dagster hands the events it sends as a batch (a run's planned
    materializations, one per asset and partition; a step's per-partition materializations)
    to the event log in one ``store_event_batch`` call instead of one ``store_event`` each.

    Dagster does so only while ``DAGSTER_EVENT_BATCH_SIZE`` is positive; this sets it to
    :data:`EVENT_BATCH_SIZE` for the block and restores the environment afterwards.  Only for
    the pooled SQLite event log (:mod:`portfolio_pipeline.dagster_event_log`), whose
    ``store_event_batch`` writes Dagster's rows in bulk; another storage (PostgreSQL) and a
    value already set are left alone.  Yields whether batching was switched on here."""
    from portfolio_pipeline.dagster_event_log import PooledSqliteEventLogStorage

    env = os.environ if environ is None else environ
    if DAGSTER_EVENT_BATCH_SIZE_ENV in env or not isinstance(
        instance.event_log_storage, PooledSqliteEventLogStorage
    ):
        yield False
        return
    env[DAGSTER_EVENT_BATCH_SIZE_ENV] = str(EVENT_BATCH_SIZE)
    try:
        yield True
    finally:
        env.pop(DAGSTER_EVENT_BATCH_SIZE_ENV, None)

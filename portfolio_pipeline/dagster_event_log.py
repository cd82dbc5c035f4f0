"""Dagster's SQLite event log with one pooled engine per file instead of one per event.

Dagster's :class:`~dagster._core.storage.event_log.SqliteEventLogStorage` creates a new
SQLAlchemy engine (``NullPool``) for every statement it runs: every stored event (step
start, output, materialization, check evaluation, log line ...) opens a SQLite connection,
compiles its statements afresh (the compiled-statement cache belongs to the engine) and
closes the connection again.  A year's single-run backfill stores tens of thousands of
events, so that bookkeeping costs more CPU than many of the assets.

:class:`PooledSqliteEventLogStorage` keeps one engine per shard file (the run's own
``<run_id>.db`` and the cross-run ``index.db``) with a one-connection pool, for the
life of the instance.  It writes the same rows in the same files with the same schema and
transactions (one per statement, under Dagster's own lock), so ``dagster-webserver``,
``dagster-daemon`` or a plain ``SqliteEventLogStorage`` read what it wrote, and it reads
what they wrote.  A pooled connection between transactions holds no lock and no read
snapshot: other processes see every commit at once, and SQLite's write-ahead-log
checkpoints are not held back.  At most :data:`MAX_OPEN_SHARDS` files are kept open (a
webserver browsing many runs closes the least recently used).

Selected by the ``dagster.yaml`` that :func:`portfolio_pipeline.dagster_home.prepare_dagster_home`
writes for SQLite; the PostgreSQL configuration is unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationPlanned,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from dagster_shared.serdes import serialize_value
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool, QueuePool

__all__ = ["MAX_OPEN_SHARDS", "PooledSqliteEventLogStorage"]

#: Shard files kept open at once (the run being written and the index need two).
MAX_OPEN_SHARDS = 16


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that reuses one engine and connection per shard file."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._known_tables: set[str] = set()
        self._known_asset_key_columns: set[str] = set()
        super().__init__(base_dir, inst_data)

    def has_table(self, table_name: str) -> bool:
        """Dagster's answer, remembered once it is yes (a table, once created, stays; Dagster
        asks before storing the tags of every asset event, on a new engine each time)."""
        if table_name in self._known_tables:
            return True
        found = super().has_table(table_name)
        if found:
            self._known_tables.add(table_name)
        return found

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        """Dagster's answer (it inspects the table for every asset event), remembered once
        it is yes."""
        if column_name in self._known_asset_key_columns:
            return True
        found = super()._has_asset_key_col_on_connection(conn, column_name)
        if found:
            self._known_asset_key_columns.add(column_name)
        return found

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        """The shard's engine, created (and its file initialised) on first use; call under
        ``self._db_lock``."""
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        url = self.conn_string_for_shard(shard)
        if shard not in self._initialized_dbs:  # Dagster's own set-up, on its own engine
            init_engine = create_engine(
                url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            try:
                self._initdb(init_engine)
            finally:
                init_engine.dispose()
            self._initialized_dbs.add(shard)
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=1,  # kept open; Dagster's lock serialises every use
            max_overflow=2,  # opened and closed again, should a use ever nest
            # the next user may be another thread (the watchdog's), never at the same time
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        self._engines[shard] = engine
        while len(self._engines) > MAX_OPEN_SHARDS:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _store_asset_check_evaluation_planned(
        self, event: EventLogEntry, event_id: int | None
    ) -> None:
        """Dagster's rows for a planned check, one per planned partition, with the event
        serialised once (Dagster serialises the same event again for every partition: a
        year's backfill spent more time there than in all its checks) and inserted as one
        ``executemany`` of a cached statement instead of one multi-row ``VALUES`` statement
        compiled afresh; the rows are the same, in the same order."""
        dagster_event = event.dagster_event
        if dagster_event is None:
            raise ValueError("a planned asset check event without its Dagster event")
        planned = cast(AssetCheckEvaluationPlanned, dagster_event.event_specific_data)
        partition_keys: list[str | None] = (
            list(planned.partitions_subset.get_partition_keys())
            if planned.partitions_subset
            else [None]
        )
        if not partition_keys:
            return
        common = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),  # type: ignore[no-untyped-call]
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(
                AssetCheckExecutionsTable.insert(),
                [{**common, "partition": key} for key in partition_keys],
            )

    def _dispose_engines(self) -> None:
        with self._db_lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.dispose()

    def wipe(self) -> None:
        self._dispose_engines()  # the files are deleted: no connection may outlive them
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()

"""Dagster's SQLite event log with one pooled engine per file instead of one per event.

Dagster's :class:`~dagster._core.storage.event_log.SqliteEventLogStorage` creates a new
SQLAlchemy engine (``NullPool``) for every statement it runs: every stored event (step
start, output, materialization, check evaluation, log line ...) opens a SQLite connection,
compiles its statements afresh (the compiled-statement cache belongs to the engine) and
closes the connection again.  A year's single-run backfill stores tens of thousands of
events, so that bookkeeping costs more CPU than many of the assets.

:class:`PooledSqliteEventLogStorage` keeps one engine per shard file (the run's own
``<run_id>.db`` and the cross-run ``index.db``) with a one-connection pool, for the
life of the instance.  It writes the same rows in the same files with the same schema, one
transaction per statement (per batch, see below) under Dagster's own lock, so
``dagster-webserver``, ``dagster-daemon`` or a plain ``SqliteEventLogStorage`` read what it wrote, and it reads
what they wrote.  A pooled connection between transactions holds no lock and no read
snapshot: other processes see every commit at once, and SQLite's write-ahead-log
checkpoints are not held back.  At most :data:`MAX_OPEN_SHARDS` files are kept open (a
webserver browsing many runs closes the least recently used).

The events Dagster sends as a batch (a run's planned materializations, one per asset and
partition, and a step's per-partition materializations, while ``DAGSTER_EVENT_BATCH_SIZE`` is
set: :func:`portfolio_pipeline.dagster_home.batched_event_writes`) are stored in bulk by
:meth:`PooledSqliteEventLogStorage.store_event_batch`, with the rows, in the order, that
storing them one by one writes.

Selected by the ``dagster.yaml`` that :func:`portfolio_pipeline.dagster_home.prepare_dagster_home`
writes for SQLite; the PostgreSQL configuration is unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationPlanned,
)
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    DagsterEventType,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    AssetKeyTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from dagster_shared.serdes import serialize_value
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool, QueuePool

__all__ = ["MAX_OPEN_SHARDS", "PooledSqliteEventLogStorage"]


def _insert_returning_ids(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert event rows in one statement; their ids, in the order of ``rows``."""
    result = conn.execute(
        SqlEventLogStorageTable.insert().returning(
            SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
        ),
        list(rows),
    )
    ids = [int(row_id) for (row_id,) in result]
    if len(ids) != len(rows):
        raise RuntimeError(f"SQLite returned {len(ids)} ids for {len(rows)} inserted events")
    return ids


def _mirrored_in_index(event_type: DagsterEventType) -> bool:
    """Whether ``SqliteEventLogStorage.store_event`` copies an event of this type into the
    cross-run index shard (asset, asset check and run status events)."""
    return (
        event_type in ASSET_EVENTS
        or event_type in ASSET_CHECK_EVENTS
        or event_type in EVENT_TYPE_TO_PIPELINE_RUN_STATUS
    )


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

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Dagster's rows for ``events``, written in bulk instead of event by event.

        Dagster sends a batch (with ``DAGSTER_EVENT_BATCH_SIZE`` set, see
        :func:`portfolio_pipeline.dagster_home.batched_event_writes`) for the planned
        materializations of a run (one per asset and partition) and for a step's per-partition
        materializations; its base class stores them one by one.  Here each event is serialised
        once, each run shard gets its rows in one transaction (one ``executemany``), and the
        index shard in one transaction gets the mirrored events (one multi-row insert
        returning their ids in order), their asset tags (one ``executemany``) and one
        ``asset_keys`` upsert per asset with what the last of its events leaves there.  Every
        table receives the rows :meth:`store_event` would write, in the same order (so with
        the same ids); check events then go through Dagster's own bookkeeping, in order.

        Planned checks (Dagster batches them with the planned materializations) get their
        rows in the same index transaction; other check events, after it, through Dagster's own
        bookkeeping, in order.  Should the index transaction fail (it is then rolled back),
        the batch's rows are deleted from the run shards again before the error propagates,
        so Dagster's fallback (storing the events one by one) does not store them twice."""
        rows = [self._event_to_row(event) for event in events]  # serialised once per event
        mirrored = [
            (event, row)
            for event, row in zip(events, rows, strict=True)
            if event.is_dagster_event and _mirrored_in_index(event.get_dagster_event().event_type)
        ]
        check_types = {
            event.get_dagster_event().event_type
            for event, _ in mirrored
            if event.get_dagster_event().event_type in ASSET_CHECK_EVENTS
        }
        if check_types and not self.supports_asset_checks:
            raise DagsterInvariantViolationError(
                "Asset checks require a database schema migration. Run `dagster instance migrate`."
            )
        planned_checks_inside = check_types == {DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED}
        by_run: dict[str, list[dict[str, Any]]] = {}
        for event, row in zip(events, rows, strict=True):
            by_run.setdefault(event.run_id, []).append(row)
        written: dict[str, list[int]] = {}
        try:
            for run_id, run_rows in by_run.items():
                with self.run_connection(run_id) as conn:
                    written[run_id] = _insert_returning_ids(conn, run_rows)
            if not mirrored:
                return
            checks: list[tuple[EventLogEntry, int]] = []
            with self.index_transaction() as conn:
                ids = _insert_returning_ids(conn, [row for _, row in mirrored])
                asset_events: list[tuple[EventLogEntry, int]] = []
                for (event, _), event_id in zip(mirrored, ids, strict=True):
                    event_type = event.get_dagster_event().event_type
                    if event_type in ASSET_EVENTS:
                        asset_events.append((event, event_id))
                    if event_type in ASSET_CHECK_EVENTS:
                        checks.append((event, event_id))
                self._store_asset_event_tags(
                    conn, [e for e, _ in asset_events], [i for _, i in asset_events]
                )
                for asset_key, values in self._asset_entry_values(conn, asset_events).items():
                    self._upsert_asset_key(conn, asset_key, values)
                if planned_checks_inside:
                    for event, event_id in checks:
                        self._insert_planned_check_rows(conn, event, event_id)
        except BaseException:
            self._delete_run_rows(written)
            raise
        if not planned_checks_inside:
            for event, event_id in checks:
                self.store_asset_check_event(event, event_id)

    def _delete_run_rows(self, written: Mapping[str, Sequence[int]]) -> None:
        """Take back the rows a failed batch committed to its run shards."""
        for run_id, ids in written.items():
            with self.run_connection(run_id) as conn:
                conn.execute(
                    SqlEventLogStorageTable.delete().where(SqlEventLogStorageTable.c.id.in_(ids))
                )

    def _asset_entry_values(
        self, conn: Connection, asset_events: Sequence[tuple[EventLogEntry, int]]
    ) -> dict[str, dict[str, Any]]:
        """Per asset key (in order of first appearance), the ``asset_keys`` columns that
        Dagster's upsert of each event in turn would leave: later events win column by column.
        Walked from the last event back, so an earlier materialization's record is serialised
        only when no later one replaces it."""
        has_index_cols = self._has_asset_key_index_cols_on_connection(conn)
        first_seen: dict[str, None] = {}
        for event, _ in asset_events:
            asset_key = event.get_dagster_event().asset_key
            if asset_key is not None:
                first_seen.setdefault(asset_key.to_string(), None)
        merged: dict[str, dict[str, Any]] = {key: {} for key in first_seen}
        for event, event_id in reversed(asset_events):
            dagster_event = event.get_dagster_event()
            if dagster_event.asset_key is None:
                continue
            values = merged[dagster_event.asset_key.to_string()]
            if dagster_event.is_step_materialization and "last_materialization" in values:
                continue  # a later materialization's record replaces this one's
            for column, value in self._get_asset_entry_values(
                event, event_id, has_index_cols
            ).items():
                values.setdefault(column, value)
        return {key: values for key, values in merged.items() if values}

    def _store_asset_event(self, conn: Connection, event: EventLogEntry, event_id: int) -> None:
        """Dagster's ``asset_keys`` upsert for one event, updating first: Dagster inserts
        first and, for every event of an asset already known (all but its first), catches the
        ``IntegrityError`` and updates; raising and wrapping that error cost more than the
        statements.  The row left is the same."""
        dagster_event = event.dagster_event
        if dagster_event is None or dagster_event.asset_key is None:
            return
        values = self._get_asset_entry_values(
            event, event_id, self._has_asset_key_index_cols_on_connection(conn)
        )
        if values:
            self._upsert_asset_key(conn, dagster_event.asset_key.to_string(), values)

    @staticmethod
    def _upsert_asset_key(conn: Connection, asset_key: str, values: Mapping[str, Any]) -> None:
        """Update the asset's row, or insert it if there is none yet (another process may
        insert it in between: then Dagster's own fallback, an update, runs)."""
        update = AssetKeyTable.update().where(AssetKeyTable.c.asset_key == asset_key)
        if conn.execute(update.values(**values)).rowcount:
            return
        try:
            conn.execute(AssetKeyTable.insert().values(asset_key=asset_key, **values))
        except IntegrityError:
            conn.execute(update.values(**values))

    def _store_asset_check_evaluation_planned(
        self, event: EventLogEntry, event_id: int | None
    ) -> None:
        """Dagster's rows for a planned check (see :meth:`_insert_planned_check_rows`)."""
        with self.index_connection() as conn:
            self._insert_planned_check_rows(conn, event, event_id)

    def _insert_planned_check_rows(
        self, conn: Connection, event: EventLogEntry, event_id: int | None
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

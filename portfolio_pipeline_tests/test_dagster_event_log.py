"""PooledSqliteEventLogStorage: Dagster's event log in Dagster's SQLite files with one pooled
connection per file, storing exactly what Dagster's own SqliteEventLogStorage stores.

Oracles: a run of the same partitioned asset (per-partition metadata, a check) written by
Dagster's plain ``SqliteEventLogStorage``; a plain instance (what ``dagster-webserver`` or
``dagster-daemon`` with Dagster's default configuration open) reading the pooled run, and the
pooled storage reading the plain run; the rows of Dagster's index shard read with sqlite3.
"""

import os
import sqlite3
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.events import ASSET_EVENTS
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster_shared.serdes import deserialize_value

from portfolio_pipeline.dagster_event_log import PooledSqliteEventLogStorage
from portfolio_pipeline.dagster_home import (
    DAGSTER_EVENT_BATCH_SIZE_ENV,
    batched_event_writes,
    prepare_dagster_home,
    sqlite_dagster_yaml,
)

_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-13")
_KEYS = _PARTITIONS.get_partition_keys()  # 12 days: checks are planned per partition


@dg.asset(
    partitions_def=_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec("positive", asset="numbers"),
        dg.AssetCheckSpec("small", asset="numbers"),
    ],
)
def numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:  # type: ignore[type-arg]
    for i, key in enumerate(context.partition_keys):
        context.add_asset_metadata({"value": float(i + 1), "key": key}, partition_key=key)
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(check_name="positive", passed=True, metadata={"rows": 12}),
            dg.AssetCheckResult(check_name="small", passed=False, metadata={"largest": 12.0}),
        ]
    )


@dg.asset(
    partitions_def=_PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[numbers]
)
def doubled(context: dg.AssetExecutionContext) -> None:
    for key in context.partition_keys:
        context.add_asset_metadata({"twice": key * 2}, partition_key=key)


@dg.asset(partitions_def=_PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run())
def broken(context: dg.AssetExecutionContext) -> None:
    raise RuntimeError(f"no data for {len(context.partition_keys)} sessions")


_RANGE = {
    "dagster/asset_partition_range_start": _KEYS[0],
    "dagster/asset_partition_range_end": _KEYS[-1],
}


def _run(home: Path, *, batched: bool = False) -> str:
    job = dg.Definitions(assets=[numbers, doubled]).resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        with batched_event_writes(instance) if batched else nullcontext(False) as on:
            assert on == batched
            result = job.execute_in_process(instance=instance, tags=_RANGE)
        assert result.success
        return result.run_id


def _table_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a Dagster SQLite shard, by id (``create_timestamp``, the
    time SQLite inserted the row, and the schema's own bookkeeping left out)."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND name NOT IN ('alembic_version', 'secondary_indexes') ORDER BY name"
            )
        ]
        rows = {}
        for table in tables:
            columns = [
                row[1]
                for row in conn.execute(f"PRAGMA table_info({table})")
                if row[1] != "create_timestamp"
            ]
            order = " ORDER BY id" if "id" in columns else ""
            listed = ", ".join(f'"{column}"' for column in columns)
            rows[table] = conn.execute(f'SELECT {listed} FROM "{table}"{order}').fetchall()
        return rows
    finally:
        conn.close()


def _read(home: Path, run_id: str) -> dict[str, Any]:
    """What an instance opened on ``home`` (by its dagster.yaml, if any) reads of the run."""
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        records = instance.get_records_for_run(run_id).records
        types = Counter(
            str(r.event_log_entry.dagster_event_type)
            for r in records
            if r.event_log_entry.is_dagster_event
        )
        metadata = {}
        for r in records:
            mat = r.event_log_entry.asset_materialization
            if mat is not None:
                metadata[(mat.asset_key.to_user_string(), mat.partition)] = {
                    k: v.value for k, v in mat.metadata.items()
                }
        checks = set()
        for r in records:
            event = r.event_log_entry.dagster_event
            if event is not None and event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                data = event.asset_check_evaluation_data
                checks.add(
                    (
                        data.asset_key.to_user_string(),
                        data.check_name,
                        data.passed,
                        tuple(sorted((k, v.value) for k, v in data.metadata.items())),
                    )
                )
        latest = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
        latest_partition = (
            latest.asset_materialization.partition
            if latest and latest.asset_materialization
            else None
        )
        by_partition = {
            key: float(ev.asset_materialization.metadata["value"].value)  # type: ignore[union-attr, arg-type]
            for key in _KEYS
            for ev in [
                instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey("numbers"), asset_partitions=[key]),
                    limit=1,
                )
                .records[0]
                .event_log_entry
            ]
        }
        status = instance.get_run_by_id(run_id)
        return {
            "types": types,
            "metadata": metadata,
            "checks": checks,
            "latest": latest_partition,
            "by_partition": by_partition,
            "status": status.status if status else None,
            "storage": type(instance.event_log_storage).__name__,
        }


def _index_rows(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(home / "history" / "runs" / "index.db")
    try:
        return {
            "checks": [
                (*row[:4], _event_type(row[4]))
                for row in conn.execute(
                    "SELECT asset_key, check_name, partition, execution_status, evaluation_event "
                    "FROM asset_check_executions ORDER BY id"
                )
            ],
            "tags": conn.execute(
                "SELECT asset_key, key FROM asset_event_tags ORDER BY id"
            ).fetchall(),
            "assets": conn.execute(
                "SELECT asset_key FROM asset_keys ORDER BY asset_key"
            ).fetchall(),
        }
    finally:
        conn.close()


def _event_type(serialized: str | None) -> str | None:
    if serialized is None:
        return None
    entry = deserialize_value(serialized, dg.EventLogEntry)
    return f"{entry.dagster_event_type} {entry.run_id == ''}"


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    pooled, plain = tmp_path / "pooled", tmp_path / "plain"
    pooled.mkdir()
    plain.mkdir()
    (pooled / "dagster.yaml").write_text(sqlite_dagster_yaml(pooled))
    return pooled, plain


def test_pooled_run_stores_what_dagsters_own_storage_stores(homes: tuple[Path, Path]) -> None:
    pooled, plain = homes
    pooled_run, plain_run = _run(pooled), _run(plain)
    got, want = _read(pooled, pooled_run), _read(plain, plain_run)
    assert got.pop("storage") == "PooledSqliteEventLogStorage"
    assert want.pop("storage") == "SqliteEventLogStorage"
    assert got == want
    assert got["metadata"][("numbers", "2024-01-04")] == {
        "value": 4.0,
        "key": "2024-01-04",
    }  # its own
    assert got["by_partition"] == {k: float(i + 1) for i, k in enumerate(_KEYS)}
    assert got["types"]["DagsterEventType.ASSET_MATERIALIZATION"] == 24  # 2 assets x 12 days
    assert got["types"]["DagsterEventType.ASSET_CHECK_EVALUATION"] == 2
    assert got["status"] == dg.DagsterRunStatus.SUCCESS
    rows = _index_rows(pooled)
    assert rows == _index_rows(plain)
    # one planned row per check and partition (the planned-check override serialises the
    # event once; the rows are Dagster's), then each check's evaluation
    planned = [r for r in rows["checks"] if r[3] == "PLANNED"]
    assert sorted((r[1], r[2]) for r in planned) == sorted(
        (c, k) for c in ("positive", "small") for k in _KEYS
    )
    assert {r[4] for r in planned} == {"DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED False"}
    assert {r[1:4] for r in rows["checks"] if r[3] != "PLANNED"} == {
        ("positive", None, "SUCCEEDED"),
        ("small", None, "FAILED"),
    }


def test_plain_instance_reads_a_pooled_run_and_the_pooled_storage_a_plain_one(
    homes: tuple[Path, Path],
) -> None:
    """What dagster-webserver / dagster-daemon do with Dagster's default configuration on the
    same files: read a run the pooled storage wrote (and the other way round)."""
    pooled, plain = homes
    pooled_run = _run(pooled)
    reference = _read(pooled, pooled_run)
    reference.pop("storage")
    (pooled / "dagster.yaml").unlink()  # the same files, opened by Dagster's own storage
    seen_plain = _read(pooled, pooled_run)
    assert seen_plain.pop("storage") == "SqliteEventLogStorage"
    assert seen_plain == reference

    plain_run = _run(plain)
    (plain / "dagster.yaml").write_text(sqlite_dagster_yaml(plain))
    seen_pooled = _read(plain, plain_run)
    assert seen_pooled.pop("storage") == "PooledSqliteEventLogStorage"
    assert seen_pooled["by_partition"] == reference["by_partition"]


def test_one_engine_per_shard_reused_and_bounded(tmp_path: Path) -> None:
    storage = PooledSqliteEventLogStorage(str(tmp_path / "events"))
    try:
        with storage.index_connection() as first:
            raw = first.connection.dbapi_connection
        with storage.index_connection() as second:
            assert second.connection.dbapi_connection is raw  # the same SQLite connection
        for i in range(40):
            with storage.run_connection(f"run{i}"):
                pass
        assert len(storage._engines) <= 16
        assert Path(storage.path_for_shard("run0")).exists()
    finally:
        storage.dispose()
    assert not storage._engines


def test_prepare_dagster_home_selects_the_pooled_storage_for_sqlite_only(tmp_path: Path) -> None:
    env = {"PORTFOLIO_HOME": str(tmp_path / "home")}
    home = prepare_dagster_home(env)
    text = (home / "dagster.yaml").read_text()
    assert "PooledSqliteEventLogStorage" in text and str(home / "history" / "runs") in text
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
    pg = {
        "PORTFOLIO_HOME": str(tmp_path / "pg"),
        "PORTFOLIO_DB_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/x",
    }
    pg_text = (prepare_dagster_home(pg) / "dagster.yaml").read_text()
    assert "Pooled" not in pg_text and "postgres_url" in pg_text


def _run_events(home: Path) -> tuple[str, list[dg.EventLogEntry]]:
    """A real multi-partition run's id and events (stored by Dagster's own storage)."""
    run_id = _run(home)
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        return run_id, [r.event_log_entry for r in instance.get_records_for_run(run_id).records]


@pytest.mark.parametrize("batch_size", [1000, 7])
def test_store_event_batch_writes_the_rows_dagsters_store_event_writes(
    homes: tuple[Path, Path], tmp_path: Path, batch_size: int
) -> None:
    """The events of a real multi-partition run (planned materializations of two assets per
    partition, planned checks, per-partition materializations, check evaluations, run and
    step events) stored by Dagster's own ``store_event`` one by one and by
    ``store_event_batch`` (in one batch, and in batches of 7 mixing every kind): every column
    of every table of the run shard and of the index shard is the same, ids included."""
    _, plain = homes
    run_id, events = _run_events(plain)
    planned = [
        e
        for e in events
        if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ]
    assert len(planned) == 2 * len(_KEYS)
    one_by_one = SqliteEventLogStorage(str(tmp_path / "one_by_one"))
    batched = PooledSqliteEventLogStorage(str(tmp_path / "batched"))
    try:
        for event in events:
            one_by_one.store_event(event)
        for start in range(0, len(events), batch_size):
            batched.store_event_batch(events[start : start + batch_size])
    finally:
        one_by_one.dispose()
        batched.dispose()
    for shard in (f"{run_id}.db", "index.db"):
        want = _table_rows(tmp_path / "one_by_one" / shard)
        assert _table_rows(tmp_path / "batched" / shard) == want
    index = _table_rows(tmp_path / "batched" / "index.db")
    assert len(index["event_logs"]) > len(planned) and index["asset_event_tags"]
    assert {row[1] for row in index["asset_keys"]} == {'["numbers"]', '["doubled"]'}
    assert len(index["asset_check_executions"]) == 2 * len(_KEYS) + 2


def test_batched_run_stores_what_dagsters_own_storage_stores(
    homes: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multi-partition backfill with batched event writes on (as `portfolio run` and
    `portfolio demo` run) reads as the same run stored event by event by Dagster's own
    storage, and leaves the same index rows; the batches did reach ``store_event_batch``."""
    pooled, plain = homes
    monkeypatch.delenv(DAGSTER_EVENT_BATCH_SIZE_ENV, raising=False)
    batch_sizes: list[int] = []
    original = PooledSqliteEventLogStorage.store_event_batch

    def counting(self: PooledSqliteEventLogStorage, events: list[dg.EventLogEntry]) -> None:
        batch_sizes.append(len(events))
        original(self, events)

    monkeypatch.setattr(PooledSqliteEventLogStorage, "store_event_batch", counting)
    pooled_run = _run(pooled, batched=True)
    plain_run = _run(plain)
    assert sum(batch_sizes) >= 2 * len(_KEYS) + 2 + 2 * len(_KEYS)  # planned + materializations
    assert max(batch_sizes) > 2 * len(_KEYS)  # every planned event of the run at once
    got, want = _read(pooled, pooled_run), _read(plain, plain_run)
    got.pop("storage")
    want.pop("storage")
    assert got == want
    assert _index_rows(pooled) == _index_rows(plain)
    assert DAGSTER_EVENT_BATCH_SIZE_ENV not in os.environ  # restored


def _failed_partitions(home: Path, *, batched: bool) -> tuple[list[str], dg.DagsterRunStatus]:
    job = dg.Definitions(assets=[broken]).resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        with batched_event_writes(instance) if batched else nullcontext(False) as on:
            assert on == batched
            result = job.execute_in_process(instance=instance, tags=_RANGE, raise_on_error=False)
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        status = get_and_update_asset_status_cache_value(
            instance, dg.AssetKey("broken"), _PARTITIONS
        )
        assert status is not None
        failed = status.deserialize_failed_partition_subsets(_PARTITIONS)
        return sorted(failed.get_partition_keys()), run.status


def test_failed_partitions_show_as_failed_with_batched_planned_events(
    homes: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed single-run backfill: every partition it planned shows as failed in the
    asset's partition status, as with Dagster's own storage (the planned events keep one
    partition each)."""
    pooled, plain = homes
    monkeypatch.delenv(DAGSTER_EVENT_BATCH_SIZE_ENV, raising=False)
    got = _failed_partitions(pooled, batched=True)
    assert got == (_KEYS, dg.DagsterRunStatus.FAILURE)
    assert got == _failed_partitions(plain, batched=False)


def test_batched_event_writes_is_scoped_and_for_the_pooled_storage_only(tmp_path: Path) -> None:
    pooled, plain = tmp_path / "pooled", tmp_path / "plain"
    pooled.mkdir()
    plain.mkdir()
    (pooled / "dagster.yaml").write_text(sqlite_dagster_yaml(pooled))
    env: dict[str, str] = {}
    with dg.DagsterInstance.local_temp(str(pooled)) as instance:
        with batched_event_writes(instance, env) as on:
            assert on and int(env[DAGSTER_EVENT_BATCH_SIZE_ENV]) > 0
        assert env == {}
        preset = {DAGSTER_EVENT_BATCH_SIZE_ENV: "0"}  # the operator's own choice stays
        with batched_event_writes(instance, preset) as on:
            assert not on and preset == {DAGSTER_EVENT_BATCH_SIZE_ENV: "0"}
        with pytest.raises(RuntimeError), batched_event_writes(instance, env):
            raise RuntimeError("a failed run")
        assert env == {}
    with (
        dg.DagsterInstance.local_temp(str(plain)) as instance,
        batched_event_writes(instance, env) as on,
    ):
        assert not on and env == {}


def test_a_failed_batch_leaves_no_rows_behind(
    homes: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index transaction fails after the run shard's rows are committed: they are taken
    back, so Dagster's fallback (storing the batch's events one by one) stores each once."""
    _, plain = homes
    run_id, events = _run_events(plain)
    storage = PooledSqliteEventLogStorage(str(tmp_path / "events"))
    reference = SqliteEventLogStorage(str(tmp_path / "reference"))
    try:
        storage.store_event_batch(events[:5])
        shards = [tmp_path / "events" / f"{run_id}.db", tmp_path / "events" / "index.db"]
        before = [_table_rows(shard) for shard in shards]
        rest = events[5:]
        assert any(e.dagster_event_type in ASSET_EVENTS for e in rest)

        def failing(*_args: object) -> None:
            raise OSError("disk full")

        with monkeypatch.context() as patch:
            patch.setattr(PooledSqliteEventLogStorage, "_store_asset_event_tags", failing)
            with pytest.raises(OSError, match="disk full"):
                storage.store_event_batch(rest)
        assert [_table_rows(shard) for shard in shards] == before
        for event in rest:  # what Dagster's handle_new_event falls back to
            storage.store_event(event)
        for event in events:
            reference.store_event(event)
    finally:
        storage.dispose()
        reference.dispose()
    for shard in (f"{run_id}.db", "index.db"):
        assert _table_rows(tmp_path / "events" / shard) == _table_rows(
            tmp_path / "reference" / shard
        )

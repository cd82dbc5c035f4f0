"""PooledSqliteEventLogStorage: Dagster's event log in Dagster's SQLite files with one pooled
connection per file, storing exactly what Dagster's own SqliteEventLogStorage stores.

Oracles: a run of the same partitioned asset (per-partition metadata, a check) written by
Dagster's plain ``SqliteEventLogStorage``; a plain instance (what ``dagster-webserver`` or
``dagster-daemon`` with Dagster's default configuration open) reading the pooled run, and the
pooled storage reading the plain run; the rows of Dagster's index shard read with sqlite3.
"""

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_shared.serdes import deserialize_value

from portfolio_pipeline.dagster_event_log import PooledSqliteEventLogStorage
from portfolio_pipeline.dagster_home import prepare_dagster_home, sqlite_dagster_yaml

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
def numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    for i, key in enumerate(context.partition_keys):
        context.add_asset_metadata({"value": float(i + 1), "key": key}, partition_key=key)
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(check_name="positive", passed=True, metadata={"rows": 12}),
            dg.AssetCheckResult(check_name="small", passed=False, metadata={"largest": 12.0}),
        ]
    )


def _run(home: Path) -> str:
    job = dg.Definitions(assets=[numbers]).resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": _KEYS[0],
                "dagster/asset_partition_range_end": _KEYS[-1],
            },
        )
        assert result.success
        return result.run_id


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
                metadata[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
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
    assert got["metadata"]["2024-01-04"] == {"value": 4.0, "key": "2024-01-04"}  # its own
    assert got["by_partition"] == {k: float(i + 1) for i, k in enumerate(_KEYS)}
    assert got["types"]["DagsterEventType.ASSET_MATERIALIZATION"] == 12
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

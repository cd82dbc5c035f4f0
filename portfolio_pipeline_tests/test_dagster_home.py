"""SqliteRunStorageTuning: Dagster's SQLite files commit without an fsync per event, and
store exactly what they store without it.

Oracles: SQLite's own ``PRAGMA synchronous`` (2 = FULL, SQLite's default; 1 = NORMAL) read
back on new connections, and Dagster's event log read back by a fresh instance after the
run, compared with an untuned run of the same job.
"""

from collections import Counter
from pathlib import Path

import dagster as dg
from sqlalchemy import create_engine, text

from portfolio_pipeline.dagster_home import SqliteRunStorageTuning

_PARTITIONS = dg.StaticPartitionsDefinition(["a", "b", "c"])


@dg.asset(partitions_def=_PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
def numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    for i, key in enumerate(context.partition_keys):
        context.add_asset_metadata({"value": float(i + 1)}, partition_key=key)
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(passed=True)])


def _synchronous(path: Path) -> int:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("PRAGMA synchronous")).scalar_one())
    finally:
        engine.dispose()


def _run(home: Path, tuned: bool) -> str:
    job = dg.Definitions(assets=[numbers]).resolve_implicit_global_asset_job_def()
    tuning = SqliteRunStorageTuning(home)
    instance = dg.DagsterInstance.local_temp(str(home))
    try:
        if tuned:
            tuning.__enter__()
        result = job.execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"},
        )
        assert result.success
        if tuned:  # the run's own shard and the cross-run index are held open
            kept = [Path(p).name for p in tuning.kept_files]
            assert f"{result.run_id}.db" in kept and "index.db" in kept, kept
    finally:
        instance.dispose()
        if tuned:
            tuning.__exit__(None, None, None)
    return result.run_id


def _stored(home: Path, run_id: str) -> tuple[Counter[str], dict[str, float]]:
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        records = instance.get_records_for_run(run_id).records
        types = Counter(str(r.event_log_entry.dagster_event_type) for r in records
                        if r.event_log_entry.is_dagster_event)
        values: dict[str, float] = {}
        for r in records:
            mat = r.event_log_entry.asset_materialization
            if mat is not None and mat.partition is not None:
                values[mat.partition] = float(mat.metadata["value"].value)  # type: ignore[arg-type]
        return types, values


def test_connections_under_home_are_normal_only_while_active(tmp_path: Path) -> None:
    home, outside = tmp_path / "dagster", tmp_path / "other.db"
    home.mkdir()
    inside = home / "probe.db"
    assert _synchronous(inside) == 2 and _synchronous(outside) == 2  # SQLite's default, FULL
    with SqliteRunStorageTuning(home):
        assert _synchronous(inside) == 1  # NORMAL
        assert _synchronous(outside) == 2  # not Dagster's: untouched
    assert _synchronous(inside) == 2  # the listener is gone after the context


def test_tuned_run_stores_every_event_metadata_and_check(tmp_path: Path) -> None:
    tuned_home, plain_home = tmp_path / "tuned", tmp_path / "plain"
    tuned_home.mkdir()
    plain_home.mkdir()
    tuned_types, tuned_values = _stored(tuned_home, _run(tuned_home, tuned=True))
    plain_types, plain_values = _stored(plain_home, _run(plain_home, tuned=False))
    assert tuned_values == plain_values == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert tuned_types == plain_types
    assert tuned_types["DagsterEventType.ASSET_CHECK_EVALUATION"] == 1
    assert tuned_types["DagsterEventType.ASSET_MATERIALIZATION"] == 3
    # the keepers are closed: the last close checkpointed the write-ahead logs away
    assert not list(tuned_home.rglob("*.db-wal"))

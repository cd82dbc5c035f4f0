"""Dump what an EOD run recorded, for comparing two runs of the same sessions line by line.

    .venv/bin/python benchmarks/eod_outputs.py PORTFOLIO_HOME > run.txt
    diff <(.venv/bin/python benchmarks/eod_outputs.py HOME_A) <(.venv/bin/python benchmarks/eod_outputs.py HOME_B)

Prints, sorted, one line per item:

* ``table <name> <row>`` for every row of every platform table in ``PORTFOLIO_HOME``'s SQLite
  database (``portfolio.db``), columns in table order;
* ``meta <asset> <partition> <key> <value>`` for every metadata entry of every asset
  materialization of the Dagster runs in ``<PORTFOLIO_HOME>/dagster``;
* ``check <asset> <check> <partition> <passed> <severity> <key> <value>`` for every asset
  check evaluation (one line per metadata entry, one with ``-`` without metadata);
* ``events <type> <count>``: how many events of each Dagster type the runs stored;
* ``index <table> <row>`` for the rows of Dagster's cross-run index (``index.db``) that say
  which checks were planned / ran for which partition and which asset tags were indexed.

Values that differ between any two runs by construction are replaced by a placeholder:
the run id, the ``PORTFOLIO_HOME`` path, and the columns / metadata entries named in
:data:`VOLATILE` (wall-clock times of the run).  Used to show that a faster code path
records exactly what the straightforward one did (benchmarks/README.md, bench_eod).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

#: Table columns and metadata keys holding the wall-clock time or duration of the run.
VOLATILE = frozenset(
    {
        "computed_at",
        "created_at",
        "updated_at",
        "recorded_at",
        "generated_at",
        "run_at",
        "inserted_at",
        "fetched_at",
        "elapsed_seconds",
        "dagster/run_id",
    }
)


def _table_lines(db: Path, home: str) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        lines: list[str] = []
        for name in sorted(names):
            cursor = conn.execute(f'SELECT * FROM "{name}"')  # noqa: S608 (names from sqlite_master)
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                values = [
                    "<volatile>" if c in VOLATILE else repr(v).replace(home, "<home>")
                    for c, v in zip(columns, row, strict=True)
                ]
                lines.append(
                    f"table {name} "
                    + " ".join(f"{c}={v}" for c, v in zip(columns, values, strict=True))
                )
        return lines
    finally:
        conn.close()


def _value(entry: object, home: str, run_ids: list[str]) -> str:
    text = repr(getattr(entry, "value", entry)).replace(home, "<home>")
    for run_id in run_ids:
        text = text.replace(run_id, "<run>")
    return text


def _dagster_lines(dagster_home: Path, home: str) -> list[str]:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    lines: list[str] = []
    types: dict[str, int] = {}
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        run_ids = [run.run_id for run in instance.get_runs()]
        for run_id in run_ids:
            for record in instance.get_records_for_run(run_id).records:
                entry = record.event_log_entry
                event = entry.dagster_event
                if event is not None:
                    types[str(event.event_type_value)] = (
                        types.get(str(event.event_type_value), 0) + 1
                    )
                mat = entry.asset_materialization
                if mat is not None:
                    asset = mat.asset_key.to_user_string()
                    for key, value in mat.metadata.items():
                        shown = "<volatile>" if key in VOLATILE else _value(value, home, run_ids)
                        lines.append(f"meta {asset} {mat.partition} {key} {shown}")
                    continue
                if event is None or event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                    continue
                check = event.asset_check_evaluation_data
                head = (
                    f"check {check.asset_key.to_user_string()} {check.check_name} "
                    f"{check.partition} {check.passed} {check.severity}"
                )
                if not check.metadata:
                    lines.append(f"{head} -")
                for key, value in check.metadata.items():
                    shown = "<volatile>" if key in VOLATILE else _value(value, home, run_ids)
                    lines.append(f"{head} {key} {shown}")
    lines += [f"events {name} {count}" for name, count in types.items()]
    return lines + _index_lines(dagster_home / "history" / "runs" / "index.db")


#: Columns of Dagster's index shard compared (the rest are serialised events and times).
_INDEX_COLUMNS = {
    "asset_check_executions": ("asset_key", "check_name", "partition", "execution_status"),
    "asset_event_tags": ("asset_key", "key", "value"),
    "asset_keys": ("asset_key",),
}


#: Asset event tags whose value Dagster derives from the run (its id) when the asset has
#: no code version.
_RUN_TAGS = frozenset({"dagster/data_version", "dagster/code_version", "dagster/logical_version"})


def _index_lines(index_db: Path) -> list[str]:
    if not index_db.exists():
        return []
    conn = sqlite3.connect(f"file:{index_db}?mode=ro", uri=True)
    try:
        lines: list[str] = []
        for table, columns in _INDEX_COLUMNS.items():
            select = ", ".join(f'"{c}"' for c in columns)
            for row in conn.execute(f'SELECT {select} FROM "{table}"'):  # noqa: S608 (constant names)
                values = dict(zip(columns, row, strict=True))
                if values.get("key") in _RUN_TAGS:  # derived from the run id
                    values["value"] = "<volatile>"
                lines.append(f"index {table} " + " ".join(f"{c}={v!r}" for c, v in values.items()))
        return lines
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "home", type=Path, help="the PORTFOLIO_HOME of a finished `portfolio demo` run"
    )
    args = parser.parse_args()
    home = args.home.resolve()
    lines = _table_lines(home / "portfolio.db", str(home)) + _dagster_lines(
        home / "dagster", str(home)
    )
    sys.stdout.write("".join(f"{line}\n" for line in sorted(lines)))


if __name__ == "__main__":
    main()

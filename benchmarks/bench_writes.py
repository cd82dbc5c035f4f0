"""Partition write benchmark (run: .venv/bin/python benchmarks/bench_writes.py).

CPU time (``time.process_time``) of replacing one ``stress_shock_grid`` session -- the
platform's largest daily partition -- in its own transaction on a fresh SQLite file
configured as the platform configures it (``Database``), at about the demo's size (1,760
rows; the demo's 2018-02-06 grid has 1,782) and at a larger book's (5,280 rows).  Three
ways, interleaved, median of the repeats:

* ``replace_partition`` (this version: validation and key check a column at a time, the
  INSERT compiled once and run as one driver ``executemany`` of bind-processed tuples);
* this version's column-wise validation, as dicts, + SQLAlchemy
  ``conn.execute(table.insert(), rows)`` -- the insert ``replace_partition`` used before;
* row-by-row validation + SQLAlchemy ``conn.execute(table.insert(), rows)`` -- the
  straightforward twin the tests compare against.

Why the baselines are the strongest straightforward ones: ``conn.execute`` with a list of
dicts is SQLAlchemy's own bulk path (its compiled statement cached, one DBAPI
``executemany``; SQLite and psycopg 3 use no faster "insertmanyvalues" batching without
RETURNING), and the delete is the same statement in every variant.  Pass
``--db-url postgresql://...`` to measure a throwaway PostgreSQL database instead (the script
migrates it and replaces only the partition of 1999-01-04, which it empties at the end).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, delete

from portfolio_pipeline.storage import Database, replace_partition
from portfolio_pipeline.storage.tables import stress_shock_grid
from portfolio_pipeline.storage.writes import _prepare_by_row, _prepare_rows

DAY = date(1999, 1, 4)
VOLS = ("+0pt", "+5pt", "+10pt", "-5pt", "VIX 30", "VIX 40", "VIX 60", "-3pt")


def grid_rows(spots: int, entities: int) -> list[dict[str, Any]]:
    """Rows shaped as ``analytics.stress.grid_rows`` makes them: spot x vol x 4 horizons
    x entity, Python floats and ints, ``strategy_id`` NULL."""
    return [
        {
            "session_date": DAY,
            "broker": "demo",
            "account_id": f"DU{e % 3}",
            "group_key": f"U{e}",
            "spot_shock": -0.3 + 0.05 * i,
            "vol_scenario": vol,
            "horizon_days": 7 * k,
            "strategy_id": None,
            "pnl": 1234.5678 * (i - j + k) / (e + 1),
            "pnl_greeks": -1.5 * (i + j * k) / (e + 1),
        }
        for i in range(spots)
        for j, vol in enumerate(VOLS)
        for k in range(4)
        for e in range(entities)
    ]


def sqlalchemy_insert(by_row: bool) -> Callable[[Connection, Table, dict[str, Any], Any], int]:
    def write(conn: Connection, table: Table, partition: dict[str, Any], rows: Any) -> int:
        if by_row:
            columns = [table.c[name] for name in rows[0]]
            prepared = _prepare_by_row(table, partition, columns, rows)
        else:
            prepared = _prepare_rows(table, partition, rows)
        conn.execute(delete(table).where(table.c.session_date == partition["session_date"]))
        conn.execute(table.insert(), prepared)
        return len(prepared)

    return write


def measure(db: Database, rows: Sequence[dict[str, Any]], repeats: int) -> dict[str, float]:
    ways: dict[str, Callable[[Connection, Table, dict[str, Any], Any], int]] = {
        "replace_partition": replace_partition,
        "column-wise + SQLAlchemy insert": sqlalchemy_insert(by_row=False),
        "row-by-row + SQLAlchemy insert": sqlalchemy_insert(by_row=True),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, write in ways.items():
            with db.begin() as conn:
                start = time.process_time()
                assert write(conn, stress_shock_grid, {"session_date": DAY}, rows) == len(rows)
                times[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", help="a throwaway database (default: a temporary SQLite file)")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(args.db_url or f"sqlite:///{Path(tmp) / 'portfolio.db'}")
        try:
            db.migrate()
            print(f"stress_shock_grid partition replace, CPU ms, median of {args.repeats}")
            print(f"database: {db.url_for_display}")
            for spots, entities in ((11, 5), (11, 15)):
                rows = grid_rows(spots, entities)
                result = measure(db, rows, args.repeats)
                ours = result["replace_partition"]
                print(f"\n{len(rows)} rows")
                for name, seconds in result.items():
                    ratio = seconds / ours
                    print(f"  {name:34s} {seconds * 1e3:8.1f} ms  {ratio:5.2f}x ours")
            with db.begin() as conn:
                replace_partition(conn, stress_shock_grid, {"session_date": DAY}, [])
        finally:
            db.dispose()


if __name__ == "__main__":
    main()

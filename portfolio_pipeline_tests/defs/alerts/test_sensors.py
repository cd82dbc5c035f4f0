"""breach_sensor: JSON cursor, run_key = event id, late-committed ids behind the cursor."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
from sqlalchemy import insert

from portfolio_pipeline.defs.alerts.sensors import breach_sensor
from portfolio_pipeline.defs.resources import DatabaseResource
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import events

TS = datetime(2018, 2, 5, 18, 0, tzinfo=UTC)


def _add(db: Database, event_id: int, kind: str = "limit_breach") -> None:
    with db.begin() as conn:
        conn.execute(insert(events).values(id=event_id, event_key=f"k{event_id}", kind=kind, severity="warning",
                                           ts=TS, account_id="DEMO-001", payload={"metric": "vega"}))


def _tick(db_url: str, cursor: str | None) -> tuple[list[str], str | None]:
    with dg.build_sensor_context(cursor=cursor, instance=dg.DagsterInstance.ephemeral(),
                                 resources={"db": DatabaseResource(url=db_url)}) as ctx:
        keys = [r.run_key for r in breach_sensor(ctx)]
        return keys, ctx.cursor  # type: ignore[return-value]


def test_cursor_run_keys_and_out_of_order_commits(db: Database, db_url: str) -> None:
    _add(db, 1)
    _add(db, 2, kind="risk_snapshot")
    _add(db, 4)
    keys, cursor = _tick(db_url, None)
    assert keys == ["breach:1", "breach:4"]
    assert json.loads(cursor or "{}")["last_id"] == 4
    _add(db, 3)  # a concurrent writer committed id 3 after id 4 was read
    keys, cursor = _tick(db_url, cursor)
    assert keys == ["breach:3"]
    keys, _ = _tick(db_url, cursor)
    assert keys == []

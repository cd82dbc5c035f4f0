"""breach_sensor: JSON cursor, run_key = event id, late-committed ids behind the cursor,
no flood of old events on the first start."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import insert

from portfolio_pipeline.defs.alerts.sensors import breach_sensor
from portfolio_pipeline.defs.alerts.sinks import AlertsResource
from portfolio_pipeline.defs.resources import DatabaseResource
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import events

TS = datetime(2018, 2, 5, 18, 0, tzinfo=UTC)


class PinnedAlerts(AlertsResource):
    """The alerts resource with time pinned (ISO 8601, aware)."""

    at: str

    def now(self) -> datetime:
        return datetime.fromisoformat(self.at)


def _add(db: Database, event_id: int, kind: str = "limit_breach", ts: datetime = TS) -> None:
    with db.begin() as conn:
        conn.execute(insert(events).values(id=event_id, event_key=f"k{event_id}", kind=kind, severity="warning",
                                           ts=ts, account_id="DEMO-001", payload={"metric": "vega"}))


def _evaluate(db_url: str, cursor: str | None, now: datetime = TS
              ) -> tuple[list[dg.RunRequest], list[dg.SkipReason], str | None]:
    alerts = PinnedAlerts(at=now.isoformat())
    with dg.build_sensor_context(cursor=cursor, instance=dg.DagsterInstance.ephemeral(),
                                 resources={"db": DatabaseResource(url=db_url), "alerts": alerts}) as ctx:
        out = list(breach_sensor(ctx))
        runs = [r for r in out if isinstance(r, dg.RunRequest)]
        skips = [r for r in out if isinstance(r, dg.SkipReason)]
        return runs, skips, ctx.cursor


def _tick(db_url: str, cursor: str | None, now: datetime = TS) -> tuple[list[str], str | None]:
    runs, _skips, new_cursor = _evaluate(db_url, cursor, now)
    return [r.run_key for r in runs], new_cursor


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


def test_first_start_skips_old_breaches_and_says_how_many(db: Database, db_url: str) -> None:
    now = TS + timedelta(hours=5)
    for i in range(1, 4):  # three breaches 5 h old: written before this deployment
        _add(db, i)
    _add(db, 4, ts=now - timedelta(minutes=59))  # inside the default 60-minute window
    runs, skips, cursor = _evaluate(db_url, None, now)
    assert [r.run_key for r in runs] == ["breach:4"]
    assert skips == []
    backlog = json.loads(cursor or "{}")["backlog"]
    assert backlog == {"until_id": 4, "before": (now - timedelta(minutes=60)).isoformat()}
    # written after the first start: alerted whatever its timestamp (a demo replay)
    _add(db, 5, ts=TS)
    keys, cursor = _tick(db_url, cursor, now + timedelta(minutes=2))
    assert keys == ["breach:5"]
    # the bound is kept: a restart from this cursor does not re-run or re-skip anything
    keys, _ = _tick(db_url, cursor, now + timedelta(days=3))
    assert keys == []


def test_first_start_backlog_bound_in_the_cursor_applies_on_later_ticks(
    db: Database, db_url: str
) -> None:
    """A backlog longer than one batch is read over several ticks: the bound recorded on
    the first start (ids up to 2, before the cut-off) still skips them."""
    _add(db, 1)
    _add(db, 2)
    _add(db, 3, ts=TS - timedelta(minutes=1))  # after the first start: runs though old
    at_cut = json.dumps({"last_id": 0, "seen": [], "backlog": {"until_id": 2, "before": TS.isoformat()}})
    keys, _ = _tick(db_url, at_cut, TS)
    assert keys == ["breach:1", "breach:2", "breach:3"]  # ts == cut-off is not older
    after_cut = json.dumps({"last_id": 0, "seen": [],
                            "backlog": {"until_id": 2, "before": (TS + timedelta(seconds=1)).isoformat()}})
    keys, _ = _tick(db_url, after_cut, TS)
    assert keys == ["breach:3"]


def test_first_start_with_only_old_events_reports_the_skip(db: Database, db_url: str) -> None:
    for i in range(1, 3):
        _add(db, i)
    runs, [skip], cursor = _evaluate(db_url, None, TS + timedelta(days=1))
    assert runs == []
    assert skip.skip_message is not None
    assert skip.skip_message.startswith("first start: skipped 2 breach event(s) older than 60 min")
    assert json.loads(cursor or "{}")["last_id"] == 2


def test_a_cursor_from_before_the_cut_off_existed_skips_nothing(db: Database, db_url: str) -> None:
    _add(db, 1)
    _add(db, 2)
    old_cursor = json.dumps({"last_id": 1, "seen": [1]})
    keys, _ = _tick(db_url, old_cursor, TS + timedelta(days=30))
    assert keys == ["breach:2"]

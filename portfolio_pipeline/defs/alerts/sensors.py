"""Sensors reacting to the streaming service's events and to run failures."""


import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import dagster as dg
from sqlalchemy import func, select

from portfolio_pipeline.defs.alerts.jobs import breach_response_job, staged_order_reminder_job
from portfolio_pipeline.defs.alerts.sinks import AlertMessage, AlertsResource
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.storage.events import events_since
from portfolio_pipeline.storage.tables import events, orders

__all__ = ["LOOKBACK_IDS", "breach_sensor", "hedge_failure_sensor", "run_failure_alert", "staged_order_sensor"]

LIMIT_BREACH: Final = "limit_breach"
HEDGE_FAILED: Final = "hedge_failed"
LOOKBACK_IDS: Final = 200
"""Ids re-read behind the cursor: concurrent PostgreSQL writers may commit ids out of order."""


def _load_cursor(raw: str | None) -> tuple[int, set[int]]:
    if not raw:
        return 0, set()
    doc = json.loads(raw)
    return int(doc.get("last_id", 0)), {int(i) for i in doc.get("seen", [])}


@dg.sensor(job=breach_response_job, minimum_interval_seconds=10,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="One breach_response run per limit_breach event (run_key = event id); on "
           "its first start it skips the events already stored that are older than the alerts "
           "resource's breach_first_start_max_age_minutes, and says how many.")
def breach_sensor(context: dg.SensorEvaluationContext, db: DatabaseResource,
                  alerts: AlertsResource) -> Iterator[dg.RunRequest | dg.SkipReason]:
    last_id, seen = _load_cursor(context.cursor)
    # The backlog found on the first start (ids up to the newest one then) is skipped when
    # older than the cut-off; the bound stays in the cursor, so a backlog longer than one
    # batch is skipped on the following ticks too.  Events written later always run, whatever
    # their timestamp (a demo replay writes historical ones).
    doc = json.loads(context.cursor) if context.cursor else {}
    if context.cursor:
        backlog = doc.get("backlog")  # None in a cursor from before the cut-off existed
    else:
        with db.database.connect() as conn:
            newest = conn.execute(
                select(func.max(events.c.id)).where(events.c.kind == LIMIT_BREACH)
            ).scalar_one_or_none()
        backlog = {"until_id": int(newest or 0),
                   "before": (alerts.now() - alerts.breach_first_start_max_age).isoformat()}
    until_id = int(backlog["until_id"]) if backlog else 0
    oldest = datetime.fromisoformat(backlog["before"]) if backlog else None
    start = max(last_id - LOOKBACK_IDS, 0)
    with db.database.connect() as conn:
        found = events_since(conn, start, kinds=[LIMIT_BREACH], limit=1000)
    skipped = 0
    requested = 0
    for event in found:
        if event.id in seen:
            continue
        seen.add(event.id)
        if oldest is not None and event.id <= until_id and event.ts < oldest:
            skipped += 1
            continue
        requested += 1
        yield dg.RunRequest(
            run_key=f"breach:{event.id}",
            run_config={"ops": {"breach_snapshot": {"config": {"event_id": event.id}}}},
            tags={"event_id": str(event.id), "metric": str((event.payload or {}).get("metric", ""))},
        )
    new_last = max([last_id, *(e.id for e in found)])
    floor = new_last - LOOKBACK_IDS
    cursor: dict[str, object] = {"last_id": new_last, "seen": sorted(i for i in seen if i > floor)}
    if backlog:
        cursor["backlog"] = backlog
    context.update_cursor(json.dumps(cursor))
    if skipped:
        note = (f"first start: skipped {skipped} breach event(s) older than "
                f"{alerts.breach_first_start_max_age_minutes:g} min (before {oldest})")
        context.log.warning("breach_sensor %s", note)
        if not requested:
            yield dg.SkipReason(note)


@dg.sensor(job=staged_order_reminder_job, minimum_interval_seconds=60,
           description="Reminds about staged orders awaiting a person's confirmation.")
def staged_order_sensor(context: dg.SensorEvaluationContext, db: DatabaseResource,
                        platform: PlatformResource) -> Iterator[dg.RunRequest]:
    every = timedelta(minutes=platform.config.streaming.staging.remind_after_minutes)
    now = datetime.now(UTC)
    with db.database.connect() as conn:
        rows = conn.execute(
            select(orders.c.order_id, orders.c.updated_at)
            .where(orders.c.status.in_([OrderStatus.STAGED.value, OrderStatus.SHOWN.value]))
        ).all()
    for order_id, updated_at in rows:
        age = now - updated_at
        if age < every:
            continue
        n = int(age / every)
        yield dg.RunRequest(
            run_key=f"staged_reminder:{order_id}:{n}",
            run_config={"ops": {"staged_order_reminder": {"config": {"order_id": order_id, "reminder": n}}}},
        )


@dg.run_failure_sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Alerts on every failed run.")
def run_failure_alert(context: dg.RunFailureSensorContext, db: DatabaseResource, platform: PlatformResource,
                      alerts: AlertsResource) -> None:
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    sink = alerts.sink(db.database, platform.config.notifications)
    sink.send(AlertMessage(
        key=f"run_failure:{run.run_id}", kind="run_failure",
        title=f"Dagster run failed: {run.job_name}", text=f"run {run.run_id}\n{message}",
    ))


@dg.sensor(minimum_interval_seconds=10,
           description="Alerts on every hedge proposal the streaming service could not build.")
def hedge_failure_sensor(context: dg.SensorEvaluationContext, db: DatabaseResource, platform: PlatformResource,
                         alerts: AlertsResource) -> dg.SkipReason:
    last_id, seen = _load_cursor(context.cursor)
    start = max(last_id - LOOKBACK_IDS, 0)
    with db.database.connect() as conn:
        found = events_since(conn, start, kinds=[HEDGE_FAILED], limit=1000)
    sent = 0
    for event in found:
        if event.id in seen:
            continue
        seen.add(event.id)
        p = event.payload or {}
        sink = alerts.sink(db.database, platform.config.notifications)
        sink.send(AlertMessage(
            key=f"{HEDGE_FAILED}:{event.event_key}"[:255], kind="breach", severity="warning",
            regime=p.get("regime"),
            title=f"Hedge proposal failed: {p.get('metric')} breach, underlying {p.get('hedge_underlying')}",
            text=(f"breach {p.get('breach_event_key')} (value {p.get('value')}, limit {p.get('limit')}, "
                  f"VIX {p.get('vix')}): no hedge could be built: {p.get('reason')}\n"
                  "monitoring continues; check hedge.hedge_underlying in streaming.yaml (portfolio config check)"),
        ))
        sent += 1
    new_last = max([last_id, *(e.id for e in found)])
    floor = new_last - LOOKBACK_IDS
    context.update_cursor(json.dumps({"last_id": new_last, "seen": sorted(i for i in seen if i > floor)}))
    return dg.SkipReason(f"{sent} hedge failure alert(s) sent")

"""Sensors reacting to the streaming service's events and to run failures."""


import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import dagster as dg
from sqlalchemy import select

from portfolio_pipeline.defs.alerts.jobs import breach_response_job, staged_order_reminder_job
from portfolio_pipeline.defs.alerts.sinks import AlertMessage, AlertsResource
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.storage.events import events_since
from portfolio_pipeline.storage.tables import orders

__all__ = ["LOOKBACK_IDS", "breach_sensor", "run_failure_alert", "staged_order_sensor"]

LIMIT_BREACH: Final = "limit_breach"
LOOKBACK_IDS: Final = 200
"""Ids re-read behind the cursor: concurrent PostgreSQL writers may commit ids out of order."""
DEFAULT_REMIND_MINUTES: Final = 10.0


def _load_cursor(raw: str | None) -> tuple[int, set[int]]:
    if not raw:
        return 0, set()
    doc = json.loads(raw)
    return int(doc.get("last_id", 0)), {int(i) for i in doc.get("seen", [])}


@dg.sensor(job=breach_response_job, minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING,
           description="One breach_response run per limit_breach event (run_key = event id).")
def breach_sensor(context: dg.SensorEvaluationContext, db: DatabaseResource) -> Iterator[dg.RunRequest]:
    last_id, seen = _load_cursor(context.cursor)
    start = max(last_id - LOOKBACK_IDS, 0)
    with db.database.connect() as conn:
        found = events_since(conn, start, kinds=[LIMIT_BREACH], limit=1000)
    for event in found:
        if event.id in seen:
            continue
        seen.add(event.id)
        yield dg.RunRequest(
            run_key=f"breach:{event.id}",
            run_config={"ops": {"breach_snapshot": {"config": {"event_id": event.id}}}},
            tags={"event_id": str(event.id), "metric": str((event.payload or {}).get("metric", ""))},
        )
    new_last = max([last_id, *(e.id for e in found)])
    floor = new_last - LOOKBACK_IDS
    context.update_cursor(json.dumps({"last_id": new_last, "seen": sorted(i for i in seen if i > floor)}))


@dg.sensor(job=staged_order_reminder_job, minimum_interval_seconds=60,
           description="Reminds about staged orders awaiting a person's confirmation.")
def staged_order_sensor(context: dg.SensorEvaluationContext, db: DatabaseResource,
                        platform: PlatformResource) -> Iterator[dg.RunRequest]:
    from streaming_service.config import StreamingConfig

    settings = platform.config.get("streaming.yaml")
    minutes = settings.staging.remind_after_minutes if isinstance(settings, StreamingConfig) else DEFAULT_REMIND_MINUTES
    every = timedelta(minutes=minutes)
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
    sink = alerts.sink(db.database, platform.config.get("notifications.yaml"))
    sink.send(AlertMessage(
        key=f"run_failure:{run.run_id}", kind="run_failure",
        title=f"Dagster run failed: {run.job_name}", text=f"run {run.run_id}\n{message}",
    ))

"""``exit_signal_sensor`` (events -> one alert run per exit signal) and
``notification_housekeeping`` (a run whenever held digests or escalations are due)."""

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Final

import dagster as dg

from portfolio_pipeline.defs.notifications.jobs import (
    exit_signal_alert_job,
    notification_housekeeping_job,
)
from portfolio_pipeline.defs.notifications.resources import NotificationsResource
from portfolio_pipeline.defs.notifications.summary import EXIT_SIGNAL_KIND
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.storage.events import events_since

__all__ = ["LOOKBACK_IDS", "exit_signal_sensor", "notification_housekeeping"]

LOOKBACK_IDS: Final = 200
"""Ids re-read behind the cursor: concurrent PostgreSQL writers may commit ids out of order."""
BATCH: Final = 1000
HOUSEKEEPING_SECONDS: Final = 30
"""Sensor interval: an escalation step or an outbox retry fires within a minute of its
due time (interval + run launch), not after a 3-minute tick."""


def _load_cursor(raw: str | None) -> tuple[int, set[int]]:
    if not raw:
        return 0, set()
    doc = json.loads(raw)
    return int(doc.get("last_id", 0)), {int(i) for i in doc.get("seen", [])}


def _dump_cursor(last_id: int, seen: set[int]) -> str:
    floor = last_id - LOOKBACK_IDS
    return json.dumps({"last_id": last_id, "seen": sorted(i for i in seen if i > floor)})


@dg.sensor(
    job=exit_signal_alert_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One exit_signal_alert run per exit_signal event (run_key = event id); "
    "events older than the notifications resource's exit_signal_max_age_hours (backfills) "
    "are skipped.",
)
def exit_signal_sensor(
    context: dg.SensorEvaluationContext, db: DatabaseResource, notifications: NotificationsResource
) -> Iterator[dg.RunRequest]:
    last_id, seen = _load_cursor(context.cursor)
    start = max(last_id - LOOKBACK_IDS, 0)
    with db.database.connect() as conn:
        found = events_since(conn, start, kinds=[EXIT_SIGNAL_KIND], limit=BATCH)
    oldest = notifications.now() - notifications.exit_signal_max_age
    skipped = 0
    for event in found:
        if event.id in seen:
            continue
        seen.add(event.id)
        if event.ts < oldest:
            skipped += 1
            continue
        yield dg.RunRequest(
            run_key=f"exit_signal:{event.id}",
            run_config={"ops": {"exit_signal_alert": {"config": {"event_id": event.id}}}},
            tags={"event_id": str(event.id), "event_key": event.event_key[:200]},
        )
    if skipped:
        context.log.info("exit signals too old to alert skipped=%s", skipped)
    context.update_cursor(_dump_cursor(max([last_id, *(e.id for e in found)]), seen))


def _bucket(now: datetime) -> str:
    return datetime.fromtimestamp(
        now.timestamp() // HOUSEKEEPING_SECONDS * HOUSEKEEPING_SECONDS, tz=now.tzinfo
    ).isoformat()


@dg.sensor(
    job=notification_housekeeping_job,
    minimum_interval_seconds=HOUSEKEEPING_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches notification_housekeeping_job (retry_due + flush_due + escalate_due) "
    "when outbox retries, held quiet-hours digests or escalations are due; otherwise skips "
    "(no run clutter).",
)
def notification_housekeeping(
    context: dg.SensorEvaluationContext,
    db: DatabaseResource,
    platform: PlatformResource,
    notifications: NotificationsResource,
) -> dg.RunRequest | dg.SkipReason:
    now = notifications.now()
    due = notifications.notifier(db.database, platform).due_work(now)
    if not any(due):
        return dg.SkipReason("no outbox retry, held digest or escalation due")
    return dg.RunRequest(
        run_key=f"notification_housekeeping:{_bucket(now)}",
        tags={
            "held": str(due.held),
            "escalations": str(due.escalations),
            "retries": str(due.retries),
        },
    )

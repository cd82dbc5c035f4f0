"""Jobs launched by the notification sensors: one exit-signal alert per event, and the
housekeeping run (held quiet-hours digests, escalation of unacknowledged alerts)."""

from typing import Any

import dagster as dg
from sqlalchemy import select

from portfolio_pipeline.defs.notifications.outbox import record_deliveries
from portfolio_pipeline.defs.notifications.resources import NotificationsResource
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.notify import Alert, AlertType, DeliveryOutcome, Severity
from portfolio_pipeline.notify.messages import exit_signal_message
from portfolio_pipeline.storage.tables import events

__all__ = ["exit_signal_alert_from", "exit_signal_alert_job", "notification_housekeeping_job"]


class ExitSignalConfig(dg.Config):
    event_id: int


def exit_signal_alert_from(event: dict[str, Any]) -> Alert:
    """The alert of one ``exit_signal`` event (key ``exit_signal:<event_key>``)."""
    payload = event["payload"] if isinstance(event["payload"], dict) else {}
    severity = event["severity"] if event["severity"] in {s.value for s in Severity} else None
    message = exit_signal_message(payload, account_id=event["account_id"], ts=event["ts"])
    return Alert(
        key=f"exit_signal:{event['event_key']}"[:255],
        type=AlertType.EXIT_SIGNAL,
        title=message.title,
        text=message.text,
        severity=None if severity is None else Severity(severity),
        created_at=event["ts"],
    )


@dg.op
def exit_signal_alert(
    context: dg.OpExecutionContext,
    config: ExitSignalConfig,
    db: DatabaseResource,
    platform: PlatformResource,
    notifications: NotificationsResource,
) -> None:
    with db.database.connect() as conn:
        row = conn.execute(select(events).where(events.c.id == config.event_id)).mappings().first()
    if row is None:
        raise dg.Failure(f"exit_signal_alert: no event with id {config.event_id}")
    alert = exit_signal_alert_from(dict(row))
    results = notifications.notifier(db.database, platform).dispatch(alert)
    context.log.info(
        "exit signal alert_key=%s outcomes=%s",
        alert.key,
        {r.channel: r.outcome.value for r in results},
    )
    record_deliveries(context, results)


@dg.job(description="Alert about one exit_signal event (once per channel).")
def exit_signal_alert_job() -> None:
    exit_signal_alert()


@dg.op
def notification_housekeeping_op(
    context: dg.OpExecutionContext,
    db: DatabaseResource,
    platform: PlatformResource,
    notifications: NotificationsResource,
) -> None:
    notifier = notifications.notifier(db.database, platform)
    retried = notifier.retry_due()
    flushed = notifier.flush_due()
    escalated = notifier.escalate_due()
    results = [*retried, *flushed, *escalated]
    context.log.info(
        "housekeeping retries=%s digests=%s escalations=%s delivered=%s retrying=%s failed=%s",
        len(retried),
        len(flushed),
        len(escalated),
        sum(r.outcome is DeliveryOutcome.DELIVERED for r in results),
        sum(r.outcome is DeliveryOutcome.RETRYING for r in results),
        sum(r.outcome is DeliveryOutcome.FAILED for r in results),
    )
    record_deliveries(context, results)


@dg.job(
    description="Retry failed deliveries that are due (the outbox), deliver held quiet-hours "
    "digests and escalate unacknowledged alerts."
)
def notification_housekeeping_job() -> None:
    notification_housekeeping_op()

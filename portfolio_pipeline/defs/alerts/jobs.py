"""``breach_response`` (snapshot of the moment, proposal record, alert) and
``staged_order_reminder`` jobs, launched by the sensors beside them."""


import logging
from datetime import datetime
from typing import Any, Literal

import dagster as dg
from sqlalchemy import select

from portfolio_pipeline.defs.alerts.sinks import AlertMessage, AlertsResource
from portfolio_pipeline.defs.notifications.outbox import record_deliveries
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.notify.messages import breach_message, order_commands
from portfolio_pipeline.orders import OrderNotFoundError, OrderStore, render_order
from portfolio_pipeline.storage.events import append_event
from portfolio_pipeline.storage.tables import events

__all__ = ["BREACH_RESPONSE", "breach_response_job", "staged_order_reminder_job"]

logger = logging.getLogger(__name__)

BREACH_RESPONSE = "breach_response"
RISK_SNAPSHOT = "risk_snapshot"


class BreachConfig(dg.Config):
    event_id: int


class ReminderConfig(dg.Config):
    order_id: str
    reminder: int = 0


def _event(conn: Any, event_id: int) -> dict[str, Any]:
    row = conn.execute(select(events).where(events.c.id == event_id)).mappings().first()
    if row is None:
        raise dg.Failure(f"breach_response: no event with id {event_id}")
    return dict(row)


@dg.op
def breach_snapshot(context: dg.OpExecutionContext, config: BreachConfig, db: DatabaseResource) -> dict[str, Any]:
    """The breach event and the intraday risk snapshot of that moment (from the events table)."""
    with db.database.connect() as conn:
        breach = _event(conn, config.event_id)
        snap = conn.execute(
            select(events)
            .where(events.c.kind == RISK_SNAPSHOT, events.c.ts <= breach["ts"],
                   events.c.account_id == breach["account_id"])
            .order_by(events.c.ts.desc(), events.c.id.desc())
            .limit(1)
        ).mappings().first()
    payload = breach["payload"]
    context.log.info(
        "breach id=%s metric=%s value=%s limit=%s regime=%s vix=%s", breach["id"], payload.get("metric"),
        payload.get("value"), payload.get("limit"), payload.get("regime"), payload.get("vix"),
    )
    return {
        "event_id": breach["id"], "event_key": breach["event_key"], "ts": breach["ts"].isoformat(),
        "account_id": breach["account_id"], "severity": breach["severity"], "breach": payload,
        "risk": None if snap is None else snap["payload"],
    }


@dg.op
def breach_proposal_record(context: dg.OpExecutionContext, snapshot: dict[str, Any],
                           db: DatabaseResource) -> dict[str, Any]:
    """Record the response: the snapshot plus the hedge proposals made for this breach."""
    store = OrderStore(db.database)
    proposals = [
        {"order_id": o.order_id, "status": o.status.value, "quantity": o.quantity, "limit_price": o.limit_price,
         "legs": [f"{leg.action} {leg.contract.key}" for leg in o.legs],
         "warnings": list(o.whatif.warnings) if o.whatif else []}
        for o in store.by_proposal(snapshot["event_key"])
    ]
    record = {**snapshot, "proposals": proposals}
    with db.database.begin() as conn:
        new_id = append_event(
            conn, event_key=f"{BREACH_RESPONSE}:{snapshot['event_id']}", kind=BREACH_RESPONSE, severity="info",
            ts=datetime.fromisoformat(snapshot["ts"]), payload=record, account_id=snapshot["account_id"],
        )
    context.add_output_metadata({"proposals": len(proposals), "recorded": new_id is not None})
    return record


def _account_of(platform: PlatformResource, account_id: str | None) -> tuple[str | None, str | None]:
    """The broker and display name of ``account_id`` from ``accounts.yaml`` (None when it
    is not listed)."""
    if not account_id:
        return None, None
    try:
        accounts = platform.config.accounts.book()
    except Exception:  # the alert must go out even when the configuration is unreadable
        logger.exception("accounts.yaml unreadable; alert without the broker name")
        return None, None
    found = next((a for a in accounts if a.account_id == account_id), None)
    return (None, None) if found is None else (found.broker, found.display_name)


@dg.op
def breach_alert(context: dg.OpExecutionContext, record: dict[str, Any], db: DatabaseResource,
                 platform: PlatformResource, alerts: AlertsResource) -> None:
    b = record["breach"]
    sink = alerts.sink(db.database, platform.config.notifications)
    severity: Literal["info", "warning", "critical"] = (
        "critical" if record["severity"] == "critical" else "info" if record["severity"] == "info" else "warning"
    )
    broker, display = _account_of(platform, record.get("account_id"))
    message = breach_message(record, broker=broker, display=display)
    results = sink.send(AlertMessage(
        key=f"breach:{record['event_key']}"[:255], kind="breach",
        title=message.title, text=message.text, severity=severity, regime=b.get("regime"),
    ))
    record_deliveries(context, list(results or []))


@dg.job(description="Intraday breach: risk snapshot of the moment, proposal record, alert.")
def breach_response_job() -> None:
    breach_alert(breach_proposal_record(breach_snapshot()))


@dg.op
def staged_order_reminder(context: dg.OpExecutionContext, config: ReminderConfig, db: DatabaseResource,
                          platform: PlatformResource, alerts: AlertsResource) -> None:
    try:
        order = OrderStore(db.database).get(config.order_id)
    except OrderNotFoundError as exc:
        raise dg.Failure(str(exc)) from None
    if order.status not in (OrderStatus.STAGED, OrderStatus.SHOWN):
        context.log.info("order %s is %s; no reminder", order.order_id, order.status.value)
        return
    sink = alerts.sink(db.database, platform.config.notifications)
    results = sink.send(AlertMessage(
        key=f"staged_reminder:{order.order_id}:{config.reminder}", kind="staged_order",
        title=f"Staged order {order.order_id} awaits confirmation",
        text=render_order(order) + f"\n\nto act: {order_commands(order.order_id)}",
    ))
    record_deliveries(context, list(results or []))


@dg.job(description="Remind about a staged order nobody has confirmed or rejected.")
def staged_order_reminder_job() -> None:
    staged_order_reminder()

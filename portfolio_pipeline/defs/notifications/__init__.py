"""Notifications in Dagster: the ``daily_summary`` / ``weekly_digest`` assets (with the
``notification_delivery`` check), ``exit_signal_sensor`` and ``notification_housekeeping``.
Delivery, routing, quiet hours and exactly-once live in :mod:`portfolio_pipeline.notify`."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.notifications.assets import (
    FORCE,
    NOTIFY_TAG,
    make_notification_assets,
    send_decision,
)
from portfolio_pipeline.defs.notifications.jobs import (
    exit_signal_alert_job,
    notification_housekeeping_job,
)
from portfolio_pipeline.defs.notifications.outbox import outbox_asset, outbox_check
from portfolio_pipeline.defs.notifications.resources import NotificationsResource
from portfolio_pipeline.defs.notifications.sensors import (
    exit_signal_sensor,
    notification_housekeeping,
)

__all__ = [
    "FORCE",
    "NOTIFY_TAG",
    "NotificationsResource",
    "definitions",
    "send_decision",
]


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(
        assets=[*make_notification_assets(partitions), outbox_asset],
        asset_checks=[outbox_check],
        jobs=[exit_signal_alert_job, notification_housekeeping_job],
        sensors=[exit_signal_sensor, notification_housekeeping],
        resources={"notifications": NotificationsResource()},
    )

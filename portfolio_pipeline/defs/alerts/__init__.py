"""Alerts: sensors on the streaming service's events (breach_response runs, staged-order
reminders) and on run failures; alerts go through an :class:`AlertSink`."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.alerts.jobs import breach_response_job, staged_order_reminder_job
from portfolio_pipeline.defs.alerts.sensors import (
    breach_sensor,
    hedge_failure_sensor,
    run_failure_alert,
    staged_order_sensor,
)
from portfolio_pipeline.defs.alerts.sinks import (
    AlertMessage,
    AlertSink,
    AlertsResource,
    LogAlertSink,
)

__all__ = ["AlertMessage", "AlertSink", "AlertsResource", "LogAlertSink", "definitions"]


def definitions() -> dg.Definitions:
    return dg.Definitions(
        jobs=[breach_response_job, staged_order_reminder_job],
        sensors=[breach_sensor, staged_order_sensor, run_failure_alert, hedge_failure_sensor],
        resources={"alerts": AlertsResource()},
    )

"""Where alerts go: a tiny :class:`AlertSink` Protocol, the log sink, and the notify
dispatcher behind it when ``notifications.yaml`` is configured."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import dagster as dg
from pydantic import PrivateAttr

from portfolio_pipeline.clock import system_clock
from portfolio_pipeline.config.notifications import NotificationsFile
from portfolio_pipeline.storage import Database

__all__ = ["AlertMessage", "AlertSink", "AlertsResource", "LogAlertSink", "NotifierAlertSink"]

logger = logging.getLogger(__name__)

AlertKind = Literal["breach", "staged_order", "run_failure", "data_quality"]


@dataclass(frozen=True, slots=True)
class AlertMessage:
    key: str
    kind: AlertKind
    title: str
    text: str
    severity: Literal["info", "warning", "critical"] = "warning"
    regime: str | None = None


class AlertSink(Protocol):
    def send(self, alert: AlertMessage) -> Sequence[Any] | None:
        """Send ``alert``; the notify sink returns its ``DeliveryResult`` per channel."""
        ...


class LogAlertSink:
    """Alerts as log lines (the default with no notification channels)."""

    def send(self, alert: AlertMessage) -> None:
        logger.warning("ALERT key=%s kind=%s severity=%s title=%s\n%s",
                       alert.key, alert.kind, alert.severity, alert.title, alert.text)


class NotifierAlertSink:
    """Alerts through ``portfolio_pipeline.notify.Notifier`` (routing, quiet hours, once per channel)."""

    def __init__(self, notifier: object) -> None:
        self._notifier = notifier

    def send(self, alert: AlertMessage) -> Sequence[Any] | None:
        from portfolio_pipeline.notify import Alert, AlertType, Severity

        return self._notifier.dispatch(Alert(  # type: ignore[attr-defined,no-any-return]
            key=alert.key, type=AlertType(alert.kind), title=alert.title, text=alert.text,
            severity=Severity(alert.severity), regime=alert.regime,
        ))


class AlertsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Builds the alert sink: the notify dispatcher when configured, else the log."""

    use_notifier: bool = True

    breach_first_start_max_age_minutes: float = 60.0
    """On its first start (no cursor) ``breach_sensor`` ignores breach events older than
    this, so a new deployment over an old events table does not flood anyone."""

    _sink: AlertSink | None = PrivateAttr(default=None)

    def now(self) -> datetime:
        """Aware UTC now (tests override this to pin time)."""
        return system_clock()

    @property
    def breach_first_start_max_age(self) -> timedelta:
        return timedelta(minutes=self.breach_first_start_max_age_minutes)

    def sink(self, db: Database, notifications: NotificationsFile | None) -> AlertSink:
        """The dispatcher of ``notifications`` (``notifications.yaml``); the log when it is
        not configured or ``use_notifier`` is off."""
        if self._sink is None:
            from portfolio_pipeline.notify import Notifier
            from portfolio_pipeline.storage.notifications import SqlNotificationStore

            if self.use_notifier and notifications is not None:
                self._sink = NotifierAlertSink(Notifier(SqlNotificationStore(db), notifications))
            else:
                self._sink = LogAlertSink()
        return self._sink

"""The notifications resource: one :class:`~portfolio_pipeline.notify.Notifier` per run
(channels, routes and quiet hours from ``config/notifications.yaml``), the clock the
send decisions use, and the windows of the delivery check and the exit-signal sensor."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
from pydantic import PrivateAttr

from portfolio_pipeline.clock import system_clock
from portfolio_pipeline.defs.resources import PlatformResource
from portfolio_pipeline.notify import AlertType, NotificationsFile, Notifier
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.notifications import SqlNotificationStore

__all__ = ["NotificationsResource", "log_only_config"]


def log_only_config() -> NotificationsFile:
    """Everything to the log channel (used when ``notifications.yaml`` is absent)."""
    return NotificationsFile.model_validate(
        {
            "channels": {"log": {"type": "log"}},
            "routes": {t.value: {"channels": ["log"], "quiet_hours": "deliver"} for t in AlertType},
        }
    )


class NotificationsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Builds the run's notifier; secrets come from the environment (never from here)."""

    failure_window_hours: float = 24.0
    """The ``notification_delivery`` check fails on failures recorded this recently."""

    stuck_after_minutes: float = 15.0
    """A delivery claimed longer ago than this without an outcome counts as stuck."""

    exit_signal_max_age_hours: float = 72.0
    """Exit-signal events older than this (e.g. written by a backfill) are not alerted."""

    _notifier: Notifier | None = PrivateAttr(default=None)

    def now(self) -> datetime:
        """Aware UTC now (tests override this to pin time)."""
        return system_clock()

    @property
    def failure_window(self) -> timedelta:
        return timedelta(hours=self.failure_window_hours)

    @property
    def stuck_after(self) -> timedelta:
        return timedelta(minutes=self.stuck_after_minutes)

    @property
    def exit_signal_max_age(self) -> timedelta:
        return timedelta(hours=self.exit_signal_max_age_hours)

    def notifier(self, db: Database, platform: PlatformResource) -> Notifier:
        if self._notifier is None:
            config = platform.config.notifications or log_only_config()
            self._notifier = Notifier(SqlNotificationStore(db), config, clock=self.now, calendar=platform.calendar)
        return self._notifier

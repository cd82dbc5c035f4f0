"""Notifications: channels (log, Telegram, Slack, email), routing per alert type, quiet
hours on the exchange calendar, exactly-once delivery per alert per channel, escalation.

Configured by ``config/notifications.yaml`` (:class:`NotificationsFile`).  Entry points:
:class:`Notifier` (``dispatch``, ``retry_due`` (the outbox), ``flush_due``,
``escalate_due``) over a :class:`NotificationStore` (the interface this package declares;
``portfolio_pipeline.storage.notifications`` implements it and holds ``acknowledge``,
``list_alerts`` and ``recent_failures``), and the renderers :func:`render_daily_summary` /
:func:`render_weekly_digest`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portfolio_pipeline.config.notifications import AlertType, NotificationsFile, Severity
    from portfolio_pipeline.notify.channels import (
        Channel,
        EmailChannel,
        LogChannel,
        OutgoingMessage,
        PermanentDeliveryError,
        SlackChannel,
        TelegramChannel,
        TransientDeliveryError,
        build_channels,
    )
    from portfolio_pipeline.notify.dispatcher import (
        Alert,
        DeliveryOutcome,
        DeliveryResult,
        Notifier,
    )
    from portfolio_pipeline.notify.quiet import QuietHours
    from portfolio_pipeline.notify.render import (
        DailySummaryData,
        ExitSignal,
        GreekAttribution,
        GreeksSnapshot,
        NamedPnl,
        Rendered,
        StagedOrderSummary,
        WeeklyDigestData,
        daily_summary_alert,
        render_daily_summary,
        render_weekly_digest,
        weekly_digest_alert,
    )
    from portfolio_pipeline.notify.store import DeliveryFailure, NotificationStore, StoredAlert

# Submodules are imported on first use, so importing the package (e.g. for the schema
# re-exported from ``portfolio_pipeline.config.notifications``) does not pull in
# SQLAlchemy and the exchange calendar.
_EXPORTS = {
    "Alert": "portfolio_pipeline.notify.dispatcher",
    "AlertType": "portfolio_pipeline.config.notifications",
    "Channel": "portfolio_pipeline.notify.channels",
    "DailySummaryData": "portfolio_pipeline.notify.render",
    "DeliveryFailure": "portfolio_pipeline.notify.store",
    "DeliveryOutcome": "portfolio_pipeline.notify.dispatcher",
    "DeliveryResult": "portfolio_pipeline.notify.dispatcher",
    "EmailChannel": "portfolio_pipeline.notify.channels",
    "ExitSignal": "portfolio_pipeline.notify.render",
    "GreekAttribution": "portfolio_pipeline.notify.render",
    "GreeksSnapshot": "portfolio_pipeline.notify.render",
    "LogChannel": "portfolio_pipeline.notify.channels",
    "NamedPnl": "portfolio_pipeline.notify.render",
    "NotificationsFile": "portfolio_pipeline.config.notifications",
    "NotificationStore": "portfolio_pipeline.notify.store",
    "Notifier": "portfolio_pipeline.notify.dispatcher",
    "OutgoingMessage": "portfolio_pipeline.notify.channels",
    "PermanentDeliveryError": "portfolio_pipeline.notify.channels",
    "QuietHours": "portfolio_pipeline.notify.quiet",
    "Rendered": "portfolio_pipeline.notify.render",
    "Severity": "portfolio_pipeline.config.notifications",
    "SlackChannel": "portfolio_pipeline.notify.channels",
    "StagedOrderSummary": "portfolio_pipeline.notify.render",
    "StoredAlert": "portfolio_pipeline.notify.store",
    "TelegramChannel": "portfolio_pipeline.notify.channels",
    "TransientDeliveryError": "portfolio_pipeline.notify.channels",
    "WeeklyDigestData": "portfolio_pipeline.notify.render",
    "build_channels": "portfolio_pipeline.notify.channels",
    "daily_summary_alert": "portfolio_pipeline.notify.render",
    "render_daily_summary": "portfolio_pipeline.notify.render",
    "render_weekly_digest": "portfolio_pipeline.notify.render",
    "weekly_digest_alert": "portfolio_pipeline.notify.render",
}


__all__ = [
    "Alert",
    "AlertType",
    "Channel",
    "DailySummaryData",
    "DeliveryFailure",
    "DeliveryOutcome",
    "DeliveryResult",
    "EmailChannel",
    "ExitSignal",
    "GreekAttribution",
    "GreeksSnapshot",
    "LogChannel",
    "NamedPnl",
    "NotificationStore",
    "NotificationsFile",
    "Notifier",
    "OutgoingMessage",
    "PermanentDeliveryError",
    "QuietHours",
    "Rendered",
    "Severity",
    "SlackChannel",
    "StagedOrderSummary",
    "StoredAlert",
    "TelegramChannel",
    "TransientDeliveryError",
    "WeeklyDigestData",
    "build_channels",
    "daily_summary_alert",
    "render_daily_summary",
    "render_weekly_digest",
    "weekly_digest_alert",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

"""What notifications need from a database: the :class:`NotificationStore` interface.

The dispatcher (:mod:`.dispatcher`) keeps its alerts and its outbox through this
Protocol; the package does not import ``storage``.
:class:`portfolio_pipeline.storage.notifications.SqlNotificationStore` implements it on
the ``alerts`` and ``notification_deliveries`` tables, and the composition root (the
Dagster resources, the CLI) passes one in.

Every delivery row is keyed ``(alert_key, channel)``.  A sender first *claims* a row
(status ``pending``/``held``/... -> ``sending`` with its own ``claim_token``) in one
atomic step; only the claimer then records attempts and the outcome
(:meth:`NotificationStore.update_claimed`).  Two dispatchers racing on one alert
therefore cannot both send it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

__all__ = [
    "DELIVERED",
    "DROPPED",
    "FAILED",
    "HELD",
    "PENDING",
    "REACHED",
    "RETRYING",
    "SENDING",
    "ClaimedRetry",
    "DeliveryFailure",
    "NewAlert",
    "NotificationStore",
    "StoredAlert",
    "ack_command",
    "ack_footer",
    "clip_error",
    "short_id",
]

MAX_ERROR_CHARS: Final = 1000

PENDING: Final = "pending"
HELD: Final = "held"
SENDING: Final = "sending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
DROPPED: Final = "dropped"
RETRYING: Final = "retrying"
"""In the outbox: failed for now, tried again at ``next_attempt_at`` until ``expires_at``."""
REACHED: Final = (DELIVERED, SENDING)
"""Statuses that count as "this channel reached the person" for escalation."""

SHORT_ID_CHARS: Final = 8


def short_id(alert_key: str) -> str:
    """The alert's short id: 8 hex digits of SHA-256 of its key (what a person types)."""
    return hashlib.sha256(alert_key.encode("utf-8")).hexdigest()[:SHORT_ID_CHARS]


def ack_command(alert_key: str) -> str:
    """The exact command that acknowledges the alert."""
    return f"portfolio alerts ack {short_id(alert_key)}"


def ack_footer(alert_key: str) -> str:
    """The line every actionable message ends with: short id and the ack command."""
    return f"alert {short_id(alert_key)} | acknowledge (stops escalation): {ack_command(alert_key)}"


def clip_error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to record (its delivery rows are created per channel)."""

    alert_key: str
    type: str
    severity: str
    regime: str | None
    title: str
    body: str
    body_html: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """One stored alert."""

    alert_key: str
    type: str
    severity: str
    regime: str | None
    title: str
    body: str
    body_html: str | None
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    escalated_at: datetime | None
    escalation_level: int


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A delivery that failed for good, or has been stuck in ``sending`` (a crashed sender)."""

    alert_key: str
    channel: str
    alert_type: str
    severity: str
    status: str
    attempts: int
    last_error: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ClaimedRetry:
    """An outbox delivery claimed for one more attempt (:meth:`NotificationStore.claim_retry`)."""

    alert: StoredAlert
    attempts: int
    expires_at: datetime | None
    last_error: str | None


class NotificationStore(Protocol):
    """The alerts and the delivery outbox (see the module docstring).

    Times are aware UTC.  ``update_claimed`` values name delivery columns:
    ``status``, ``last_error``, ``delivered_at``, ``next_attempt_at``, ``hold_until``,
    ``expires_at``.
    """

    def record_alert(self, alert: NewAlert) -> bool:
        """Store ``alert`` unless its key is stored already; True when it was new."""
        ...

    def load_alerts(self, keys: Sequence[str]) -> dict[str, StoredAlert]:
        """The stored alerts of ``keys`` (absent keys are left out)."""
        ...

    def park(self, alert_key: str, channel: str, status: str, now: datetime,
             hold_until: datetime | None, expires_at: datetime) -> bool:
        """Create the (alert, channel) row as ``held`` or ``dropped`` unless it exists;
        True when it was created."""
        ...

    def claim(self, alert_key: str, channel: str, token: str, now: datetime,
              expires_at: datetime | None, *, reclaim: bool) -> bool:
        """Create the (alert, channel) row as ``pending`` if absent, then claim it for
        ``token`` if it is pending (``reclaim``: also held, dropped, retrying or failed,
        with ``expires_at`` renewed); True when this call claimed it."""
        ...

    def count_attempt(self, channel: str, token: str, now: datetime) -> None:
        """One more attempt on the rows claimed by ``token``."""
        ...

    def update_claimed(self, channel: str, token: str, now: datetime,
                       values: Mapping[str, Any]) -> None:
        """Set ``values`` on the rows ``token`` claimed that are still ``sending``."""
        ...

    def claimed_attempts(self, channel: str, token: str) -> tuple[int | None, datetime | None]:
        """Stored attempts (the most) and expiry (the earliest) of the rows ``token`` claimed."""
        ...

    def retries_due(self, at: datetime, limit: int) -> list[tuple[str, str]]:
        """(alert_key, channel) of outbox rows due at ``at``, the earliest first."""
        ...

    def claim_retry(self, alert_key: str, channel: str, token: str, at: datetime,
                    now: datetime) -> ClaimedRetry | None:
        """Claim one due outbox row for ``token``; None when another sender was first."""
        ...

    def held_channels_due(self, at: datetime) -> list[str]:
        """Channels with held deliveries whose quiet period ended by ``at``, sorted."""
        ...

    def claim_held(self, channel: str, token: str, at: datetime, now: datetime) -> list[StoredAlert]:
        """Claim every held delivery of ``channel`` due at ``at``; their alerts."""
        ...

    def unacknowledged(self, alert_types: Sequence[str], below_level: int) -> list[StoredAlert]:
        """Unacknowledged alerts of ``alert_types`` below escalation level ``below_level``,
        oldest first."""
        ...

    def due_counts(self, at: datetime) -> tuple[int, int]:
        """(held deliveries due, outbox deliveries due) at ``at``."""
        ...

    def advance_escalation(self, alert: StoredAlert, ladder: Sequence[str], at: datetime) -> int | None:
        """In one step: the first rung of ``ladder`` at or after the alert's level whose
        channel has not reached the person (:data:`REACHED`), and the alert's level moved
        past it (or to the ladder's end), if the alert is still unacknowledged at the
        level it was read with.  The rung's index when this call moved it and a rung
        exists, else None."""
        ...

"""Database side of notifications: the ``alerts`` and ``notification_deliveries`` tables.

Every delivery row is keyed ``(alert_key, channel)``.  A sender first *claims* a row in
a write transaction (``status`` ``pending``/``held`` -> ``sending`` with its own
``claim_token``); only the claimer may then record attempts and the outcome.  Two
dispatchers racing on one alert therefore cannot both send it.  All statements use
bound parameters; column names come from the table metadata.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, and_, or_, select, update

from portfolio_pipeline.clock import Clock, system_clock
from portfolio_pipeline.storage.engine import Database
from portfolio_pipeline.storage.tables import alerts, notification_deliveries, to_utc

__all__ = [
    "DeliveryFailure",
    "StoredAlert",
    "ack_command",
    "ack_footer",
    "acknowledge",
    "delivery_rows",
    "list_alerts",
    "recent_failures",
    "resolve_alert_key",
    "short_id",
    "write_transaction",
]

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS: Final = 1000

PENDING: Final = "pending"
HELD: Final = "held"
SENDING: Final = "sending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
DROPPED: Final = "dropped"
RETRYING: Final = "retrying"
"""In the outbox: failed for now, tried again at ``next_attempt_at`` until ``expires_at``."""

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


def resolve_alert_key(conn: Connection, ident: str) -> str | None:
    """The alert key ``ident`` names: the key itself, or an alert's short id."""
    ident = ident.strip()
    if not ident:
        return None
    found = conn.execute(select(alerts.c.alert_key).where(alerts.c.alert_key == ident)).first()
    if found is not None:
        return str(found[0])
    if len(ident) != SHORT_ID_CHARS or any(c not in "0123456789abcdef" for c in ident.lower()):
        return None
    matches = [
        key
        for key in conn.execute(select(alerts.c.alert_key)).scalars()
        if short_id(key) == ident.lower()
    ]
    return matches[0] if len(matches) == 1 else None


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """One row of ``alerts``."""

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


@contextmanager
def write_transaction(db: Database) -> Iterator[Connection]:
    """A transaction that takes the write lock up front on SQLite (no lock upgrades)."""
    with db.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def clip_error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def stored_alert(row: Any) -> StoredAlert:
    return StoredAlert(
        alert_key=row.alert_key,
        type=row.type,
        severity=row.severity,
        regime=row.regime,
        title=row.title,
        body=row.body,
        body_html=row.body_html,
        created_at=row.created_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        escalated_at=row.escalated_at,
        escalation_level=int(row.escalation_level),
    )


def load_alerts(conn: Connection, keys: Sequence[str]) -> dict[str, StoredAlert]:
    if not keys:
        return {}
    rows = conn.execute(select(alerts).where(alerts.c.alert_key.in_(sorted(set(keys)))))
    return {row.alert_key: stored_alert(row) for row in rows}


def get_alert(db: Database, alert_key: str) -> StoredAlert | None:
    """The stored alert (by key or short id), or None."""
    with db.connect() as conn:
        key = resolve_alert_key(conn, alert_key) or alert_key
        return load_alerts(conn, [key]).get(key)


def delivery_rows(db: Database, alert_key: str | None = None) -> list[dict[str, Any]]:
    """Delivery rows (all, or of one alert) as dicts, ordered by alert and channel."""
    stmt = select(notification_deliveries)
    if alert_key is not None:
        stmt = stmt.where(notification_deliveries.c.alert_key == alert_key)
    stmt = stmt.order_by(notification_deliveries.c.alert_key, notification_deliveries.c.channel)
    with db.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(stmt)]


def acknowledge(db: Database, alert_key: str, who: str, *, clock: Clock = system_clock) -> bool:
    """Mark an alert acknowledged (stops its escalation); ``alert_key`` may be the
    alert's short id (:func:`short_id`).

    Returns True when this call acknowledged it, False when it already was; raises
    ``KeyError`` for an unknown ``alert_key``.
    """
    if not who.strip():
        raise ValueError("acknowledge: 'who' must name a person")
    now = to_utc(clock(), "alerts.acknowledged_at")
    with write_transaction(db) as conn:
        alert_key = resolve_alert_key(conn, alert_key) or alert_key
        result = conn.execute(
            update(alerts)
            .where(alerts.c.alert_key == alert_key, alerts.c.acknowledged_at.is_(None))
            .values(acknowledged_at=now, acknowledged_by=who.strip()[:64])
        )
        if result.rowcount == 1:
            logger.info("alert acknowledged alert_key=%s by=%s", alert_key, who)
            return True
        exists = conn.execute(
            select(alerts.c.alert_key).where(alerts.c.alert_key == alert_key)
        ).first()
    if exists is None:
        raise KeyError(f"no alert with key {alert_key!r}")
    return False


def recent_failures(
    db: Database,
    since: datetime,
    *,
    now: datetime | None = None,
    stuck_after: timedelta = timedelta(minutes=15),
    limit: int = 100,
) -> list[DeliveryFailure]:
    """Failed deliveries updated at or after ``since``, plus sends stuck longer than ``stuck_after``.

    Newest first.  Meant for an asset check ("no notification failed in the last day").
    """
    since = to_utc(since, "since")
    now = to_utc(now if now is not None else system_clock(), "now")
    d = notification_deliveries
    stmt = (
        select(
            d.c.alert_key,
            d.c.channel,
            d.c.status,
            d.c.attempts,
            d.c.last_error,
            d.c.updated_at,
            alerts.c.type,
            alerts.c.severity,
        )
        .join(alerts, alerts.c.alert_key == d.c.alert_key)
        .where(
            or_(
                and_(d.c.status == FAILED, d.c.updated_at >= since),
                and_(d.c.status == SENDING, d.c.updated_at <= now - stuck_after),
            )
        )
        .order_by(d.c.updated_at.desc(), d.c.alert_key, d.c.channel)
        .limit(limit)
    )
    with db.connect() as conn:
        return [
            DeliveryFailure(
                alert_key=row.alert_key,
                channel=row.channel,
                alert_type=row.type,
                severity=row.severity,
                status=row.status,
                attempts=int(row.attempts),
                last_error=row.last_error,
                updated_at=row.updated_at,
            )
            for row in conn.execute(stmt)
        ]


def list_alerts(
    db: Database, *, limit: int = 50, unacknowledged_only: bool = False
) -> list[tuple[StoredAlert, dict[str, str]]]:
    """The newest alerts with their delivery status per channel (``{channel: status}``)."""
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    stmt = select(alerts)
    if unacknowledged_only:
        stmt = stmt.where(alerts.c.acknowledged_at.is_(None))
    stmt = stmt.order_by(alerts.c.created_at.desc(), alerts.c.alert_key).limit(limit)
    d = notification_deliveries
    with db.connect() as conn:
        found = [stored_alert(row) for row in conn.execute(stmt)]
        statuses: dict[str, dict[str, str]] = {a.alert_key: {} for a in found}
        if found:
            rows = conn.execute(
                select(d.c.alert_key, d.c.channel, d.c.status)
                .where(d.c.alert_key.in_(sorted(statuses)))
                .order_by(d.c.alert_key, d.c.channel)
            )
            for row in rows:
                statuses[row.alert_key][row.channel] = row.status
    return [(a, statuses[a.alert_key]) for a in found]

"""Notifications on the database: the ``alerts`` and ``notification_deliveries`` tables.

:class:`SqlNotificationStore` implements
:class:`~portfolio_pipeline.notify.store.NotificationStore` (what the dispatcher needs);
the functions below serve the ``portfolio alerts`` commands and the Dagster checks.

Every delivery row is keyed ``(alert_key, channel)``.  A sender first *claims* a row in
a write transaction (``status`` ``pending``/``held`` -> ``sending`` with its own
``claim_token``); only the claimer may then record attempts and the outcome.  Two
dispatchers racing on one alert therefore cannot both send it.  All statements use
bound parameters; column names come from the table metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from portfolio_pipeline.clock import Clock, system_clock, to_utc
from portfolio_pipeline.notify.store import (
    DROPPED,
    FAILED,
    HELD,
    PENDING,
    REACHED,
    RETRYING,
    SENDING,
    SHORT_ID_CHARS,
    ClaimedRetry,
    DeliveryFailure,
    NewAlert,
    StoredAlert,
    short_id,
)
from portfolio_pipeline.storage.engine import Database
from portfolio_pipeline.storage.insert_ignore import insert_ignore
from portfolio_pipeline.storage.tables import alerts, notification_deliveries

__all__ = [
    "SqlNotificationStore",
    "acknowledge",
    "delivery_rows",
    "get_alert",
    "list_alerts",
    "recent_failures",
    "resolve_alert_key",
]

logger = logging.getLogger(__name__)

_D = notification_deliveries
CLAIMED_COLUMNS = frozenset(
    {"status", "last_error", "delivered_at", "next_attempt_at", "hold_until", "expires_at"}
)
"""Columns :meth:`SqlNotificationStore.update_claimed` may set."""


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
    with db.begin() as conn:
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


def _new_row(alert_key: str, channel: str, status: str, now: datetime,
             hold_until: datetime | None, expires_at: datetime | None) -> dict[str, Any]:
    return {
        "alert_key": alert_key,
        "channel": channel,
        "status": status,
        "attempts": 0,
        "last_error": None,
        "claim_token": None,
        "created_at": now,
        "updated_at": now,
        "hold_until": hold_until,
        "delivered_at": None,
        "next_attempt_at": None,
        "expires_at": expires_at,
    }


class SqlNotificationStore:
    """:class:`~portfolio_pipeline.notify.store.NotificationStore` on ``db``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"SqlNotificationStore({self._db!r})"

    @property
    def database(self) -> Database:
        return self._db

    def record_alert(self, alert: NewAlert) -> bool:
        with self._db.begin() as conn:
            return bool(insert_ignore(conn, alerts, [{
                "alert_key": alert.alert_key,
                "type": alert.type,
                "severity": alert.severity,
                "regime": alert.regime,
                "title": alert.title,
                "body": alert.body,
                "body_html": alert.body_html,
                "created_at": to_utc(alert.created_at, "alerts.created_at"),
                "acknowledged_at": None,
                "acknowledged_by": None,
                "escalated_at": None,
                "escalation_level": 0,
            }]))

    def load_alerts(self, keys: Sequence[str]) -> dict[str, StoredAlert]:
        with self._db.connect() as conn:
            return load_alerts(conn, keys)

    def park(self, alert_key: str, channel: str, status: str, now: datetime,
             hold_until: datetime | None, expires_at: datetime) -> bool:
        with self._db.begin() as conn:
            return bool(insert_ignore(conn, _D, [_new_row(
                alert_key, channel, status, now, hold_until if status == HELD else None, expires_at)]))

    def claim(self, alert_key: str, channel: str, token: str, now: datetime,
              expires_at: datetime | None, *, reclaim: bool) -> bool:
        claimable = [PENDING]
        values: dict[str, Any] = {"status": SENDING, "claim_token": token, "updated_at": now}
        if reclaim:
            claimable += [HELD, DROPPED, RETRYING, FAILED]
            if expires_at is not None:
                values["expires_at"] = expires_at
        with self._db.begin() as conn:
            insert_ignore(conn, _D, [_new_row(alert_key, channel, PENDING, now, None, expires_at)])
            claimed = conn.execute(
                update(_D)
                .where(_D.c.alert_key == alert_key, _D.c.channel == channel, _D.c.status.in_(claimable))
                .values(**values)
            ).rowcount
        return bool(claimed == 1)

    def _update(self, channel: str, token: str, values: Mapping[str, Any]) -> None:
        with self._db.begin() as conn:
            conn.execute(
                update(_D)
                .where(_D.c.channel == channel, _D.c.claim_token == token, _D.c.status == SENDING)
                .values(**values)
            )

    def count_attempt(self, channel: str, token: str, now: datetime) -> None:
        self._update(channel, token, {"attempts": _D.c.attempts + 1, "updated_at": now})

    def update_claimed(self, channel: str, token: str, now: datetime, values: Mapping[str, Any]) -> None:
        unknown = sorted(set(values) - CLAIMED_COLUMNS)
        if unknown:
            raise ValueError(f"update_claimed: not a claimed-delivery column: {unknown}")
        self._update(channel, token, {**values, "updated_at": now})

    def claimed_attempts(self, channel: str, token: str) -> tuple[int | None, datetime | None]:
        with self._db.connect() as conn:
            stored = conn.execute(
                select(func.max(_D.c.attempts), func.min(_D.c.expires_at)).where(
                    _D.c.channel == channel, _D.c.claim_token == token
                )
            ).one()
        attempts = None if stored[0] is None else int(stored[0])
        return attempts, None if stored[1] is None else to_utc(stored[1], "expires_at")

    def retries_due(self, at: datetime, limit: int) -> list[tuple[str, str]]:
        with self._db.connect() as conn:
            rows = conn.execute(
                select(_D.c.alert_key, _D.c.channel)
                .where(_D.c.status == RETRYING, _D.c.next_attempt_at <= at)
                .order_by(_D.c.next_attempt_at, _D.c.alert_key, _D.c.channel)
                .limit(limit)
            ).all()
        return [(str(key), str(channel)) for key, channel in rows]

    def claim_retry(self, alert_key: str, channel: str, token: str, at: datetime,
                    now: datetime) -> ClaimedRetry | None:
        with self._db.begin() as conn:
            claimed = conn.execute(
                update(_D)
                .where(
                    _D.c.alert_key == alert_key,
                    _D.c.channel == channel,
                    _D.c.status == RETRYING,
                    _D.c.next_attempt_at <= at,
                )
                .values(status=SENDING, claim_token=token, updated_at=now)
            ).rowcount
            row = conn.execute(
                select(_D.c.attempts, _D.c.expires_at, _D.c.last_error).where(
                    _D.c.alert_key == alert_key, _D.c.channel == channel
                )
            ).one()
            stored = load_alerts(conn, [alert_key]).get(alert_key)
        if claimed != 1 or stored is None:  # another sender claimed it first
            return None
        expires_at = None if row.expires_at is None else to_utc(row.expires_at, "expires_at")
        return ClaimedRetry(stored, int(row.attempts), expires_at, row.last_error)

    def held_channels_due(self, at: datetime) -> list[str]:
        with self._db.connect() as conn:
            return sorted(
                conn.execute(
                    select(_D.c.channel).where(_D.c.status == HELD, _D.c.hold_until <= at).distinct()
                ).scalars()
            )

    def claim_held(self, channel: str, token: str, at: datetime, now: datetime) -> list[StoredAlert]:
        with self._db.begin() as conn:
            conn.execute(
                update(_D)
                .where(_D.c.channel == channel, _D.c.status == HELD, _D.c.hold_until <= at)
                .values(status=SENDING, claim_token=token, updated_at=now)
            )
            keys = list(
                conn.execute(
                    select(_D.c.alert_key).where(_D.c.channel == channel, _D.c.claim_token == token)
                ).scalars()
            )
            return list(load_alerts(conn, keys).values())

    def unacknowledged(self, alert_types: Sequence[str], below_level: int) -> list[StoredAlert]:
        with self._db.connect() as conn:
            rows = conn.execute(
                select(alerts)
                .where(
                    alerts.c.acknowledged_at.is_(None),
                    alerts.c.type.in_(sorted(alert_types)),
                    alerts.c.escalation_level < below_level,
                )
                .order_by(alerts.c.created_at, alerts.c.alert_key)
            ).all()
        return [stored_alert(row) for row in rows]

    def due_counts(self, at: datetime) -> tuple[int, int]:
        with self._db.connect() as conn:
            held = conn.execute(
                select(func.count()).select_from(_D).where(_D.c.status == HELD, _D.c.hold_until <= at)
            ).scalar_one()
            retries = conn.execute(
                select(func.count())
                .select_from(_D)
                .where(_D.c.status == RETRYING, _D.c.next_attempt_at <= at)
            ).scalar_one()
        return int(held), int(retries)

    def advance_escalation(self, alert: StoredAlert, ladder: Sequence[str], at: datetime) -> int | None:
        with self._db.begin() as conn:
            used = set(
                conn.execute(
                    select(_D.c.channel).where(
                        _D.c.alert_key == alert.alert_key, _D.c.status.in_(REACHED)
                    )
                ).scalars()
            )
            index = next(
                (i for i in range(alert.escalation_level, len(ladder)) if ladder[i] not in used),
                None,
            )
            new_level = len(ladder) if index is None else index + 1
            won = conn.execute(
                update(alerts)
                .where(
                    alerts.c.alert_key == alert.alert_key,
                    alerts.c.escalation_level == alert.escalation_level,
                    alerts.c.acknowledged_at.is_(None),
                )
                .values(escalation_level=new_level, escalated_at=at)
            ).rowcount
        return index if won == 1 else None

"""Routing, quiet hours, exactly-once delivery, retries, held digests and escalation.

Typical use (one :class:`Notifier` per process, next to the one ``Database``)::

    notifier = Notifier(db, config)              # channels built from config + env vars
    notifier.dispatch(Alert(key="breach:2026-03-09:delta", type=AlertType.BREACH,
                            title="Delta limit breached", text="...", regime="crisis"))
    notifier.flush_due()                         # e.g. every few minutes: held digests
    notifier.escalate_due()                      # unacknowledged crisis breaches climb
    acknowledge(db, "breach:2026-03-09:delta", "alice")

Guarantees:

- one delivery per alert per channel: a ``notification_deliveries`` row keyed
  ``(alert_key, channel)`` is claimed in a write transaction before anything is sent,
  so a duplicate or concurrent ``dispatch`` of the same alert sends nothing more;
- transient errors (HTTP 5xx/429, connection errors, SMTP 4xx) are retried with
  exponential backoff, or after the wait the server asked for; the injected ``sleep``
  does the waiting; permanent errors are recorded at once (:func:`recent_failures`);
- in quiet hours a route's ``quiet_hours`` says hold / drop / deliver; critical alerts
  override (unless configured otherwise); everything held for a channel goes out as ONE
  digest when :meth:`Notifier.flush_due` runs after the quiet period.

The delivery guarantee is at most once per (alert, channel): a sender that dies
between claiming and recording leaves the row in ``sending``, reported by
:func:`~portfolio_pipeline.notify.store.recent_failures` as stuck, never re-sent blindly.
"""

from __future__ import annotations

import html
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update

from portfolio_pipeline.clock import Clock, system_clock
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar
from portfolio_pipeline.notify.channels import (
    Channel,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
    build_channels,
)
from portfolio_pipeline.notify.config import (
    AlertType,
    NotificationsFile,
    QuietBehaviour,
    Severity,
)
from portfolio_pipeline.notify.quiet import QuietHours
from portfolio_pipeline.notify.store import (
    DELIVERED,
    DROPPED,
    FAILED,
    HELD,
    PENDING,
    SENDING,
    StoredAlert,
    clip_error,
    insert_ignore,
    load_alerts,
    stored_alert,
    write_transaction,
)
from portfolio_pipeline.storage.engine import Database
from portfolio_pipeline.storage.tables import alerts, notification_deliveries, to_utc

__all__ = ["Alert", "DeliveryOutcome", "DeliveryResult", "Notifier", "Sleep"]

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]

_D = notification_deliveries


@dataclass(frozen=True, slots=True)
class Alert:
    """Something to tell a person.

    ``key`` is the idempotency key (same key = same alert, never notified twice per
    channel).  ``severity`` None takes the route's default.  ``regime`` is the market
    regime when the alert was raised (escalation applies to configured regimes only).
    """

    key: str
    type: AlertType
    title: str
    text: str
    html: str | None = None
    severity: Severity | None = None
    regime: str | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.key.strip() or len(self.key) > 255:
            raise ValueError(f"alert key must be 1..255 characters, got {self.key!r}")
        if not isinstance(self.type, AlertType):
            raise ValueError(f"alert type must be an AlertType, got {self.type!r}")
        if self.created_at is not None:
            to_utc(self.created_at, "alerts.created_at")


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    HELD = "held"
    DROPPED = "dropped"
    FAILED = "failed"
    DUPLICATE = "duplicate"  # already claimed/sent by an earlier or concurrent dispatch


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    channel: str
    outcome: DeliveryOutcome
    alert_keys: tuple[str, ...]
    attempts: int = 0
    error: str | None = None


def _title(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 255 else text[:254] + "…"


class Notifier:
    """Sends alerts through the configured routes; see the module docstring.

    Parameters
    ----------
    db:
        The process's :class:`~portfolio_pipeline.storage.Database` (migrated).
    config:
        The validated ``notifications.yaml``.
    channels:
        Channel objects by name; default: built from ``config`` with secrets from
        ``environ``.  Must cover every configured channel name.
    clock, sleep:
        Injected time: ``clock()`` returns aware UTC now; ``sleep(seconds)`` waits.
    calendar:
        Exchange calendar for quiet hours (built from the config when omitted).
    """

    def __init__(
        self,
        db: Database,
        config: NotificationsFile,
        channels: Mapping[str, Channel] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Clock = system_clock,
        sleep: Sleep = time.sleep,
        calendar: ExchangeCalendar | None = None,
    ) -> None:
        self._db = db
        self._config = config
        built = dict(channels) if channels is not None else build_channels(config, environ=environ)
        missing = sorted(set(config.channels) - set(built))
        if missing:
            raise ValueError(f"notifier: no channel object for configured channel(s) {missing}")
        self._channels: dict[str, Channel] = built
        self._clock = clock
        self._sleep = sleep
        self._quiet = QuietHours(config.quiet_hours, calendar)

    def __repr__(self) -> str:
        return f"Notifier(db={self._db!r}, channels={sorted(self._channels)})"

    @property
    def quiet_hours(self) -> QuietHours:
        return self._quiet

    def _now(self) -> datetime:
        return to_utc(self._clock(), "clock()")

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, alert: Alert) -> list[DeliveryResult]:
        """Record ``alert`` and deliver, hold or drop it on each channel of its route."""
        route = self._config.routes[alert.type]
        severity = alert.severity if alert.severity is not None else route.severity
        now = self._now()
        created_at = to_utc(alert.created_at, "alerts.created_at") if alert.created_at else now
        quiet_until = self._quiet.quiet_until(now)
        if (
            quiet_until is not None
            and severity is Severity.CRITICAL
            and self._quiet.critical_overrides
        ):
            quiet_until = None
        behaviour = route.quiet_hours if quiet_until is not None else QuietBehaviour.DELIVER

        with write_transaction(self._db) as conn:
            new = insert_ignore(
                conn,
                alerts,
                {
                    "alert_key": alert.key,
                    "type": alert.type.value,
                    "severity": severity.value,
                    "regime": alert.regime,
                    "title": _title(alert.title),
                    "body": alert.text,
                    "body_html": alert.html,
                    "created_at": created_at,
                    "acknowledged_at": None,
                    "acknowledged_by": None,
                    "escalated_at": None,
                    "escalation_level": 0,
                },
            )
        logger.info(
            "alert dispatch alert_key=%s type=%s severity=%s new=%s quiet=%s behaviour=%s",
            alert.key,
            alert.type.value,
            severity.value,
            new,
            quiet_until is not None,
            behaviour.value,
        )
        message = OutgoingMessage(
            title=alert.title, text=alert.text, severity=severity, html=alert.html
        )
        results: list[DeliveryResult] = []
        for channel in route.channels:
            if behaviour is QuietBehaviour.DELIVER:
                results.append(self._deliver_one(alert.key, channel, message))
            else:
                status = HELD if behaviour is QuietBehaviour.HOLD else DROPPED
                results.append(self._park(alert.key, channel, status, now, quiet_until))
        return results

    def _park(
        self, alert_key: str, channel: str, status: str, now: datetime, hold_until: datetime | None
    ) -> DeliveryResult:
        with write_transaction(self._db) as conn:
            inserted = insert_ignore(
                conn,
                _D,
                self._new_row(
                    alert_key, channel, status, now, hold_until if status == HELD else None
                ),
            )
        if not inserted:
            return DeliveryResult(channel, DeliveryOutcome.DUPLICATE, (alert_key,))
        logger.info(
            "notification %s alert_key=%s channel=%s until=%s",
            status,
            alert_key,
            channel,
            hold_until,
        )
        outcome = DeliveryOutcome.HELD if status == HELD else DeliveryOutcome.DROPPED
        return DeliveryResult(channel, outcome, (alert_key,))

    @staticmethod
    def _new_row(
        alert_key: str, channel: str, status: str, now: datetime, hold_until: datetime | None
    ) -> dict[str, Any]:
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
        }

    def _deliver_one(
        self, alert_key: str, channel: str, message: OutgoingMessage
    ) -> DeliveryResult:
        """Create (if absent) and claim the (alert, channel) row, then send with retries."""
        token = secrets.token_hex(16)
        now = self._now()
        with write_transaction(self._db) as conn:
            insert_ignore(conn, _D, self._new_row(alert_key, channel, PENDING, now, None))
            claimed = conn.execute(
                update(_D)
                .where(_D.c.alert_key == alert_key, _D.c.channel == channel, _D.c.status == PENDING)
                .values(status=SENDING, claim_token=token, updated_at=now)
            ).rowcount
        if claimed != 1:
            logger.info("notification already claimed alert_key=%s channel=%s", alert_key, channel)
            return DeliveryResult(channel, DeliveryOutcome.DUPLICATE, (alert_key,))
        return self._send_claimed(channel, token, (alert_key,), message)

    # ------------------------------------------------------------------ sending

    def _update_claimed(self, channel: str, token: str, **values: Any) -> None:
        with write_transaction(self._db) as conn:
            conn.execute(
                update(_D)
                .where(_D.c.channel == channel, _D.c.claim_token == token, _D.c.status == SENDING)
                .values(updated_at=self._now(), **values)
            )

    def _send_claimed(
        self, channel: str, token: str, keys: tuple[str, ...], message: OutgoingMessage
    ) -> DeliveryResult:
        policy = self._config.retry
        target = self._channels.get(channel)
        if target is None:
            error = f"channel {channel!r} is no longer configured"
            self._update_claimed(channel, token, status=FAILED, last_error=error)
            logger.error(
                "notification failed alert_keys=%s channel=%s error=%s", keys, channel, error
            )
            return DeliveryResult(channel, DeliveryOutcome.FAILED, keys, 0, error)
        attempt = 0
        while True:
            attempt += 1
            self._update_claimed(channel, token, attempts=_D.c.attempts + 1)
            try:
                target.send(message)
            except TransientDeliveryError as exc:
                error = clip_error(str(exc))
                wait = exc.retry_after if exc.retry_after is not None else policy.backoff(attempt)
                too_long = wait > policy.max_retry_after_seconds
                if attempt >= policy.max_attempts or too_long:
                    if too_long:
                        error = clip_error(
                            f"{error} (server asked to wait {wait:g}s; limit "
                            f"{policy.max_retry_after_seconds:g}s)"
                        )
                    return self._fail(channel, token, keys, attempt, error)
                self._update_claimed(channel, token, last_error=error)
                logger.warning(
                    "notification attempt failed, retrying alert_keys=%s channel=%s attempt=%s "
                    "wait_s=%s error=%s",
                    keys,
                    channel,
                    attempt,
                    wait,
                    error,
                )
                self._sleep(wait)
            except PermanentDeliveryError as exc:
                return self._fail(channel, token, keys, attempt, clip_error(str(exc)))
            except Exception as exc:  # a bug in a channel must not leave the row 'sending'
                return self._fail(
                    channel, token, keys, attempt, clip_error(f"unexpected {type(exc).__name__}")
                )
            else:
                now = self._now()
                self._update_claimed(
                    channel, token, status=DELIVERED, delivered_at=now, last_error=None
                )
                logger.info(
                    "notification delivered alert_keys=%s channel=%s attempts=%s",
                    keys,
                    channel,
                    attempt,
                )
                return DeliveryResult(channel, DeliveryOutcome.DELIVERED, keys, attempt)

    def _fail(
        self, channel: str, token: str, keys: tuple[str, ...], attempts: int, error: str
    ) -> DeliveryResult:
        self._update_claimed(channel, token, status=FAILED, last_error=error)
        logger.error(
            "notification failed alert_keys=%s channel=%s attempts=%s error=%s",
            keys,
            channel,
            attempts,
            error,
        )
        return DeliveryResult(channel, DeliveryOutcome.FAILED, keys, attempts, error)

    # ------------------------------------------------------------------ held digests

    def flush_due(self, now: datetime | None = None) -> list[DeliveryResult]:
        """Send everything held whose quiet period has ended: ONE digest per channel."""
        at = to_utc(now, "now") if now is not None else self._now()
        with self._db.connect() as conn:
            channels = sorted(
                conn.execute(
                    select(_D.c.channel)
                    .where(_D.c.status == HELD, _D.c.hold_until <= at)
                    .distinct()
                ).scalars()
            )
        results: list[DeliveryResult] = []
        for channel in channels:
            token = secrets.token_hex(16)
            with write_transaction(self._db) as conn:
                conn.execute(
                    update(_D)
                    .where(_D.c.channel == channel, _D.c.status == HELD, _D.c.hold_until <= at)
                    .values(status=SENDING, claim_token=token, updated_at=self._now())
                )
                keys = list(
                    conn.execute(
                        select(_D.c.alert_key).where(
                            _D.c.channel == channel, _D.c.claim_token == token
                        )
                    ).scalars()
                )
                stored = load_alerts(conn, keys)
            if not keys:  # another dispatcher flushed first
                continue
            held = sorted(stored.values(), key=lambda a: (a.created_at, a.alert_key))
            results.append(
                self._send_claimed(channel, token, tuple(a.alert_key for a in held), _digest(held))
            )
        return results

    # ------------------------------------------------------------------ escalation

    def escalate_due(self, now: datetime | None = None) -> list[DeliveryResult]:
        """Escalate unacknowledged alerts (configured types and regimes) one channel per step.

        A step is due ``after_minutes`` after the alert (or the previous step); it sends
        to the next channel of ``escalation.channels`` that has not had this alert yet.
        Escalations ignore quiet hours.
        """
        at = to_utc(now, "now") if now is not None else self._now()
        results: list[DeliveryResult] = []
        for alert in self._escalation_due(at):
            results.extend(self._escalate(alert, self._config.escalation.channels, at))
        return results

    def _escalation_due(self, at: datetime) -> list[StoredAlert]:
        """Unacknowledged alerts whose next escalation step is due at ``at`` (no side effects)."""
        esc = self._config.escalation
        if not esc.enabled:
            return []
        regimes = {r.lower() for r in esc.regimes}
        step = timedelta(minutes=esc.after_minutes)
        with self._db.connect() as conn:
            rows = conn.execute(
                select(alerts)
                .where(
                    alerts.c.acknowledged_at.is_(None),
                    alerts.c.type.in_(sorted(t.value for t in esc.alert_types)),
                    alerts.c.escalation_level < len(esc.channels),
                )
                .order_by(alerts.c.created_at, alerts.c.alert_key)
            ).all()
        return [
            alert
            for alert in map(stored_alert, rows)
            if (alert.regime or "").lower() in regimes
            and (alert.escalated_at or alert.created_at) + step <= at
        ]

    # ------------------------------------------------------------------ housekeeping

    def due_work(self, now: datetime | None = None) -> tuple[int, int]:
        """(held deliveries due for a digest, alerts due for escalation) at ``now``.

        Read-only and cheap, for a sensor deciding whether :meth:`flush_due` /
        :meth:`escalate_due` have anything to do.
        """
        at = to_utc(now, "now") if now is not None else self._now()
        with self._db.connect() as conn:
            held = conn.execute(
                select(func.count())
                .select_from(_D)
                .where(_D.c.status == HELD, _D.c.hold_until <= at)
            ).scalar_one()
        return int(held), len(self._escalation_due(at))

    def _escalate(
        self, alert: StoredAlert, ladder: Sequence[str], at: datetime
    ) -> list[DeliveryResult]:
        with write_transaction(self._db) as conn:
            used = set(
                conn.execute(
                    select(_D.c.channel).where(_D.c.alert_key == alert.alert_key)
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
        if won != 1 or index is None:
            return []
        channel = ladder[index]
        minutes = int((at - alert.created_at).total_seconds() // 60)
        logger.warning(
            "alert escalated alert_key=%s step=%s channel=%s unacknowledged_min=%s",
            alert.alert_key,
            new_level,
            channel,
            minutes,
        )
        title = f"ESCALATED (unacknowledged {minutes} min): {alert.title}"
        message = OutgoingMessage(
            title=title,
            text=alert.body,
            severity=Severity(alert.severity),
            html=alert.body_html,
        )
        return [self._deliver_one(alert.alert_key, channel, message)]


def _digest(held: Sequence[StoredAlert]) -> OutgoingMessage:
    """One message summarising every alert held for a channel during quiet hours."""
    count = len(held)
    worst = max((Severity(a.severity) for a in held), key=_severity_rank, default=Severity.INFO)
    title = f"{count} alert(s) held during quiet hours"
    text_parts = [title]
    html_parts = [f"<h2>{html.escape(title)}</h2>"]
    for a in held:
        when = a.created_at.astimezone(NEW_YORK).strftime("%a %Y-%m-%d %H:%M %Z")
        head = f"[{a.severity.upper()}] {when} {a.type}: {a.title}"
        text_parts.append(f"{head}\n{a.body}")
        body_html = a.body_html if a.body_html is not None else f"<pre>{html.escape(a.body)}</pre>"
        html_parts.append(f"<h3>{html.escape(head)}</h3>\n{body_html}")
    return OutgoingMessage(
        title=title,
        text="\n\n".join(text_parts),
        severity=worst,
        html="<html><body>\n" + "\n".join(html_parts) + "\n</body></html>",
    )


def _severity_rank(severity: Severity) -> int:
    return (Severity.INFO, Severity.WARNING, Severity.CRITICAL).index(severity)

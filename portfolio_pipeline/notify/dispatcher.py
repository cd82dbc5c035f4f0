"""Routing, quiet hours, exactly-once delivery, retries, held digests and escalation.

Typical use (one :class:`Notifier` per process, over the process's one store, e.g.
``portfolio_pipeline.storage.notifications.SqlNotificationStore(db)``)::

    notifier = Notifier(store, config)           # channels built from config + env vars
    notifier.dispatch(Alert(key="breach:2026-03-09:delta", type=AlertType.BREACH,
                            title="Delta limit breached", text="...", regime="crisis"))
    notifier.flush_due()                         # e.g. every few minutes: held digests
    notifier.escalate_due()                      # unacknowledged crisis breaches climb
    acknowledge(db, "breach:2026-03-09:delta", "alice")   # storage.notifications

Guarantees:

- one delivery per alert per channel: a delivery row keyed ``(alert_key, channel)`` is
  claimed in the store (:class:`~.store.NotificationStore`) before anything is sent,
  so a duplicate or concurrent ``dispatch`` of the same alert sends nothing more;
- transient errors (HTTP 5xx/429, connection errors, SMTP 4xx) are retried with
  exponential backoff (:mod:`portfolio_pipeline.retry`), or after the wait the server
  asked for; the injected ``sleep``
  does the waiting; permanent errors are recorded at once;
- durable outbox: a delivery still failing after ``retry.max_attempts`` is parked as
  ``retrying`` with ``next_attempt_at`` = now + the retry delay after the stored attempts;
  :meth:`Notifier.retry_due` (the housekeeping sensor) claims and tries it again, one
  attempt per due row, until it is delivered or its route's ``expire_after_minutes``
  have passed since the alert.  A delivery that fails for good (permanent error or
  expiry) raises a ``data_quality`` alert on the *other* channels;
- in quiet hours a route's ``quiet_hours`` says hold / drop / deliver; critical alerts
  override (unless configured otherwise); everything held for a channel goes out as ONE
  digest when :meth:`Notifier.flush_due` runs after the quiet period.

The delivery guarantee is at most once per (alert, channel): a sender that dies
between claiming and recording leaves the row in ``sending``, reported by
``portfolio_pipeline.storage.notifications.recent_failures`` as stuck, never re-sent blindly.
"""

from __future__ import annotations

import html
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from portfolio_pipeline.clock import Clock, system_clock, to_utc
from portfolio_pipeline.config.notifications import (
    AlertType,
    NotificationsFile,
    QuietBehaviour,
    Severity,
)
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar
from portfolio_pipeline.notify.channels import (
    Channel,
    OutgoingMessage,
    PermanentDeliveryError,
    TransientDeliveryError,
    build_channels,
)
from portfolio_pipeline.notify.quiet import QuietHours
from portfolio_pipeline.notify.store import (
    DELIVERED,
    DROPPED,
    FAILED,
    HELD,
    RETRYING,
    NewAlert,
    NotificationStore,
    StoredAlert,
    ack_footer,
    clip_error,
)
from portfolio_pipeline.retry import RetryGaveUpError

__all__ = [
    "DELIVERY_FAILED_PREFIX",
    "Alert",
    "DeliveryOutcome",
    "DeliveryResult",
    "DueWork",
    "Notifier",
    "Sleep",
]

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]

DELIVERY_FAILED_PREFIX = "delivery_failed:"
"""Key prefix of the data-quality alert raised when a delivery fails for good."""
RETRY_BATCH = 200
"""Most outbox rows one :meth:`Notifier.retry_due` call tries."""
NO_ACK_FOOTER = frozenset({AlertType.DAILY_SUMMARY.value, AlertType.WEEKLY_DIGEST.value})


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
    FAILED = "failed"  # for good: permanent error, or the outbox gave up (expired)
    RETRYING = "retrying"  # failed for now; in the outbox, Notifier.retry_due tries again
    DUPLICATE = "duplicate"  # already claimed/sent by an earlier or concurrent dispatch


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    channel: str
    outcome: DeliveryOutcome
    alert_keys: tuple[str, ...]
    attempts: int = 0
    error: str | None = None


class DueWork(NamedTuple):
    """Outbox work due at a moment (see :meth:`Notifier.due_work`)."""

    held: int
    escalations: int
    retries: int


def _title(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 255 else text[:254] + "…"


class Notifier:
    """Sends alerts through the configured routes; see the module docstring.

    Parameters
    ----------
    store:
        The alerts and the delivery outbox (:class:`~.store.NotificationStore`).
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
        store: NotificationStore,
        config: NotificationsFile,
        channels: Mapping[str, Channel] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Clock = system_clock,
        sleep: Sleep = time.sleep,
        calendar: ExchangeCalendar | None = None,
    ) -> None:
        self._store = store
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
        return f"Notifier(store={self._store!r}, channels={sorted(self._channels)})"

    @property
    def quiet_hours(self) -> QuietHours:
        return self._quiet

    def _now(self) -> datetime:
        return to_utc(self._clock(), "clock()")

    # ------------------------------------------------------------------ dispatch

    def dispatch(
        self, alert: Alert, *, channels: Sequence[str] | None = None
    ) -> list[DeliveryResult]:
        """Record ``alert`` and deliver, hold or drop it on each channel of its route
        (or on ``channels``, e.g. the channels other than one that failed)."""
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

        new = self._store.record_alert(NewAlert(
            alert_key=alert.key,
            type=alert.type.value,
            severity=severity.value,
            regime=alert.regime,
            title=_title(alert.title),
            body=alert.text,
            body_html=alert.html,
            created_at=created_at,
        ))
        logger.info(
            "alert dispatch alert_key=%s type=%s severity=%s new=%s quiet=%s behaviour=%s",
            alert.key,
            alert.type.value,
            severity.value,
            new,
            quiet_until is not None,
            behaviour.value,
        )
        message = _outgoing(
            alert.key, alert.type.value, alert.title, alert.text, alert.html, severity
        )
        expires_at = created_at + timedelta(minutes=route.expire_after_minutes)
        results: list[DeliveryResult] = []
        for channel in route.channels if channels is None else channels:
            if behaviour is QuietBehaviour.DELIVER:
                results.append(self._deliver_one(alert.key, channel, message, expires_at))
            else:
                status = HELD if behaviour is QuietBehaviour.HOLD else DROPPED
                # retries of a held alert count from the end of the quiet period
                held_expiry = (
                    max(expires_at, quiet_until + timedelta(minutes=route.expire_after_minutes))
                    if quiet_until is not None
                    else expires_at
                )
                results.append(
                    self._park(alert.key, channel, status, now, quiet_until, held_expiry)
                )
        return results

    def _park(
        self,
        alert_key: str,
        channel: str,
        status: str,
        now: datetime,
        hold_until: datetime | None,
        expires_at: datetime,
    ) -> DeliveryResult:
        inserted = self._store.park(alert_key, channel, status, now, hold_until, expires_at)
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

    def _deliver_one(
        self,
        alert_key: str,
        channel: str,
        message: OutgoingMessage,
        expires_at: datetime | None,
        *,
        reclaim: bool = False,
    ) -> DeliveryResult:
        """Create (if absent) and claim the (alert, channel) row, then send with retries.

        ``reclaim`` (escalation) also claims a row that has not reached the person
        (held, dropped, waiting for a retry or failed); a row delivered or being sent
        is never claimed twice.
        """
        token = secrets.token_hex(16)
        claimed = self._store.claim(alert_key, channel, token, self._now(), expires_at, reclaim=reclaim)
        if not claimed:
            logger.info("notification already claimed alert_key=%s channel=%s", alert_key, channel)
            return DeliveryResult(channel, DeliveryOutcome.DUPLICATE, (alert_key,))
        return self._send_claimed(channel, token, (alert_key,), message)

    # ------------------------------------------------------------------ sending

    def _update_claimed(self, channel: str, token: str, **values: Any) -> None:
        self._store.update_claimed(channel, token, self._now(), values)

    def _send_claimed(
        self,
        channel: str,
        token: str,
        keys: tuple[str, ...],
        message: OutgoingMessage,
        *,
        max_attempts: int | None = None,
        digest: bool = False,
    ) -> DeliveryResult:
        """Send a claimed message; at most ``max_attempts`` here (default: the policy's),
        then the outbox takes over (:meth:`_reschedule`)."""
        settings = self._config.retry
        policy = replace(
            settings.policy(),
            operation=f"notification send to {channel} (alerts {', '.join(keys)})",
            max_attempts=settings.max_attempts if max_attempts is None else max_attempts,
        )
        target = self._channels.get(channel)
        if target is None:
            error = f"channel {channel!r} is no longer configured"
            return self._fail(channel, token, keys, 0, error)
        attempt = 0

        def wait_for(exc: BaseException) -> float:
            hinted = getattr(exc, "retry_after", None)
            return float(hinted) if hinted is not None else policy.delay(attempt)

        def transient(exc: BaseException) -> bool:
            # a server asking for a longer wait than allowed: the outbox takes over
            return (isinstance(exc, TransientDeliveryError)
                    and wait_for(exc) <= settings.max_retry_after_seconds)

        def send() -> None:
            nonlocal attempt
            attempt += 1
            self._store.count_attempt(channel, token, self._now())
            try:
                target.send(message)
            except TransientDeliveryError as exc:
                self._update_claimed(channel, token, last_error=clip_error(str(exc)))
                raise

        try:
            policy.call(send, retry_on=transient, sleep=self._sleep, wait_hint=wait_for)
        except (RetryGaveUpError, TransientDeliveryError) as exc:
            last = exc.last if isinstance(exc, RetryGaveUpError) else exc
            assert isinstance(last, TransientDeliveryError)
            error = clip_error(str(last))
            if not transient(last):
                error = clip_error(
                    f"{error} (server asked to wait {wait_for(last):g}s; limit "
                    f"{settings.max_retry_after_seconds:g}s in one run)"
                )
            return self._reschedule(
                channel, token, keys, attempt, error, last.retry_after, digest=digest
            )
        except PermanentDeliveryError as exc:
            return self._fail(channel, token, keys, attempt, clip_error(str(exc)))
        except Exception as exc:  # a bug in a channel must not leave the row 'sending'
            return self._fail(
                channel, token, keys, attempt, clip_error(f"unexpected {type(exc).__name__}")
            )
        now = self._now()
        self._update_claimed(
            channel,
            token,
            status=DELIVERED,
            delivered_at=now,
            last_error=None,
            next_attempt_at=None,
        )
        logger.info(
            "notification delivered alert_keys=%s channel=%s attempts=%s",
            keys,
            channel,
            attempt,
        )
        return DeliveryResult(channel, DeliveryOutcome.DELIVERED, keys, attempt)

    def _reschedule(
        self,
        channel: str,
        token: str,
        keys: tuple[str, ...],
        attempts: int,
        error: str,
        retry_after: float | None,
        *,
        digest: bool,
    ) -> DeliveryResult:
        """Park a claimed delivery in the outbox, or fail it for good once it has expired.

        The wait is ``retry.policy().delay(stored attempts)`` (the server's ``retry_after`` when
        longer); a digest goes back to ``held`` until then, so it is rebuilt and sent as
        one message again.
        """
        now = self._now()
        stored_attempts, expires_at = self._store.claimed_attempts(channel, token)
        total = stored_attempts or attempts
        wait = max(self._config.retry.policy().delay(total), retry_after or 0.0)
        due = now + timedelta(seconds=wait)
        if expires_at is not None and due > expires_at:
            when = expires_at.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z")
            return self._fail(
                channel,
                token,
                keys,
                attempts,
                clip_error(f"gave up after {total} attempts (expired {when}): {error}"),
            )
        if digest:
            self._update_claimed(
                channel, token, status=HELD, hold_until=due, next_attempt_at=due, last_error=error
            )
        else:
            self._update_claimed(
                channel, token, status=RETRYING, next_attempt_at=due, last_error=error
            )
        logger.warning(
            "notification failed, in the outbox alert_keys=%s channel=%s attempts=%s "
            "next_attempt_at=%s error=%s",
            keys,
            channel,
            total,
            due.isoformat(),
            error,
        )
        return DeliveryResult(channel, DeliveryOutcome.RETRYING, keys, attempts, error)

    def _fail(
        self, channel: str, token: str, keys: tuple[str, ...], attempts: int, error: str
    ) -> DeliveryResult:
        """A delivery that failed for good: recorded, and reported on the other channels."""
        self._update_claimed(channel, token, status=FAILED, last_error=error, next_attempt_at=None)
        logger.error(
            "notification failed alert_keys=%s channel=%s attempts=%s error=%s",
            keys,
            channel,
            attempts,
            error,
        )
        self._report_failure(channel, keys, error)
        return DeliveryResult(channel, DeliveryOutcome.FAILED, keys, attempts, error)

    def _report_failure(self, channel: str, keys: Sequence[str], error: str) -> None:
        """A ``data_quality`` alert about a delivery that failed for good, sent on every
        channel of the ``data_quality`` route except ``channel`` (any other configured
        channel, the first by name, when the route has no other).  Failures of these reports are not reported
        again (no loop)."""
        keys = [k for k in keys if not k.startswith(DELIVERY_FAILED_PREFIX)]
        if not keys:
            return
        route = self._config.routes[AlertType.DATA_QUALITY].channels
        others = [c for c in route if c != channel] or [
            c for c in sorted(self._channels) if c != channel
        ][:1]
        if not others:
            logger.error("no other channel to report a failed delivery on channel=%s", channel)
            return
        stored = self._store.load_alerts(keys)
        for key in keys:
            original = stored.get(key)
            title = original.title if original is not None else key
            lines = [
                f"The {channel} notification of this alert could not be delivered:",
                f"  {title}",
                f"  alert {key}",
                f"error: {error}",
            ]
            if original is not None:
                lines += ["", "The alert was:", original.body]
            critical = original is not None and original.severity == Severity.CRITICAL.value
            report = Alert(
                key=f"{DELIVERY_FAILED_PREFIX}{channel}:{key}"[:255],
                type=AlertType.DATA_QUALITY,
                title=f"Notification not delivered on {channel}: {title}",
                text="\n".join(lines),
                severity=Severity.CRITICAL if critical else Severity.WARNING,
                regime=None if original is None else original.regime,
            )
            try:
                self.dispatch(report, channels=others)
            except Exception:  # reporting must never hide the original outcome
                logger.exception("could not report the failed delivery alert_key=%s", key)

    # ------------------------------------------------------------------ outbox

    def retry_due(self, now: datetime | None = None) -> list[DeliveryResult]:
        """Try again every outbox delivery whose ``next_attempt_at`` has come (one attempt
        each); an expired one fails for good without another attempt."""
        at = to_utc(now, "now") if now is not None else self._now()
        results: list[DeliveryResult] = []
        for alert_key, channel in self._store.retries_due(at, RETRY_BATCH):
            token = secrets.token_hex(16)
            claimed = self._store.claim_retry(alert_key, channel, token, at, self._now())
            if claimed is None:  # another sender claimed it first
                continue
            if claimed.expires_at is not None and claimed.expires_at <= at:
                results.append(
                    self._fail(
                        channel,
                        token,
                        (alert_key,),
                        0,
                        clip_error(
                            f"gave up after {claimed.attempts} attempts (expired): {claimed.last_error}"
                        ),
                    )
                )
                continue
            results.append(
                self._send_claimed(
                    channel, token, (alert_key,), self._stored_message(claimed.alert, channel),
                    max_attempts=1,
                )
            )
        return results

    def _stored_message(self, alert: StoredAlert, channel: str) -> OutgoingMessage:
        """The message of a stored alert for ``channel`` (an escalation rung says so)."""
        route = self._config.routes.get(AlertType(alert.type))
        escalated = route is not None and channel not in route.channels
        title = f"ESCALATED: {alert.title}" if escalated else alert.title
        return _outgoing(
            alert.alert_key, alert.type, title, alert.body, alert.body_html, Severity(alert.severity)
        )

    # ------------------------------------------------------------------ held digests

    def flush_due(self, now: datetime | None = None) -> list[DeliveryResult]:
        """Send everything held whose quiet period has ended: ONE digest per channel."""
        at = to_utc(now, "now") if now is not None else self._now()
        results: list[DeliveryResult] = []
        for channel in self._store.held_channels_due(at):
            token = secrets.token_hex(16)
            claimed = self._store.claim_held(channel, token, at, self._now())
            if not claimed:  # another dispatcher flushed first
                continue
            held = sorted(claimed, key=lambda a: (a.created_at, a.alert_key))
            results.append(
                self._send_claimed(
                    channel, token, tuple(a.alert_key for a in held), _digest(held), digest=True
                )
            )
        return results

    # ------------------------------------------------------------------ escalation

    def escalate_due(self, now: datetime | None = None) -> list[DeliveryResult]:
        """Escalate unacknowledged alerts (configured types and regimes) one channel per step.

        A step is due ``after_minutes`` after the alert (or the previous step); it sends
        to the next channel of ``escalation.channels`` that has not reached the person
        yet: a channel whose delivery failed, waits in the outbox, or was held or dropped
        counts as not reached.  Escalations ignore quiet hours.
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
        candidates = self._store.unacknowledged(
            [t.value for t in esc.alert_types], below_level=len(esc.channels)
        )
        return [
            alert
            for alert in candidates
            if (alert.regime or "").lower() in regimes
            and (alert.escalated_at or alert.created_at) + step <= at
        ]

    # ------------------------------------------------------------------ housekeeping

    def due_work(self, now: datetime | None = None) -> DueWork:
        """Held deliveries due for a digest, alerts due for escalation and outbox
        deliveries due for a retry at ``now``.

        Read-only and cheap, for a sensor deciding whether :meth:`flush_due` /
        :meth:`escalate_due` / :meth:`retry_due` have anything to do.
        """
        at = to_utc(now, "now") if now is not None else self._now()
        held, retries = self._store.due_counts(at)
        return DueWork(held, len(self._escalation_due(at)), retries)

    def _escalate(
        self, alert: StoredAlert, ladder: Sequence[str], at: datetime
    ) -> list[DeliveryResult]:
        index = self._store.advance_escalation(alert, ladder, at)
        if index is None:
            return []
        new_level = index + 1
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
        message = _outgoing(
            alert.alert_key,
            alert.type,
            title,
            alert.body,
            alert.body_html,
            Severity(alert.severity),
        )
        route = self._config.routes.get(AlertType(alert.type))
        expire = timedelta(minutes=route.expire_after_minutes if route else 1440)
        return [self._deliver_one(alert.alert_key, channel, message, at + expire, reclaim=True)]


def _outgoing(
    alert_key: str,
    alert_type: str,
    title: str,
    text: str,
    body_html: str | None,
    severity: Severity,
) -> OutgoingMessage:
    """The message of one alert: its text plus, for alerts a person acts on, the alert's
    short id and the exact command that acknowledges it."""
    if alert_type not in NO_ACK_FOOTER:
        footer = ack_footer(alert_key)
        text = f"{text.rstrip()}\n\n{footer}"
        if body_html is not None:
            body_html = f"{body_html}\n<p>{html.escape(footer)}</p>"
    return OutgoingMessage(title=title, text=text, severity=severity, html=body_html)


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
        body = a.body if a.type in NO_ACK_FOOTER else f"{a.body.rstrip()}\n{ack_footer(a.alert_key)}"
        text_parts.append(f"{head}\n{body}")
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

"""Schema of ``config/notifications.yaml`` (shared by the example file and the loader).

Channels are named (``channels.<name>``) and typed by ``type``: ``log``, ``telegram``,
``slack`` or ``email``.  Secrets never appear in the file: a channel names the
environment variable holding each one (``*_env`` fields, e.g. ``bot_token_env``).
Every alert type has a route (channels, default severity, what to do in quiet hours).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, HttpUrl, model_validator

from portfolio_pipeline.domain.schema import StrictModel
from portfolio_pipeline.retry import NOTIFICATION_SEND, BackoffPolicy

__all__ = [
    "AlertType",
    "ChannelConfig",
    "EmailChannelConfig",
    "EscalationConfig",
    "LogChannelConfig",
    "NotificationsFile",
    "QuietBehaviour",
    "QuietHoursConfig",
    "RetrySettings",
    "RouteConfig",
    "Severity",
    "SlackChannelConfig",
    "TelegramChannelConfig",
]

ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, max_length=128)]
ChannelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


class AlertType(StrEnum):
    BREACH = "breach"
    EXIT_SIGNAL = "exit_signal"
    STAGED_ORDER = "staged_order"
    FILL = "fill"
    DATA_QUALITY = "data_quality"
    RUN_FAILURE = "run_failure"
    DAILY_SUMMARY = "daily_summary"
    WEEKLY_DIGEST = "weekly_digest"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class QuietBehaviour(StrEnum):
    HOLD = "hold"  # deliver in one digest per channel when quiet hours end
    DROP = "drop"  # record, never send
    DELIVER = "deliver"  # send anyway


class _Strict(StrictModel):
    """This module's schemas share the project-wide rules of :class:`StrictModel`."""


class LogChannelConfig(_Strict):
    type: Literal["log"]
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"


class TelegramChannelConfig(_Strict):
    type: Literal["telegram"]
    bot_token_env: EnvName
    chat_id: str = Field(min_length=1, max_length=64)
    api_base_url: HttpUrl = HttpUrl("https://api.telegram.org")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class SlackChannelConfig(_Strict):
    type: Literal["slack"]
    webhook_url_env: EnvName
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class EmailChannelConfig(_Strict):
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = Field(description="required: false only for a trusted local relay")
    ca_file: Path | None = Field(
        default=None, description="extra CA bundle to trust (verification stays on)"
    )
    username: str | None = None
    password_env: EnvName | None = None
    from_addr: str = Field(min_length=3)
    to_addrs: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(default=20.0, gt=0, le=300)

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together (both or neither)")
        if self.username is not None and not self.starttls:
            raise ValueError("SMTP login needs starttls: true (no passwords in clear text)")
        if self.ca_file is not None and not self.starttls:
            raise ValueError("ca_file is only used with starttls: true")
        return self


ChannelConfig = Annotated[
    LogChannelConfig | TelegramChannelConfig | SlackChannelConfig | EmailChannelConfig,
    Field(discriminator="type"),
]


class RouteConfig(_Strict):
    channels: list[ChannelName] = Field(min_length=1)
    severity: Severity = Severity.WARNING
    quiet_hours: QuietBehaviour = QuietBehaviour.HOLD
    expire_after_minutes: int = Field(
        default=1440,
        ge=1,
        le=10080,
        description="outbox: a delivery that keeps failing is retried (backoff from "
        "``retry``) until this long after the alert, then fails for good",
    )


class QuietHoursConfig(_Strict):
    """Quiet outside the exchange's regular hours (widened by the margins) and on closed days."""

    enabled: bool = True
    calendar: Literal["XNYS"] = "XNYS"
    minutes_before_open: int = Field(default=30, ge=0, le=600)
    minutes_after_close: int = Field(default=60, ge=0, le=600)
    critical_overrides: bool = True


class EscalationConfig(_Strict):
    """Unacknowledged alerts of ``alert_types`` in ``regimes`` climb ``channels`` every N minutes."""

    enabled: bool = False
    after_minutes: int = Field(default=15, ge=1, le=1440)
    alert_types: list[AlertType] = Field(default_factory=lambda: [AlertType.BREACH])
    regimes: list[str] = Field(default_factory=lambda: ["crisis"])
    channels: list[ChannelName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_channels(self) -> Self:
        if self.enabled and not self.channels:
            raise ValueError("escalation is enabled but lists no channels")
        return self


class RetrySettings(_Strict):
    """``retry:``: the schedule of :data:`portfolio_pipeline.retry.NOTIFICATION_SEND`, tunable."""

    max_attempts: int = Field(default=NOTIFICATION_SEND.max_attempts or 1, ge=1, le=20)
    initial_backoff_seconds: float = Field(default=NOTIFICATION_SEND.initial, ge=0, le=600)
    multiplier: float = Field(default=NOTIFICATION_SEND.multiplier, ge=1, le=10)
    max_backoff_seconds: float = Field(default=NOTIFICATION_SEND.maximum, ge=0, le=3600)
    max_retry_after_seconds: float = Field(
        default=300.0, ge=0, le=3600, description="longest server-requested wait honoured"
    )

    def policy(self) -> BackoffPolicy:
        """The send policy.  The same schedule drives the durable outbox: a delivery still
        failing after ``max_attempts`` in one run waits ``delay(stored attempts)`` before
        the housekeeping sensor tries it again (capped at ``max_backoff_seconds``)."""
        return BackoffPolicy(
            NOTIFICATION_SEND.operation,
            max_attempts=self.max_attempts,
            initial=self.initial_backoff_seconds,
            multiplier=self.multiplier,
            maximum=self.max_backoff_seconds,
        )


class NotificationsFile(_Strict):
    """``config/notifications.yaml``."""

    channels: dict[ChannelName, ChannelConfig] = Field(min_length=1)
    routes: dict[AlertType, RouteConfig]
    quiet_hours: QuietHoursConfig = QuietHoursConfig()
    escalation: EscalationConfig = EscalationConfig()
    retry: RetrySettings = RetrySettings()

    @model_validator(mode="after")
    def _references(self) -> Self:
        known = sorted(self.channels)
        missing = [t.value for t in AlertType if t not in self.routes]
        if missing:
            raise ValueError(f"routes: missing alert type(s) {', '.join(missing)}")
        problems: list[str] = []
        for alert_type, route in self.routes.items():
            for name in route.channels:
                if name not in self.channels:
                    problems.append(f"routes.{alert_type.value}.channels: unknown channel {name!r}")
            if len(set(route.channels)) != len(route.channels):
                problems.append(f"routes.{alert_type.value}.channels: a channel is listed twice")
        for name in self.escalation.channels:
            if name not in self.channels:
                problems.append(f"escalation.channels: unknown channel {name!r}")
        if problems:
            raise ValueError("; ".join(problems) + f" (defined channels: {', '.join(known)})")
        return self

"""Delivery channels: log, Telegram (Bot API), Slack (incoming webhook), email (SMTP).

A channel sends one :class:`OutgoingMessage` or raises:

- :class:`TransientDeliveryError` for errors worth retrying (HTTP 5xx and 429,
  connection errors and timeouts, SMTP 4xx), with ``retry_after`` when the server
  asked for a specific wait (Telegram ``parameters.retry_after``, Slack ``Retry-After``);
- :class:`PermanentDeliveryError` for everything else (bad token, unknown chat, SMTP 5xx,
  certificate verification failure).

Secret values (bot token, webhook URL, SMTP password) are held as
:class:`~portfolio_pipeline.notify.secrets.Secret` and every error text passes the
channel's redactor.  HTTP requests go straight to an ``httpx2`` transport: the httpx2
``Client`` logs each request URL at INFO, and a Telegram or Slack URL *is* a secret.
TLS verification is always on.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Final, Protocol, runtime_checkable

import httpx2

from portfolio_pipeline.config.notifications import (
    ChannelConfig,
    EmailChannelConfig,
    LogChannelConfig,
    NotificationsFile,
    Severity,
    SlackChannelConfig,
    TelegramChannelConfig,
)
from portfolio_pipeline.notify.secrets import Redactor, Secret, secret_from_env

__all__ = [
    "TELEGRAM_MAX_CHARS",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "LogChannel",
    "OutgoingMessage",
    "PermanentDeliveryError",
    "SlackChannel",
    "TelegramChannel",
    "TransientDeliveryError",
    "build_channel",
    "build_channels",
    "truncate_text",
]

logger = logging.getLogger(__name__)

TELEGRAM_MAX_CHARS: Final = 4096
"""Telegram's limit on a message's text (counted in UTF-16 code units)."""

SLACK_MAX_CHARS: Final = 39_000
"""Slack truncates ``text`` beyond 40,000 characters; stay under it with our own note."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """What a channel sends: a title, plain text (Telegram/Slack/log) and optional HTML (email)."""

    title: str
    text: str
    severity: Severity = Severity.INFO
    html: str | None = None


class DeliveryError(Exception):
    """A failed send; the message is already redacted."""


class TransientDeliveryError(DeliveryError):
    """Worth retrying; ``retry_after`` is the server-requested wait in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (configuration or content problem)."""


@runtime_checkable
class Channel(Protocol):
    """A named destination."""

    @property
    def name(self) -> str: ...

    def send(self, message: OutgoingMessage) -> None: ...


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def truncate_text(text: str, limit: int = TELEGRAM_MAX_CHARS) -> str:
    """``text`` cut to at most ``limit`` UTF-16 code units, ending with a truncation note."""
    if _utf16_len(text) <= limit:
        return text
    omitted_guess = _utf16_len(text) - limit
    note = f"\n… (truncated, about {omitted_guess + 64} characters omitted)"
    budget = limit - _utf16_len(note)
    cut = text[:budget]
    while _utf16_len(cut) > budget:
        cut = cut[:-1]
    omitted = len(text) - len(cut)
    note = f"\n… (truncated, {omitted} characters omitted)"
    while _utf16_len(cut) + _utf16_len(note) > limit:
        cut = cut[:-1]
    return cut + note


def _plain(message: OutgoingMessage) -> str:
    head = message.title.strip()
    body = message.text.strip()
    return f"{head}\n\n{body}" if head and body and not body.startswith(head) else body or head


# --------------------------------------------------------------------------- log


class LogChannel:
    """Writes alerts to the ``portfolio_pipeline.notify.log_channel`` logger (needs no secret)."""

    def __init__(self, name: str, level: str = "INFO") -> None:
        self._name = name
        self._level = logging.getLevelName(level)
        self._logger = logging.getLogger("portfolio_pipeline.notify.log_channel")

    @property
    def name(self) -> str:
        return self._name

    def send(self, message: OutgoingMessage) -> None:
        self._logger.log(
            self._level,
            "alert channel=%s severity=%s title=%s text=%s",
            self._name,
            message.severity.value,
            message.title,
            message.text,
        )

    def __repr__(self) -> str:
        return f"LogChannel(name={self._name!r})"


# --------------------------------------------------------------------------- HTTP


def _post_json(
    url: str, payload: Mapping[str, Any], *, timeout: float, redact: Redactor
) -> httpx2.Response:
    """POST JSON without the httpx2 Client (whose INFO log line would carry the URL)."""
    request = httpx2.Request(
        "POST",
        url,
        json=dict(payload),
        headers={"User-Agent": "portfolio-pipeline-notify"},
        extensions={"timeout": httpx2.Timeout(timeout).as_dict()},
    )
    try:
        with httpx2.HTTPTransport(verify=True, retries=0) as transport:
            response = transport.handle_request(request)
            try:
                response.read()
            finally:
                response.close()
    except httpx2.TransportError as exc:
        raise TransientDeliveryError(redact(f"{type(exc).__name__}: {exc}")) from None
    return response


def _json_or_none(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after_header(response: httpx2.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _fragments(value: str, min_length: int = 8) -> list[Secret]:
    """Parts of a secret worth redacting on their own (too short ones would hit innocent text)."""
    return [Secret(value)] if len(value) >= min_length else []


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class TelegramChannel:
    """Bot API ``sendMessage`` (plain text, no parse mode, so nothing needs escaping)."""

    def __init__(
        self,
        name: str,
        *,
        token: Secret,
        chat_id: str,
        api_base_url: str = "https://api.telegram.org",
        timeout: float = 10.0,
    ) -> None:
        self._name = name
        self._token = token
        self._chat_id = chat_id
        self._base = api_base_url.rstrip("/")
        self._timeout = timeout
        # The bot token and its secret half (after "id:") on their own.
        self._redact = Redactor([token, *_fragments(token.reveal().partition(":")[2])])

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"TelegramChannel(name={self._name!r}, base={self._base!r}, token=***)"

    def send(self, message: OutgoingMessage) -> None:
        url = f"{self._base}/bot{self._token.reveal()}/sendMessage"
        payload = {
            "chat_id": self._chat_id,
            "text": truncate_text(_plain(message), TELEGRAM_MAX_CHARS),
            "disable_web_page_preview": True,
        }
        response = _post_json(url, payload, timeout=self._timeout, redact=self._redact)
        body = _json_or_none(response)
        if response.status_code == 200 and isinstance(body, dict) and body.get("ok") is True:
            return
        description = ""
        retry_after: float | None = None
        if isinstance(body, dict):
            description = str(body.get("description", ""))
            params = body.get("parameters")
            if isinstance(params, dict) and isinstance(params.get("retry_after"), int | float):
                retry_after = float(params["retry_after"])
        text = self._redact(
            f"telegram HTTP {response.status_code}: {_snippet(description or response.text)}"
        )
        if response.status_code == 429:
            raise TransientDeliveryError(
                text,
                retry_after=retry_after
                if retry_after is not None
                else _retry_after_header(response),
            )
        if response.status_code >= 500:
            raise TransientDeliveryError(text, retry_after=retry_after)
        raise PermanentDeliveryError(text)


class SlackChannel:
    """Incoming webhook (the URL, a secret, comes from an environment variable)."""

    def __init__(self, name: str, *, webhook_url: Secret, timeout: float = 10.0) -> None:
        self._name = name
        self._url = webhook_url
        self._timeout = timeout
        # The URL, its path and its last segment (the webhook's secret part) on their own.
        path = httpx2.URL(webhook_url.reveal()).path
        self._redact = Redactor(
            [webhook_url, *_fragments(path), *_fragments(path.rstrip("/").rsplit("/", 1)[-1])]
        )

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"SlackChannel(name={self._name!r}, webhook_url=***)"

    @staticmethod
    def escape(text: str) -> str:
        """Slack's three control characters in message text."""
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def send(self, message: OutgoingMessage) -> None:
        text = truncate_text(self.escape(_plain(message)), SLACK_MAX_CHARS)
        response = _post_json(
            self._url.reveal(), {"text": text}, timeout=self._timeout, redact=self._redact
        )
        if 200 <= response.status_code < 300:
            return
        text = self._redact(f"slack HTTP {response.status_code}: {_snippet(response.text)}")
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientDeliveryError(text, retry_after=_retry_after_header(response))
        raise PermanentDeliveryError(text)


# --------------------------------------------------------------------------- email


class EmailChannel:
    """SMTP with STARTTLS (default SSL context: certificate and host name verified).

    ``ca_file`` adds a CA to trust (a private relay); plain SMTP only when the
    configuration says ``starttls: false``.
    """

    def __init__(self, name: str, config: EmailChannelConfig, *, password: Secret | None) -> None:
        self._name = name
        self._config = config
        self._password = password
        self._redact = Redactor([password] if password is not None else [])

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        c = self._config
        return f"EmailChannel(name={self._name!r}, host={c.host!r}, port={c.port}, starttls={c.starttls})"

    def _ssl_context(self) -> ssl.SSLContext:
        cafile = str(self._config.ca_file) if self._config.ca_file is not None else None
        context = ssl.create_default_context(cafile=cafile)
        if cafile is not None:
            # The bundle is added to, not instead of, the system store.
            context.load_default_certs()
        return context

    def _build(self, message: OutgoingMessage) -> EmailMessage:
        c = self._config
        mail = EmailMessage()
        title = " ".join(message.title.split())  # no header injection via line breaks
        mail["Subject"] = f"[{message.severity.value.upper()}] {title}"
        mail["From"] = c.from_addr
        mail["To"] = ", ".join(c.to_addrs)
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = make_msgid(domain="portfolio-pipeline.local")
        mail.set_content(message.text)
        if message.html is not None:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def send(self, message: OutgoingMessage) -> None:
        c = self._config
        mail = self._build(message)
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout_seconds) as smtp:
                smtp.ehlo()
                if c.starttls:
                    smtp.starttls(context=self._ssl_context())
                    smtp.ehlo()
                if c.username is not None and self._password is not None:
                    smtp.login(c.username, self._password.reveal())
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _msg in exc.recipients.values()]
            text = self._redact(f"SMTP recipients refused: {exc.recipients!r}")
            if codes and all(400 <= code < 500 for code in codes):
                raise TransientDeliveryError(text) from None
            raise PermanentDeliveryError(text) from None
        except smtplib.SMTPResponseException as exc:
            detail = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            text = self._redact(f"SMTP {exc.smtp_code}: {_snippet(detail)}")
            if 400 <= exc.smtp_code < 500:
                raise TransientDeliveryError(text) from None
            raise PermanentDeliveryError(text) from None
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(
                self._redact(f"SMTP TLS certificate verification failed: {exc.verify_message}")
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentDeliveryError(self._redact(f"SMTP server: {exc}")) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientDeliveryError(self._redact(f"SMTP disconnected: {exc}")) from None
        except smtplib.SMTPException as exc:  # e.g. no usable AUTH mechanism
            raise PermanentDeliveryError(
                self._redact(f"SMTP {type(exc).__name__}: {exc}")
            ) from None
        except OSError as exc:  # connection refused/reset, timeouts, TLS handshake errors
            raise TransientDeliveryError(
                self._redact(f"SMTP {type(exc).__name__}: {exc}")
            ) from None


# --------------------------------------------------------------------------- factory


def build_channel(
    name: str, config: ChannelConfig, *, environ: Mapping[str, str] | None = None
) -> Channel:
    """One channel from its configuration, secrets read from ``environ`` (default os.environ)."""
    owner = f"notifications channel {name!r}"
    if isinstance(config, LogChannelConfig):
        return LogChannel(name, config.level)
    if isinstance(config, TelegramChannelConfig):
        return TelegramChannel(
            name,
            token=secret_from_env(config.bot_token_env, owner=owner, environ=environ),
            chat_id=config.chat_id,
            api_base_url=str(config.api_base_url),
            timeout=config.timeout_seconds,
        )
    if isinstance(config, SlackChannelConfig):
        return SlackChannel(
            name,
            webhook_url=secret_from_env(config.webhook_url_env, owner=owner, environ=environ),
            timeout=config.timeout_seconds,
        )
    password = (
        secret_from_env(config.password_env, owner=owner, environ=environ)
        if config.password_env is not None
        else None
    )
    return EmailChannel(name, config, password=password)


def build_channels(
    config: NotificationsFile, *, environ: Mapping[str, str] | None = None
) -> dict[str, Channel]:
    """Every configured channel; a missing secret raises naming the channel and variable."""
    return {
        name: build_channel(name, cfg, environ=environ) for name, cfg in config.channels.items()
    }

"""Fixtures for notification tests: a local HTTP server playing Telegram and Slack,
an injected clock and sleep, the exchange calendar, and a config builder.

Everything listens on 127.0.0.1 only; nothing reaches the internet.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.config.notifications import NotificationsFile
from portfolio_pipeline.exchange_calendar import ExchangeCalendar

TELEGRAM_TOKEN = "123456:SECRET-telegram-token-ABCdef"
SLACK_PATH = "/services/T000/B000/SECRETslackwebhookXYZ"
SMTP_PASSWORD = "SECRET-smtp-password-42"  # pragma: allowlist secret (a test's fake)

# A Tuesday session in regular hours (11:00 New York, EDT).
OPEN_TIME = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    status: int


@dataclass
class FakeHttp:
    """Scripted responses per path prefix; records every request."""

    base_url: str
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, deque[tuple[int, Any, dict[str, str]]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, prefix: str, *responses: tuple[int, Any, dict[str, str]]) -> None:
        with self.lock:
            self.scripts.setdefault(prefix, deque()).extend(responses)

    def next_response(self, path: str) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            for prefix, queue in self.scripts.items():
                if path.startswith(prefix) and queue:
                    return queue.popleft()
        if path.startswith("/bot"):
            return 200, {"ok": True, "result": {"message_id": 1}}, {}
        return 200, "ok", {}

    def accepted(self, prefix: str = "") -> list[Received]:
        """Requests on ``prefix`` the server answered with 200 (messages actually delivered)."""
        return [r for r in self.requests if r.path.startswith(prefix) and r.status == 200]

    @property
    def telegram_base(self) -> str:
        return self.base_url

    @property
    def slack_url(self) -> str:
        return self.base_url + SLACK_PATH


def _handler(fake: FakeHttp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"raw": raw.decode("utf-8", "replace")}
            status, payload, headers = fake.next_response(self.path)
            with fake.lock:
                fake.requests.append(Received(self.path, body, status))
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr
            return

    return Handler


@pytest.fixture
def fake_http() -> Iterator[FakeHttp]:
    fake = FakeHttp(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def calendar() -> ExchangeCalendar:
    return ExchangeCalendar("XNYS", start=date(2025, 1, 1), end=date(2026, 12, 31))


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock(OPEN_TIME)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def secret_env(fake_http: FakeHttp) -> dict[str, str]:
    return {
        "TEST_TG_TOKEN": TELEGRAM_TOKEN,
        "TEST_SLACK_URL": fake_http.slack_url,
        "TEST_SMTP_PASSWORD": SMTP_PASSWORD,
    }


ALL_TYPES = (
    "breach",
    "exit_signal",
    "staged_order",
    "fill",
    "data_quality",
    "run_failure",
    "daily_summary",
    "weekly_digest",
)


def make_config(
    base_url: str,
    *,
    routes: dict[str, dict[str, Any]] | None = None,
    quiet: dict[str, Any] | None = None,
    escalation: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    extra_channels: dict[str, Any] | None = None,
) -> NotificationsFile:
    """A config with log/telegram/slack channels; unspecified routes go to the log."""
    all_routes: dict[str, dict[str, Any]] = {t: {"channels": ["log"]} for t in ALL_TYPES}
    all_routes.update(routes or {})
    return NotificationsFile.model_validate(
        {
            "channels": {
                "log": {"type": "log"},
                "telegram": {
                    "type": "telegram",
                    "bot_token_env": "TEST_TG_TOKEN",
                    "chat_id": "42",
                    "api_base_url": base_url,
                    "timeout_seconds": 5,
                },
                "slack": {"type": "slack", "webhook_url_env": "TEST_SLACK_URL"},
                **(extra_channels or {}),
            },
            "routes": all_routes,
            "quiet_hours": quiet or {"enabled": True},
            "escalation": escalation or {"enabled": False},
            "retry": retry or {},
        }
    )

"""Email over SMTP with STARTTLS and certificate verification ON, against aiosmtpd.

The server's certificate is a throwaway self-signed one (for 127.0.0.1) made here with
``cryptography``; the client trusts it through the channel's ``ca_file`` only.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.config.notifications import EmailChannelConfig
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.notify import Alert, AlertType, DeliveryOutcome, Notifier, Severity
from portfolio_pipeline.notify.channels import (
    EmailChannel,
    OutgoingMessage,
    PermanentDeliveryError,
)
from portfolio_pipeline.notify.secrets import Secret
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.notifications import SqlNotificationStore, delivery_rows
from portfolio_pipeline_tests.notify.conftest import SMTP_PASSWORD, make_config

USER = "alerts@example.test"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert.pem, key.pem): a self-signed CA-capable certificate for 127.0.0.1/localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portfolio test smtp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Handler:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []
        self.temporary_failures = 0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.temporary_failures > 0:
            self.temporary_failures -= 1
            return "451 4.3.0 try again later"
        assert isinstance(envelope.content, bytes)
        self.messages.append((envelope, message_from_bytes(envelope.content)))
        return "250 OK"


def _authenticator(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server(tls_files: tuple[Path, Path]) -> Iterator[tuple[Handler, int]]:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    handler = Handler()
    port = _free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_ctx,
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticator,
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _email_cfg(port: int, ca_file: Path | None) -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "starttls": True,
        "ca_file": str(ca_file) if ca_file else None,
        "username": USER,
        "password_env": "TEST_SMTP_PASSWORD",
        "from_addr": USER,
        "to_addrs": ["trader@example.test"],
        "timeout_seconds": 5,
    }


def test_starttls_with_verification_delivers_once(
    db: Database,
    smtp_server: tuple[Handler, int],
    tls_files: tuple[Path, Path],
    clock: SettableClock,
    sleeps: list[float],
    secret_env: dict[str, str],
    calendar: ExchangeCalendar,
    fake_http: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, port = smtp_server
    handler.temporary_failures = 1  # SMTP 4xx is transient: retried once
    cfg = make_config(
        fake_http.telegram_base,
        extra_channels={"email": _email_cfg(port, tls_files[0])},
        routes={"staged_order": {"channels": ["email"]}},
    )
    caplog.set_level(logging.DEBUG)
    n = Notifier(SqlNotificationStore(db), cfg, environ=secret_env, clock=clock, sleep=sleeps.append, calendar=calendar)
    alert = Alert(
        "order:1",
        AlertType.STAGED_ORDER,
        "Hedge staged:\r\nBcc: evil@example.test\nbuy 2 SPY puts",
        "Confirm with `portfolio confirm order:1`",
        html="<p>Confirm with <code>portfolio confirm order:1</code></p>",
        severity=Severity.WARNING,
    )
    [first] = n.dispatch(alert)
    [again] = n.dispatch(alert)  # the "double email" regression
    assert first.outcome is DeliveryOutcome.DELIVERED and first.attempts == 2
    assert again.outcome is DeliveryOutcome.DUPLICATE
    assert sleeps == [1.0]
    assert len(handler.messages) == 1
    envelope, mail = handler.messages[0]
    assert envelope.mail_from == USER and envelope.rcpt_tos == ["trader@example.test"]
    assert mail["Subject"] == "[WARNING] Hedge staged: Bcc: evil@example.test buy 2 SPY puts"
    assert mail["Bcc"] is None
    parts = {p.get_content_type() for p in mail.walk()}
    assert {"text/plain", "text/html"} <= parts
    assert [r["status"] for r in delivery_rows(db)] == ["delivered"]
    assert SMTP_PASSWORD not in caplog.text


def test_untrusted_certificate_is_a_permanent_failure(
    smtp_server: tuple[Handler, int], secret_env: dict[str, str]
) -> None:
    """Verification is on: without the CA the self-signed server is refused."""
    handler, port = smtp_server
    channel = EmailChannel(
        "email",
        EmailChannelConfig.model_validate(_email_cfg(port, None)),
        password=Secret(SMTP_PASSWORD),
    )
    with pytest.raises(PermanentDeliveryError, match="certificate verification failed") as err:
        channel.send(OutgoingMessage("t", "x"))
    assert SMTP_PASSWORD not in str(err.value)
    assert handler.messages == []
    assert SMTP_PASSWORD not in repr(channel)

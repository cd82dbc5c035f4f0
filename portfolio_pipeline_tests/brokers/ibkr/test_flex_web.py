"""IBKR cash flows from the Flex Web Service (issue 14, item 2).

A local HTTPS server on 127.0.0.1 plays IBKR's Flex Web Service (SendRequest, then
GetStatement answering "in progress" once, then the statement).  Its certificate is
issued by a throwaway CA that the test trusts explicitly (``IBKR_FLEX_CA_FILE``);
verification is never disabled, and an untrusted server is refused.  Oracle: the cash
transactions written in the fixture statement (deposit 50,000; SPY dividend 135.10;
interest 3.21; withdrawal -2,500), also parsed from the file by the importer."""

from __future__ import annotations

import dataclasses
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portfolio_pipeline.brokers.base import BrokerError
from portfolio_pipeline.brokers.history.ibkr_flex import parse_ibkr_flex
from portfolio_pipeline.brokers.ibkr.flex_web import FlexWebConfig, fetch_flex_statement
from portfolio_pipeline_tests.brokers.ibkr.book import adapter, gateway, instruments, run

FIXTURE = Path(__file__).parents[1] / "history" / "fixtures" / "ibkr_flex_2018-02.xml"
TOKEN = "t0ken-123456"
ACCOUNT = "U1234567"


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("flex-tls")
    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=True, crl_sign=True,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = ca("flex test CA")
    _, other_cert = ca("unrelated CA")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {
        "ca": _pem(folder / "ca.pem", ca_cert.public_bytes(pem)),
        "other": _pem(folder / "other.pem", other_cert.public_bytes(pem)),
        "cert": _pem(folder / "cert.pem", leaf.public_bytes(pem)),
        "key": _pem(folder / "key.pem", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption())),
    }


class FlexServer:
    def __init__(self, pki: dict[str, Path], statement: bytes) -> None:
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.in_progress = 1
        self.send_error: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                server.requests.append((url.path, query))
                if url.path == "/flex/SendRequest":
                    if server.send_error is not None:
                        body = (f"<FlexStatementResponse><Status>Fail</Status><ErrorCode>{server.send_error}"
                                "</ErrorCode><ErrorMessage>Invalid token.</ErrorMessage>"
                                "</FlexStatementResponse>").encode()
                    else:
                        body = ("<FlexStatementResponse timestamp='01 March, 2018 08:30 AM EST'>"
                                "<Status>Success</Status><ReferenceCode>9876543210</ReferenceCode>"
                                f"<Url>https://127.0.0.1:{server.port}/flex/GetStatement</Url>"
                                "</FlexStatementResponse>").encode()
                elif url.path == "/flex/GetStatement" and server.in_progress > 0:
                    server.in_progress -= 1
                    body = (b"<FlexStatementResponse><Status>Warn</Status><ErrorCode>1019</ErrorCode>"
                            b"<ErrorMessage>Statement generation in progress. Please try again shortly."
                            b"</ErrorMessage></FlexStatementResponse>")
                elif url.path == "/flex/GetStatement":
                    body = statement
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki["cert"]), str(pki["key"]))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def config(self, ca: Path | None) -> FlexWebConfig:
        env = {"IBKR_FLEX_TOKEN": TOKEN, "IBKR_FLEX_QUERY_ID": "123456",
               "IBKR_FLEX_URL": f"https://127.0.0.1:{self.port}/flex"}
        if ca is not None:
            env["IBKR_FLEX_CA_FILE"] = str(ca)
        cfg = FlexWebConfig.from_env(env)
        assert cfg is not None
        return cfg


@pytest.fixture
def server(pki: dict[str, Path]) -> Iterator[FlexServer]:
    srv = FlexServer(pki, FIXTURE.read_bytes())
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


async def _no_sleep(_: float) -> None:
    return None


def test_ibkr_adapter_cash_flows_come_from_the_flex_web_service(server: FlexServer, pki: dict[str, Path]
                                                              ) -> None:
    gw = gateway()

    async def scenario() -> list[object]:
        broker = adapter(gw, flex=dataclasses.replace(server.config(pki["ca"]), retry_seconds=0.01))
        async with broker:
            first = await broker.cash_flows(ACCOUNT, date(2018, 1, 1))
            since_feb = await broker.cash_flows(ACCOUNT, date(2018, 2, 1))
            return [first, since_feb]

    first, since_feb = run(scenario)
    got = [(f.flow_id, f.kind, f.amount) for f in first]  # type: ignore[attr-defined]
    assert got == [("7001", "deposit", 50000.0), ("7002", "dividend", 135.1),
                   ("7003", "interest", 3.21), ("7004", "withdrawal", -2500.0)]
    imported = parse_ibkr_flex(FIXTURE, instruments()).cash_flows
    assert first == sorted(imported, key=lambda f: (f.ts, f.flow_id))
    assert [f.flow_id for f in since_feb] == ["7003", "7004"]  # type: ignore[attr-defined]
    # one statement for the adapter: SendRequest once, GetStatement twice (in progress, then ready)
    assert [p for p, _ in server.requests] == ["/flex/SendRequest", "/flex/GetStatement", "/flex/GetStatement"]
    assert server.requests[0][1] == {"t": [TOKEN], "q": ["123456"], "v": ["3"]}
    assert server.requests[1][1]["q"] == ["9876543210"]


def test_an_untrusted_certificate_is_refused_and_the_token_not_shown(server: FlexServer,
                                                                      pki: dict[str, Path]) -> None:
    with pytest.raises(BrokerError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed") as err:
        run(lambda: fetch_flex_statement(server.config(pki["other"]), sleep=_no_sleep))
    assert TOKEN not in str(err.value)
    assert server.requests == []  # nothing was sent over the unverified connection


def test_refusals_and_configuration_errors(server: FlexServer, pki: dict[str, Path]) -> None:
    server.send_error = "1012"
    with pytest.raises(BrokerError, match=r"SendRequest refused \(code 1012\): Invalid token"):
        run(lambda: fetch_flex_statement(server.config(pki["ca"]), sleep=_no_sleep))
    assert FlexWebConfig.from_env({}) is None
    with pytest.raises(ValueError, match="IBKR_FLEX_QUERY_ID"):
        FlexWebConfig.from_env({"IBKR_FLEX_TOKEN": "x"})
    with pytest.raises(ValueError, match="https"):
        FlexWebConfig.from_env({"IBKR_FLEX_TOKEN": "x", "IBKR_FLEX_QUERY_ID": "1",
                                "IBKR_FLEX_URL": "http://127.0.0.1:1/flex"})
    assert TOKEN not in repr(server.config(pki["ca"]))

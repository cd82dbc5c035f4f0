"""IBKR Flex Web Service: fetch a Flex Query statement over HTTPS (cash flows, executions).

Protocol (IBKR "Flex Web Service", version 3): ``GET <base>/SendRequest?t=<token>&q=<query
id>&v=3`` answers ``<FlexStatementResponse>`` with ``<Status>Success</Status>``, a
``<ReferenceCode>`` and the ``<Url>`` of ``GetStatement``; ``GET <Url>?t=<token>&q=<reference
code>&v=3`` answers the statement (``<FlexQueryResponse>``, parsed by
:func:`portfolio_pipeline.brokers.history.ibkr_flex.parse_ibkr_flex`) or, while IBKR is
still generating it, ``<Status>Warn|Fail</Status>`` with ``<ErrorCode>1019</ErrorCode>``
(retried after a pause).  Any other error code is raised with IBKR's message.

Configuration comes from the environment only (:meth:`FlexWebConfig.from_env`):
``IBKR_FLEX_TOKEN`` (secret, never logged), ``IBKR_FLEX_QUERY_ID``, optionally
``IBKR_FLEX_URL`` (the service base URL) and ``IBKR_FLEX_CA_FILE`` (a PEM bundle trusted in
addition to the system store).  TLS certificates are always verified.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from portfolio_pipeline.brokers.base import BrokerError
from portfolio_pipeline.retry import BackoffPolicy, RetryGaveUpError

__all__ = ["DEFAULT_URL", "FlexWebConfig", "fetch_flex_statement"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService"
IN_PROGRESS = frozenset({"1019", "1018"})  # statement generation in progress / too many requests


@dataclass(frozen=True, slots=True)
class FlexWebConfig:
    """Flex Web Service settings (``token`` is a secret: not in ``repr``)."""

    token: str = field(repr=False)
    query_id: str
    base_url: str = DEFAULT_URL
    ca_file: Path | None = None
    attempts: int = 10
    retry_seconds: float = 5.0
    timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith("https://"):
            raise ValueError(f"IBKR_FLEX_URL must be an https:// URL, got {self.base_url!r}")
        if not self.token or not self.query_id:
            raise ValueError("IBKR Flex Web Service needs IBKR_FLEX_TOKEN and IBKR_FLEX_QUERY_ID")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FlexWebConfig | None:
        """The configuration from ``IBKR_FLEX_*`` variables, or None when no token is set."""
        e = os.environ if env is None else env
        token = e.get("IBKR_FLEX_TOKEN", "").strip()
        if not token:
            return None
        query = e.get("IBKR_FLEX_QUERY_ID", "").strip()
        if not query:
            raise ValueError("IBKR_FLEX_TOKEN is set but IBKR_FLEX_QUERY_ID is not")
        ca = e.get("IBKR_FLEX_CA_FILE", "").strip()
        return cls(token=token, query_id=query, base_url=e.get("IBKR_FLEX_URL", DEFAULT_URL).rstrip("/"),
                   ca_file=Path(ca) if ca else None)

    def ssl_context(self) -> ssl.SSLContext:
        """Verifying context: the system store plus ``ca_file`` when given."""
        context = ssl.create_default_context()
        if self.ca_file is not None:
            context.load_verify_locations(cafile=str(self.ca_file))
        return context


def _status(content: bytes, what: str) -> ET.Element | None:
    """The ``FlexStatementResponse`` element, or None when ``content`` is a statement."""
    if b"<!DOCTYPE" in content or b"<!ENTITY" in content:
        raise BrokerError(f"ibkr flex web service: {what}: refused a document with a DTD")
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        raise BrokerError(f"ibkr flex web service: {what}: not XML ({exc})") from None
    return root if root.tag == "FlexStatementResponse" else None


class _StatementInProgress(Exception):
    """GetStatement answered "generation in progress": poll again."""


async def fetch_flex_statement(
    config: FlexWebConfig,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bytes:
    """The Flex statement XML of ``config.query_id`` (raises :class:`BrokerError`)."""

    async def get(client: httpx2.AsyncClient, url: str, q: str, what: str) -> bytes:
        try:
            resp = await client.get(url, params={"t": config.token, "q": q, "v": "3"})
        except httpx2.TransportError as exc:
            # the exception text may carry the URL with the token: name the step only
            raise BrokerError(f"ibkr flex web service: {what} failed: {type(exc).__name__}: "
                              f"{str(exc).replace(config.token, '***')}") from None
        if resp.status_code != 200:
            raise BrokerError(f"ibkr flex web service: {what}: HTTP {resp.status_code}")
        return bytes(resp.content)

    async with httpx2.AsyncClient(verify=config.ssl_context(), timeout=config.timeout_seconds,
                                  follow_redirects=False) as client:
        sent = _status(await get(client, f"{config.base_url}/SendRequest", config.query_id,
                                 "SendRequest"), "SendRequest")
        if sent is None or sent.findtext("Status") != "Success":
            code = sent.findtext("ErrorCode") if sent is not None else None
            msg = sent.findtext("ErrorMessage") if sent is not None else "no status"
            raise BrokerError(f"ibkr flex web service: SendRequest refused (code {code}): {msg}")
        ref = (sent.findtext("ReferenceCode") or "").strip()
        url = (sent.findtext("Url") or "").strip()
        if not ref or not url.startswith("https://"):
            raise BrokerError("ibkr flex web service: SendRequest gave no reference code or https URL")

        async def statement() -> bytes:
            content = await get(client, url, ref, "GetStatement")
            status = _status(content, "GetStatement")
            if status is None:
                logger.info("ibkr flex web service: statement of query %s received (%d bytes)",
                            config.query_id, len(content))
                return content
            code = (status.findtext("ErrorCode") or "").strip()
            if code not in IN_PROGRESS:
                raise BrokerError(f"ibkr flex web service: GetStatement refused (code {code}): "
                                  f"{status.findtext('ErrorMessage')}")
            raise _StatementInProgress(f"statement in progress (code {code})")

        # the service asks for a steady poll: a constant wait between tries
        policy = BackoffPolicy("ibkr flex web service: GetStatement", max_attempts=config.attempts,
                               initial=config.retry_seconds, multiplier=1.0,
                               maximum=config.retry_seconds)
        try:
            return await policy.acall(statement, retry_on=_StatementInProgress, sleep=sleep)
        except RetryGaveUpError:
            raise BrokerError(
                f"ibkr flex web service: statement not ready after {config.attempts} attempts"
            ) from None

"""HTTP transport for the Tastytrade SDK: a small, bounded retry policy at the wire.

The SDK (13.x) does not retry; it hands ``client_kwargs`` to its ``httpx2.AsyncClient``
(and to the client its DXLink streamer opens), so a transport given there wraps every
request it makes.  Policy:

- connection failures (nothing reached the server) are retried for every request;
- 5xx responses and read/protocol errors are retried only where repeating the request
  cannot do harm: GET/HEAD/OPTIONS/DELETE, the OAuth token refresh and order dry runs.
  A live order POST is never repeated (its outcome would be unknown);
- the schedule is a :class:`~portfolio_pipeline.retry.BackoffPolicy` (default
  :data:`~portfolio_pipeline.retry.BROKER_HTTP`: 3 tries, 0.25 s doubling, capped at 2 s);
  the last failure propagates unchanged (the adapter maps it to a ``BrokerError``).

The transport is shared by the session's client and the streamer's client, so entering
or leaving either client must not close it: the adapter closes it in ``close()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import TracebackType

import httpx2

from portfolio_pipeline.retry import BackoffPolicy

logger = logging.getLogger(__name__)

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


#: Failures where nothing reached the server: every request may be retried.
_NOTHING_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
#: Failures after the request may have been sent: retried only where repeating is harmless.
_MAYBE_SENT = (httpx2.ReadError, httpx2.ReadTimeout, httpx2.RemoteProtocolError, httpx2.WriteError)


def _safe_to_repeat(request: httpx2.Request) -> bool:
    if request.method in _IDEMPOTENT:
        return True
    path = request.url.path
    return request.method == "POST" and (path == "/oauth/token" or path.endswith("/dry-run"))


def _describe(request: httpx2.Request) -> str:
    # method and path only: never the query, headers or body
    return f"{request.method} {request.url.path}"


class RetryingTransport(httpx2.AsyncBaseTransport):
    """Retries transient failures of ``inner`` per its :class:`BackoffPolicy`."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport,
        policy: BackoffPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"RetryingTransport(policy={self._policy!r})"

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        repeatable = _safe_to_repeat(request)

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, _NOTHING_SENT):
                return True
            return repeatable and isinstance(exc, _MAYBE_SENT)

        async def release(response: httpx2.Response) -> None:
            await response.aclose()

        async def attempt() -> httpx2.Response:
            return await self._inner.handle_async_request(request)

        policy = replace(self._policy, operation=f"tastytrade {_describe(request)}")
        return await policy.acall(
            attempt,
            retry_on=transient,
            retry_result=lambda response: repeatable and response.status_code >= 500,
            on_retry_result=release,
            sleep=self._sleep,
            reraise=True,
        )

    async def __aenter__(self) -> RetryingTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        """Leaving a client that uses this shared transport does not close it."""

    async def aclose(self) -> None:
        """Closing a client does not close the shared transport; see :meth:`close_inner`."""

    async def close_inner(self) -> None:
        await self._inner.aclose()

"""HTTP transport for the Tastytrade SDK: a small, bounded retry policy at the wire.

The SDK (13.x) does not retry; it hands ``client_kwargs`` to its ``httpx2.AsyncClient``
(and to the client its DXLink streamer opens), so a transport given there wraps every
request it makes.  Policy:

- connection failures (nothing reached the server) are retried for every request;
- 5xx responses and read/protocol errors are retried only where repeating the request
  cannot do harm: GET/HEAD/OPTIONS/DELETE, the OAuth token refresh and order dry runs.
  A live order POST is never repeated (its outcome would be unknown);
- at most ``max_attempts`` tries, exponential backoff from ``backoff_initial`` capped
  at ``backoff_max``.

The transport is shared by the session's client and the streamer's client, so entering
or leaving either client must not close it: the adapter closes it in ``close()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import httpx2

logger = logging.getLogger(__name__)

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_initial: float = 0.25
    backoff_max: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("RetryPolicy backoff must be >= 0")

    def delay(self, attempt: int) -> float:
        """Pause after failed try number ``attempt`` (1-based)."""
        return float(min(self.backoff_initial * 2.0 ** (attempt - 1), self.backoff_max))


def _safe_to_repeat(request: httpx2.Request) -> bool:
    if request.method in _IDEMPOTENT:
        return True
    path = request.url.path
    return request.method == "POST" and (path == "/oauth/token" or path.endswith("/dry-run"))


def _describe(request: httpx2.Request) -> str:
    # method and path only: never the query, headers or body
    return f"{request.method} {request.url.path}"


class RetryingTransport(httpx2.AsyncBaseTransport):
    """Retries transient failures of ``inner`` per :class:`RetryPolicy`."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport,
        policy: RetryPolicy,
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
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self._policy.max_attempts
            try:
                response = await self._inner.handle_async_request(request)
            except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
                if last:
                    raise
                reason = type(exc).__name__
            except (httpx2.ReadError, httpx2.ReadTimeout, httpx2.RemoteProtocolError,
                    httpx2.WriteError) as exc:
                if last or not repeatable:
                    raise
                reason = type(exc).__name__
            else:
                if response.status_code < 500 or last or not repeatable:
                    return response
                reason = f"HTTP {response.status_code}"
                await response.aclose()
            delay = self._policy.delay(attempt)
            logger.warning(
                "tastytrade: %s failed (%s), retry %d/%d in %.2fs",
                _describe(request), reason, attempt, self._policy.max_attempts - 1, delay,
            )
            await self._sleep(delay)

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

"""The connection of an IBKR adapter to IB Gateway / TWS: client id, reconnect, requests.

:class:`IbkrSession` owns the ``ib_async.IB`` and everything about the connection; the
adapter's other parts (:mod:`~portfolio_pipeline.brokers.ibkr.contracts`,
:mod:`~portfolio_pipeline.brokers.ibkr.market_data`,
:mod:`~portfolio_pipeline.brokers.ibkr.accounts`,
:mod:`~portfolio_pipeline.brokers.ibkr.orders`) send their requests through it.

- ``ib.RaiseRequestErrors = True`` and every request runs under ``asyncio.wait_for`` with
  ``IbkrConnection.timeout_seconds`` (:meth:`IbkrSession.request`); a timeout or an API
  error becomes a :class:`BrokerError` naming the request.
- Outgoing messages pass a :class:`RateLimiter` (45/s, below IBKR's 50 msg/s limit).
- Client id in use (error 326) -> the next id is tried (market data only; with
  ``fallback_client_ids=False``, as for every order connection, a clear error names the
  id in use: an order belongs to the client id that placed it).
- A lost connection is re-established with exponential backoff, every market-data line
  (:attr:`IbkrSession.lines`) is requested again and the gap is logged as a warning and
  exposed as ``last_disconnect`` / ``gap_seconds``; errors 1100/1101/1102 (the Gateway
  lost / regained IB's servers) set ``upstream_lost`` and restore the lines when data
  was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar

from ib_async import IB, StartupFetch, Ticker
from ib_async import Contract as IbContract
from ib_async.wrapper import RequestError

from portfolio_pipeline.brokers.base import BrokerError
from portfolio_pipeline.brokers.ibkr.pacing import RateLimiter, Sleep
from portfolio_pipeline.clock import Clock
from portfolio_pipeline.domain.accounts import IbkrConnection
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.retry import BackoffPolicy, RetryGaveUpError

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "CLIENT_ID_IN_USE",
    "MARKET_DATA_TYPES",
    "IbkrSession",
    "Subscription",
]

MARKET_DATA_TYPES: Final = {"live": 1, "frozen": 2, "delayed": 3, "delayed_frozen": 4}
CLIENT_ID_IN_USE: Final = 326
_CONNECTIVITY_LOST: Final = 1100
_RESTORED_DATA_LOST: Final = 1101
_RESTORED_DATA_KEPT: Final = 1102

_USUAL_PORTS: Final = "Usual API ports: 4001 Gateway live, 4002 Gateway paper, 7496 TWS live, 7497 TWS paper."
_NOT_AN_API_PORT: Final = (
    "is it the API port (Configure > API > Settings, 'Enable ActiveX and Socket Clients')? " + _USUAL_PORTS
)


@dataclass(slots=True)
class Subscription:
    """One streaming market-data line, re-requested after every reconnect."""

    contract: Contract
    ib_contract: IbContract
    generic_ticks: str
    ticker: Ticker | None = None


class IbkrSession:
    """One API connection (one client id) to IB Gateway / TWS and its request helpers.

    ``ib_factory`` builds the ``ib_async.IB`` (tests inject one with a fake wire client);
    ``clock`` returns aware UTC datetimes; ``backoff`` and ``sleep`` pace reconnection.
    """

    def __init__(
        self,
        connection: IbkrConnection,
        *,
        ib_factory: Callable[[], IB],
        clock: Clock,
        limiter: RateLimiter,
        backoff: BackoffPolicy,
        sleep: Sleep,
        client_id_attempts: int,
        fallback_client_ids: bool,
    ) -> None:
        self.conn = connection
        self.clock = clock
        self.limiter = limiter
        self.timeout = float(connection.timeout_seconds)
        self._ib_factory = ib_factory
        self._backoff = backoff
        self._sleep = sleep
        self._client_id_attempts = max(1, client_id_attempts) if fallback_client_ids else 1
        self._fallback = fallback_client_ids

        self._ib: IB | None = None
        self._client_id = connection.client_id
        self._connected = asyncio.Event()
        self._packet = asyncio.Event()
        self._connecting = False
        self._closing = False
        self._client_id_in_use: asyncio.Future[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._gap_open = False

        self.lines: dict[str, Subscription] = {}
        """Streaming market-data lines by contract key (restored after every reconnect)."""
        self.last_disconnect: datetime | None = None
        """When the last connection loss was noticed (aware UTC), None if never."""
        self.gap_seconds: float | None = None
        """Length of the last market-data gap (disconnect -> resubscribed), None if none."""
        self.reconnect_count = 0
        self.upstream_lost = False
        """True between error 1100 (Gateway lost IB's servers) and 1101/1102 (restored)."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def client_id(self) -> int:
        """The client id of the current (or last) connection."""
        return self._client_id

    @property
    def is_connected(self) -> bool:
        return self._ib is not None and self._ib.isConnected() and self._connected.is_set()

    async def connect(self) -> None:
        """Connect (trying the next client id on error 326) and set the market data type."""
        if self.is_connected:
            return
        if self._reconnect_task is not None and not self._reconnect_task.done():
            await self.wait_connected()
            return
        self._closing = False
        if self._ib is None:
            ib = self._ib_factory()
            ib.RaiseRequestErrors = True
            ib.disconnectedEvent += self._on_disconnected
            ib.errorEvent += self._on_error
            ib.updateEvent += self._on_packet
            self._ib = ib
        await self._connect_with_client_ids()
        self.upstream_lost = False
        await self._after_connect(resubscribe=False)

    async def close(self) -> None:
        """Disconnect; cancels reconnection and forgets market-data subscriptions."""
        self._closing = True
        tasks = [t for t in (self._reconnect_task, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._reconnect_task = None
        self._background.clear()
        self._connected.clear()
        self.lines.clear()
        if self._ib is not None:
            self._ib.disconnect()
        logger.info("ibkr: closed connection to %s:%s", self.conn.host, self.conn.port)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (e.g. after a gateway restart); BrokerError on timeout."""
        limit = self.timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._connected.wait(), limit)
        except TimeoutError:
            raise BrokerError(
                f"ibkr: not connected to {self.conn.host}:{self.conn.port} after {limit:g}s"
                f" (last disconnect {self.last_disconnect})"
            ) from None

    async def _connect_with_client_ids(self) -> None:
        first = self._client_id
        for attempt in range(self._client_id_attempts):
            client_id = first + attempt
            if await self._connect_once(client_id):
                if client_id != self.conn.client_id:
                    logger.warning(
                        "ibkr: connected with client id %d (configured %d was in use)",
                        client_id,
                        self.conn.client_id,
                    )
                self._client_id = client_id
                return
            if not self._fallback:
                raise BrokerError(
                    f"ibkr: client id {client_id} is in use at {self.conn.host}:{self.conn.port} "
                    "(error 326: another API connection holds it, e.g. a running order command or TWS); "
                    "order operations never fall back to another client id: retry when it is free"
                )
            logger.warning("ibkr: client id %d is in use (error 326); trying %d", client_id, client_id + 1)
        raise BrokerError(
            f"ibkr: client ids {first}..{first + self._client_id_attempts - 1} are all in use "
            f"at {self.conn.host}:{self.conn.port}"
        )

    async def _connect_once(self, client_id: int) -> bool:
        """True when connected, False when the client id is in use; BrokerError otherwise."""
        ib = self.require_ib()
        loop = asyncio.get_running_loop()
        in_use: asyncio.Future[None] = loop.create_future()
        fetch = StartupFetch.POSITIONS
        if not self.conn.readonly:
            fetch |= StartupFetch.ORDERS_OPEN
        self._connecting = True
        self._client_id_in_use = in_use
        task = asyncio.ensure_future(
            ib.connectAsync(
                self.conn.host,
                self.conn.port,
                clientId=client_id,
                timeout=self.timeout,
                readonly=self.conn.readonly,
                fetchFields=fetch,
            )
        )
        try:
            done, _ = await asyncio.wait(
                {task, in_use}, timeout=self.timeout * 2, return_when=asyncio.FIRST_COMPLETED
            )
            if in_use in done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return False
            if task not in done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise BrokerError(
                    f"ibkr: connect to {self.conn.host}:{self.conn.port} (client id {client_id}) "
                    f"timed out after {self.timeout * 2:g}s; {_NOT_AN_API_PORT}"
                )
            self._connect_result(task, client_id)
            return True
        finally:
            self._connecting = False
            self._client_id_in_use = None

    def _connect_result(self, task: asyncio.Future[object], client_id: int) -> None:
        """Raise the connect attempt's failure as a BrokerError saying what to check."""
        try:
            task.result()
        except ConnectionRefusedError as exc:
            raise BrokerError(
                f"ibkr: nothing listens on {self.conn.host}:{self.conn.port} (connection refused): "
                f"is IB Gateway/TWS running with its API socket on that port? {_USUAL_PORTS}"
            ) from exc
        except TimeoutError as exc:
            raise BrokerError(
                f"ibkr: no API handshake from {self.conn.host}:{self.conn.port} (client id {client_id}) "
                f"within {self.timeout:g}s; {_NOT_AN_API_PORT}"
            ) from exc
        except (OSError, ConnectionError, RequestError) as exc:
            raise BrokerError(
                f"ibkr: connect to {self.conn.host}:{self.conn.port} (client id {client_id}) "
                f"failed: {exc!r}"
            ) from exc

    async def _after_connect(self, *, resubscribe: bool) -> None:
        ib = self.require_ib()
        code = MARKET_DATA_TYPES[self.conn.market_data_type]
        await self.limiter.acquire()
        ib.reqMarketDataType(code)
        restored = 0
        if resubscribe:
            restored = await self._resubscribe()
        self._connected.set()
        self._packet.set()
        logger.info(
            "ibkr: connected to %s:%s client id %d, market data type %s (%d)",
            self.conn.host,
            self.conn.port,
            self._client_id,
            self.conn.market_data_type,
            code,
        )
        if resubscribe:
            self._report_gap(f"reconnected, {restored} market-data subscription(s) restored")

    def _report_gap(self, what: str) -> None:
        if self.last_disconnect is None or not self._gap_open:
            return
        self._gap_open = False
        gap = max((self.clock() - self.last_disconnect).total_seconds(), 0.0)
        self.gap_seconds = gap
        logger.warning(
            "ibkr: market data gap of %.3fs (from %s): %s",
            gap,
            self.last_disconnect.isoformat(),
            what,
        )

    async def _resubscribe(self) -> int:
        ib = self.require_ib()
        for sub in self.lines.values():
            await self.limiter.acquire()
            sub.ticker = ib.reqMktData(sub.ib_contract, sub.generic_ticks)
        return len(self.lines)

    def _on_disconnected(self) -> None:
        if self._closing or self._connecting:
            return
        self._connected.clear()
        self._packet.set()
        self.last_disconnect = self.clock()
        self._gap_open = True
        for sub in self.lines.values():
            sub.ticker = None  # the SDK dropped its tickers; never serve stale values
        logger.warning(
            "ibkr: connection to %s:%s lost at %s; reconnecting with backoff (%d subscription(s) to restore)",
            self.conn.host,
            self.conn.port,
            self.last_disconnect.isoformat(),
            len(self.lines),
        )
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        async def reconnect() -> None:
            if self._closing:
                return
            await self._connect_with_client_ids()
            self.upstream_lost = False
            await self._after_connect(resubscribe=True)
            self.reconnect_count += 1

        try:
            await self._backoff.acall(reconnect, retry_on=BrokerError, sleep=self._sleep, wait_first=True)
        except RetryGaveUpError as exc:
            logger.error("ibkr: gave up reconnecting to %s:%s: %s", self.conn.host, self.conn.port, exc)

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        if code == CLIENT_ID_IN_USE and self._client_id_in_use is not None:
            if not self._client_id_in_use.done():
                self._client_id_in_use.set_result(None)
        elif code == _CONNECTIVITY_LOST:
            self.upstream_lost = True
            if not self._gap_open:
                self.last_disconnect = self.clock()
                self._gap_open = True
            logger.warning("ibkr: gateway lost connectivity to IBKR servers: %s", message)
        elif code in (_RESTORED_DATA_LOST, _RESTORED_DATA_KEPT):
            self.upstream_lost = False
            if code == _RESTORED_DATA_LOST and self.lines:
                task = asyncio.get_running_loop().create_task(self._resubscribe_after_1101())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                self._report_gap(f"gateway connectivity restored ({code})")

    async def _resubscribe_after_1101(self) -> None:
        restored = await self._resubscribe()
        self._report_gap(f"connectivity restored with data lost (1101); {restored} subscription(s) restored")

    def _on_packet(self) -> None:
        self._packet.set()

    # ------------------------------------------------------------------ request helpers

    def require_ib(self) -> IB:
        """The ``IB`` of this session; BrokerError before :meth:`connect`."""
        if self._ib is None:
            raise BrokerError("ibkr: not connected; call connect() first")
        return self._ib

    @property
    def ib_if_connected(self) -> IB | None:
        """The ``IB`` when its socket is connected, else None (to cancel without waiting)."""
        ib = self._ib
        return ib if ib is not None and ib.isConnected() else None

    async def ready_ib(self) -> IB:
        """The connected ``IB``, waiting for a reconnection in progress."""
        if self.is_connected:
            return self.require_ib()
        if self._reconnect_task is not None and not self._reconnect_task.done():
            await self.wait_connected()
            return self.require_ib()
        raise BrokerError(f"ibkr: not connected to {self.conn.host}:{self.conn.port}; call connect() first")

    async def request(
        self, what: str, call: Callable[[], Awaitable[T]], *, messages: int = 1
    ) -> T:
        """Run one SDK request under the rate limiter and the connection timeout."""
        await self.ready_ib()
        await self.limiter.acquire(messages)
        try:
            return await asyncio.wait_for(call(), self.timeout)
        except TimeoutError:
            raise BrokerError(f"ibkr: {what} timed out after {self.timeout:g}s") from None
        except RequestError as exc:
            raise BrokerError(f"ibkr: {what} failed: IBKR error {exc.code}: {exc.message}") from exc
        except ConnectionError as exc:
            raise BrokerError(f"ibkr: {what} failed: connection lost ({exc})") from exc

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (packet by packet) until ``predicate()`` holds; False when ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._packet.clear()
            try:
                await asyncio.wait_for(self._packet.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True

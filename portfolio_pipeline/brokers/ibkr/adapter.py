"""Interactive Brokers adapter over ib_async (async API only).

Safety and robustness contracts implemented here:

- ``ib.RaiseRequestErrors = True`` and every request runs under ``asyncio.wait_for`` with
  ``IbkrConnection.timeout_seconds``; a timeout or an API error becomes a
  :class:`BrokerError` naming the request (error 200 names the contract).
- Outgoing messages pass a :class:`RateLimiter` (45/s, below IBKR's 50 msg/s limit).
- Connection: client id in use (error 326) -> the next id is tried (market data only;
  with ``fallback_client_ids=False``, as for every order connection, a clear error names
  the id in use: an order belongs to the client id that placed it); a lost connection is
  re-established with exponential backoff, every market-data subscription is requested
  again and the gap is logged as a warning and exposed as ``last_disconnect`` /
  ``gap_seconds``.
- Orders: ``what_if`` never transmits; ``stage`` places with ``transmit=False``;
  ``transmit`` calls :func:`require_confirmed` first, finds the very staged order among
  this client id's open orders (same clientId/orderId/orderRef, same permId once known)
  and re-places it with ``transmit=True``; a staged order the Gateway no longer has is
  :class:`StaleOrderError`, never re-placed from local terms.  ``cancel`` waits for the
  Gateway's confirmation and fails on error 10147 (not this client's order).  Broker
  warnings are returned, never answered.
- Cash flows are not available from the live API: :meth:`IbkrBroker.cash_flows` returns
  ``[]``; the Flex-report importer covers deposits, dividends, interest and fees.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Final, TypeVar

from ib_async import IB, ComboLeg, ExecutionFilter, StartupFetch, Ticker
from ib_async import Contract as IbContract
from ib_async import Order as IbOrder
from ib_async import OrderStatus as IbOrderStatus
from ib_async import Trade as IbTrade
from ib_async.wrapper import RequestError

from portfolio_pipeline.brokers.base import (
    BrokerDataError,
    BrokerError,
    BrokerOrderState,
    ConnectionLifecycle,
    OptionChain,
    SentUnknownError,
    StagedOrder,
    StaleOrderError,
)
from portfolio_pipeline.brokers.history.errors import ImportFormatError
from portfolio_pipeline.brokers.history.ibkr_flex import parse_ibkr_flex
from portfolio_pipeline.brokers.history.model import ImportBatch
from portfolio_pipeline.brokers.ibkr.flex_web import FlexWebConfig, fetch_flex_statement
from portfolio_pipeline.brokers.ibkr.pacing import RateLimiter, Sleep
from portfolio_pipeline.brokers.ibkr.parsing import (
    BROKER,
    UNSET_DOUBLE,
    account_values,
    avg_price_from_avg_cost,
    clean_price,
    contract_source,
    describe,
    execution_from_fill,
    ib_contract_for,
    normalise_contract,
    parse_ib_date,
    sanitise,
    whatif_result,
)
from portfolio_pipeline.clock import Clock, system_clock
from portfolio_pipeline.domain.accounts import AccountConfig, IbkrConnection
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable, SecType
from portfolio_pipeline.domain.orders import (
    Order,
    OrderStatus,
    WhatIfResult,
    check_transition,
    require_confirmed,
)
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline.retry import IBKR_RECONNECT, BackoffPolicy, RetryGaveUpError

logger = logging.getLogger(__name__)

T = TypeVar("T")

MARKET_DATA_TYPES: Final = {"live": 1, "frozen": 2, "delayed": 3, "delayed_frozen": 4}
#: Generic ticks requested for options (106 = implied volatility); model Greeks
#: (tick 13/83) arrive with every option subscription.
OPTION_GENERIC_TICKS: Final = "106"
CLIENT_ID_IN_USE: Final = 326
ORDER_NOT_FOUND_FOR_CANCEL: Final = 10147
NO_SECURITY_DEFINITION: Final = 200
_CONNECTIVITY_LOST: Final = 1100
_RESTORED_DATA_LOST: Final = 1101
_RESTORED_DATA_KEPT: Final = 1102
_REJECTED_STATES: Final = frozenset({IbOrderStatus.Cancelled, IbOrderStatus.ApiCancelled})
#: Open-order states that do not prove an order was transmitted (see ``order_state``).
_NOT_YET_WORKING: Final = frozenset(
    {IbOrderStatus.PreSubmitted, IbOrderStatus.PendingSubmit, IbOrderStatus.ApiPending}
)
_ACKED_STATES: Final = frozenset(
    {
        IbOrderStatus.PreSubmitted,
        IbOrderStatus.Submitted,
        IbOrderStatus.Filled,
        IbOrderStatus.Inactive,
        *_REJECTED_STATES,
    }
)


_USUAL_PORTS: Final = "Usual API ports: 4001 Gateway live, 4002 Gateway paper, 7496 TWS live, 7497 TWS paper."
_NOT_AN_API_PORT: Final = (
    "is it the API port (Configure > API > Settings, 'Enable ActiveX and Socket Clients')? " + _USUAL_PORTS
)


@dataclass(slots=True)
class _Subscription:
    """One streaming market-data line, re-requested after every reconnect."""

    contract: Contract
    ib_contract: IbContract
    generic_ticks: str
    ticker: Ticker | None = None


def _default_ib() -> IB:
    return IB()


class IbkrBroker(ConnectionLifecycle):
    """:class:`~portfolio_pipeline.brokers.base.BrokerAdapter` for IB Gateway / TWS.

    ``connection`` is the account's ``IbkrConnection`` (or a whole ``AccountConfig`` of
    broker ``ibkr``); ``accounts`` give each account's base currency and model code
    (default USD, no model).  ``ib_factory`` builds the ``ib_async.IB`` (tests inject one
    with a fake wire client); ``clock`` returns aware UTC datetimes.
    """

    name = BROKER

    def __init__(
        self,
        connection: IbkrConnection | AccountConfig,
        instruments: InstrumentTable,
        *,
        accounts: Sequence[AccountConfig] = (),
        ib_factory: Callable[[], IB] | None = None,
        clock: Clock = system_clock,
        limiter: RateLimiter | None = None,
        backoff: BackoffPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        client_id_attempts: int = 10,
        pnl_wait_seconds: float = 1.0,
        stage_settle_seconds: float = 0.25,
        flex: FlexWebConfig | None = None,
        fallback_client_ids: bool = True,
    ) -> None:
        self._flex = flex
        self._flex_batch: ImportBatch | None = None
        account_list = list(accounts)
        if isinstance(connection, AccountConfig):
            account_list.insert(0, connection)
            connection = connection.ibkr or IbkrConnection()
        self._conn = connection
        self._accounts = {a.account_id: a for a in account_list if a.broker == BROKER}
        self._instruments = instruments
        self._ib_factory = ib_factory or _default_ib
        self._clock = clock
        self._limiter = limiter or RateLimiter()
        self._backoff = backoff or IBKR_RECONNECT
        self._sleep = sleep
        self._client_id_attempts = max(1, client_id_attempts) if fallback_client_ids else 1
        self._fallback = fallback_client_ids
        self._pnl_wait = pnl_wait_seconds
        self._stage_settle = stage_settle_seconds
        self._timeout = float(connection.timeout_seconds)

        self._ib: IB | None = None
        self._client_id = connection.client_id
        self._connected = asyncio.Event()
        self._packet = asyncio.Event()
        self._connecting = False
        self._closing = False
        self._client_id_in_use: asyncio.Future[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._subs: dict[str, _Subscription] = {}
        self._qualified: dict[str, IbContract] = {}
        self._broker_class: dict[str, str] = {}  # key -> IBKR's class when the table's differs
        self._underlying_expiry: dict[int, date] = {}
        self._account_lock = asyncio.Lock()
        self._sentinel_warned: set[tuple[str, str]] = set()  # sentinel warnings: once per episode
        self._gap_open = False

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
        self._subs.clear()
        if self._ib is not None:
            self._ib.disconnect()
        logger.info("ibkr: closed connection to %s:%s", self._conn.host, self._conn.port)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (e.g. after a gateway restart); BrokerError on timeout."""
        limit = self._timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._connected.wait(), limit)
        except TimeoutError:
            raise BrokerError(
                f"ibkr: not connected to {self._conn.host}:{self._conn.port} after {limit:g}s"
                f" (last disconnect {self.last_disconnect})"
            ) from None

    async def _connect_with_client_ids(self) -> None:
        first = self._client_id
        for attempt in range(self._client_id_attempts):
            client_id = first + attempt
            if await self._connect_once(client_id):
                if client_id != self._conn.client_id:
                    logger.warning(
                        "ibkr: connected with client id %d (configured %d was in use)",
                        client_id,
                        self._conn.client_id,
                    )
                self._client_id = client_id
                return
            if not self._fallback:
                raise BrokerError(
                    f"ibkr: client id {client_id} is in use at {self._conn.host}:{self._conn.port} "
                    "(error 326: another API connection holds it, e.g. a running order command or TWS); "
                    "order operations never fall back to another client id: retry when it is free"
                )
            logger.warning("ibkr: client id %d is in use (error 326); trying %d", client_id, client_id + 1)
        raise BrokerError(
            f"ibkr: client ids {first}..{first + self._client_id_attempts - 1} are all in use "
            f"at {self._conn.host}:{self._conn.port}"
        )

    async def _connect_once(self, client_id: int) -> bool:
        """True when connected, False when the client id is in use; BrokerError otherwise."""
        ib = self._require_ib()
        loop = asyncio.get_running_loop()
        in_use: asyncio.Future[None] = loop.create_future()
        fetch = StartupFetch.POSITIONS
        if not self._conn.readonly:
            fetch |= StartupFetch.ORDERS_OPEN
        self._connecting = True
        self._client_id_in_use = in_use
        task = asyncio.ensure_future(
            ib.connectAsync(
                self._conn.host,
                self._conn.port,
                clientId=client_id,
                timeout=self._timeout,
                readonly=self._conn.readonly,
                fetchFields=fetch,
            )
        )
        try:
            done, _ = await asyncio.wait(
                {task, in_use}, timeout=self._timeout * 2, return_when=asyncio.FIRST_COMPLETED
            )
            if in_use in done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return False
            if task not in done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise BrokerError(
                    f"ibkr: connect to {self._conn.host}:{self._conn.port} (client id {client_id}) "
                    f"timed out after {self._timeout * 2:g}s; {_NOT_AN_API_PORT}"
                )
            try:
                task.result()
            except ConnectionRefusedError as exc:
                raise BrokerError(
                    f"ibkr: nothing listens on {self._conn.host}:{self._conn.port} (connection refused): "
                    f"is IB Gateway/TWS running with its API socket on that port? {_USUAL_PORTS}"
                ) from exc
            except TimeoutError as exc:
                raise BrokerError(
                    f"ibkr: no API handshake from {self._conn.host}:{self._conn.port} (client id {client_id}) "
                    f"within {self._timeout:g}s; {_NOT_AN_API_PORT}"
                ) from exc
            except (OSError, ConnectionError, RequestError) as exc:
                raise BrokerError(
                    f"ibkr: connect to {self._conn.host}:{self._conn.port} (client id {client_id}) "
                    f"failed: {exc!r}"
                ) from exc
            return True
        finally:
            self._connecting = False
            self._client_id_in_use = None

    async def _after_connect(self, *, resubscribe: bool) -> None:
        ib = self._require_ib()
        code = MARKET_DATA_TYPES[self._conn.market_data_type]
        await self._limiter.acquire()
        ib.reqMarketDataType(code)
        restored = 0
        if resubscribe:
            restored = await self._resubscribe()
        self._connected.set()
        self._packet.set()
        logger.info(
            "ibkr: connected to %s:%s client id %d, market data type %s (%d)",
            self._conn.host,
            self._conn.port,
            self._client_id,
            self._conn.market_data_type,
            code,
        )
        if resubscribe:
            self._report_gap(f"reconnected, {restored} market-data subscription(s) restored")

    def _report_gap(self, what: str) -> None:
        if self.last_disconnect is None or not self._gap_open:
            return
        self._gap_open = False
        gap = max((self._clock() - self.last_disconnect).total_seconds(), 0.0)
        self.gap_seconds = gap
        logger.warning(
            "ibkr: market data gap of %.3fs (from %s): %s",
            gap,
            self.last_disconnect.isoformat(),
            what,
        )

    async def _resubscribe(self) -> int:
        ib = self._require_ib()
        for sub in self._subs.values():
            await self._limiter.acquire()
            sub.ticker = ib.reqMktData(sub.ib_contract, sub.generic_ticks)
        return len(self._subs)

    def _on_disconnected(self) -> None:
        if self._closing or self._connecting:
            return
        self._connected.clear()
        self._packet.set()
        self.last_disconnect = self._clock()
        self._gap_open = True
        for sub in self._subs.values():
            sub.ticker = None  # the SDK dropped its tickers; never serve stale values
        logger.warning(
            "ibkr: connection to %s:%s lost at %s; reconnecting with backoff (%d subscription(s) to restore)",
            self._conn.host,
            self._conn.port,
            self.last_disconnect.isoformat(),
            len(self._subs),
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
            logger.error("ibkr: gave up reconnecting to %s:%s: %s", self._conn.host, self._conn.port, exc)

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        if code == CLIENT_ID_IN_USE and self._client_id_in_use is not None:
            if not self._client_id_in_use.done():
                self._client_id_in_use.set_result(None)
        elif code == _CONNECTIVITY_LOST:
            self.upstream_lost = True
            if not self._gap_open:
                self.last_disconnect = self._clock()
                self._gap_open = True
            logger.warning("ibkr: gateway lost connectivity to IBKR servers: %s", message)
        elif code in (_RESTORED_DATA_LOST, _RESTORED_DATA_KEPT):
            self.upstream_lost = False
            if code == _RESTORED_DATA_LOST and self._subs:
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

    def _require_ib(self) -> IB:
        if self._ib is None:
            raise BrokerError("ibkr: not connected; call connect() first")
        return self._ib

    async def _ready_ib(self) -> IB:
        if self.is_connected:
            return self._require_ib()
        if self._reconnect_task is not None and not self._reconnect_task.done():
            await self.wait_connected()
            return self._require_ib()
        raise BrokerError(f"ibkr: not connected to {self._conn.host}:{self._conn.port}; call connect() first")

    async def _request(
        self, what: str, call: Callable[[], Awaitable[T]], *, messages: int = 1
    ) -> T:
        """Run one SDK request under the rate limiter and the connection timeout."""
        await self._ready_ib()
        await self._limiter.acquire(messages)
        try:
            return await asyncio.wait_for(call(), self._timeout)
        except TimeoutError:
            raise BrokerError(f"ibkr: {what} timed out after {self._timeout:g}s") from None
        except RequestError as exc:
            raise BrokerError(f"ibkr: {what} failed: IBKR error {exc.code}: {exc.message}") from exc
        except ConnectionError as exc:
            raise BrokerError(f"ibkr: {what} failed: connection lost ({exc})") from exc

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
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

    async def _contract_details(self, ib_contract: IbContract, what: str) -> list[Any]:
        ib = await self._ready_ib()
        details: list[Any] = await self._request(what, lambda: ib.reqContractDetailsAsync(ib_contract))
        return details

    async def _qualify(self, contract: Contract) -> IbContract:
        """The qualified IBKR contract (conId filled) for a domain contract, cached."""
        key = contract.key
        cached = self._qualified.get(key)
        if cached is not None:
            return cached
        ib = await self._ready_ib()
        request = ib_contract_for(contract, self._instruments)
        if key in self._broker_class:  # e.g. a held ES weekly: table EW, IBKR EW2
            request.tradingClass = self._broker_class[key]
        what = f"qualify {key} ({describe(request)})"
        try:
            result = await self._request(what, lambda: ib.qualifyContractsAsync(request))
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, RequestError) and cause.code == NO_SECURITY_DEFINITION:
                raise BrokerError(
                    f"ibkr: no security definition for {key} ({describe(request)}): "
                    f"IBKR error 200: {cause.message}"
                ) from exc
            raise
        qualified = result[0] if result else None
        if not isinstance(qualified, IbContract) or not qualified.conId:
            raise BrokerError(
                f"ibkr: no unique security definition for {key} ({describe(request)}): "
                "unknown or ambiguous contract"
            )
        # the broker's multiplier of the qualified contract is checked against the table
        normalise_contract(qualified, self._instruments, account="-")
        self._qualified[key] = qualified
        return qualified

    async def _qualify_all(self, contracts: Iterable[Contract]) -> list[IbContract]:
        return list(await asyncio.gather(*(self._qualify(c) for c in contracts)))

    # ------------------------------------------------------------------ accounts

    async def account_ids(self) -> list[str]:
        ib = await self._ready_ib()
        return list(ib.managedAccounts())

    def _account(self, account_id: str) -> tuple[str, str | None]:
        cfg = self._accounts.get(account_id)
        if cfg is None:
            return "USD", None
        return cfg.base_currency, cfg.model_code

    async def account_snapshot(self, account_id: str) -> AccountSnapshot:
        """Summary tags in the base currency (and model code) plus DailyPnL via reqPnL."""
        ib = await self._ready_ib()
        self._check_managed(ib, account_id)
        currency, model_code = self._account(account_id)
        if model_code:
            await self._request(
                f"reqAccountUpdatesMulti({account_id}, {model_code})",
                lambda: ib.reqAccountUpdatesMultiAsync(account_id, model_code),
            )
            values: list[Any] = ib.accountValues(account_id)
        else:
            values = await self._request(
                f"accountSummary({account_id})", lambda: ib.accountSummaryAsync(account_id)
            )
        tags = account_values(values, account=account_id, currency=currency, model_code=model_code)
        daily = await self._daily_pnl(ib, account_id, model_code or "")
        return AccountSnapshot(
            broker=BROKER,
            account_id=account_id,
            as_of=self._clock(),
            nlv=tags["NetLiquidation"],
            cash=tags["TotalCashValue"],
            init_margin=tags["InitMarginReq"],
            maint_margin=tags["MaintMarginReq"],
            excess_liquidity=tags["ExcessLiquidity"],
            buying_power=tags["BuyingPower"],
            currency=currency,
            broker_daily_pnl=daily,
        )

    async def _daily_pnl(self, ib: IB, account_id: str, model_code: str) -> float | None:
        subscribed = ib.pnl(account_id, model_code)
        if subscribed:
            pnl = subscribed[0]
        else:
            await self._limiter.acquire()
            pnl = ib.reqPnL(account_id, model_code)

        def usable() -> bool:
            value = pnl.dailyPnL
            return value is not None and math.isfinite(value) and abs(value) < UNSET_DOUBLE

        if await self._wait_for(usable, min(self._pnl_wait, self._timeout)):
            return float(pnl.dailyPnL)
        logger.info("ibkr: no DailyPnL for %s from reqPnL; broker_daily_pnl=None", account_id)
        return None

    def _check_managed(self, ib: IB, account_id: str) -> None:
        """A clear error when the Gateway's login does not manage ``account_id``."""
        managed = list(ib.managedAccounts())
        if managed and account_id not in managed:
            raise BrokerError(
                f"ibkr: account {account_id!r} (accounts.yaml) is not managed by the login of the Gateway at "
                f"{self._conn.host}:{self._conn.port}; it manages: {', '.join(managed)}"
            )

    async def positions(self, account_id: str) -> list[Position]:
        """Signed positions from reqPositions, marks from the account's portfolio updates."""
        ib = await self._ready_ib()
        self._check_managed(ib, account_id)
        async with self._account_lock:
            raw = await self._request("reqPositions", ib.reqPositionsAsync)
            await self._request(
                f"reqAccountUpdates({account_id})", lambda: ib.reqAccountUpdatesAsync(account_id)
            )
            portfolio = {item.contract.conId: item for item in ib.portfolio(account_id)}
        as_of = self._clock()
        result: list[Position] = []
        for pos in raw:
            if pos.account != account_id or not pos.position:
                continue
            contract = pos.contract
            where = f"{account_id} {describe(contract)}"
            und_expiry = await self._fop_underlying_expiry(contract) if contract.secType == "FOP" else None
            norm = normalise_contract(
                contract, self._instruments, account=account_id, underlying_expiry=und_expiry
            )
            tc = (contract.tradingClass or "").upper()
            if norm.contract.is_option and tc and tc != norm.contract.trading_class:
                self._broker_class[norm.contract.key] = tc
            item = portfolio.get(contract.conId)
            mark = clean_price(item.marketPrice) if item is not None else None
            if mark is None:
                raise BrokerDataError(
                    f"ibkr: {where}: no market price in the portfolio update "
                    f"({item.marketPrice if item is not None else 'no portfolio item'!r})"
                )
            result.append(
                Position(
                    broker=BROKER,
                    account_id=account_id,
                    contract=norm.contract,
                    quantity=float(pos.position),
                    multiplier=norm.multiplier,
                    avg_price=avg_price_from_avg_cost(
                        pos.avgCost, contract.secType, norm.multiplier, where=where
                    ),
                    mark=mark,
                    as_of=as_of,
                    source=contract_source(account_id, contract),
                )
            )
        return result

    async def _fop_underlying_expiry(self, contract: IbContract) -> date | None:
        """Expiry of the future a futures option is written on (None: same as the option)."""
        cached = self._underlying_expiry.get(contract.conId)
        if cached is not None:
            return cached
        where = describe(contract)
        try:
            details = await self._contract_details(
                IbContract(conId=contract.conId, exchange=contract.exchange),
                f"contract details of {where}",
            )
            under_con_id = details[0].underConId if details else 0
            if not under_con_id:
                logger.info("ibkr: %s: no underlying conId; underlying expiry = option expiry", where)
                return None
            under = await self._contract_details(
                IbContract(conId=under_con_id), f"underlying future of {where}"
            )
        except BrokerError as exc:
            logger.warning("ibkr: %s: underlying future unknown (%s); using the option expiry", where, exc)
            return None
        if not under or under[0].contract is None:
            logger.warning("ibkr: %s: underlying conId %d not found; using the option expiry", where, under_con_id)
            return None
        fut = under[0].contract
        expiry = parse_ib_date(
            fut.lastTradeDateOrContractMonth or under[0].realExpirationDate,
            where=f"underlying of {where}",
        )
        self._underlying_expiry[contract.conId] = expiry
        return expiry

    # ------------------------------------------------------------------ market data

    async def subscribe(self, contracts: Sequence[Contract]) -> list[Contract]:
        """Start streaming market data (kept across reconnects until ``unsubscribe``)."""
        ib = await self._ready_ib()
        unique = list({c.key: c for c in contracts}.values())
        new = [c for c in unique if c.key not in self._subs]
        qualified = await self._qualify_all(new)
        for contract, ib_contract in zip(new, qualified, strict=True):
            ticks = OPTION_GENERIC_TICKS if contract.is_option else ""
            await self._limiter.acquire()
            ticker = ib.reqMktData(ib_contract, ticks)
            self._subs[contract.key] = _Subscription(contract, ib_contract, ticks, ticker)
        return unique

    async def unsubscribe(self, contracts: Sequence[Contract]) -> None:
        ib = self._ib
        for contract in contracts:
            sub = self._subs.pop(contract.key, None)
            if sub is not None and ib is not None and ib.isConnected():
                await self._limiter.acquire()
                ib.cancelMktData(sub.ib_contract)

    @property
    def subscriptions(self) -> list[Contract]:
        return [s.contract for s in self._subs.values()]

    @staticmethod
    def _ready(sub: _Subscription) -> bool:
        ticker = sub.ticker
        if ticker is None:
            return False
        has_book = not math.isnan(ticker.bid) and not math.isnan(ticker.ask)
        has_price = has_book or clean_price(ticker.last) is not None or clean_price(ticker.close) is not None
        if not has_price:
            return False
        return not sub.contract.is_option or ticker.modelGreeks is not None

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Quotes plus model Greeks (per share), waiting for late Greeks up to the timeout.

        Subscriptions stay open (streaming) and are restored after a reconnect.  A
        contract without any price within the timeout is an error; missing or sentinel
        Greeks become NaN with a logged warning.
        """
        unique = await self.subscribe(contracts)
        subs = [self._subs[c.key] for c in unique]
        await self._wait_for(lambda: all(self._ready(s) for s in subs), self._timeout)
        by_key = {s.contract.key: self._quote(s) for s in subs}
        return [by_key[c.key] for c in contracts]

    def _quote(self, sub: _Subscription) -> Quote:
        where = f"{sub.contract.key} [{describe(sub.ib_contract)}]"
        ticker = sub.ticker
        if ticker is None:
            raise BrokerError(f"ibkr: {where}: no market data (connection lost)")
        bid = clean_price(ticker.bid)
        ask = clean_price(ticker.ask)
        last = clean_price(ticker.last)
        fallback = last if last is not None else clean_price(ticker.close)
        if bid is not None and ask is not None:
            mark = (bid + ask) / 2
        elif ask is not None and sub.contract.is_option:
            bid, mark = 0.0, ask / 2  # no bid for the option: the bid is zero
        elif fallback is not None:
            bid = ask = mark = fallback
        else:
            raise BrokerError(
                f"ibkr: {where}: no price within {self._timeout:g}s "
                f"(market data type {self._conn.market_data_type})"
            )
        iv = delta = gamma = vega = theta = None
        underlying: float | None = None
        if sub.contract.is_option:
            greeks = ticker.modelGreeks
            if greeks is None:
                if (where, "modelGreeks") not in self._sentinel_warned:
                    self._sentinel_warned.add((where, "modelGreeks"))
                    logger.warning(
                        "ibkr: %s: model Greeks not received within %gs -> NaN", where, self._timeout
                    )
                iv = delta = gamma = vega = theta = underlying = math.nan
            else:
                self._sentinel_warned.discard((where, "modelGreeks"))
                seen = self._sentinel_warned
                iv = sanitise(greeks.impliedVol, "impliedVol", where, kind="price", warned=seen)
                delta = sanitise(greeks.delta, "delta", where, kind="greek", warned=seen)
                gamma = sanitise(greeks.gamma, "gamma", where, kind="greek", warned=seen)
                vega = sanitise(greeks.vega, "vega", where, kind="greek", warned=seen)
                theta = sanitise(greeks.theta, "theta", where, kind="greek", warned=seen)
                underlying = sanitise(greeks.undPrice, "undPrice", where, kind="price", warned=seen)
        return Quote(
            source=BROKER,
            contract=sub.contract,
            as_of=self._clock(),
            bid=bid,
            ask=ask,
            mark=mark,
            last=last,
            underlying_price=underlying,
            iv=iv,
            delta=delta,
            gamma=gamma,
            vega=vega,
            theta=theta,
        )

    async def option_chain(self, underlying: str, trading_class: str | None = None) -> OptionChain:
        """Expiries/strikes of one trading class (futures options: on the front future)."""
        root = underlying.upper()
        spec = self._instruments.spec(root)
        if spec.options is None:
            raise UnknownInstrumentError(f"ibkr: {root} has no options section in the instrument table")
        tc = self._instruments.trading_class(root, trading_class).name.upper()
        ib = await self._ready_ib()
        option_sec: SecType
        sec: SecType
        if spec.underlying_type == "future":
            und = await self._front_future(root)
            fut_fop_exchange, option_sec = (spec.future.exchange if spec.future else ""), "FOP"
        else:
            sec = "IND" if spec.underlying_type in ("index", "volatility_index") else "STK"
            und = await self._qualify(Contract(underlying=root, sec_type=sec, currency=spec.currency))
            fut_fop_exchange, option_sec = "", "OPT"
        chains: list[Any] = await self._request(
            f"reqSecDefOptParams({root})",
            lambda: ib.reqSecDefOptParamsAsync(und.symbol, fut_fop_exchange, und.secType, und.conId),
        )
        matching = [c for c in chains if (c.tradingClass or "").upper() == tc]
        if not matching:
            listed = sorted({c.tradingClass for c in chains})
            raise BrokerDataError(f"ibkr: no option chain for {root} trading class {tc}; IBKR lists {listed}")
        preferred = "SMART" if option_sec == "OPT" else fut_fop_exchange
        chain = next((c for c in matching if c.exchange == preferred), matching[0])
        where = f"{root} {tc} chain on {chain.exchange}"
        multiplier = self._instruments.checked_multiplier(
            root,
            option_sec,
            float(chain.multiplier) if chain.multiplier else None,
            trading_class=tc,
            source=f"{BROKER}:-:{where}",
        )
        expiries = sorted({parse_ib_date(e, where=where, field="expiration") for e in chain.expirations})
        strikes = sorted({float(s) for s in chain.strikes})
        return OptionChain(root, tc, multiplier, tuple(expiries), tuple(strikes), exchange=chain.exchange)

    async def _front_future(self, root: str) -> IbContract:
        spec = self._instruments.spec(root)
        if spec.future is None:
            raise UnknownInstrumentError(f"ibkr: {root} has no future section in the instrument table")
        request = IbContract(secType="FUT", symbol=root, exchange=spec.future.exchange, currency=spec.currency)
        details = await self._contract_details(request, f"futures of {root}")
        today = self._clock().date()
        dated: list[tuple[date, IbContract]] = []
        for d in details:
            c: IbContract | None = d.contract
            if c is None or c.secType != "FUT":
                continue
            expiry = parse_ib_date(c.lastTradeDateOrContractMonth, where=describe(c))
            if expiry >= today:
                dated.append((expiry, c))
        if not dated:
            raise BrokerDataError(f"ibkr: no unexpired {root} future listed on {spec.future.exchange}")
        return min(dated, key=lambda pair: pair[0])[1]

    # ------------------------------------------------------------------ activity

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        """Executions since ``since`` (00:00 UTC) with commissions from the commission reports."""
        ib = await self._ready_ib()
        flt = ExecutionFilter(acctCode=account_id, time=f"{since:%Y%m%d}-00:00:00")
        fills: list[Any] = await self._request(
            f"reqExecutions({account_id} since {since})", lambda: ib.reqExecutionsAsync(flt)
        )
        fills = [f for f in fills if f.execution.acctNumber == account_id and f.contract.secType != "BAG"]

        def reported() -> bool:
            return all(f.commissionReport.execId for f in fills)

        if not await self._wait_for(reported, self._timeout):
            missing = [f.execution.execId for f in fills if not f.commissionReport.execId]
            raise BrokerError(
                f"ibkr: reqExecutions({account_id}): no commission report for {', '.join(missing)} "
                f"within {self._timeout:g}s"
            )
        result: list[Execution] = []
        for fill in fills:
            contract = fill.contract
            und_expiry = await self._fop_underlying_expiry(contract) if contract.secType == "FOP" else None
            norm = normalise_contract(
                contract, self._instruments, account=account_id, underlying_expiry=und_expiry
            )
            result.append(execution_from_fill(fill, norm, account=account_id))
        return sorted(result, key=lambda e: (e.ts, e.exec_id))

    async def cash_flows(self, account_id: str, since: date) -> list[CashFlow]:
        """Deposits, withdrawals, dividends, interest and fees from the Flex Web Service.

        The live API has no cash-flow history: with ``IBKR_FLEX_TOKEN`` and
        ``IBKR_FLEX_QUERY_ID`` set (:class:`~portfolio_pipeline.brokers.ibkr.flex_web.
        FlexWebConfig`) the Flex statement is fetched once per adapter and its cash
        transactions of ``account_id`` dated ``since`` or later are returned; without
        them, ``[]`` and a warning (``portfolio import ibkr-flex`` files still reach
        every asset through the merged activity reader)."""
        if self._flex is None:
            logger.warning(
                "ibkr: cash flows of %s since %s need the Flex Web Service (set IBKR_FLEX_TOKEN "
                "and IBKR_FLEX_QUERY_ID) or an imported Flex file",
                account_id,
                since,
            )
            return []
        if self._flex_batch is None:
            content = await fetch_flex_statement(self._flex)
            try:
                self._flex_batch = parse_ibkr_flex(content, self._instruments,
                                                   source_name="ibkr-flex-web-service")
            except ImportFormatError as exc:
                raise BrokerError(f"ibkr flex web service: {exc}") from exc
        flows = [f for f in self._flex_batch.cash_flows
                 if f.account_id == account_id and f.ts.date() >= since]
        return sorted(flows, key=lambda f: (f.ts, f.flow_id))

    # ------------------------------------------------------------------ orders

    async def _build_order(self, order: Order) -> tuple[IbContract, IbOrder]:
        legs = order.legs
        qualified = await self._qualify_all(leg.contract for leg in legs)
        if len(legs) == 1:
            leg = legs[0]
            contract = qualified[0]
            action, quantity = leg.action, order.quantity * leg.ratio
        else:
            roots = {leg.contract.underlying for leg in legs}
            if len(roots) != 1:
                raise BrokerError(
                    f"ibkr: order {order.order_id}: combo legs must share one underlying, got {sorted(roots)}"
                )
            root = roots.pop()
            exchange = "SMART"
            if any(leg.contract.sec_type in ("FOP", "FUT") for leg in legs):
                spec = self._instruments.spec(root)
                exchange = spec.future.exchange if spec.future else "SMART"
            contract = IbContract(
                secType="BAG",
                symbol=root,
                exchange=exchange,
                currency=legs[0].contract.currency,
                comboLegs=[
                    ComboLeg(conId=q.conId, ratio=leg.ratio, action=leg.action, exchange=exchange)
                    for leg, q in zip(legs, qualified, strict=True)
                ],
            )
            action, quantity = "BUY", order.quantity
        ib_order = IbOrder(
            orderType="LMT",
            action=action,
            totalQuantity=float(quantity),
            lmtPrice=order.limit_price,
            tif=order.time_in_force,
            account=order.account_id,
            orderRef=order.order_id,
            transmit=False,
        )
        return contract, ib_order

    async def what_if(self, order: Order) -> WhatIfResult:
        """Margin/commission impact and every broker warning (``warningText``, API warnings)."""
        ib = await self._ready_ib()
        contract, ib_order = await self._build_order(order)
        probe = copy.copy(contract)  # identity marks this request's messages
        messages: list[str] = []

        def collect(req_id: int, code: int, message: str, about: object) -> None:
            if about is probe:
                messages.append(f"IBKR {code}: {message}")

        ib.errorEvent += collect
        try:
            state = await self._request(
                f"whatIfOrder {order.order_id}", lambda: ib.whatIfOrderAsync(probe, ib_order)
            )
        finally:
            ib.errorEvent -= collect
        return whatif_result(state, where=f"order {order.order_id}", extra_warnings=messages)

    @staticmethod
    def _trade_messages(trade: IbTrade) -> list[str]:
        return [
            f"IBKR {entry.errorCode}: {entry.message}" if entry.errorCode else entry.message
            for entry in trade.log
            if entry.message and entry.message != "Modify"
        ]

    async def stage(self, order: Order) -> StagedOrder:
        """WhatIf (unless the order has one), then ``placeOrder`` with ``transmit=False``."""
        check_transition(order.status, OrderStatus.STAGED, order_id=order.order_id)
        whatif = order.whatif or await self.what_if(order)
        ib = await self._ready_ib()
        contract, ib_order = await self._build_order(order)
        ib_order.transmit = False
        await self._limiter.acquire()
        trade = ib.placeOrder(contract, ib_order)
        await self._wait_for(lambda: trade.orderStatus.status in _REJECTED_STATES, self._stage_settle)
        messages = self._trade_messages(trade)
        if trade.orderStatus.status in _REJECTED_STATES:
            raise BrokerError(
                f"ibkr: staging order {order.order_id} was rejected: {'; '.join(messages) or 'no reason given'}"
            )
        broker_id = str(trade.order.orderId)
        logger.info(
            "ibkr: staged order %s as IBKR order %s (transmit=False)", order.order_id, broker_id
        )
        warnings = tuple(dict.fromkeys((*whatif.warnings, *messages)))
        return StagedOrder(
            order_id=order.order_id,
            broker_order_id=broker_id,
            whatif=replace(whatif, warnings=warnings),
            staged_at=self._clock(),
            client_id=self._client_id,
            perm_id=trade.order.permId or None,
        )

    def _check_owner(self, order: Order, what: str) -> None:
        owner = order.broker_client_id
        if owner is not None and owner != self._client_id:
            raise BrokerError(
                f"ibkr: order {order.order_id} (IBKR {order.broker_order_id}) belongs to client id {owner}; "
                f"this connection is client id {self._client_id}: {what} refused (IBKR lets only the owning "
                "client id change an order; another id would place a second order)"
            )

    async def _open_trade(self, order: Order) -> IbTrade | None:
        """The order among this client id's open orders at the Gateway, or None if it is gone."""
        ib = await self._ready_ib()
        if order.broker_order_id is None:
            raise BrokerError(f"ibkr: order {order.order_id} has no IBKR order id; stage it first")
        trades: list[IbTrade] = await self._request(
            f"reqOpenOrders (client id {self._client_id})", ib.reqOpenOrdersAsync
        )
        wanted = int(order.broker_order_id)
        for trade in trades:
            o = trade.order
            if o.orderId != wanted or o.clientId != self._client_id or trade.isDone():
                continue
            if o.orderRef != order.order_id:
                raise BrokerError(
                    f"ibkr: IBKR order {wanted} of client id {self._client_id} is {o.orderRef!r}, "
                    f"not order {order.order_id}; refusing to touch it"
                )
            if order.broker_perm_id is not None and o.permId and o.permId != order.broker_perm_id:
                return None  # same ids, a different order (the Gateway restarted and reused them)
            return trade
        return None

    async def transmit(self, order: Order) -> str:
        """Send the very staged order: found at the Gateway, re-placed with transmit=True.

        Raises :class:`StaleOrderError` when the Gateway no longer has it (never re-placed
        from local terms) and :class:`SentUnknownError` when it was sent but not acknowledged.
        """
        require_confirmed(order)
        self._check_owner(order, "transmit")
        ib = await self._ready_ib()
        found = await self._open_trade(order)
        if found is None:
            raise StaleOrderError(
                f"ibkr: staged order {order.order_id} (client id {self._client_id}, IBKR order "
                f"{order.broker_order_id}) no longer exists at the Gateway (restart or cancelled in TWS); "
                "not transmitted: re-stage it with a fresh WhatIf"
            )
        contract, ib_order = found.contract, copy.copy(found.order)
        broker_id = str(ib_order.orderId)
        ib_order.transmit = True
        # The acknowledgement is the Gateway's answer to THIS placement (openOrder/orderStatus
        # for this order id after the send), not the status it reports: a transmitted order
        # held outside regular hours stays PreSubmitted, exactly like a staged one, and
        # openOrder does not carry the transmit flag.
        answered: list[str] = []

        def on_answer(t: IbTrade) -> None:
            if t.order.orderId == ib_order.orderId and t.order.clientId == self._client_id:
                answered.append(str(t.orderStatus.status))

        ib.openOrderEvent += on_answer
        ib.orderStatusEvent += on_answer
        try:
            await self._limiter.acquire()
            trade = ib.placeOrder(contract, ib_order)
            logger.warning(
                "ibkr: transmitted confirmed order %s (client id %d, IBKR order %s, permId %s)",
                order.order_id, self._client_id, broker_id, ib_order.permId,
            )
            acked = await self._wait_for(
                lambda: bool(answered) or trade.orderStatus.status in _ACKED_STATES - {IbOrderStatus.PreSubmitted}
                or bool(trade.fills), self._timeout,
            )
        finally:
            ib.openOrderEvent -= on_answer
            ib.orderStatusEvent -= on_answer
        if trade.orderStatus.status in _REJECTED_STATES:
            raise BrokerError(
                f"ibkr: order {order.order_id} (IBKR {broker_id}) was rejected: "
                f"{'; '.join(self._trade_messages(trade)) or 'no reason given'}"
            )
        if acked and trade.orderStatus.status == IbOrderStatus.PreSubmitted:
            logger.warning(
                "ibkr: order %s (IBKR %s) acknowledged and held PreSubmitted (e.g. outside regular "
                "trading hours): it works when its session opens", order.order_id, broker_id,
            )
        if not acked:
            raise SentUnknownError(
                f"ibkr: order {order.order_id} (IBKR {broker_id}) was sent but not acknowledged "
                f"within {self._timeout:g}s; its state is unknown: `portfolio orders reconcile` settles it"
            )
        return broker_id

    async def cancel(self, order: Order) -> None:
        """Cancel a staged or live order at IBKR and wait for the Gateway's confirmation.

        :class:`StaleOrderError` when the Gateway has no such open order of this client id;
        :class:`BrokerError` on error 10147 or when the cancellation is not confirmed in time.
        """
        self._check_owner(order, "cancel")
        ib = await self._ready_ib()
        trade = await self._open_trade(order)
        if trade is None:
            raise StaleOrderError(
                f"ibkr: order {order.order_id} (client id {self._client_id}, IBKR order {order.broker_order_id}) "
                "is not open at the Gateway: nothing to cancel"
            )
        order_id = trade.order.orderId
        refused: list[str] = []

        def collect(req_id: int, code: int, message: str, about: object) -> None:
            if req_id == order_id and code == ORDER_NOT_FOUND_FOR_CANCEL:
                refused.append(f"IBKR {code}: {message}")

        ib.errorEvent += collect
        try:
            await self._limiter.acquire()
            ib.cancelOrder(trade.order)
            done = await self._wait_for(lambda: bool(refused) or trade.isDone(), self._timeout)
        finally:
            ib.errorEvent -= collect
        if refused:
            raise BrokerError(
                f"ibkr: cancel of order {order.order_id} (IBKR {order_id}) refused: {refused[0]} "
                f"(the order belongs to another client id than {self._client_id})"
            )
        if not done or trade.orderStatus.status not in _REJECTED_STATES:
            raise BrokerError(
                f"ibkr: cancel of order {order.order_id} (IBKR {order_id}) not confirmed "
                f"within {self._timeout:g}s (status {trade.orderStatus.status})"
            )
        logger.info("ibkr: cancelled order %s (IBKR %s)", order.order_id, order_id)

    async def order_state(self, order: Order) -> BrokerOrderState:
        """The Gateway's view of one of our orders: open orders of this client id + executions."""
        self._check_owner(order, "reconcile")
        ib = await self._ready_ib()
        combo = len(order.legs) > 1
        total = float(order.quantity if combo else order.quantity * order.legs[0].ratio)
        trade = await self._open_trade(order) if order.broker_order_id is not None else None
        if trade is not None:
            status = str(trade.orderStatus.status)
            return BrokerOrderState(
                exists=True, status=status, filled=float(trade.orderStatus.filled),
                total=total, perm_id=trade.order.permId or None,
                # an open order PreSubmitted (or not yet submitted) may be a transmitted order
                # held until its session or one that was never transmitted: openOrder and
                # orderStatus carry no transmit flag, so this is no evidence of a transmission
                working=status not in _NOT_YET_WORKING or float(trade.orderStatus.filled) > 0,
            )
        since = order.created_at.date()
        flt = ExecutionFilter(acctCode=order.account_id, time=f"{since:%Y%m%d}-00:00:00")
        fills: list[Any] = await self._request(
            f"reqExecutions({order.account_id} since {since})", lambda: ib.reqExecutionsAsync(flt)
        )
        filled = sum(
            float(f.execution.shares) for f in fills
            if f.execution.orderRef == order.order_id and (f.contract.secType == "BAG") == combo
        )
        status = IbOrderStatus.Filled if filled >= total else IbOrderStatus.Cancelled
        return BrokerOrderState(exists=False, status=status, filled=filled, total=total)

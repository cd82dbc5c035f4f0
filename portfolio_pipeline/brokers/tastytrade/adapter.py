"""Tastytrade adapter: the :class:`BrokerAdapter` Protocol over the tastytrade SDK (13.x).

- Session: OAuth refresh-token grant; the client secret and refresh token are read from
  the environment variables *named* by :class:`TastytradeConnection` at ``connect()``.
  Their values are never logged, never in a repr and scrubbed from every error message.
- Every call runs under a deadline and through :class:`RetryingTransport` (bounded
  retries of transient failures); SDK/HTTP failures become :class:`BrokerError` naming
  the request, malformed payloads :class:`BrokerDataError` naming field and item.  A
  snapshot is built completely or not at all.
- Orders: ``what_if`` is a dry run; ``stage`` keeps the dry-run result and the order in
  memory (nothing is sent); ``transmit`` calls ``require_confirmed`` before anything
  else and only then places the order; ``cancel`` deletes a live order or drops the
  local stage.  Broker warnings are returned, never acknowledged automatically.

Limit price convention (domain -> Tastytrade): for a single leg the domain price is the
positive per-unit price and the leg's action gives debit (BUY) or credit (SELL); for a
combo it is the net price per unit of the combo, positive = net debit, negative = net
credit.  Tastytrade wants negative = debit, positive = credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

import httpx2
import numpy as np
from pydantic import ValidationError
from tastytrade import DXLinkStreamer, Session
from tastytrade.account import Account, CurrentPosition, Transaction
from tastytrade.dxfeed import Greeks as DxGreeks
from tastytrade.dxfeed import Quote as DxQuote
from tastytrade.dxfeed import Summary as DxSummary
from tastytrade.dxfeed import Trade as DxTrade
from tastytrade.instruments import Future, NestedFutureOptionChain, NestedOptionChain
from tastytrade.order import (
    InstrumentType,
    Leg,
    LimitOrder,
    OCOOrder,
    OrderAction,
    OrderTimeInForce,
    OTOCOOrder,
    PlacedComplexOrderResponse,
    PlacedOrderResponse,
    StopOrder,
)
from tastytrade.utils import TastytradeError

from portfolio_pipeline.brokers.base import (
    BrokerDataError,
    BrokerError,
    ConnectionLifecycle,
    OptionChain,
    StagedOrder,
    TransmittedGroup,
)
from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainWindow
from portfolio_pipeline.brokers.tastytrade import normalise as nz
from portfolio_pipeline.brokers.tastytrade.streaming import FeedState
from portfolio_pipeline.brokers.tastytrade.symbols import (
    ParsedSymbol,
    SymbolError,
    equity_option_streamer_symbol,
    future_option_streamer_symbol,
    occ_symbol,
    parse_symbol,
    to_contract,
)
from portfolio_pipeline.brokers.tastytrade.transport import RetryingTransport
from portfolio_pipeline.clock import Clock, system_clock
from portfolio_pipeline.domain.accounts import TastytradeConnection
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.errors import DomainError
from portfolio_pipeline.domain.instruments import InstrumentTable, SecType
from portfolio_pipeline.domain.order_groups import OrderGroup, require_transmittable
from portfolio_pipeline.domain.orders import Order, OrderStatus, WhatIfResult, require_confirmed
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline.domain.settlement import years_to_settlement
from portfolio_pipeline.retry import BROKER_HTTP, BackoffPolicy

logger = logging.getLogger(__name__)

T = TypeVar("T")
SessionFactory = Callable[..., Session]

_KIND_BY_TYPE = {
    InstrumentType.EQUITY: "Equity",
    InstrumentType.EQUITY_OPTION: "Equity Option",
    InstrumentType.FUTURE: "Future",
    InstrumentType.FUTURE_OPTION: "Future Option",
    InstrumentType.INDEX: "Index",
}
_TYPE_BY_SECTYPE: dict[SecType, InstrumentType] = {
    "STK": InstrumentType.EQUITY,
    "OPT": InstrumentType.EQUITY_OPTION,
    "FUT": InstrumentType.FUTURE,
    "FOP": InstrumentType.FUTURE_OPTION,
}


@dataclass(frozen=True, slots=True)
class _Symbol:
    """How Tastytrade names one contract: order symbol, instrument type, dxfeed symbol."""

    symbol: str
    instrument_type: InstrumentType
    streamer: str


@dataclass(frozen=True, slots=True)
class _Staged:
    order: Order
    staged: StagedOrder


class TastytradeAdapter(ConnectionLifecycle):
    """:class:`~portfolio_pipeline.brokers.base.BrokerAdapter` for Tastytrade.

    :param connection: which environment variables hold the secrets; ``is_test`` = sandbox.
    :param instruments: THE multiplier table (broker multipliers are checked against it).
    :param account_ids: accounts served; empty = every open account of the login.
    :param clock: aware-UTC "now" (snapshots, staging time, quote staleness).
    :param transport: httpx2 transport under the SDK (tests inject a fake; default a TLS-
        verifying ``httpx2.AsyncHTTPTransport``); wrapped in :class:`RetryingTransport`.
    :param session_factory: builds the SDK :class:`Session` (default the SDK's own).
    :param environ: where the secrets are read (default ``os.environ``).
    :param request_timeout: seconds per HTTP request (connect/read/write/pool).
    :param retry: retry policy for transient failures.
    :param stale_after: seconds without a valid DXLink event before a symbol is stale.
    :param quote_wait: seconds ``quotes()`` waits for first events of new symbols.
    :param watchdog_interval: seconds between background staleness checks.
    """

    name = "tastytrade"

    def __init__(
        self,
        connection: TastytradeConnection,
        instruments: InstrumentTable,
        account_ids: Sequence[str] = (),
        *,
        clock: Clock = system_clock,
        transport: httpx2.AsyncBaseTransport | None = None,
        session_factory: SessionFactory | None = None,
        environ: Mapping[str, str] | None = None,
        request_timeout: float = 15.0,
        retry: BackoffPolicy | None = None,
        stale_after: float = 30.0,
        quote_wait: float = 2.0,
        watchdog_interval: float = 1.0,
    ) -> None:
        if request_timeout <= 0 or quote_wait < 0 or watchdog_interval <= 0:
            raise ValueError("tastytrade: timeouts and intervals must be positive")
        self._connection = connection
        self._instruments = instruments
        self._wanted_accounts = tuple(account_ids)
        self._clock = clock
        self._inner_transport = transport
        self._session_factory: SessionFactory = session_factory or Session
        self._environ = environ
        self._request_timeout = request_timeout
        self._retry = retry or BROKER_HTTP
        self._quote_wait = quote_wait
        self._watchdog_interval = watchdog_interval
        self._feed = FeedState(clock, stale_after)
        self._session: Session | None = None
        self._transport: RetryingTransport | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._accounts: dict[str, Account] = {}
        self._redactions: tuple[str, ...] = ()
        self._symbols: dict[str, _Symbol] = {}
        self._futures: dict[str, Future] = {}
        self._staged: dict[str, _Staged] = {}
        self._streamer: DXLinkStreamer | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"TastytradeAdapter(accounts={list(self._wanted_accounts)!r}, "
            f"is_test={self._connection.is_test}, connected={self._session is not None})"
        )

    # ------------------------------------------------------------------ lifecycle

    def _secret(self, env_name: str, environ: Mapping[str, str]) -> str:
        value = environ.get(env_name, "")
        if not value.strip():
            raise BrokerError(f"tastytrade: environment variable {env_name} is not set")
        return value.strip()

    async def connect(self) -> None:
        """Open the session (OAuth token refresh) and load the accounts."""
        async with self._lock:
            if self._session is not None:
                return
            environ = self._environ if self._environ is not None else os.environ
            secret = self._secret(self._connection.client_secret_env, environ)
            refresh = self._secret(self._connection.refresh_token_env, environ)
            self._redactions = (secret, refresh)
            inner = self._inner_transport or httpx2.AsyncHTTPTransport()
            self._transport = RetryingTransport(inner, self._retry)
            stack = contextlib.AsyncExitStack()
            try:
                session = self._session_factory(
                    provider_secret=secret,
                    refresh_token=refresh,
                    is_test=self._connection.is_test,
                    transport=self._transport,
                    timeout=httpx2.Timeout(self._request_timeout),
                )
                await stack.enter_async_context(session)
                await self._call("POST /oauth/token", lambda: session.refresh(force=True))
                accounts = await self._call(
                    "GET /customers/me/accounts", lambda: Account.get(session)
                )
            except BaseException:
                await stack.aclose()
                await self._transport.close_inner()
                self._transport = None
                raise
            self._stack = stack
            self._session = session
            self._accounts = {a.account_number: a for a in accounts}
            missing = [a for a in self._wanted_accounts if a not in self._accounts]
            if missing:
                await self.close()
                raise BrokerError(f"tastytrade: account(s) {missing} not found for this login")
            logger.info(
                "tastytrade: connected (%s), %d account(s)",
                "sandbox" if self._connection.is_test else "production",
                len(self._served()),
            )

    async def close(self) -> None:
        """Stop the streamer, close the session and the transport (idempotent)."""
        task, self._stream_task = self._stream_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._streamer = None
        stack, self._stack = self._stack, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close_inner()
        self._session = None

    # ------------------------------------------------------------------ plumbing

    def _redact(self, text: str) -> str:
        for secret in self._redactions:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call under a deadline; map failures to Broker(Data)Error naming it."""
        deadline = (self._retry.max_attempts or 1) * (self._request_timeout + self._retry.maximum)
        try:
            async with asyncio.timeout(deadline):
                return await fn()
        except TimeoutError:
            raise BrokerError(f"tastytrade: {what} timed out after {deadline:.0f}s") from None
        except httpx2.TimeoutException as exc:
            raise BrokerError(f"tastytrade: {what} timed out ({type(exc).__name__})") from None
        except httpx2.HTTPError as exc:
            raise BrokerError(
                f"tastytrade: {what} failed: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None
        except TastytradeError as exc:
            message = self._redact(str(exc)).strip() or type(exc).__name__
            if message.startswith("No data present"):
                raise BrokerDataError(f"tastytrade: {what}: response has no 'data'") from None
            raise BrokerError(f"tastytrade: {what} rejected: {message}") from None
        except ValidationError as exc:
            raise BrokerDataError(
                f"tastytrade: {what}: {self._redact(nz.validation_detail(exc))}"
            ) from None
        except json.JSONDecodeError as exc:
            raise BrokerDataError(
                f"tastytrade: {what}: response is not valid JSON ({exc.msg} at {exc.pos})"
            ) from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise BrokerDataError(
                f"tastytrade: {what}: malformed payload ({type(exc).__name__}: "
                f"{self._redact(str(exc))})"
            ) from None

    def _require_session(self) -> Session:
        if self._session is None:
            raise BrokerError("tastytrade: not connected (call connect() or use 'async with')")
        return self._session

    def _served(self) -> list[str]:
        if self._wanted_accounts:
            return list(self._wanted_accounts)
        return sorted(self._accounts)

    def _account(self, account_id: str) -> Account:
        self._require_session()
        if account_id not in self._served() or account_id not in self._accounts:
            raise BrokerError(f"tastytrade: account {account_id!r} is not served by this adapter")
        return self._accounts[account_id]

    # ------------------------------------------------------------------ accounts

    async def account_ids(self) -> list[str]:
        self._require_session()
        return self._served()

    async def account_snapshot(self, account_id: str) -> AccountSnapshot:
        account = self._account(account_id)
        session = self._require_session()
        balance = await self._call(
            f"GET /accounts/{account_id}/balances/USD", lambda: account.get_balances(session)
        )
        return nz.account_snapshot(balance, account_id, self._clock())

    # ------------------------------------------------------------------ positions

    async def _future(self, future_symbol: str) -> Future:
        """The future (expiry, dxfeed exchange), fetched once per adapter."""
        cached = self._futures.get(future_symbol)
        if cached is not None:
            return cached
        session = self._require_session()
        future = await self._call(
            f"GET /instruments/futures/{future_symbol.lstrip('/')}",
            lambda: Future.get(session, future_symbol),
        )
        self._futures[future_symbol] = future
        return future

    async def _normalise_symbol(
        self, symbol: str, instrument_type: InstrumentType | None, underlying: str | None,
        where: str,
    ) -> tuple[Contract, SecType, ParsedSymbol, Future | None]:
        try:
            parsed = parse_symbol(symbol, instrument_type.value if instrument_type else None)
        except SymbolError as exc:
            raise BrokerDataError(f"{where}: field 'symbol': {exc}") from None
        expected = _KIND_BY_TYPE.get(instrument_type) if instrument_type else None
        if instrument_type is not None and expected is None:
            raise BrokerDataError(
                f"{where}: field 'instrument-type' {instrument_type.value!r} is not supported"
            )
        if expected is not None and expected != parsed.kind and not (
            {expected, parsed.kind} <= {"Equity", "Index"}
        ):
            raise BrokerDataError(
                f"{where}: field 'instrument-type' is {expected!r} but the symbol is a {parsed.kind}"
            )
        future = await self._future(parsed.future_symbol) if parsed.future_symbol else None
        try:
            contract, sec_type = to_contract(
                parsed, self._instruments,
                underlying_symbol=underlying if parsed.kind == "Equity Option" else None,
                future_expiry=future.expiration_date if future else None,
            )
        except (DomainError, SymbolError) as exc:
            raise BrokerDataError(f"{where}: {exc}") from exc
        return contract, sec_type, parsed, future

    def _remember(
        self, contract: Contract, sec_type: SecType, parsed: ParsedSymbol, future: Future | None
    ) -> None:
        if sec_type == "OPT":
            streamer = equity_option_streamer_symbol(contract)
        elif sec_type == "FOP" and future is not None:
            streamer = future_option_streamer_symbol(parsed, future.streamer_exchange_code)
        elif sec_type == "FUT" and future is not None:
            streamer = future.streamer_symbol or parsed.symbol
        else:
            streamer = parsed.symbol
        itype = _TYPE_BY_SECTYPE.get(sec_type, InstrumentType.INDEX)
        self._symbols[contract.key] = _Symbol(parsed.symbol, itype, streamer)

    async def positions(self, account_id: str) -> list[Position]:
        """Signed positions: the API's unsigned quantity x (Long +1 | Short -1)."""
        account = self._account(account_id)
        session = self._require_session()
        path = f"/accounts/{account.account_number}/positions"
        what = f"GET {path}"
        data = await self._call(
            what, lambda: session._get(path, params={"include-marks": "true"})
        )
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BrokerDataError(f"tastytrade: {what}: field 'items' is missing or not a list")
        raw_positions: list[CurrentPosition] = []
        for index, item in enumerate(items):
            label = item.get("symbol") if isinstance(item, dict) else None
            try:
                raw_positions.append(CurrentPosition.model_validate(item))
            except ValidationError as exc:
                raise BrokerDataError(
                    f"tastytrade:{account_id}: positions item {index} (symbol {label!r}): "
                    f"{nz.validation_detail(exc)}"
                ) from None
        as_of = self._clock()
        result: list[Position] = []
        remembered: list[tuple[Contract, SecType, ParsedSymbol, Future | None]] = []
        for raw in raw_positions:
            where = f"tastytrade:{account_id}:{raw.symbol}"
            sign = nz.position_sign(raw, where)
            if sign == 0 or raw.quantity == 0:
                continue
            contract, sec_type, parsed, future = await self._normalise_symbol(
                raw.symbol, raw.instrument_type, raw.underlying_symbol, where
            )
            try:
                multiplier = self._instruments.checked_multiplier(
                    contract.underlying, sec_type, nz.to_float(raw.multiplier, "multiplier", where),
                    trading_class=contract.trading_class if contract.is_option else None,
                    source=where,
                )
                result.append(
                    Position(
                        broker=self.name,
                        account_id=account_id,
                        contract=contract,
                        quantity=sign * nz.to_float(raw.quantity, "quantity", where),
                        multiplier=multiplier,
                        avg_price=nz.to_float(raw.average_open_price, "average-open-price", where),
                        mark=nz.position_mark(raw, where),
                        as_of=as_of,
                        source=where,
                    )
                )
            except DomainError as exc:
                raise BrokerDataError(f"{where}: {exc}") from exc
            remembered.append((contract, sec_type, parsed, future))
        for args in remembered:
            self._remember(*args)
        logger.info("tastytrade:%s: %d position(s)", account_id, len(result))
        return result

    # ------------------------------------------------------------------ activity

    async def _history(self, account_id: str, since: date) -> list[Transaction]:
        account = self._account(account_id)
        session = self._require_session()
        return await self._call(
            f"GET /accounts/{account_id}/transactions",
            lambda: account.get_history(
                session, per_page=250, page_offset=None, sort="Asc", start_date=since
            ),
        )

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        """Trades plus expirations, assignments and exercises (Receive Deliver)."""
        result: list[Execution] = []
        for tx in await self._history(account_id, since):
            where = f"tastytrade:{account_id} transaction {tx.id}"
            try:
                kind = nz.execution_kind(tx, where)
            except DomainError as exc:
                raise BrokerDataError(str(exc)) from exc
            if kind is None:
                continue
            if not tx.symbol or tx.action is None or tx.quantity is None:
                raise BrokerDataError(f"{where}: a {kind} needs 'symbol', 'action' and 'quantity'")
            contract, sec_type, _, _ = await self._normalise_symbol(
                tx.symbol, tx.instrument_type, tx.underlying_symbol, f"{where} ({tx.symbol})"
            )
            try:
                multiplier = self._instruments.checked_multiplier(
                    contract.underlying, sec_type, None,
                    trading_class=contract.trading_class if contract.is_option else None,
                    source=where,
                )
                qty = tx.action.multiplier * nz.to_float(tx.quantity, "quantity", where)
                commission, fees = nz.execution_costs(tx, where)
                result.append(
                    Execution(
                        broker=self.name,
                        account_id=account_id,
                        exec_id=str(tx.id),
                        contract=contract,
                        ts=nz.require_aware_ts(tx.executed_at, "executed-at", where),
                        quantity=qty,
                        price=nz.execution_price(tx, qty, multiplier, where),
                        multiplier=multiplier,
                        commission=commission,
                        fees=fees,
                        kind=kind,
                        order_ref=str(tx.order_id) if tx.order_id is not None else None,
                    )
                )
            except DomainError as exc:
                raise BrokerDataError(f"{where}: {exc}") from exc
        return result

    async def cash_flows(self, account_id: str, since: date) -> list[CashFlow]:
        """Deposits, withdrawals, dividends, interest and fees (signed: + money in)."""
        result: list[CashFlow] = []
        for tx in await self._history(account_id, since):
            try:
                flow = nz.cash_flow(tx, account_id)
            except DomainError as exc:
                raise BrokerDataError(f"tastytrade:{account_id} transaction {tx.id}: {exc}") from exc
            if flow is not None:
                result.append(flow)
        return result

    # ------------------------------------------------------------------ option chains

    async def option_chain(self, underlying: str, trading_class: str | None = None) -> OptionChain:
        session = self._require_session()
        root = underlying.upper().lstrip("/")
        try:
            spec = self._instruments.spec(root)
            tc = self._instruments.trading_class(root, trading_class).name.upper()
        except DomainError as exc:
            raise BrokerDataError(f"tastytrade option chain {underlying!r}: {exc}") from exc
        try:
            if spec.option_underlying == "future":
                fchain = await self._call(
                    f"GET /futures-option-chains/{root}/nested",
                    lambda: NestedFutureOptionChain.get(session, root),
                )
                exchange = spec.future.exchange if spec.future else ""
                return nz.future_chain(fchain, self._instruments, root, tc, exchange)
            chains = await self._call(
                f"GET /option-chains/{root}/nested", lambda: NestedOptionChain.get(session, root)
            )
            return nz.equity_chain(chains, self._instruments, root, tc)
        except DomainError as exc:
            raise BrokerDataError(f"tastytrade option chain {underlying!r}: {exc}") from exc

    async def option_chain_snapshot(self, underlying: str, window: ChainWindow) -> ChainSnapshot:
        """Every contract of the nested chain in ``window`` (trading classes of the instrument
        table): quotes and model Greeks as :meth:`quotes` reads them (a contract without a
        fresh quote is left out), open interest from DXLink ``Summary`` events and the day's
        volume from ``Trade`` events (NaN when none came within the quote wait).
        ``rate``/``dividend_yield`` are NaN: the caller takes them from ``pricing.yaml``."""
        session = self._require_session()
        root = underlying.upper()
        try:
            spec = self._instruments.spec(root)
        except DomainError as exc:
            raise BrokerDataError(f"tastytrade chain snapshot {underlying!r}: {exc}") from exc
        if spec.options is None or spec.option_underlying == "future":
            raise BrokerDataError(f"tastytrade: chain snapshots cover equity/index options only, not {root}")
        sec: SecType = "IND" if spec.underlying_type in ("index", "volatility_index") else "STK"
        und = await self.quotes([Contract(underlying=root, sec_type=sec)])
        if not und:
            raise BrokerDataError(f"tastytrade: no quote for {root}: no chain snapshot")
        spot = und[0].mark
        now = self._clock()
        chains = await self._call(
            f"GET /option-chains/{root}/nested", lambda: NestedOptionChain.get(session, root)
        )
        classes = {tc.name.upper(): tc for tc in spec.options.trading_classes}
        wanted: dict[str, tuple[Contract, float]] = {}
        for chain in chains:
            tc = classes.get(chain.root_symbol.upper())
            if tc is None:
                continue
            for exp in chain.expirations:
                expiry = exp.expiration_date
                T = years_to_settlement(now, expiry, tc.settlement_time)
                if T <= 0 or (expiry - now.date()).days > window.max_days:
                    continue
                for strike in exp.strikes:
                    k = float(strike.strike_price)
                    if abs(k / spot - 1.0) <= window.moneyness:
                        for right in ("C", "P"):
                            c = Contract(root, "OPT", expiry, k, right, tc.name)
                            wanted[c.key] = (c, T)
        quotes = {q.contract.key: q for q in await self.quotes([c for c, _ in wanted.values()])}
        rows = [(c, T, quotes[key]) for key, (c, T) in wanted.items() if key in quotes]
        oi, volume = await self._summaries([self._streamer_symbol(c) for c, _, _ in rows])

        def col(values: Sequence[float | None]) -> np.ndarray:
            return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

        symbols = [self._streamer_symbol(c) for c, _, _ in rows]
        return ChainSnapshot(
            underlying=root, as_of=now, spot=spot, multiplier=float(spec.options.multiplier),
            rate=math.nan, dividend_yield=math.nan, source=self.name, simulated=False,
            trading_class=np.array([c.trading_class or "" for c, _, _ in rows], dtype=np.str_),
            expiry=np.array([c.expiry for c, _, _ in rows], dtype="datetime64[D]"),
            is_call=np.array([c.right == "C" for c, _, _ in rows], dtype=bool),
            strike=col([c.strike for c, _, _ in rows]), T=col([T for _, T, _ in rows]),
            bid=col([q.bid for _, _, q in rows]), ask=col([q.ask for _, _, q in rows]),
            last=col([q.last for _, _, q in rows]),
            volume=col([volume.get(s) for s in symbols]), open_interest=col([oi.get(s) for s in symbols]),
            iv=col([q.iv for _, _, q in rows]), delta=col([q.delta for _, _, q in rows]),
            gamma=col([q.gamma for _, _, q in rows]), vega=col([q.vega for _, _, q in rows]),
            theta=col([q.theta for _, _, q in rows]), quote_epoch=np.full(len(rows), now.timestamp()),
        )

    async def _summaries(self, symbols: list[str]) -> tuple[dict[str, float], dict[str, float]]:
        """Open interest (``Summary``) and day volume (``Trade``) per dxfeed symbol, read
        for up to the quote wait, then unsubscribed."""
        if not symbols:
            return {}, {}
        streamer = await self._ensure_streamer()
        await self._call("DXLink subscribe Summary", lambda: streamer.subscribe(DxSummary, symbols))
        await self._call("DXLink subscribe Trade", lambda: streamer.subscribe(DxTrade, symbols))
        wanted = set(symbols)
        oi: dict[str, float] = {}
        volume: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        until = loop.time() + self._quote_wait
        while loop.time() < until and not (len(oi) == len(volume) == len(wanted)):
            while (summary := streamer.get_event_nowait(DxSummary)) is not None:
                if summary.event_symbol in wanted:
                    oi[summary.event_symbol] = float(summary.open_interest)
            while (trade := streamer.get_event_nowait(DxTrade)) is not None:
                if trade.event_symbol in wanted and trade.day_volume is not None:
                    volume[trade.event_symbol] = float(trade.day_volume)
            await asyncio.sleep(0.02)
        await self._call("DXLink unsubscribe Summary", lambda: streamer.unsubscribe(DxSummary, symbols))
        await self._call("DXLink unsubscribe Trade", lambda: streamer.unsubscribe(DxTrade, symbols))
        return oi, volume

    # ------------------------------------------------------------------ quotes

    def _streamer_symbol(self, contract: Contract) -> str:
        known = self._symbols.get(contract.key)
        if known is not None:
            return known.streamer
        if contract.sec_type == "OPT":
            return equity_option_streamer_symbol(contract)
        if contract.sec_type in ("STK", "IND"):
            return contract.underlying
        raise BrokerDataError(
            f"tastytrade: no DXLink symbol known for {contract.key}; load the account's "
            "positions first (futures and futures options are named by Tastytrade)"
        )

    async def _run_streamer(self, ready: asyncio.Event) -> None:
        session = self._require_session()
        async with DXLinkStreamer(session) as streamer:
            self._streamer = streamer
            ready.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump_quotes(streamer))
                tg.create_task(self._pump_greeks(streamer))
                tg.create_task(self._watchdog())

    async def _pump_quotes(self, streamer: DXLinkStreamer) -> None:
        async for event in streamer.listen(DxQuote):
            self._feed.on_quote(event.event_symbol, event.bid_price, event.ask_price)

    async def _pump_greeks(self, streamer: DXLinkStreamer) -> None:
        async for event in streamer.listen(DxGreeks):
            self._feed.on_greeks(
                event.event_symbol, price=event.price, iv=event.volatility, delta=event.delta,
                gamma=event.gamma, theta=event.theta, vega=event.vega,
            )

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self._watchdog_interval)
            self._feed.check()

    async def _ensure_streamer(self) -> DXLinkStreamer:
        task = self._stream_task
        if task is not None and task.done():
            self._stream_task = None
            self._streamer = None
            # A new streamer starts with no subscriptions: forget ours so the next
            # quotes() subscribes every symbol again instead of waiting on a dead feed.
            self._feed.forget_subscriptions()
            exc = None if task.cancelled() else task.exception()
            raise BrokerError(
                f"tastytrade: DXLink streamer stopped: {self._redact(repr(exc))}"
            )
        if self._streamer is not None:
            return self._streamer
        ready = asyncio.Event()
        task = asyncio.create_task(self._run_streamer(ready), name="tastytrade-dxlink")
        self._stream_task = task
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=self._request_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if self._streamer is None:
            self._stream_task = None
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if task in done and not task.cancelled() and task.exception() is not None:
                raise BrokerError(
                    "tastytrade: DXLink streamer failed to start: "
                    f"{self._redact(repr(task.exception()))}"
                )
            raise BrokerError(
                f"tastytrade: DXLink streamer did not start within {self._request_timeout:.0f}s"
            )
        return self._streamer

    @property
    def stale_symbols(self) -> frozenset[str]:
        """dxfeed symbols the watchdog found stale at its last check."""
        return self._feed.stale_symbols

    def check_staleness(self) -> frozenset[str]:
        """Run the staleness watchdog now (it also runs in the background)."""
        self._feed.check()
        return self._feed.stale_symbols

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Quotes and dxfeed model Greeks per share (theta per day, vega per vol point).

        A contract without a fresh Greeks event gets NaN Greeks and a warning; one
        without a fresh Quote event is left out with a warning (a quote needs a bid and
        an ask).  Staleness uses the injected clock (see :mod:`.streaming`).
        """
        self._require_session()
        wanted: list[tuple[Contract, str]] = []
        for contract in contracts:
            try:
                wanted.append((contract, self._streamer_symbol(contract)))
            except SymbolError as exc:
                raise BrokerDataError(f"tastytrade quotes: {exc}") from None
        if not wanted:
            return []
        streamer = await self._ensure_streamer()
        symbols = [s for _, s in wanted]
        options = [s for c, s in wanted if c.is_option]
        new_quotes = self._feed.add_subscriptions(symbols)
        new_greeks = self._feed.add_greeks(options)
        if new_quotes:
            await self._call("DXLink subscribe Quote", lambda: streamer.subscribe(DxQuote, new_quotes))
        if new_greeks:
            await self._call(
                "DXLink subscribe Greeks", lambda: streamer.subscribe(DxGreeks, new_greeks)
            )
        loop = asyncio.get_running_loop()
        until = loop.time() + self._quote_wait
        while not self._feed.has_all(symbols) and loop.time() < until:
            await asyncio.sleep(0.02)
        self._feed.check()
        now = self._clock()
        result: list[Quote] = []
        for contract, symbol in wanted:
            tick = self._feed.quote(symbol)
            if tick is None or not self._feed.is_fresh_quote(symbol, now):
                logger.warning("tastytrade quotes: no fresh quote for %s (%s), left out",
                               contract.key, symbol)
                continue
            greeks = self._feed.greeks(symbol) if contract.is_option else None
            if contract.is_option and (greeks is None or not self._feed.is_fresh_greeks(symbol, now)):
                logger.warning("tastytrade quotes: no fresh Greeks for %s (%s), reporting NaN",
                               contract.key, symbol)
                greeks = None
            nan = math.nan if contract.is_option else None
            try:
                result.append(
                    Quote(
                        source=self.name,
                        contract=contract,
                        as_of=now,
                        bid=tick.bid,
                        ask=tick.ask,
                        mark=(tick.bid + tick.ask) / 2.0,
                        iv=greeks.iv if greeks else nan,
                        delta=greeks.delta if greeks else nan,
                        gamma=greeks.gamma if greeks else nan,
                        vega=greeks.vega if greeks else nan,
                        theta=greeks.theta if greeks else nan,
                    )
                )
            except DomainError as exc:
                raise BrokerDataError(f"tastytrade quote {symbol}: {exc}") from exc
        return result

    # ------------------------------------------------------------------ orders

    async def _sdk_order(self, order: Order) -> LimitOrder | StopOrder:
        return await self._sdk_any(order)

    async def _sdk_any(self, order: Order, *, closing: bool | None = None) -> LimitOrder | StopOrder:
        """The SDK order; ``closing`` forces the legs' open/close (a bracket child closes its entry)."""
        if order.broker != self.name:
            raise BrokerError(f"order {order.order_id}: broker is {order.broker!r}, not tastytrade")
        self._account(order.account_id)
        held = {p.contract.key: p.quantity for p in await self.positions(order.account_id)} if closing is None else {}
        legs: list[Leg] = []
        for leg in order.legs:
            contract = leg.contract
            known = self._symbols.get(contract.key)
            if known is not None:
                symbol, itype = known.symbol, known.instrument_type
            elif contract.sec_type == "OPT":
                symbol, itype = occ_symbol(contract), InstrumentType.EQUITY_OPTION
            elif contract.sec_type == "STK":
                symbol, itype = contract.underlying, InstrumentType.EQUITY
            else:
                raise BrokerDataError(
                    f"order {order.order_id}: no Tastytrade symbol known for {contract.key}"
                )
            quantity = order.quantity * leg.ratio
            if closing is None:
                position = held.get(contract.key, 0.0)
                is_closing = (leg.action == "BUY" and position < 0) or (leg.action == "SELL" and position > 0)
                if is_closing and itype != InstrumentType.FUTURE and quantity > abs(position):
                    raise BrokerError(
                        f"order {order.order_id}: leg {leg.action} {quantity} {contract.key} would "
                        f"close {abs(position):g} and open the rest; split it into two orders"
                    )
            else:
                is_closing = closing
            if itype == InstrumentType.FUTURE:
                action = OrderAction.BUY if leg.action == "BUY" else OrderAction.SELL
            elif leg.action == "BUY":
                action = OrderAction.BUY_TO_CLOSE if is_closing else OrderAction.BUY_TO_OPEN
            else:
                action = OrderAction.SELL_TO_CLOSE if is_closing else OrderAction.SELL_TO_OPEN
            legs.append(Leg(instrument_type=itype, symbol=symbol, action=action, quantity=quantity))
        tif = OrderTimeInForce.GTC if order.time_in_force == "GTC" else OrderTimeInForce.DAY
        if order.order_type == "STP":
            return StopOrder(time_in_force=tif, legs=legs, stop_trigger=Decimal(str(order.aux_price)))
        if order.order_type == "TRAIL":
            raise BrokerError(
                f"order {order.order_id}: Tastytrade's API has no trailing stop for this order; "
                "use the platform-side trail (`portfolio orders trail`), which re-stages a stop and asks again"
            )
        price = Decimal(str(order.limit_price))
        if len(order.legs) == 1:
            price = abs(price) if order.legs[0].action == "SELL" else -abs(price)
        else:
            price = -price  # domain: + net debit; Tastytrade: - debit
        return LimitOrder(time_in_force=tif, legs=legs, price=price)

    async def what_if(self, order: Order) -> WhatIfResult:
        """Dry run (``POST .../orders/dry-run``): margin effect, fees and every warning."""
        sdk_order = await self._sdk_order(order)
        account = self._account(order.account_id)
        session = self._require_session()
        response = await self._call(
            f"POST /accounts/{order.account_id}/orders/dry-run",
            lambda: account.place_order(session, sdk_order, dry_run=True),
        )
        result = nz.whatif_result(response)
        logger.info("tastytrade: dry run of order %s: %d warning(s)", order.order_id,
                    len(result.warnings))
        return result

    async def stage(self, order: Order) -> StagedOrder:
        """Dry run, then keep the order and its result locally; nothing is placed."""
        whatif = await self.what_if(order)
        staged = StagedOrder(
            order_id=order.order_id, broker_order_id=None, whatif=whatif, staged_at=self._clock()
        )
        self._staged[order.order_id] = _Staged(order, staged)
        logger.info("tastytrade: order %s staged locally (not sent)", order.order_id)
        return staged

    def staged(self) -> list[StagedOrder]:
        """Orders staged locally by this adapter and not yet transmitted or cancelled."""
        return [s.staged for s in self._staged.values()]

    async def transmit(self, order: Order) -> str:
        """Place a CONFIRMED order (``POST .../orders``); returns Tastytrade's order id."""
        require_confirmed(order)
        sdk_order = await self._sdk_order(order)
        account = self._account(order.account_id)
        session = self._require_session()
        response: PlacedOrderResponse[Any] = await self._call(
            f"POST /accounts/{order.account_id}/orders",
            lambda: account.place_order(session, sdk_order, dry_run=False),
        )
        broker_id = str(response.order.id)
        self._staged.pop(order.order_id, None)
        logger.info("tastytrade: order %s transmitted as %s", order.order_id, broker_id)
        return broker_id

    async def cancel(self, order: Order) -> None:
        """Delete a live order at the broker, or drop a local stage."""
        if order.broker_order_id is not None and order.status.is_live_at_broker:
            account = self._account(order.account_id)
            session = self._require_session()
            try:
                broker_id = int(order.broker_order_id)
            except ValueError:
                raise BrokerError(
                    f"order {order.order_id}: broker order id {order.broker_order_id!r} is not numeric"
                ) from None
            await self._call(
                f"DELETE /accounts/{order.account_id}/orders/{broker_id}",
                lambda: account.delete_order(session, broker_id),
            )
            logger.info("tastytrade: order %s (%s) cancelled", order.order_id, broker_id)
            return
        if order.broker_order_id is not None:
            raise BrokerError(
                f"order {order.order_id}: status {order.status.value} is not live at the broker"
            )
        dropped = self._staged.pop(order.order_id, None)
        logger.info("tastytrade: local stage of order %s %s", order.order_id,
                    "dropped" if dropped else "was not held")


    # ------------------------------------------------------------------ order groups

    async def _sdk_group(self, group: OrderGroup) -> OTOCOOrder | OCOOrder:
        """Bracket -> OTOCO (the entry triggers a take-profit/stop-loss OCO); OCO -> OCO."""
        tp, sl = group.leg("take_profit").order, group.leg("stop_loss").order
        if group.kind == "bracket":
            trigger = await self._sdk_order(group.leg("entry").order)
            take_profit = await self._sdk_any(tp, closing=True)
            stop_loss = await self._sdk_any(sl, closing=True)
        else:
            take_profit = await self._sdk_any(tp)
            stop_loss = await self._sdk_any(sl)
        if not isinstance(take_profit, LimitOrder) or not isinstance(stop_loss, StopOrder):
            raise BrokerError(f"order group {group.group_id}: Tastytrade wants a limit take-profit and a stop")
        if group.kind == "bracket":
            return OTOCOOrder(trigger_order=trigger, take_profit=take_profit, stop_loss=stop_loss)
        return OCOOrder(take_profit=take_profit, stop_loss=stop_loss)

    async def what_if_group(self, group: OrderGroup) -> list[WhatIfResult]:
        """One dry run of the complex order; its margin and fees are reported on the first leg."""
        sdk = await self._sdk_group(group)
        account = self._account(group.account_id)
        session = self._require_session()
        response = await self._call(
            f"POST /accounts/{group.account_id}/complex-orders/dry-run",
            lambda: account.place_complex_order(session, sdk, dry_run=True),
        )
        whole = nz.whatif_result(response)  # type: ignore[arg-type]  # same fields as an order's
        first = group.legs[0].order.order_id
        rest = WhatIfResult(0.0, 0.0, 0.0, None, warnings=(
            f"tastytrade: one dry run for the whole {sdk.type.value} order: its margin and fees are on leg {first}",
            *whole.warnings,
        ))
        return [whole, *[rest] * (len(group.legs) - 1)]

    async def stage_group(self, group: OrderGroup) -> list[StagedOrder]:
        """Dry run of the complex order, kept locally; nothing is placed."""
        whatifs = await self.what_if_group(group)
        now = self._clock()
        staged = [StagedOrder(order_id=leg.order.order_id, broker_order_id=None, whatif=w, staged_at=now)
                  for leg, w in zip(group.legs, whatifs, strict=True)]
        for leg, st in zip(group.legs, staged, strict=True):
            self._staged[leg.order.order_id] = _Staged(leg.order, st)
        logger.info("tastytrade: %s %s staged locally (not sent)", group.kind, group.group_id)
        return staged

    async def transmit_group(self, group: OrderGroup) -> TransmittedGroup:
        """Place the group as ONE complex order (``POST .../complex-orders``)."""
        require_transmittable(group, at=self._clock())
        sdk = await self._sdk_group(group)
        account = self._account(group.account_id)
        session = self._require_session()
        async def place() -> PlacedComplexOrderResponse[Any]:
            return await account.place_complex_order(session, sdk, dry_run=False)

        response = await self._call(f"POST /accounts/{group.account_id}/complex-orders", place)
        placed = response.complex_order
        legs = ([placed.trigger_order] if placed.trigger_order is not None else []) + list(placed.orders)
        if len(legs) != len(group.legs):
            raise BrokerDataError(
                f"tastytrade: complex order {placed.id}: {len(legs)} orders back for {len(group.legs)} legs"
            )
        for leg in group.legs:
            self._staged.pop(leg.order.order_id, None)
        logger.info("tastytrade: %s %s transmitted as complex order %s", group.kind, group.group_id, placed.id)
        return TransmittedGroup(tuple(str(o.id) for o in legs), str(placed.id))

    async def cancel_group(self, group: OrderGroup) -> dict[str, BrokerError]:
        """Delete the complex order (every live leg at once) or drop the local stages."""
        live = [leg.order for leg in group.legs if leg.order.status.is_live_at_broker]
        failures: dict[str, BrokerError] = {}
        if live:
            if group.broker_group_id is None:
                for order in live:
                    try:
                        await self.cancel(order)
                    except BrokerError as exc:
                        failures[order.order_id] = exc
                return failures
            account = self._account(group.account_id)
            session = self._require_session()
            complex_id = int(group.broker_group_id)
            try:
                await self._call(
                    f"DELETE /accounts/{group.account_id}/complex-orders/{complex_id}",
                    lambda: account.delete_complex_order(session, complex_id),
                )
            except BrokerError as exc:
                return {order.order_id: exc for order in live}
            logger.info("tastytrade: complex order %s of group %s cancelled", complex_id, group.group_id)
        for leg in group.legs:
            if leg.order.status in (OrderStatus.STAGED, OrderStatus.SHOWN, OrderStatus.CONFIRMED):
                self._staged.pop(leg.order.order_id, None)
        return failures

    async def resize(self, order: Order, quantity: int) -> None:
        """Tastytrade replaces an order's price and type, never its legs' quantity."""
        raise BrokerError(
            f"tastytrade: order {order.order_id} cannot be resized to {quantity} in place (a replacement keeps "
            "the legs' quantity); cancel the group and stage it again for the filled quantity"
        )

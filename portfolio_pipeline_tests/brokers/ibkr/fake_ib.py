"""In-process fake IB Gateway at ib_async's wire boundary (no network).

A real ``ib_async.IB`` is built and its ``client`` (the socket/encoder half of the SDK) is
replaced by :class:`FakeClient`.  Each request method of the fake answers by calling the
REAL ``ib.wrapper`` callbacks (``position``, ``contractDetails``, ``tickOptionComputation``,
``openOrder``, ``orderStatus``, ``execDetails``, ``error`` ...) inside
``tcpDataArrived()`` / ``tcpDataProcessed()``, exactly as the decoder would for one network
packet, one event-loop turn after the request (``call_soon``; ``call_later`` for
scripted delays).  So ib_async's request futures, Ticker updates, Trade bookkeeping and
events all run unmodified.

Usage::

    gw = FakeGateway(accounts=["U1"])
    spx = gw.add_contract(ib_option(101, "SPX", "20180316", 2700, "P", "SPX"))
    gw.positions.append(("U1", spx, -1, 1523.5))
    gw.portfolio_prices[101] = 12.3
    gw.market[101] = MarketScript(bid=12.1, ask=12.5, greeks=Greeks(0.2, -0.3, ...))
    adapter = IbkrBroker(conn, instruments, ib_factory=gw.make_ib)

Knobs: ``silent`` (request names that never answer), ``client_ids_in_use`` (error 326),
``down`` (connection refused), :meth:`FakeGateway.drop_connection` (gateway restart),
:meth:`FakeGateway.push_ticks` (stream more ticks), ``stage_messages``/``reject_orders``.
Records: ``requests`` (name, args), ``placed`` orders, ``market_data_types``,
``connect_attempts``.

The gateway is ONE shared state behind every API connection (client id) made with
:meth:`FakeGateway.make_ib`, modelled on IB Gateway's order book:

* ``book`` holds every order keyed by ``(clientId, orderId)``: an order belongs to the
  client id that placed it.  ``placeOrder`` with an id the client already used modifies
  that order (e.g. ``transmit=True``); the same id from another client is a NEW order.
* ``cancelOrder`` of an id the client does not own answers error 10147.
* a client id held by a live connection (or listed in ``client_ids_in_use``) gets 326.
* ``reqOpenOrders`` lists the caller's open orders (staged ones as PreSubmitted with their
  permId); ``reqAllOpenOrders`` everyone's.
* :meth:`FakeGateway.restart` drops every connection and loses untransmitted orders;
  :meth:`FakeGateway.fill` (partial) fills, :meth:`FakeGateway.cancel_in_tws` cancels by hand.
* ``transmissions`` is the gateway's own record of every order sent to the exchange.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventkit import Event
from ib_async import (
    IB,
    CommissionReport,
    ConnectionStats,
    Contract,
    ContractDetails,
    Execution,
    Order,
    OrderState,
)
from ib_async.util import UNSET_DOUBLE

CLIENT_ID_IN_USE_TEXT = "Unable to connect as the client id is already in use. Retry with a unique client id."
NO_SECURITY_DEFINITION_TEXT = "No security definition has been found for the request"


# ----------------------------------------------------------------------------- builders


def ib_option(
    con_id: int,
    symbol: str,
    expiry: str,
    strike: float,
    right: str,
    trading_class: str,
    *,
    multiplier: str = "100",
    sec_type: str = "OPT",
    exchange: str = "SMART",
    currency: str = "USD",
    local_symbol: str | None = None,
) -> Contract:
    """An option contract as IBKR reports it (``FOP`` via ``sec_type``)."""
    return Contract(
        conId=con_id,
        symbol=symbol,
        secType=sec_type,
        lastTradeDateOrContractMonth=expiry,
        strike=float(strike),
        right=right,
        multiplier=multiplier,
        exchange=exchange,
        currency=currency,
        localSymbol=local_symbol or f"{trading_class} {expiry[2:]}{right}{int(strike * 1000):08d}",
        tradingClass=trading_class,
    )


def ib_stock(con_id: int, symbol: str, *, exchange: str = "SMART", currency: str = "USD") -> Contract:
    return Contract(
        conId=con_id, symbol=symbol, secType="STK", exchange=exchange, currency=currency,
        localSymbol=symbol, tradingClass=symbol,
    )


def ib_index(con_id: int, symbol: str, *, exchange: str = "CBOE", currency: str = "USD") -> Contract:
    return Contract(
        conId=con_id, symbol=symbol, secType="IND", exchange=exchange, currency=currency,
        localSymbol=symbol,
    )


def ib_future(
    con_id: int, symbol: str, expiry: str, *, multiplier: str = "50", exchange: str = "CME",
    currency: str = "USD", local_symbol: str | None = None,
) -> Contract:
    return Contract(
        conId=con_id, symbol=symbol, secType="FUT", lastTradeDateOrContractMonth=expiry,
        multiplier=multiplier, exchange=exchange, currency=currency,
        localSymbol=local_symbol or f"{symbol}{expiry}", tradingClass=symbol,
    )


# ----------------------------------------------------------------------------- scripts


@dataclass
class Greeks:
    """One model option computation as sent on the wire (IBKR sentinels allowed)."""

    implied_vol: float | None = 0.2
    delta: float | None = -0.3
    opt_price: float | None = 10.0
    pv_dividend: float | None = 0.0
    gamma: float | None = 0.001
    vega: float | None = 2.5
    theta: float | None = -0.8
    und_price: float | None = 2762.13

    def wire(self) -> tuple[float, ...]:
        """Wire values: the decoder never passes None, so None travels as the sentinel."""
        def v(x: float | None, sentinel: float) -> float:
            return sentinel if x is None else x

        return (
            v(self.implied_vol, -1), v(self.delta, -2), v(self.opt_price, -1),
            v(self.pv_dividend, -1), v(self.gamma, -2), v(self.vega, -2), v(self.theta, -2),
            v(self.und_price, -1),
        )


@dataclass
class MarketScript:
    """What the gateway streams after ``reqMktData`` for one conId."""

    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    close: float | None = None
    greeks: Greeks | None = None
    greeks_delay: float = 0.0  # > 0: Greeks arrive in a later packet ("late Greeks")
    volume: float | None = None  # tick 8 (the session's volume)
    call_open_interest: float | None = None  # tick 27 (generic tick 101), sent for a call
    put_open_interest: float | None = None  # tick 28 (generic tick 101), sent for a put


@dataclass
class WhatIfScript:
    init_margin_change: str = "12500.0"
    maint_margin_change: str = "10000.0"
    equity_with_loan_after: str = "98765.0"
    commission: float = 1.32
    min_commission: float = UNSET_DOUBLE
    max_commission: float = UNSET_DOUBLE
    warning_text: str = ""
    messages: list[tuple[int, str]] = field(default_factory=list)  # API warnings for the request


@dataclass
class GatewayOrder:
    """One order in the gateway's book (owned by ``client_id``)."""

    client_id: int
    order_id: int
    perm_id: int
    contract: Contract
    order: Order
    transmitted: bool = False
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_price: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.status not in ("Cancelled", "ApiCancelled", "Filled", "Inactive")

    @property
    def remaining(self) -> float:
        return float(self.order.totalQuantity) - self.filled


@dataclass
class FakeGateway:
    """Scripted state of a simulated IB Gateway shared by every client that connects."""

    accounts: list[str] = field(default_factory=lambda: ["U1"])
    positions: list[tuple[str, Contract, float, float]] = field(default_factory=list)
    portfolio_prices: dict[int, float] = field(default_factory=dict)
    account_summary: list[tuple[str, str, str, str]] = field(default_factory=list)
    account_values_multi: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    details: list[ContractDetails] = field(default_factory=list)
    option_chains: dict[str, list[tuple[str, int, str, str, list[str], list[float]]]] = field(
        default_factory=dict
    )
    market: dict[int, MarketScript] = field(default_factory=dict)
    whatif: WhatIfScript = field(default_factory=WhatIfScript)
    executions: list[tuple[Contract, Execution, CommissionReport]] = field(default_factory=list)
    daily_pnl: dict[str, float] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    client_ids_in_use: set[int] = field(default_factory=set)
    down: bool = False
    stage_messages: list[tuple[int, str]] = field(default_factory=list)
    reject_orders: list[tuple[int, str]] = field(default_factory=list)

    requests: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    placed: list[tuple[int, Contract, Order]] = field(default_factory=list)
    market_data_types: list[int] = field(default_factory=list)
    connect_attempts: list[int] = field(default_factory=list)
    clients: list[FakeClient] = field(default_factory=list)
    book: dict[tuple[int, int], GatewayOrder] = field(default_factory=dict)
    transmissions: list[tuple[int, int, int]] = field(default_factory=list)  # (clientId, orderId, permId)
    next_order_ids: dict[int, int] = field(default_factory=dict)
    perm_seq: int = 9000
    foreign_cancels: list[tuple[int, int]] = field(default_factory=list)  # (clientId, orderId) -> 10147
    unacknowledged: bool = False  # transmitted orders are booked but no status is sent back
    # outside regular trading hours: a transmitted DAY order is accepted and held PreSubmitted
    # (answered with openOrder + orderStatus PreSubmitted), like an untransmitted one looks
    outside_rth: bool = False
    # a placement with transmit=True is lost on the way (never reaches the Gateway): the
    # staged order stays untransmitted and nothing answers
    lose_transmits: bool = False

    # -- setup helpers

    def add_contract(
        self, contract: Contract, *, under_con_id: int = 0, real_expiration: str = ""
    ) -> Contract:
        """Register a contract the gateway knows (answers reqContractDetails); returns it."""
        self.details.append(
            ContractDetails(
                contract=copy.copy(contract),
                underConId=under_con_id,
                realExpirationDate=real_expiration or contract.lastTradeDateOrContractMonth,
                minTick=0.05,
            )
        )
        return contract

    def make_ib(self) -> IB:
        """A real ``IB`` whose wire client is a :class:`FakeClient` of this gateway."""
        ib = IB()
        client = FakeClient(ib, self)
        ib.client = client  # type: ignore[assignment]
        self.clients.append(client)
        return ib

    @property
    def active(self) -> FakeClient | None:
        return next((c for c in self.clients if c.isReady()), None)

    def requests_named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.requests if n == name]

    # -- behaviour

    def drop_connection(self, *, down_for: float | None = None) -> None:
        """The gateway closes every socket (restart); optionally refuses connects for a while."""
        for client in self.clients:
            client.socket_lost()
        if down_for is not None:
            self.down = True
            asyncio.get_running_loop().call_later(down_for, self._up)

    def _up(self) -> None:
        self.down = False

    def holder_of(self, client_id: int) -> FakeClient | None:
        return next((c for c in self.clients if c.isReady() and c.clientId == client_id), None)

    def restart(self) -> None:
        """Gateway restart: every connection drops and untransmitted orders are lost."""
        for key in [k for k, o in self.book.items() if not o.transmitted]:
            del self.book[key]
        self.drop_connection()

    def open_orders(self, client_id: int | None = None) -> list[GatewayOrder]:
        return [
            o for o in self.book.values() if o.is_open and (client_id is None or o.client_id == client_id)
        ]

    def fill(self, client_id: int, order_id: int, quantity: float, price: float, *, exec_id: str) -> None:
        """The exchange fills ``quantity`` of a transmitted order (partial fills allowed)."""
        o = self.book[(client_id, order_id)]
        assert o.transmitted and o.is_open, "only a live transmitted order can fill"
        quantity = min(quantity, o.remaining)
        o.avg_price = (o.avg_price * o.filled + price * quantity) / (o.filled + quantity)
        o.filled += quantity
        o.status = "Filled" if o.remaining <= 0 else "Submitted"
        if o.order.ocaGroup and o.order.ocaType == 1:  # one-cancels-all: the others go
            for other in self.book.values():
                if (other is not o and other.client_id == o.client_id and other.is_open
                        and other.order.ocaGroup == o.order.ocaGroup):
                    other.status = "Cancelled"
                    self._push_status(other)
        self.executions.append((
            copy.copy(o.contract),
            execution(exec_id, o.order.account, "BOT" if o.order.action == "BUY" else "SLD", quantity, price,
                      order_ref=o.order.orderRef, perm_id=o.perm_id, order_id=o.order_id,
                      when=datetime.now(UTC)),
            CommissionReport(execId=exec_id, commission=1.0, currency="USD"),
        ))
        self._push_status(o)

    def cancel_in_tws(self, client_id: int, order_id: int) -> None:
        """A person cancels the order in TWS (outside the platform)."""
        o = self.book[(client_id, order_id)]
        o.status = "Cancelled"
        self._push_status(o)

    def _push_status(self, o: GatewayOrder) -> None:
        owner = self.holder_of(o.client_id)
        if owner is not None:
            owner._later([owner.status_call(o)])

    def system_message(self, code: int, text: str) -> None:
        """A gateway notice such as 1100 (connectivity lost) or 1101/1102 (restored)."""
        for client in self.clients:
            if client.isReady():
                client._later([lambda c=client: c.wrapper.error(-1, code, text, "")])

    def push_ticks(
        self,
        con_id: int,
        *,
        bid: float | None = None,
        ask: float | None = None,
        last: float | None = None,
        greeks: Greeks | None = None,
    ) -> None:
        """Stream one more packet of ticks to every live subscription of ``con_id``."""
        for client in self.clients:
            client.push_ticks(con_id, MarketScript(bid=bid, ask=ask, last=last, greeks=greeks))

    def match(self, request: Contract) -> list[ContractDetails]:
        """Contract details whose contract agrees with every field set in ``request``."""
        fields = (
            "conId", "symbol", "secType", "lastTradeDateOrContractMonth", "strike", "right",
            "tradingClass", "currency",
        )
        found = []
        for d in self.details:
            c = d.contract
            assert c is not None
            if all(
                not getattr(request, f) or getattr(request, f) == getattr(c, f) for f in fields
            ):
                found.append(d)
        return found


class FakeClient:
    """Stands in for ``ib_async.client.Client``: same request API, answers via the wrapper."""

    def __init__(self, ib: IB, gateway: FakeGateway) -> None:
        self.ib = ib
        self.wrapper = ib.wrapper
        self.gateway = gateway
        self.apiStart = Event("apiStart")
        self.apiEnd = Event("apiEnd")
        self.apiError = Event("apiError")
        self.throttleStart = Event("throttleStart")
        self.throttleEnd = Event("throttleEnd")
        self.apiEnd += ib.disconnectedEvent  # as IB.__init__ wires the real client
        self.host = ""
        self.port = -1
        self.clientId = -1
        self._ready = False
        self._generation = 0
        self._next_id = 1
        self._accounts: list[str] = []
        self._mkt: dict[int, int] = {}  # reqId -> conId of live market data lines
        self._perm = 9000

    # -- connection state (Client API)

    def isConnected(self) -> bool:
        return self._ready

    def isReady(self) -> bool:
        return self._ready

    def serverVersion(self) -> int:
        return 178

    def getReqId(self) -> int:
        if not self._ready:
            raise ConnectionError("Not connected")
        value = self._next_id
        self._next_id += 1
        return value

    def updateReqId(self, minReqId: int) -> None:
        self._next_id = max(self._next_id, minReqId)

    def getAccounts(self) -> list[str]:
        if not self._ready:
            raise ConnectionError("Not connected")
        return self._accounts

    def connectionStats(self) -> ConnectionStats:
        return ConnectionStats(time.time(), 0.0, 0, 0, 0, 0)

    def setConnectOptions(self, connectOptions: str) -> None:
        pass

    async def connectAsync(self, host: str, port: int, clientId: int, timeout: float | None = 2.0) -> None:
        self.gateway.connect_attempts.append(clientId)
        await asyncio.sleep(0)
        if self.gateway.down:
            raise ConnectionRefusedError(f"[Errno 111] Connect call failed ('{host}', {port})")
        if clientId in self.gateway.client_ids_in_use or self.gateway.holder_of(clientId) is not None:
            # the gateway answers 326 and closes the socket; the SDK then waits for
            # apiStart until its timeout
            self._packet(
                lambda: self.wrapper.error(-1, 326, CLIENT_ID_IN_USE_TEXT, ""), force=True
            )
            await asyncio.sleep(timeout or 2.0)
            raise TimeoutError()
        self.host, self.port, self.clientId = host, int(port), int(clientId)
        self._next_id = max(self._next_id, self.gateway.next_order_ids.get(self.clientId, 1))
        self._ready = True
        self._generation += 1
        self._accounts = list(self.gateway.accounts)
        self._mkt.clear()
        accounts = ",".join(self._accounts)
        self._packet(
            lambda: self.wrapper.managedAccounts(accounts),
            lambda: self.wrapper.nextValidId(self._next_id),
        )
        self.apiStart.emit()

    def disconnect(self) -> None:
        self._ready = False
        self._generation += 1

    def socket_lost(self) -> None:
        """What ``Client._onSocketDisconnected`` does when the peer closes the socket."""
        was_ready = self._ready
        self._ready = False
        self._generation += 1
        self.wrapper.setEventsDone()
        if was_ready:
            self.wrapper.connectionClosed()
            self.apiEnd.emit()

    # -- delivery

    def _packet(self, *calls: Callable[[], object], force: bool = False) -> None:
        if not (self._ready or force):
            return
        self.wrapper.tcpDataArrived()
        for call in calls:
            call()
        self.wrapper.tcpDataProcessed()

    def _later(self, calls: Iterable[Callable[[], object]], delay: float = 0.0) -> None:
        batch = list(calls)
        generation = self._generation

        def run() -> None:
            if self._ready and self._generation == generation:
                self._packet(*batch)

        loop = asyncio.get_running_loop()
        if delay > 0:
            loop.call_later(delay, run)
        else:
            loop.call_soon(run)

    def _record(self, name: str, *args: Any) -> bool:
        """Record the request; False when the gateway is scripted to never answer it."""
        self.gateway.requests.append((name, args))
        self.gateway.request_times.append(time.monotonic())
        return name not in self.gateway.silent

    # -- requests (Client API), answered through the real wrapper

    def reqMarketDataType(self, marketDataType: int) -> None:
        self._record("reqMarketDataType", marketDataType)
        self.gateway.market_data_types.append(marketDataType)

    def reqAutoOpenOrders(self, bAutoBind: bool) -> None:
        self._record("reqAutoOpenOrders", bAutoBind)

    def reqIds(self, numIds: int) -> None:
        if self._record("reqIds", numIds):
            self._later([lambda: self.wrapper.nextValidId(self._next_id)])

    def reqCurrentTime(self) -> None:
        if self._record("reqCurrentTime"):
            self._later([lambda: self.wrapper.currentTime(int(time.time()))])

    def reqPositions(self) -> None:
        if not self._record("reqPositions"):
            return
        calls: list[Callable[[], object]] = [
            (lambda a=a, c=c, p=p, avg=avg: self.wrapper.position(a, copy.copy(c), p, avg))
            for a, c, p, avg in self.gateway.positions
        ]
        calls.append(self.wrapper.positionEnd)
        self._later(calls)

    def cancelPositions(self) -> None:
        self._record("cancelPositions")

    def reqOpenOrders(self) -> None:
        if self._record("reqOpenOrders"):
            self._later([*self._open_order_calls(self.gateway.open_orders(self.clientId)), self.wrapper.openOrderEnd])

    def reqAllOpenOrders(self) -> None:
        if self._record("reqAllOpenOrders"):
            self._later([*self._open_order_calls(self.gateway.open_orders()), self.wrapper.openOrderEnd])

    def _open_order_calls(self, book: list[GatewayOrder]) -> list[Callable[[], object]]:
        calls: list[Callable[[], object]] = []
        for o in book:
            calls.append(lambda o=o: self.wrapper.openOrder(
                o.order_id, copy.copy(o.contract), copy.copy(o.order), OrderState(status=o.status)))
            calls.append(self.status_call(o))
        return calls

    def status_call(self, o: GatewayOrder) -> Callable[[], object]:
        return lambda: self.wrapper.orderStatus(
            o.order_id, o.status, o.filled, o.remaining, o.avg_price, o.perm_id, 0, o.avg_price,
            o.client_id, "", 0.0,
        )

    def reqCompletedOrders(self, apiOnly: bool) -> None:
        if self._record("reqCompletedOrders", apiOnly):
            self._later([self.wrapper.completedOrdersEnd])

    def reqAccountUpdates(self, subscribe: bool, acctCode: str) -> None:
        if not self._record("reqAccountUpdates", subscribe, acctCode) or not subscribe:
            return
        calls: list[Callable[[], object]] = []
        for account, contract, pos, avg in self.gateway.positions:
            if account != acctCode or contract.conId not in self.gateway.portfolio_prices:
                continue
            price = self.gateway.portfolio_prices[contract.conId]
            mult = float(contract.multiplier or 1)
            calls.append(
                lambda c=contract, p=pos, px=price, m=mult, avg=avg: self.wrapper.updatePortfolio(
                    copy.copy(c), p, px, px * p * m, avg, (px * m - avg) * p, 0.0, acctCode
                )
            )
        calls.append(lambda: self.wrapper.accountDownloadEnd(acctCode))
        self._later(calls)

    def reqAccountUpdatesMulti(self, reqId: int, account: str, modelCode: str, ledgerAndNLV: bool) -> None:
        if not self._record("reqAccountUpdatesMulti", reqId, account, modelCode):
            return
        calls: list[Callable[[], object]] = [
            (lambda a=a, m=m, t=t, v=v, c=c: self.wrapper.accountUpdateMulti(reqId, a, m, t, v, c))
            for a, m, t, v, c in self.gateway.account_values_multi
            if a == account and (not modelCode or m == modelCode)
        ]
        calls.append(lambda: self.wrapper.accountUpdateMultiEnd(reqId))
        self._later(calls)

    def cancelAccountUpdatesMulti(self, reqId: int) -> None:
        self._record("cancelAccountUpdatesMulti", reqId)

    def reqAccountSummary(self, reqId: int, groupName: str, tags: str) -> None:
        if not self._record("reqAccountSummary", reqId, groupName, tags):
            return
        calls: list[Callable[[], object]] = [
            (lambda a=a, t=t, v=v, c=c: self.wrapper.accountSummary(reqId, a, t, v, c))
            for a, t, v, c in self.gateway.account_summary
        ]
        calls.append(lambda: self.wrapper.accountSummaryEnd(reqId))
        self._later(calls)

    def cancelAccountSummary(self, reqId: int) -> None:
        self._record("cancelAccountSummary", reqId)

    def reqPnL(self, reqId: int, account: str, modelCode: str) -> None:
        if self._record("reqPnL", reqId, account, modelCode) and account in self.gateway.daily_pnl:
            daily = self.gateway.daily_pnl[account]
            self._later([lambda: self.wrapper.pnl(reqId, daily, 0.0, 0.0)], delay=0.01)

    def cancelPnL(self, reqId: int) -> None:
        self._record("cancelPnL", reqId)

    def reqContractDetails(self, reqId: int, contract: Contract) -> None:
        if not self._record("reqContractDetails", reqId, copy.copy(contract)):
            return
        found = self.gateway.match(contract)
        if not found:
            self._later([lambda: self.wrapper.error(reqId, 200, NO_SECURITY_DEFINITION_TEXT, "")])
            return
        calls: list[Callable[[], object]] = [
            (lambda d=d: self.wrapper.contractDetails(reqId, copy.deepcopy(d))) for d in found
        ]
        calls.append(lambda: self.wrapper.contractDetailsEnd(reqId))
        self._later(calls)

    def reqSecDefOptParams(
        self, reqId: int, underlyingSymbol: str, futFopExchange: str, underlyingSecType: str,
        underlyingConId: int,
    ) -> None:
        if not self._record(
            "reqSecDefOptParams", reqId, underlyingSymbol, futFopExchange, underlyingSecType,
            underlyingConId,
        ):
            return
        calls: list[Callable[[], object]] = [
            (lambda ch=ch: self.wrapper.securityDefinitionOptionParameter(reqId, *ch))
            for ch in self.gateway.option_chains.get(underlyingSymbol, [])
        ]
        calls.append(lambda: self.wrapper.securityDefinitionOptionParameterEnd(reqId))
        self._later(calls)

    def reqMktData(
        self, reqId: int, contract: Contract, genericTickList: str, snapshot: bool,
        regulatorySnapshot: bool, mktDataOptions: list[Any],
    ) -> None:
        if not self._record("reqMktData", reqId, contract.conId, genericTickList, snapshot):
            return
        self._mkt[reqId] = contract.conId
        script = self.gateway.market.get(contract.conId)
        if script is None:
            return
        self._later(self._tick_calls(reqId, script, with_greeks=script.greeks_delay <= 0))
        if script.greeks is not None and script.greeks_delay > 0:
            greeks = script.greeks
            self._later(
                [lambda: self.wrapper.tickOptionComputation(reqId, 13, 0, *greeks.wire())],
                delay=script.greeks_delay,
            )

    def cancelMktData(self, reqId: int) -> None:
        self._record("cancelMktData", reqId)
        self._mkt.pop(reqId, None)

    def push_ticks(self, con_id: int, script: MarketScript) -> None:
        for req_id, con in list(self._mkt.items()):
            if con == con_id:
                self._later(self._tick_calls(req_id, script, with_greeks=True))

    def _tick_calls(
        self, reqId: int, script: MarketScript, *, with_greeks: bool
    ) -> list[Callable[[], object]]:
        w = self.wrapper
        calls: list[Callable[[], object]] = []
        if script.bid is not None:
            calls.append(lambda: w.priceSizeTick(reqId, 1, script.bid, 0 if script.bid < 0 else 10))
        if script.ask is not None:
            calls.append(lambda: w.priceSizeTick(reqId, 2, script.ask, 0 if script.ask < 0 else 10))
        if script.last is not None:
            calls.append(lambda: w.priceSizeTick(reqId, 4, script.last, 1))
        if script.close is not None:
            calls.append(lambda: w.priceSizeTick(reqId, 9, script.close, 0))
        if script.volume is not None:
            calls.append(lambda: w.tickSize(reqId, 8, script.volume))
        if script.call_open_interest is not None:
            calls.append(lambda: w.tickSize(reqId, 27, script.call_open_interest))
        if script.put_open_interest is not None:
            calls.append(lambda: w.tickSize(reqId, 28, script.put_open_interest))
        if with_greeks and script.greeks is not None:
            greeks = script.greeks
            calls.append(lambda: w.tickOptionComputation(reqId, 13, 0, *greeks.wire()))
        return calls

    def placeOrder(self, orderId: int, contract: Contract, order: Order) -> None:
        sent = copy.deepcopy(order)
        sent.orderId = orderId
        sent.clientId = self.clientId
        if sent.whatIf:
            if not self._record("whatIfOrder", orderId, copy.copy(contract)):
                return
            wi = self.gateway.whatif
            state = OrderState(
                status="PreSubmitted",
                initMarginChange=wi.init_margin_change,
                maintMarginChange=wi.maint_margin_change,
                equityWithLoanAfter=wi.equity_with_loan_after,
                commission=wi.commission,
                minCommission=wi.min_commission,
                maxCommission=wi.max_commission,
                warningText=wi.warning_text,
            )
            calls: list[Callable[[], object]] = [
                (lambda code=code, text=text: self.wrapper.error(orderId, code, text, ""))
                for code, text in wi.messages
            ]
            calls.append(lambda: self.wrapper.openOrder(orderId, copy.copy(contract), sent, state))
            self._later(calls)
            return
        if sent.transmit and self.gateway.lose_transmits:
            return
        if not self._record("placeOrder", orderId, copy.copy(contract), sent):
            return
        self.gateway.placed.append((orderId, copy.copy(contract), sent))
        gw = self.gateway
        gw.next_order_ids[self.clientId] = max(gw.next_order_ids.get(self.clientId, 1), orderId + 1)
        if self.gateway.reject_orders:
            self._later(
                [
                    (lambda code=code, text=text: self.wrapper.error(orderId, code, text, ""))
                    for code, text in self.gateway.reject_orders
                ]
            )
            return
        key = (self.clientId, orderId)
        existing = gw.book.get(key)
        if existing is not None and existing.is_open:
            sent.permId = existing.perm_id
            existing.order, existing.contract = sent, copy.copy(contract)
            booked = existing
        else:
            gw.perm_seq += 1
            sent.permId = gw.perm_seq
            booked = gw.book[key] = GatewayOrder(self.clientId, orderId, sent.permId, copy.copy(contract), sent)
        if sent.transmit and not booked.transmitted:
            booked.transmitted = True
            booked.status = "PreSubmitted" if gw.outside_rth else "Submitted"
            gw.transmissions.append((self.clientId, orderId, booked.perm_id))
        if not sent.transmit:
            # an untransmitted order gets no status from the gateway; only warnings
            if self.gateway.stage_messages:
                self._later(
                    [
                        (lambda code=code, text=text: self.wrapper.error(orderId, code, text, ""))
                        for code, text in self.gateway.stage_messages
                    ]
                )
            return
        if self.gateway.unacknowledged:
            return  # e.g. the connection stalls right after the send: the order is live, unconfirmed
        state = OrderState(status=booked.status)
        self._later(
            [
                lambda: self.wrapper.openOrder(orderId, copy.copy(contract), sent, state),
                self.status_call(booked),
            ]
        )

    def cancelOrder(self, orderId: int, manualCancelOrderTime: str = "") -> None:
        if not self._record("cancelOrder", orderId):
            return
        booked = self.gateway.book.get((self.clientId, orderId))
        if booked is None or not booked.is_open:
            # not this client's order (another client id owns it, or it is gone)
            self.gateway.foreign_cancels.append((self.clientId, orderId))
            self._later([lambda: self.wrapper.error(
                orderId, 10147, f"OrderId {orderId} that needs to be cancelled is not found.", "")])
            return
        booked.status = "Cancelled"
        self._later(
            [self.status_call(booked), lambda: self.wrapper.error(orderId, 202, "Order Canceled - reason:", "")]
        )

    def reqExecutions(self, reqId: int, execFilter: Any) -> None:
        if not self._record("reqExecutions", reqId, copy.copy(execFilter)):
            return
        rows = [
            (c, e, r) for c, e, r in self.gateway.executions
            if not execFilter.acctCode or e.acctNumber == execFilter.acctCode
        ]
        calls: list[Callable[[], object]] = [
            (lambda c=c, e=e: self.wrapper.execDetails(reqId, copy.copy(c), copy.copy(e)))
            for c, e, _ in rows
        ]
        calls.append(lambda: self.wrapper.execDetailsEnd(reqId))
        self._later(calls)
        # commission reports follow in a later packet, as they do from a real gateway
        self._later(
            [(lambda r=r: self.wrapper.commissionReport(copy.copy(r))) for _, _, r in rows],
            delay=0.01,
        )


def execution(
    exec_id: str, account: str, side: str, shares: float, price: float, *,
    when: datetime | None = None, order_ref: str = "", perm_id: int = 1, order_id: int = 0,
) -> Execution:
    return Execution(
        execId=exec_id,
        time=when or datetime(2018, 2, 2, 15, 30, tzinfo=UTC),
        acctNumber=account,
        exchange="CBOE",
        side=side,
        shares=shares,
        price=price,
        permId=perm_id,
        orderId=order_id,
        orderRef=order_ref,
    )

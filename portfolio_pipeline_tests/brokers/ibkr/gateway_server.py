"""The Gateway double on a real TCP socket: the IB API wire protocol on 127.0.0.1.

A small server speaking the TWS API (server version 178) for the messages the order
path uses, over the SAME shared state as :class:`FakeGateway` (``book``,
``transmissions``, ``next_order_ids``, ``details``, ``whatif``): so separate processes
(the streaming service staging a hedge, ``portfolio orders show/confirm``) connect to one
gateway with the real ib_async client, and tests assert from the gateway's own record.

Spoken: the handshake (``API\\0`` + version range -> server version and time), startApi
(error 326 and a closed socket when the client id is held by a live connection;
otherwise nextValidId from the per-client counter and managedAccounts), reqPositions
(position rows + positionEnd), reqOpenOrders (openOrder + orderStatus per open order of
that client id, openOrderEnd), reqContractDetails (contractDetails/End or error 200),
reqSecDefOptParams (``FakeGateway.option_chains``), placeOrder (WhatIf -> openOrder with
the margin fields; otherwise booked per (clientId, orderId): a new order, or the owner's
modification, e.g. transmit; a transmit is answered with openOrder + orderStatus,
``Submitted``, or ``PreSubmitted`` when held outside regular hours (``outside_rth``);
``lose_transmits`` drops a transmit on the way), cancelOrder (owner: orderStatus Cancelled
+ error 202; anyone else: error 10147), reqExecutions (execDetails + commissionReport per
recorded fill, execDetailsEnd), reqIds, reqAccountSummary, reqAccountUpdates (portfolio
rows of the priced positions) and reqMktData (price ticks from ``FakeGateway.market`` and
the model option computation, tick 13).  Everything else is read and ignored.  Single-leg
and BAG (combo) orders: the placeOrder field positions are learned from ib_async's own
encoder; a BAG's combo block is read where the encoder writes it.  As at IBKR, openOrder
and orderStatus carry no transmit flag.
"""

from __future__ import annotations

import asyncio
import copy
import struct
import threading
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from ib_async import IB, ComboLeg, Contract, Order
from ib_async.client import Client
from ib_async.util import UNSET_DOUBLE

from portfolio_pipeline_tests.brokers.ibkr.fake_ib import (
    CLIENT_ID_IN_USE_TEXT,
    NO_SECURITY_DEFINITION_TEXT,
    FakeGateway,
    GatewayOrder,
)

SERVER_VERSION = 178


def _placeorder_layout() -> tuple[int, dict[str, int]]:
    """Field positions of a single-leg placeOrder, learned by diffing ib_async's encoder."""
    ib = IB()
    client = ib.client
    client._serverVersion = SERVER_VERSION
    client.connState = Client.CONNECTED
    out: list[list[str]] = []
    client.sendMsg = lambda msg: out.append(msg.split("\0")[:-1])  # type: ignore[method-assign]
    contract = Contract(conId=1, symbol="S", secType="OPT", lastTradeDateOrContractMonth="20180316",
                        strike=1.0, right="P", multiplier="100", exchange="SMART", currency="USD")
    base: dict[str, Any] = dict(action="BUY", totalQuantity=1.0, orderType="LMT", lmtPrice=1.0, tif="DAY",
                                account="A", orderRef="r", transmit=False, whatIf=False)
    changed: dict[str, Any] = dict(action="SELL", totalQuantity=2.0, lmtPrice=3.5, tif="GTC", account="B",
                                   orderRef="q", transmit=True, whatIf=True, hidden=True, orderType="TRAIL",
                                   auxPrice=0.75, trailingPercent=1.5, parentId=5, ocaGroup="g", ocaType=1)

    def encode(**kw: Any) -> list[str]:
        out.clear()
        client.placeOrder(7, contract, Order(**{**base, **kw}))
        return out[0]

    reference = encode()
    positions: dict[str, int] = {}
    for name, value in changed.items():
        other = encode(**{name: value})
        (positions[name],) = [i for i, (x, y) in enumerate(zip(reference, other, strict=True)) if x != y]
    client.connState = Client.DISCONNECTED
    return len(reference), positions


def _frame(fields: Sequence[object]) -> bytes:
    body = "".join(f"{'' if f is None else f}\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def _f(value: float) -> str:
    return "" if value is None else repr(float(value))


def _p(value: float) -> str:
    """A price field: unset (ib_async's UNSET_DOUBLE) travels as an empty field."""
    return "" if value is None or value == UNSET_DOUBLE else repr(float(value))


class GatewayServer:
    """Serve ``gateway`` on 127.0.0.1 from a thread with its own event loop."""

    def __init__(self, gateway: FakeGateway) -> None:
        self.gateway = gateway
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-ib-gateway", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._live: dict[int, asyncio.StreamWriter] = {}  # client id -> connection
        self._lock = threading.Lock()  # the test thread reads the gateway state
        self._length, self._pos = _placeorder_layout()
        self.messages: list[tuple[int, int]] = []  # (client id, message id) received
        self.start_requests: list[int] = []  # client ids asked for in startApi, in order

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> GatewayServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._live.values()):
                writer.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def go_down(self) -> None:
        """The Gateway goes away and stays away: connections closed, new ones refused."""

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._live.values()):
                writer.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)

    def restart(self) -> None:
        """Gateway restart: every connection is closed and untransmitted orders are lost."""

        async def drop() -> None:
            for writer in list(self._live.values()):
                writer.close()

        with self._lock:
            for key in [k for k, o in self.gateway.book.items() if not o.transmitted]:
                del self.gateway.book[key]
        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(10)

    def state(self) -> tuple[list[tuple[int, int, int]], dict[tuple[int, int], GatewayOrder]]:
        """A consistent copy of (transmissions, book) for assertions."""
        with self._lock:
            return list(self.gateway.transmissions), copy.deepcopy(self.gateway.book)

    # ------------------------------------------------------------------ connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client_id: int | None = None
        try:
            if await reader.readexactly(4) != b"API\0":
                return
            (n,) = struct.unpack(">I", await reader.readexactly(4))
            await reader.readexactly(n)  # "v157..178" and connect options
            writer.write(_frame([SERVER_VERSION, "20180205 15:00:00 EST"]))
            while True:
                (n,) = struct.unpack(">I", await reader.readexactly(4))
                fields = (await reader.readexactly(n)).decode().split("\0")[:-1]
                msg_id = int(fields[0])
                self.messages.append((client_id if client_id is not None else -1, msg_id))
                if msg_id == 71:  # startApi
                    wanted = int(fields[2])
                    self.start_requests.append(wanted)
                    with self._lock:
                        held = wanted in self._live or wanted in self.gateway.client_ids_in_use
                        if not held:
                            self._live[wanted] = writer
                            client_id = wanted
                            next_id = self.gateway.next_order_ids.get(wanted, 1)
                    if held:
                        writer.write(_frame([4, 2, -1, 326, CLIENT_ID_IN_USE_TEXT, ""]))
                        await writer.drain()
                        return
                    writer.write(_frame([9, 1, next_id]))
                    writer.write(_frame([15, 1, ",".join(self.gateway.accounts)]))
                elif client_id is not None:
                    for out in self._handle(client_id, msg_id, fields):
                        writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with self._lock:
                if client_id is not None and self._live.get(client_id) is writer:
                    del self._live[client_id]
            writer.close()

    # ------------------------------------------------------------------ requests

    def _handle(self, cid: int, msg_id: int, f: list[str]) -> list[bytes]:
        with self._lock:
            if msg_id == 61:  # reqPositions
                rows = [_frame([61, 3, a, *self._contract_fields(c), c.tradingClass, _f(p), _f(avg)])
                        for a, c, p, avg in self.gateway.positions]
                return [*rows, _frame([62, 1])]
            if msg_id == 78:  # reqSecDefOptParams
                req_id, symbol = int(f[1]), f[2]
                chains = [_frame([75, req_id, exchange, und, tc, mult, len(exp), *exp, len(strikes),
                                  *[_f(k) for k in strikes]])
                          for exchange, und, tc, mult, exp, strikes in self.gateway.option_chains.get(symbol, [])]
                return [*chains, _frame([76, req_id])]
            if msg_id == 5:  # reqOpenOrders
                out = []
                for o in self.gateway.open_orders(cid):
                    out += [self._open_order(o.order_id, o.contract, o.order, o.status), self._status(o)]
                return [*out, _frame([53, 1])]
            if msg_id == 8:  # reqIds
                return [_frame([9, 1, self.gateway.next_order_ids.get(cid, 1)])]
            if msg_id == 9:  # reqContractDetails
                return self._contract_details(f)
            if msg_id == 3:  # placeOrder
                return self._place(cid, f)
            if msg_id == 4:  # cancelOrder
                return self._cancel(cid, int(f[2]))
            if msg_id == 7:  # reqExecutions: execDetails + commissionReport per fill of the filter
                return self._executions(int(f[2]), f[4], f[5])
            if msg_id == 62:  # reqAccountSummary
                rows = [_frame([63, 1, f[2], a, t, v, c]) for a, t, v, c in self.gateway.account_summary]
                return [*rows, _frame([64, 1, f[2]])]
            if msg_id == 6:  # reqAccountUpdates: portfolio rows of the account's priced positions
                if f[2] != "1":
                    return []
                rows = []
                for a, c, pos, avg in self.gateway.positions:
                    px = self.gateway.portfolio_prices.get(c.conId)
                    if a != f[3] or px is None:
                        continue
                    m = float(c.multiplier or 1)
                    rows.append(_frame([7, 8, *self._contract_fields(c), c.tradingClass, _f(pos), _f(px),
                                        _f(px * pos * m), _f(avg), _f((px * m - avg) * pos), _f(0.0), a]))
                return [*rows, _frame([54, 1, f[3]])]
            if msg_id == 1:  # reqMktData: one packet of price ticks from the script
                script = self.gateway.market.get(int(f[3] or 0))
                if script is None:
                    return []
                ticks = [(1, script.bid), (2, script.ask), (4, script.last), (9, script.close)]
                out = [_frame([1, 6, f[2], tick, _f(px), 1, 0]) for tick, px in ticks if px is not None]
                if script.greeks is not None:  # model option computation (tick 13), sentinels as sent
                    out.append(_frame([21, f[2], 13, 0, *[_f(x) for x in script.greeks.wire()]]))
                return out
            return []  # reqMarketDataType and anything else: no answer needed

    def _contract_details(self, f: list[str]) -> list[bytes]:
        req_id = int(f[2])
        request = Contract(
            conId=int(f[3] or 0), symbol=f[4], secType=f[5], lastTradeDateOrContractMonth=f[6],
            strike=float(f[7] or 0), right=f[8], currency=f[12], tradingClass=f[14],
        )
        found = self.gateway.match(request)
        if not found:
            return [_frame([4, 2, req_id, 200, NO_SECURITY_DEFINITION_TEXT, ""])]
        out = []
        for d in found:
            c = d.contract
            assert c is not None
            out.append(_frame([
                10, req_id, c.symbol, c.secType, c.lastTradeDateOrContractMonth, _f(c.strike), c.right,
                c.exchange, c.currency, c.localSymbol, "", c.tradingClass, c.conId, _f(d.minTick),
                c.multiplier, "LMT", c.exchange, 1, d.underConId, "", "", "", "", "", "", "", "", "", "", "",
                0,  # no secIds
                "", "", "", "", d.realExpirationDate, "", "", "", "",
            ]))
        return [*out, _frame([52, 1, req_id])]

    def _combo_block(self, f: list[str]) -> tuple[list[ComboLeg], list[str]]:
        """A BAG placement's combo legs, and its fields without the combo block.

        ib_async writes the block (legs x 8 fields, order combo leg prices, smart combo
        routing params) right after ``hidden``; without it the message has the single-leg
        layout.
        """
        start = self._pos["hidden"] + 1
        i = start
        legs = []
        for _ in range(int(f[i])):
            con_id, ratio, action, exchange = f[i + 1: i + 5]
            legs.append(ComboLeg(conId=int(con_id), ratio=int(ratio), action=action, exchange=exchange))
            i += 8
        i += 1
        i += 1 + int(f[i])  # order combo leg prices
        i += 1 + 2 * int(f[i])  # smart combo routing params
        return legs, [*f[:start], *f[i:]]

    def _place(self, cid: int, f: list[str]) -> list[bytes]:
        legs: list[ComboLeg] = []
        if f[4] == "BAG":
            legs, f = self._combo_block(f)
        if len(f) != self._length:
            return [_frame([4, 2, int(f[1]), 321, "gateway double: this order shape is not spoken", ""])]
        p = self._pos
        order_id = int(f[1])
        contract = Contract(
            conId=int(f[2] or 0), symbol=f[3], secType=f[4], lastTradeDateOrContractMonth=f[5],
            strike=float(f[6] or 0), right=f[7], multiplier=f[8], exchange=f[9], currency=f[11],
            localSymbol=f[12], tradingClass=f[13], comboLegs=legs,
        )
        def price(name: str) -> float:
            return float(f[p[name]]) if f[p[name]] else UNSET_DOUBLE

        order = Order(
            orderId=order_id, clientId=cid, action=f[p["action"]], totalQuantity=float(f[p["totalQuantity"]]),
            orderType=f[p["orderType"]], lmtPrice=price("lmtPrice"), auxPrice=price("auxPrice"),
            trailingPercent=price("trailingPercent"), parentId=int(f[p["parentId"]] or 0),
            ocaGroup=f[p["ocaGroup"]], ocaType=int(f[p["ocaType"]] or 0), tif=f[p["tif"]],
            account=f[p["account"]], orderRef=f[p["orderRef"]], transmit=f[p["transmit"]] == "1",
            whatIf=f[p["whatIf"]] == "1",
        )
        gw = self.gateway
        if order.whatIf:
            wi = gw.whatif
            return [self._open_order(order_id, contract, order, "PreSubmitted", whatif=wi)]
        if order.transmit and gw.lose_transmits:
            return []  # lost on the way: the Gateway never saw it
        gw.next_order_ids[cid] = max(gw.next_order_ids.get(cid, 1), order_id + 1)
        gw.placed.append((order_id, copy.copy(contract), order))
        key = (cid, order_id)
        booked = gw.book.get(key)
        if booked is not None and booked.is_open:
            order.permId = booked.perm_id
            booked.order, booked.contract = order, contract
        else:
            gw.perm_seq += 1
            order.permId = gw.perm_seq
            booked = gw.book[key] = GatewayOrder(cid, order_id, order.permId, contract, order)
        if not order.transmit:
            return []
        out: list[bytes] = []
        # as at IBKR, transmitting a child transmits its parent and the parent's other
        # (untransmitted) children with it: the bracket goes out whole, parent first
        family = [booked]
        if order.parentId:
            parent = gw.book.get((cid, order.parentId))
            if parent is None or not parent.is_open:
                return [_frame([4, 2, order_id, 135, f"Can't find order with id ={order.parentId}", ""])]
            siblings = [o for k, o in sorted(gw.book.items())
                        if k[0] == cid and o.order.parentId == order.parentId and o is not booked and o.is_open]
            family = [parent, *siblings, booked]
        for member in family:
            if not member.transmitted:
                member.transmitted = True
                member.status = "PreSubmitted" if gw.outside_rth else "Submitted"  # held until the session
                gw.transmissions.append((cid, member.order_id, member.perm_id))
            out += [self._open_order(member.order_id, member.contract, member.order, member.status),
                    self._status(member)]
        return out

    def _executions(self, req_id: int, account: str, since: str) -> list[bytes]:
        out = []
        for c, ex, comm in self.gateway.executions:
            if account and ex.acctNumber != account:
                continue
            if since and f"{ex.time.astimezone(UTC):%Y%m%d-%H:%M:%S}" < since:
                continue
            out.append(_frame([
                11, req_id, ex.orderId, *self._contract_fields(c), c.tradingClass, ex.execId,
                f"{ex.time.astimezone(UTC):%Y%m%d %H:%M:%S} UTC", ex.acctNumber, ex.exchange, ex.side,
                _f(ex.shares), _f(ex.price), ex.permId, ex.clientId, 0, _f(ex.cumQty), _f(ex.avgPrice),
                ex.orderRef, "", "", "", 0, 0,
            ]))
            out.append(_frame([59, 1, comm.execId, _f(comm.commission), comm.currency, "", "", ""]))
        return [*out, _frame([55, 1, req_id])]

    def fill(self, client_id: int, order_id: int, quantity: float, price: float, *, exec_id: str) -> None:
        """The exchange fills part of a transmitted order (recorded; reported on request)."""
        with self._lock:
            self.gateway.fill(client_id, order_id, quantity, price, exec_id=exec_id)

    def _cancel(self, cid: int, order_id: int) -> list[bytes]:
        booked = self.gateway.book.get((cid, order_id))
        if booked is None or not booked.is_open:
            self.gateway.foreign_cancels.append((cid, order_id))
            return [_frame([4, 2, order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.", ""])]
        booked.status = "Cancelled"
        out = [self._status(booked), _frame([4, 2, order_id, 202, "Order Canceled - reason:", ""])]
        for child in self.gateway.book.values():  # cancelling a parent cancels its children
            if child.client_id == cid and child.order.parentId == order_id and child.is_open:
                child.status = "Cancelled"
                out += [self._status(child), _frame([4, 2, child.order_id, 202, "Order Canceled - reason:", ""])]
        return out

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _contract_fields(c: Contract) -> list[object]:
        """conId .. localSymbol as position/updatePortfolio carry them (exchange: primary)."""
        return [c.conId, c.symbol, c.secType, c.lastTradeDateOrContractMonth, _f(c.strike), c.right,
                c.multiplier, c.exchange, c.currency, c.localSymbol]

    @staticmethod
    def _status(o: GatewayOrder) -> bytes:
        return _frame([3, o.order_id, o.status, _f(o.filled), _f(o.remaining), _f(o.avg_price), o.perm_id, 0,
                       _f(o.avg_price), o.client_id, "", ""])

    @staticmethod
    def _open_order(order_id: int, c: Contract, o: Order, status: str, whatif: Any = None) -> bytes:
        """openOrder for server version 178, field by field as ib_async's decoder reads it."""
        margins = [""] * 9
        commission: list[object] = ["", "", "", ""]
        warning = ""
        if whatif is not None:
            margins = ["", "", "", whatif.init_margin_change, whatif.maint_margin_change, "", "", "",
                       whatif.equity_with_loan_after]
            commission = [_f(whatif.commission), "", "", "USD"]
            warning = whatif.warning_text
        fields: list[object] = [
            5, order_id, c.conId, c.symbol, c.secType, c.lastTradeDateOrContractMonth, _f(c.strike), c.right,
            c.multiplier, c.exchange, c.currency, c.localSymbol, c.tradingClass,
            o.action, _f(o.totalQuantity), o.orderType, _p(o.lmtPrice), _p(o.auxPrice), o.tif, o.ocaGroup,
            o.account, "", 0, o.orderRef, o.clientId, o.permId, 0, 0, "", "", "", "", "", "",
            # modelCode .. deltaNeutralAuxPrice (29): ocaType at 19, parentId at 23
            *[""] * 19, o.ocaType or "", *[""] * 3, o.parentId or "", *[""] * 5,
            # continuousUpdate .. comboLegsDescrip (7): trailingPercent at 3
            "", "", "", _p(o.trailingPercent), "", "", "",
            len(c.comboLegs or []),  # combo legs: conId, ratio, action, exchange, openClose .. exemptCode
            *[x for leg in c.comboLegs or [] for x in (leg.conId, leg.ratio, leg.action, leg.exchange, 0, 0, "", -1)],
            0, 0,  # order combo legs, smart combo routing params
            "", "", "",  # scale init/subs level size, price increment
            "",  # hedgeType
            "", "", "", "", 0,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dncPresent
            "",  # algoStrategy
            "", 1 if o.whatIf else 0, status, *margins, *commission, warning, "", "",
            0,  # conditions
            *[""] * 16,  # adjustedOrderType .. usePriceMgmtAlgo
            "", "", "",  # duration, postToAts, autoCancelParent
            *[""] * 5,  # minTradeQty .. midOffsetAtHalf
        ]
        return _frame(fields)

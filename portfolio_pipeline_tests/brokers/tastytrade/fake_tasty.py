"""A fake Tastytrade at the SDK's wire boundary.

- :class:`FakeTasty` is an ASGI app serving the REST endpoints the SDK calls (OAuth
  refresh, accounts, positions, balances, option chains, futures, transactions, orders
  dry-run/place/delete, DXLink quote token) with JSON shaped like the SDK's models
  expect; every request is recorded, failures and raw bodies can be injected.
- :class:`FakeDXLink` is a DXLink websocket server (the ``websockets`` library) on
  127.0.0.1 and a free port, speaking the SETUP/AUTH/CHANNEL/FEED protocol and
  streaming COMPACT Quote/Greeks data; a value ``"NaN"`` is sent as dxfeed does (and
  dropped by the SDK).
- :class:`FakeTransport` puts both behind the SDK's ``httpx2`` client: HTTP requests go
  in-process to the ASGI app; websocket (``ws://``) requests go to the loopback server
  through a real ``httpx2.AsyncHTTPTransport`` (anything not 127.0.0.1 is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import httpx2
from websockets.asyncio.server import Server, ServerConnection, serve

ACCOUNT = "5WT00001"
CLIENT_SECRET = "cs-very-secret-4711"  # pragma: allowlist secret (a test's fake)
REFRESH_TOKEN = "rt-also-secret-0815"
ACCESS_TOKEN = "access-token-abc"
DX_TOKEN = "dxlink-token-xyz"
ENV = {"TASTYTRADE_CLIENT_SECRET": CLIENT_SECRET, "TASTYTRADE_REFRESH_TOKEN": REFRESH_TOKEN}

TS = "2018-02-02T21:00:00.000+00:00"

SPXW_PUT = "SPXW  180216P02700000"
ES_PUT = "./ESH8 EW1G8 180209P2700"
SPXW_PUT_DX = ".SPXW180216P2700"
ES_PUT_DX = "./EW1G18P2700:XCME"

Handler = Callable[["Seen"], tuple[int, Any]]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


# --------------------------------------------------------------------------- payloads


def account_json(number: str = ACCOUNT) -> dict[str, Any]:
    return {
        "account-number": number, "opened-at": TS, "nickname": "Individual",
        "account-type-name": "Individual", "is-closed": False, "day-trader-status": False,
        "is-firm-error": False, "is-firm-proprietary": False, "is-futures-approved": True,
        "margin-or-cash": "Margin", "is-foreign": False, "created-at": TS,
    }


def position_json(
    symbol: str, instrument_type: str, underlying: str, quantity: str, direction: str,
    multiplier: str, *, close: str = "10.0", avg: str = "9.0", mark: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "account-number": ACCOUNT, "symbol": symbol, "instrument-type": instrument_type,
        "underlying-symbol": underlying, "quantity": quantity, "quantity-direction": direction,
        "close-price": close, "average-open-price": avg, "multiplier": multiplier,
        "cost-effect": "Credit" if direction == "Short" else "Debit", "is-suppressed": False,
        "is-frozen": False, "realized-day-gain": "0.0", "realized-day-gain-effect": "None",
        "realized-today": "0.0", "realized-today-effect": "None", "created-at": TS,
        "updated-at": TS,
    }
    if mark is not None:
        item["mark-price"] = mark
        item["mark"] = mark
    return item


def default_positions() -> list[dict[str, Any]]:
    """Short 1 SPXW put, long 10 /ES EW1 puts, short 100 SPY."""
    return [
        position_json(SPXW_PUT, "Equity Option", "SPX", "1", "Short", "100",
                      close="25.5", avg="20.0", mark="26.0"),
        position_json(ES_PUT, "Future Option", "/ESH8", "10", "Long", "50",
                      close="12.25", avg="11.0", mark="12.5"),
        position_json("SPY", "Equity", "SPY", "100", "Short", "1",
                      close="263.0", avg="270.0", mark="262.5"),
    ]


_BALANCE_FIELDS = (
    "cash-balance", "long-equity-value", "short-equity-value", "long-derivative-value",
    "short-derivative-value", "long-futures-value", "short-futures-value",
    "long-futures-derivative-value", "short-futures-derivative-value", "long-margineable-value",
    "short-margineable-value", "margin-equity", "equity-buying-power",
    "derivative-buying-power", "day-trading-buying-power", "futures-margin-requirement",
    "available-trading-funds", "maintenance-requirement", "maintenance-call-value",
    "reg-t-call-value", "day-trading-call-value", "day-equity-call-value",
    "net-liquidating-value", "cash-available-to-withdraw", "day-trade-excess", "pending-cash",
    "long-cryptocurrency-value", "short-cryptocurrency-value",
    "cryptocurrency-margin-requirement", "unsettled-cryptocurrency-fiat-amount",
    "closed-loop-available-balance", "equity-offering-margin-requirement", "long-bond-value",
    "bond-margin-requirement", "used-derivative-buying-power", "reg-t-margin-requirement",
    "futures-overnight-margin-requirement", "futures-intraday-margin-requirement",
    "maintenance-excess", "pending-margin-interest", "effective-cryptocurrency-buying-power",
)


def balance_json(**overrides: str) -> dict[str, Any]:
    data: dict[str, Any] = dict.fromkeys(_BALANCE_FIELDS, "0.0")
    data.update({
        "account-number": ACCOUNT, "snapshot-date": "2018-02-02", "updated-at": TS,
        "net-liquidating-value": "1012345.67", "cash-balance": "250000.125",
        "maintenance-requirement": "180000.5", "reg-t-margin-requirement": "200000.25",
        "equity-buying-power": "1400000.0", "derivative-buying-power": "700000.75",
        "maintenance-excess": "832345.17", "pending-cash-effect": "None",
    })
    data.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return data


def future_json(symbol: str = "/ESH8") -> dict[str, Any]:
    return {
        "symbol": symbol, "instrument-type": "Future", "product-code": "ES",
        "tick-size": "0.25", "notional-multiplier": "50.0", "display-factor": "0.01",
        "last-trade-date": "2018-03-16", "expiration-date": "2018-03-16", "active": True,
        "active-month": True, "next-active-month": False, "is-closing-only": False,
        "stops-trading-at": "2018-03-16T13:30:00.000+00:00",
        "expires-at": "2018-03-16T13:30:00.000+00:00", "product-group": "CME_ES",
        "exchange": "CME", "streamer-exchange-code": "XCME",
        "back-month-first-calendar-symbol": False, "streamer-symbol": "/ESH18:XCME",
    }


def transaction_json(tx_id: int, ttype: str, sub: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": tx_id, "account-number": ACCOUNT, "transaction-type": ttype,
        "transaction-sub-type": sub, "description": fields.pop("description", sub),
        "executed-at": fields.pop("executed_at", TS), "transaction-date": "2018-02-02",
        "value": "0.0", "value-effect": "None", "net-value": "0.0", "net-value-effect": "None",
        "is-estimated-fee": False,
    }
    data.update({k.replace("_", "-"): v for k, v in fields.items()})
    return data


def default_transactions() -> list[dict[str, Any]]:
    return [
        transaction_json(
            101, "Trade", "Sell to Open", symbol=SPXW_PUT, instrument_type="Equity Option",
            underlying_symbol="SPX", action="Sell to Open", quantity="1", price="20.0",
            value="2000.0", value_effect="Credit", net_value="1998.35", net_value_effect="Credit",
            commission="1.0", commission_effect="Debit", clearing_fees="0.1",
            clearing_fees_effect="Debit", regulatory_fees="0.05", regulatory_fees_effect="Debit",
            proprietary_index_option_fees="0.5", proprietary_index_option_fees_effect="Debit",
            order_id=9001,
        ),
        transaction_json(
            102, "Trade", "Buy to Open", symbol=ES_PUT, instrument_type="Future Option",
            underlying_symbol="/ESH8", action="Buy to Open", quantity="10", price="11.0",
            value="5500.0", value_effect="Debit", net_value="5525.0", net_value_effect="Debit",
            commission="25.0", commission_effect="Debit",
        ),
        transaction_json(
            103, "Receive Deliver", "Expiration", symbol="SPXW  180202P02600000",
            instrument_type="Equity Option", underlying_symbol="SPX", action="Buy to Close",
            quantity="2",
        ),
        transaction_json(
            104, "Receive Deliver", "Cash Settled Assignment", symbol="SPX   180216P02750000",
            instrument_type="Equity Option", underlying_symbol="SPX", action="Buy to Close",
            quantity="1", value="5000.0", value_effect="Debit", net_value="5000.0",
            net_value_effect="Debit",
        ),
        transaction_json(105, "Money Movement", "Deposit", net_value="10000.0",
                         net_value_effect="Credit", value="10000.0", value_effect="Credit"),
        transaction_json(106, "Money Movement", "Withdrawal", net_value="2500.0",
                         net_value_effect="Debit", value="2500.0", value_effect="Debit"),
        transaction_json(107, "Money Movement", "Dividend", description="SPY dividend",
                         symbol="SPY", net_value="35.5", net_value_effect="Credit",
                         value="35.5", value_effect="Credit"),
    ]


def _strike(price: str, put: str, call: str) -> dict[str, Any]:
    return {"strike-price": price, "call": call, "put": put,
            "call-streamer-symbol": "." + call, "put-streamer-symbol": "." + put}


def equity_chain_json() -> list[dict[str, Any]]:
    def chain(root: str, expiries: list[str], strikes: list[str]) -> dict[str, Any]:
        return {
            "underlying-symbol": "SPX", "root-symbol": root, "option-chain-type": "Standard",
            "shares-per-contract": 100, "tick-sizes": [{"value": "0.05"}],
            "expirations": [
                {"expiration-type": "Weekly" if root == "SPXW" else "Regular",
                 "expiration-date": e, "days-to-expiration": 10,
                 "settlement-type": "PM" if root == "SPXW" else "AM",
                 "strikes": [_strike(s, f"P{s}", f"C{s}") for s in strikes]}
                for e in expiries
            ],
        }

    return [
        chain("SPX", ["2018-03-16", "2018-02-16"], ["2700.0", "2750.0"]),
        chain("SPXW", ["2018-02-09", "2018-02-16", "2018-02-09"], ["2650.0", "2700.0", "2725.0"]),
    ]


def future_chain_json() -> dict[str, Any]:
    def expiration(root: str, date_: str, strikes: list[str]) -> dict[str, Any]:
        return {
            "root-symbol": "/ES", "notional-value": "0.5", "underlying-symbol": "/ESH8",
            "strike-factor": "1.0", "days-to-expiration": 7, "option-root-symbol": root,
            "expiration-date": date_, "expires-at": TS, "asset": "ES",
            "expiration-type": "Weekly", "display-factor": "0.01",
            "option-contract-symbol": f"{root}G8", "stops-trading-at": TS,
            "settlement-type": "Future", "tick-sizes": [{"value": "0.25"}],
            "strikes": [_strike(s, f"P{s}", f"C{s}") for s in strikes],
        }

    return {
        "futures": [{
            "root-symbol": "/ES", "days-to-expiration": 42, "expiration-date": "2018-03-16",
            "expires-at": TS, "next-active-month": False, "symbol": "/ESH8", "active-month": True,
            "stops-trading-at": TS,
        }],
        "option-chains": [{
            "underlying-symbol": "/ESH8", "root-symbol": "/ES", "exercise-style": "American",
            "expirations": [
                expiration("EW1", "2018-02-09", ["2650", "2700"]),
                expiration("EW2", "2018-02-16", ["2700", "2710"]),
                expiration("ES", "2018-03-16", ["2500", "2700"]),
            ],
        }],
    }


def _leg_echo(legs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"instrument-type": leg["instrument-type"], "symbol": leg["symbol"],
             "action": leg["action"], "quantity": leg["quantity"],
             "remaining-quantity": leg["quantity"], "fills": []} for leg in legs]


def order_json(body: dict[str, Any], *, order_id: int | None, status: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "account-number": ACCOUNT, "time-in-force": body.get("time-in-force", "Day"),
        "order-type": body.get("order-type", "Limit"), "underlying-symbol": "SPX",
        "underlying-instrument-type": "Equity Option", "status": status, "cancellable": True,
        "editable": True, "edited": False, "updated-at": TS, "legs": _leg_echo(body["legs"]),
        "size": body["legs"][0]["quantity"], "price": body.get("price"),
        "price-effect": body.get("price-effect"),
    }
    if body.get("stop-trigger") is not None:
        data["stop-trigger"] = body["stop-trigger"]
    if order_id is not None:
        data["id"] = order_id
    return data


def complex_response_json(body: dict[str, Any], *, ids: list[int] | None) -> dict[str, Any]:
    """A complex order (OTOCO / OCO) as the API answers it: dry run (no ids) or placed."""
    subs = ([body["trigger-order"]] if body.get("trigger-order") else []) + list(body["orders"])
    placed = [order_json(sub, order_id=None if ids is None else ids[i + 1],
                         status="Received" if ids is None or i == 0 or not body.get("trigger-order")
                         else "Contingent")
              for i, sub in enumerate(subs)]
    complex_order: dict[str, Any] = {"account-number": ACCOUNT, "type": body["type"]}
    if body.get("trigger-order"):
        complex_order["trigger-order"], placed = placed[0], placed[1:]
    complex_order["orders"] = placed
    if ids is not None:
        complex_order["id"] = ids[0]
    whole = order_response_json(subs[0], order_id=None)
    return {"complex-order": complex_order, "buying-power-effect": whole["buying-power-effect"],
            "fee-calculation": whole["fee-calculation"], "warnings": whole["warnings"]}


def order_response_json(body: dict[str, Any], *, order_id: int | None) -> dict[str, Any]:
    return {
        "order": order_json(body, order_id=order_id, status="Received"),
        "buying-power-effect": {
            "change-in-margin-requirement": "5325.5", "change-in-margin-requirement-effect": "Debit",
            "change-in-buying-power": "5412.0", "change-in-buying-power-effect": "Debit",
            "current-buying-power": "700000.75", "current-buying-power-effect": "Credit",
            "new-buying-power": "694588.75", "new-buying-power-effect": "Credit",
            "isolated-order-margin-requirement": "5325.5",
            "isolated-order-margin-requirement-effect": "Debit",
            "is-spread": False, "impact": "5412.0", "effect": "Debit",
        },
        "fee-calculation": {
            "regulatory-fees": "0.04", "regulatory-fees-effect": "Debit",
            "clearing-fees": "0.1", "clearing-fees-effect": "Debit",
            "commission": "1.0", "commission-effect": "Debit",
            "proprietary-index-option-fees": "0.6", "proprietary-index-option-fees-effect": "Debit",
            "total-fees": "1.74", "total-fees-effect": "Debit",
        },
        "warnings": [
            {"code": "tif_next_valid_sesssion", "message": "Your order will begin working during next valid session."},
            {"code": "margin_check", "message": "This order increases your margin requirement."},
        ],
    }


# --------------------------------------------------------------------------- REST app


@dataclass
class FakeTasty:
    """In-process ASGI Tastytrade REST API."""

    dxlink_url: str = "ws://127.0.0.1:9/"
    positions: list[dict[str, Any]] = field(default_factory=default_positions)
    balance: dict[str, Any] = field(default_factory=balance_json)
    transactions: list[dict[str, Any]] = field(default_factory=default_transactions)
    requests: list[Seen] = field(default_factory=list)
    #: "METHOD /path" -> statuses to answer before the real handler (e.g. [500, 500])
    failures: dict[str, list[int]] = field(default_factory=dict)
    #: "METHOD /path" -> raw body to answer with status 200 instead of JSON
    raw_bodies: dict[str, bytes] = field(default_factory=dict)
    next_order_id: int = 12345

    def seen(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def transport(self) -> FakeTransport:
        return FakeTransport(self)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http", scope["type"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        seen = Seen(scope["method"], scope["path"],
                    parse_qs(scope["query_string"].decode()), body, headers)
        self.requests.append(seen)
        key = f"{seen.method} {seen.path}"
        status: int
        raw: bytes
        if self.failures.get(key):
            status = self.failures[key].pop(0)
            raw = json.dumps({"error": {"code": "internal_error", "message": f"boom {status}"}}).encode()
        elif key in self.raw_bodies:
            status, raw = 200, self.raw_bodies[key]
        else:
            status, payload = self._route(seen)
            raw = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": raw})

    def _route(self, r: Seen) -> tuple[int, Any]:
        if r.method == "POST" and r.path == "/oauth/token":
            body = r.json()
            if body.get("client_secret") != CLIENT_SECRET or body.get("refresh_token") != REFRESH_TOKEN:
                return 401, {"error": {"code": "invalid_grant", "message": "Grant is invalid"}}
            return 200, {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 900}
        if r.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return 401, {"error": {"code": "unauthorized", "message": "Unauthorized"}}
        acct = f"/accounts/{ACCOUNT}"
        routes: list[tuple[str, str, Callable[[Seen, re.Match[str]], tuple[int, Any]]]] = [
            ("GET", r"/customers/me/accounts",
             lambda r, m: (200, {"data": {"items": [
                 {"account": account_json(), "authority-level": "owner"}]}})),
            ("GET", rf"{acct}/positions",
             lambda r, m: (200, {"data": {"items": self.positions}})),
            ("GET", rf"{acct}/balances/USD", lambda r, m: (200, {"data": self.balance})),
            ("GET", rf"{acct}/transactions", lambda r, m: (200, {
                "data": {"items": self.transactions},
                "pagination": {"per-page": 250, "page-offset": 0, "item-offset": 0,
                               "total-items": len(self.transactions), "total-pages": 1}})),
            ("GET", r"/instruments/futures/(?P<sym>[A-Z0-9]+)",
             lambda r, m: (200, {"data": future_json("/" + m["sym"])})),
            ("GET", r"/option-chains/SPX/nested",
             lambda r, m: (200, {"data": {"items": equity_chain_json()}})),
            ("GET", r"/futures-option-chains/ES/nested",
             lambda r, m: (200, {"data": future_chain_json()})),
            ("GET", r"/api-quote-tokens", lambda r, m: (200, {"data": {
                "token": DX_TOKEN, "dxlink-url": self.dxlink_url, "level": "api",
                "issued-at": TS, "expires-at": TS}})),
            ("POST", rf"{acct}/orders/dry-run",
             lambda r, m: (201, {"data": order_response_json(r.json(), order_id=None)})),
            ("POST", rf"{acct}/orders", self._place),
            ("POST", rf"{acct}/complex-orders/dry-run",
             lambda r, m: (201, {"data": complex_response_json(r.json(), ids=None)})),
            ("POST", rf"{acct}/complex-orders", self._place_complex),
            ("DELETE", rf"{acct}/complex-orders/(?P<id>\d+)", lambda r, m: (200, {"data": {}})),
            ("DELETE", rf"{acct}/orders/(?P<id>\d+)", lambda r, m: (200, {"data": order_json(
                {"legs": [{"instrument-type": "Equity Option", "symbol": SPXW_PUT,
                           "action": "Buy to Open", "quantity": 1}]},
                order_id=int(m["id"]), status="Cancel Requested")})),
        ]
        for method, pattern, handler in routes:
            if r.method == method and (m := re.fullmatch(pattern, r.path)):
                return handler(r, m)
        return 404, {"error": {"code": "not_found", "message": f"no route {r.method} {r.path}"}}

    def _place_complex(self, r: Seen, m: re.Match[str]) -> tuple[int, Any]:
        body = r.json()
        n = 1 + len(body["orders"]) + (1 if body.get("trigger-order") else 0)
        ids = list(range(self.next_order_id, self.next_order_id + n))
        self.next_order_id += n
        return 201, {"data": complex_response_json(body, ids=ids)}

    def _place(self, r: Seen, m: re.Match[str]) -> tuple[int, Any]:
        order_id = self.next_order_id
        self.next_order_id += 1
        return 201, {"data": order_response_json(r.json(), order_id=order_id)}


class FakeTransport(httpx2.AsyncBaseTransport):
    """HTTP -> the ASGI app in-process; ws:// -> the loopback DXLink server."""

    def __init__(self, app: FakeTasty) -> None:
        self._http = httpx2.ASGITransport(app=app)
        self._ws = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.scheme in ("ws", "wss"):
            if request.url.host != "127.0.0.1":
                raise httpx2.ConnectError(f"fake transport: refusing non-loopback {request.url.host}")
            return await self._ws.handle_async_request(request)
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._ws.aclose()


# --------------------------------------------------------------------------- DXLink


def _quote_values(symbol: str, bid: Any, ask: Any) -> dict[str, Any]:
    return {"eventSymbol": symbol, "eventTime": 0, "sequence": 0, "timeNanoPart": 0,
            "bidTime": 0, "bidExchangeCode": "Q", "askTime": 0, "askExchangeCode": "Q",
            "bidPrice": bid, "askPrice": ask, "bidSize": 10, "askSize": 12}


def _greeks_values(symbol: str, g: dict[str, Any]) -> dict[str, Any]:
    return {"eventSymbol": symbol, "eventTime": 0, "eventFlags": 0, "index": 0, "time": 0,
            "sequence": 0, **g}


def _summary_values(symbol: str, open_interest: Any) -> dict[str, Any]:
    return {"eventSymbol": symbol, "eventTime": 0, "dayId": 0, "dayClosePriceType": "REGULAR",
            "prevDayId": 0, "prevDayClosePriceType": "REGULAR", "openInterest": open_interest,
            "dayOpenPrice": "NaN", "dayHighPrice": "NaN", "dayLowPrice": "NaN", "dayClosePrice": "NaN",
            "prevDayClosePrice": "NaN", "prevDayVolume": "NaN"}


def _trade_values(symbol: str, day_volume: Any) -> dict[str, Any]:
    return {"eventSymbol": symbol, "eventTime": 0, "time": 0, "timeNanoPart": 0, "sequence": 0,
            "exchangeCode": "Q", "dayId": 0, "tickDirection": "ZERO", "extendedTradingHours": False,
            "price": 1.0, "change": "NaN", "size": 1, "dayVolume": day_volume, "dayTurnover": "NaN"}


@dataclass
class FakeDXLink:
    """DXLink websocket server on 127.0.0.1 streaming COMPACT Quote/Greeks every ``period``."""

    quotes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    greeks: dict[str, dict[str, Any]] = field(default_factory=dict)
    summaries: dict[str, Any] = field(default_factory=dict)  # symbol -> open interest (Summary)
    trades: dict[str, Any] = field(default_factory=dict)  # symbol -> day volume (Trade)
    period: float = 0.02
    received: list[dict[str, Any]] = field(default_factory=list)
    _server: Server | None = None
    _connections: list[ServerConnection] = field(default_factory=list)

    async def drop_connections(self) -> None:
        """Close every client connection from the server side (a DXLink outage)."""
        for ws in list(self._connections):
            await ws.close()
        self._connections.clear()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    def subscribed(self, event_type: str) -> set[str]:
        return {
            item["symbol"]
            for msg in self.received if msg.get("type") == "FEED_SUBSCRIPTION"
            for item in msg.get("add", ()) if item.get("type") == event_type
        }

    async def __aenter__(self) -> FakeDXLink:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        self._connections.append(ws)
        fields: dict[int, tuple[str, list[str]]] = {}
        subs: dict[int, set[str]] = {}

        async def pump() -> None:
            while True:
                for channel, symbols in list(subs.items()):
                    if channel not in fields:
                        continue
                    event_type, names = fields[channel]
                    flat: list[Any] = []
                    for symbol in sorted(symbols):
                        values = self._values(event_type, symbol)
                        if values is not None:
                            flat += [values[n] for n in names]
                    if flat:
                        await ws.send(json.dumps(
                            {"type": "FEED_DATA", "channel": channel, "data": [event_type, flat]}))
                await asyncio.sleep(self.period)

        pump_task = asyncio.create_task(pump())
        try:
            async for raw in ws:
                msg = json.loads(raw)
                self.received.append(msg)
                kind, channel = msg.get("type"), msg.get("channel", 0)
                if kind == "SETUP":
                    await ws.send(json.dumps({"type": "SETUP", "channel": 0, "version": "fake",
                                              "keepaliveTimeout": 60, "acceptKeepaliveTimeout": 60}))
                    await ws.send(json.dumps({"type": "AUTH_STATE", "channel": 0,
                                              "state": "UNAUTHORIZED"}))
                elif kind == "AUTH":
                    state = "AUTHORIZED" if msg.get("token") == DX_TOKEN else "UNAUTHORIZED"
                    await ws.send(json.dumps({"type": "AUTH_STATE", "channel": 0, "state": state,
                                              "userId": "fake"}))
                elif kind == "CHANNEL_REQUEST":
                    await ws.send(json.dumps({"type": "CHANNEL_OPENED", "channel": channel,
                                              "service": "FEED", "parameters": msg.get("parameters", {})}))
                elif kind == "FEED_SETUP":
                    accept = msg["acceptEventFields"]
                    event_type = next(iter(accept))
                    fields[channel] = (event_type, list(accept[event_type]))
                    await ws.send(json.dumps({"type": "FEED_CONFIG", "channel": channel,
                                              "dataFormat": "COMPACT", "aggregationPeriod": 0.1,
                                              "eventFields": accept}))
                elif kind == "FEED_SUBSCRIPTION":
                    subs.setdefault(channel, set()).update(a["symbol"] for a in msg.get("add", ()))
                    subs[channel].difference_update(r["symbol"] for r in msg.get("remove", ()))
                elif kind == "KEEPALIVE":
                    await ws.send(json.dumps({"type": "KEEPALIVE", "channel": 0}))
        except Exception:
            pass
        finally:
            pump_task.cancel()
            with contextlib.suppress(BaseException):
                await pump_task

    def _values(self, event_type: str, symbol: str) -> dict[str, Any] | None:
        if event_type == "Quote" and symbol in self.quotes:
            bid, ask = self.quotes[symbol]
            return _quote_values(symbol, bid, ask)
        if event_type == "Greeks" and symbol in self.greeks:
            return _greeks_values(symbol, self.greeks[symbol])
        if event_type == "Summary" and symbol in self.summaries:
            return _summary_values(symbol, self.summaries[symbol])
        if event_type == "Trade" and symbol in self.trades:
            return _trade_values(symbol, self.trades[symbol])
        return None

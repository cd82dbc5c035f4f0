"""IBKR Flex Query statements (XML) -> :class:`ImportBatch`.

Read from ``<FlexQueryResponse><FlexStatements><FlexStatement accountId=...>``:

- ``<Trades><Trade .../>``: every execution (``levelOfDetail`` absent or ``EXECUTION``;
  order/lot summaries are skipped so nothing counts twice).  Fields: ``assetCategory``
  (STK/OPT/FUT/FOP; ``CASH`` FX conversions are skipped and listed in
  :attr:`ImportBatch.skipped`), ``symbol``, ``underlyingSymbol``, ``tradingClass``,
  ``putCall``, ``strike``, ``expiry``, ``multiplier``, ``buySell``, ``quantity``,
  ``tradePrice``, ``ibCommission`` (IBKR's all-in commission, including the exchange,
  clearing and regulatory fees it passes through -> ``commission``), ``taxes``
  (transaction taxes -> ``fees``), ``currency``, ``tradeID`` (the execution id; else
  ``transactionID``), ``ibOrderID``/``orderReference`` (``order_ref``), ``dateTime`` (or
  ``tradeDate`` + ``tradeTime``) and ``notes``: ``A`` assignment, ``Ex``/``AEx``/``MEx``
  exercise, ``Ep`` expired.  On an option row those codes give the execution kind; on
  the delivered stock/future row (also coded ``A``/``Ex``) the kind stays ``"trade"``,
  at the strike as IBKR books it.
- ``<OptionEAE><OptionEAE .../>``: exercises, assignments and expirations
  (``transactionType`` Assignment/Exercise/Expiration, and Buy/Sell for the delivery).
  IBKR books the same events as ``<Trade>`` rows coded A/Ex/Ep; an OptionEAE row is
  imported only when no such Trade row exists for the same account, contract and day,
  so a statement carrying both sections counts each event once.  Signs: an assignment
  closes a short (+), an exercise a long (-), an expiration the opposite of the
  position the statement's trades leave (else the sign IBKR reports).
- ``<CashTransactions><CashTransaction .../>`` (``levelOfDetail`` absent or
  ``DETAIL``): ``type`` Deposits/Withdrawals (deposit or withdrawal by the sign of
  ``amount``), Dividends and Payment In Lieu, Withholding Tax (tax), Broker/Bond
  Interest (interest), Other Fees/Commission Adjustments/Advisor Fees (fee); any other
  type is kept as ``"other"`` with its signed amount and description (nothing is lost).
  ``transactionID`` is the flow id.

Time: Flex ``dateTime`` values (``20180205;153000``, ``2018-02-05;15:30:00``, with ``;``,
``,``, space or ``T`` between date and time) carry no zone; IBKR writes them in US
Eastern time.  A zone written after the value (``EST``/``EDT``/``ET``, an IANA name or
``+HHMM``) is honoured; otherwise ``tz`` (default ``America/New_York``) applies.  A date
without a time (cash transactions, OptionEAE ``date``) is taken at 16:00 in that zone,
the end of the US session it belongs to.  Every stored timestamp is aware UTC.

Security: Flex files are the user's own downloads from IBKR and are parsed with the
stdlib ``xml.etree.ElementTree`` (defusedxml is not a dependency).  A document with a
``<!DOCTYPE``/``<!ENTITY`` declaration is refused before parsing, which rules out entity
expansion ("billion laughs") and external entities; Flex files never contain one.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portfolio_pipeline.brokers.history._common import (
    check_account,
    checked_day,
    checked_utc,
    fixed_offset,
    parse_number,
    resolve_root,
    stable_id,
    table_trading_class,
)
from portfolio_pipeline.brokers.history.errors import ImportFormatError
from portfolio_pipeline.brokers.history.model import (
    ImportBatch,
    RawSource,
    positions_from_executions,
    read_source,
    sha256_hex,
)
from portfolio_pipeline.domain.activity import CashFlow, CashFlowKind, Execution, ExecutionKind
from portfolio_pipeline.domain.errors import DomainError, MultiplierMismatchError
from portfolio_pipeline.domain.instruments import InstrumentTable, SecType
from portfolio_pipeline.domain.positions import Contract, Right

__all__ = ["BROKER", "DEFAULT_TZ", "parse_flex_datetime", "parse_ibkr_flex"]

logger = logging.getLogger(__name__)

BROKER: Final = "ibkr"
DEFAULT_TZ: Final = "America/New_York"
SESSION_END: Final = time(16, 0)
"""Time given to a date-only value (end of the US session), in the statement's zone."""

_SEC_TYPES: Final[frozenset[str]] = frozenset({"STK", "OPT", "FUT", "FOP"})
_ASSIGN_CODES: Final = frozenset({"A"})
_EXERCISE_CODES: Final = frozenset({"Ex", "AEx", "MEx"})
_EXPIRY_CODES: Final = frozenset({"Ep"})
_EASTERN_ABBREVIATIONS: Final = frozenset({"EST", "EDT", "ET", "US/EASTERN"})
_DOCTYPE: Final = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_DATETIME: Final = re.compile(
    r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})"
    r"(?:\s*[;,T ]\s*(?P<H>\d{2}):?(?P<M>\d{2}):?(?P<S>\d{2}))?"
    r"\s*(?P<tz>[A-Za-z][A-Za-z_/]*|[+-]\d{2}:?\d{2})?$"
)
_OCC_SYMBOL: Final = re.compile(r"^(?P<root>[A-Z0-9.]{1,6})\s+\d{6}[CP]\d{8}$")

_CASH_KINDS: Final[Mapping[str, CashFlowKind]] = {
    "dividends": "dividend",
    "payment in lieu of dividends": "dividend",
    "withholding tax": "tax",
    "871(m) withholding": "tax",
    "broker interest paid": "interest",
    "broker interest received": "interest",
    "bond interest paid": "interest",
    "bond interest received": "interest",
    "other fees": "fee",
    "commission adjustments": "fee",
    "advisor fees": "fee",
    "broker fees": "fee",
}
_DEPOSIT_TYPES: Final = frozenset({"deposits/withdrawals", "deposits & withdrawals"})


def _zone(name: str, where: str) -> ZoneInfo:
    key = DEFAULT_TZ if name.upper() in _EASTERN_ABBREVIATIONS else name
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImportFormatError(f"{where}: unknown time zone {name!r}") from None


def parse_flex_datetime(raw: str, *, tz: str = DEFAULT_TZ, where: str = "ibkr-flex") -> datetime:
    """An aware UTC datetime from a Flex date/time value (see the module docstring)."""
    match = _DATETIME.match(raw.strip())
    if match is None:
        raise ImportFormatError(
            f"{where}: unrecognised date/time {raw!r} (expected e.g. 20180205;153000 or "
            "2018-02-05;15:30:00; set the Flex query's date format to yyyyMMdd or yyyy-MM-dd)"
        )
    try:
        day = date(int(match["y"]), int(match["m"]), int(match["d"]))
        clock = (
            time(int(match["H"]), int(match["M"]), int(match["S"]))
            if match["H"] is not None
            else SESSION_END
        )
    except ValueError as exc:
        raise ImportFormatError(f"{where}: invalid date/time {raw!r} ({exc})") from None
    zone_text = match["tz"]
    checked_day(day, raw, "date/time", where)
    local = datetime.combine(day, clock)
    if zone_text and zone_text[0] in "+-":
        aware = local.replace(tzinfo=fixed_offset(zone_text, where))
    else:
        aware = local.replace(tzinfo=_zone(zone_text or tz, where))
    return checked_utc(aware, raw, "date/time", where)


def _parse_date(raw: str | None, name: str, where: str) -> date:
    text = (raw or "").strip()
    match = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text)
    if match is None:
        raise ImportFormatError(f"{where}: {name} {raw!r} is not a date (yyyyMMdd or yyyy-MM-dd)")
    try:
        return checked_day(date(int(match[1]), int(match[2]), int(match[3])), text, name, where)
    except ValueError as exc:
        raise ImportFormatError(f"{where}: {name} {raw!r} is not a valid date ({exc})") from None


def _codes(notes: str | None) -> frozenset[str]:
    return frozenset(code.strip() for code in re.split(r"[;,]", notes or "") if code.strip())


@dataclass(slots=True)
class _Ctx:
    instruments: InstrumentTable
    file: str
    tz: str
    skipped: list[str] = field(default_factory=list)

    def where(self, ident: str) -> str:
        return f"ibkr-flex:{self.file}:{ident}"


@dataclass(frozen=True, slots=True)
class _Resolved:
    contract: Contract
    multiplier: float


def _resolve(ctx: _Ctx, attrs: Mapping[str, str], asset: str, where: str) -> _Resolved:
    if asset not in _SEC_TYPES:
        raise ImportFormatError(
            f"{where}: asset category {asset!r} is not supported (STK, OPT, FUT, FOP)"
        )
    sec_type: SecType = asset  # type: ignore[assignment]
    currency = (attrs.get("currency") or "USD").strip().upper()
    symbol = (attrs.get("symbol") or "").strip()
    underlying = attrs.get("underlyingSymbol")
    broker_mult = parse_number(attrs.get("multiplier"), "multiplier", where)
    if sec_type == "STK":
        root = resolve_root(ctx.instruments, [symbol, underlying], None, source=where)
        contract = Contract(underlying=root, sec_type="STK", currency=currency)
        tc = None
    elif sec_type == "FUT":
        root = resolve_root(ctx.instruments, [underlying, symbol], None, source=where)
        expiry = _parse_date(attrs.get("expiry"), "expiry", where)
        contract = Contract(underlying=root, sec_type="FUT", expiry=expiry, currency=currency)
        tc = None
    else:
        raw_tc = (attrs.get("tradingClass") or "").strip().upper() or None
        if raw_tc is None and sec_type == "OPT":
            occ = _OCC_SYMBOL.match(symbol.upper())
            raw_tc = occ["root"] if occ else None
        root = resolve_root(ctx.instruments, [underlying], raw_tc, source=where)
        right_text = (attrs.get("putCall") or "").strip().upper()[:1]
        if right_text not in ("C", "P"):
            raise ImportFormatError(f"{where}: putCall {attrs.get('putCall')!r} is not P or C")
        right: Right = "C" if right_text == "C" else "P"
        tc = table_trading_class(ctx.instruments, root, raw_tc)
        contract = Contract(
            underlying=root,
            sec_type=sec_type,
            expiry=_parse_date(attrs.get("expiry"), "expiry", where),
            strike=parse_number(attrs.get("strike"), "strike", where, required=True),
            right=right,
            trading_class=tc or raw_tc or root,
            currency=currency,
        )
    multiplier = ctx.instruments.checked_multiplier(
        contract.underlying, sec_type, broker_mult, trading_class=tc, source=where
    )
    return _Resolved(contract, multiplier)


def _cost(attrs: Mapping[str, str], name: str, where: str) -> float:
    """A cost from a signed broker field (IBKR writes charges negative)."""
    value = parse_number(attrs.get(name), name, where)
    return 0.0 if value is None else -value


def _trade_ts(ctx: _Ctx, attrs: Mapping[str, str], where: str) -> datetime:
    raw = attrs.get("dateTime")
    if not raw and attrs.get("tradeDate"):
        raw = f"{attrs['tradeDate']};{attrs.get('tradeTime') or ''}".rstrip(";")
    if not raw:
        raise ImportFormatError(f"{where}: dateTime (or tradeDate) is missing")
    return parse_flex_datetime(raw, tz=ctx.tz, where=where)


def _execution(ctx: _Ctx, el: ET.Element, account: str, index: int) -> Execution | None:
    attrs = el.attrib
    ident = attrs.get("tradeID") or attrs.get("transactionID")
    where = ctx.where(ident or f"Trade #{index}")
    if not ident:
        raise ImportFormatError(f"{where}: the trade has no tradeID or transactionID")
    detail = (attrs.get("levelOfDetail") or "EXECUTION").upper()
    if detail != "EXECUTION":
        return None
    account = check_account(account, "accountId", where)
    asset = (attrs.get("assetCategory") or "").strip().upper()
    if asset == "CASH":
        ctx.skipped.append(f"{where}: FX conversion {attrs.get('symbol', '')} (not a position)")
        return None
    resolved = _resolve(ctx, attrs, asset, where)
    raw_qty = parse_number(attrs.get("quantity"), "quantity", where, required=True)
    assert raw_qty is not None
    side = (attrs.get("buySell") or "").strip().upper()
    if "(CA.)" in side:  # a cancellation reverses the original: trust the signed quantity
        quantity = raw_qty
    elif side.startswith(("BUY", "SELL")):
        sign = 1.0 if side.startswith("BUY") else -1.0
        if raw_qty * sign < 0:
            raise ImportFormatError(f"{where}: buySell {side} disagrees with quantity {raw_qty}")
        quantity = sign * abs(raw_qty)
    elif side:
        raise ImportFormatError(f"{where}: buySell {side!r} is not BUY or SELL")
    else:
        quantity = raw_qty
    codes = _codes(attrs.get("notes"))
    kind: ExecutionKind = "trade"
    if resolved.contract.is_option:
        if codes & _EXPIRY_CODES:
            kind = "expiry"
        elif codes & _ASSIGN_CODES:
            kind = "assignment"
        elif codes & _EXERCISE_CODES:
            kind = "exercise"
    price = (
        0.0
        if kind == "expiry"
        else parse_number(attrs.get("tradePrice"), "tradePrice", where, required=True)
    )
    assert price is not None
    order_ref = (attrs.get("ibOrderID") or attrs.get("orderReference") or "").strip() or None
    return Execution(
        broker=BROKER,
        account_id=account,
        exec_id=ident,
        contract=resolved.contract,
        ts=_trade_ts(ctx, attrs, where),
        quantity=quantity,
        price=price,
        multiplier=resolved.multiplier,
        commission=_cost(attrs, "ibCommission", where),
        fees=_cost(attrs, "taxes", where),
        kind=kind,
        order_ref=order_ref,
    )


_EAE_KINDS: Final[Mapping[str, ExecutionKind]] = {
    "assignment": "assignment",
    "exercise": "exercise",
    "expiration": "expiry",
    "buy": "trade",
    "sell": "trade",
}


def _local_day(ts: datetime, tz: str) -> date:
    return ts.astimezone(ZoneInfo(tz)).date()


def _eae_execution(
    ctx: _Ctx, el: ET.Element, account: str, index: int, inventory: Mapping[str, float]
) -> Execution:
    attrs = el.attrib
    ttype = (attrs.get("transactionType") or "").strip()
    raw_id = attrs.get("transactionID") or attrs.get("tradeID") or attrs.get("actionID")
    ident = raw_id or stable_id(
        "",
        account,
        attrs.get("date", ""),
        attrs.get("symbol", ""),
        ttype,
        attrs.get("quantity", ""),
    )
    where = ctx.where(f"OptionEAE {ident}" if raw_id else f"OptionEAE #{index}")
    account = check_account(account, "accountId", where)
    kind = _EAE_KINDS.get(ttype.lower())
    if kind is None:
        raise ImportFormatError(f"{where}: OptionEAE transactionType {ttype!r} is not supported")
    asset = (attrs.get("assetCategory") or "").strip().upper()
    resolved = _resolve(ctx, attrs, asset, where)
    raw_qty = parse_number(attrs.get("quantity"), "quantity", where, required=True)
    assert raw_qty is not None
    if kind == "assignment":
        quantity = abs(raw_qty)
    elif kind == "exercise":
        quantity = -abs(raw_qty)
    elif kind == "expiry":
        held = inventory.get(resolved.contract.key, 0.0)
        quantity = -held if held else raw_qty
    else:
        quantity = abs(raw_qty) if ttype.lower() == "buy" else -abs(raw_qty)
    raw_ts = attrs.get("dateTime") or attrs.get("date")
    if not raw_ts:
        raise ImportFormatError(f"{where}: date is missing")
    price = (
        0.0
        if kind == "expiry"
        else (parse_number(attrs.get("tradePrice"), "tradePrice", where) or 0.0)
    )
    return Execution(
        broker=BROKER,
        account_id=account,
        exec_id=f"eae:{ident}",
        contract=resolved.contract,
        ts=parse_flex_datetime(raw_ts, tz=ctx.tz, where=where),
        quantity=quantity,
        price=price,
        multiplier=resolved.multiplier,
        commission=_cost(attrs, "commisionsAndTax", where),  # sic: IBKR's spelling
        kind=kind,
    )


def _cash_flow(ctx: _Ctx, el: ET.Element, account: str, index: int) -> CashFlow | None:
    attrs = el.attrib
    ident = attrs.get("transactionID") or attrs.get("actionID")
    where = ctx.where(f"CashTransaction {ident}" if ident else f"CashTransaction #{index}")
    detail = (attrs.get("levelOfDetail") or "DETAIL").upper()
    if detail != "DETAIL":
        return None
    if not ident:
        raise ImportFormatError(f"{where}: the cash transaction has no transactionID")
    account = check_account(account, "accountId", where)
    amount = parse_number(attrs.get("amount"), "amount", where, required=True)
    assert amount is not None
    ctype = (attrs.get("type") or "").strip()
    kind: CashFlowKind
    if ctype.lower() in _DEPOSIT_TYPES:
        kind = "deposit" if amount >= 0 else "withdrawal"
    elif ctype.lower() in _CASH_KINDS:
        kind = _CASH_KINDS[ctype.lower()]
    else:
        kind = "other"
        logger.info("cash transaction type kept as other where=%s type=%s", where, ctype)
    raw_ts = attrs.get("dateTime") or attrs.get("settleDate") or attrs.get("reportDate")
    if not raw_ts:
        raise ImportFormatError(f"{where}: dateTime is missing")
    description = (attrs.get("description") or ctype).strip()
    return CashFlow(
        broker=BROKER,
        account_id=account,
        flow_id=ident,
        ts=parse_flex_datetime(raw_ts, tz=ctx.tz, where=where),
        kind=kind,
        amount=amount,
        currency=(attrs.get("currency") or "USD").strip().upper(),
        description=description,
    )


def _parse_xml(content: bytes, name: str) -> ET.Element:
    if _DOCTYPE.search(content):
        raise ImportFormatError(
            f"{name}: refused: the XML declares a DOCTYPE/ENTITY, which Flex statements never do"
        )
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        raise ImportFormatError(f"{name}: not well-formed XML ({exc})") from None
    except (LookupError, ValueError) as exc:  # an unknown or unsupported declared encoding
        raise ImportFormatError(f"{name}: cannot read the XML ({exc})") from None
    if root.tag != "FlexQueryResponse":
        raise ImportFormatError(
            f"{name}: not an IBKR Flex Query response (root element <{root.tag}>, "
            "expected <FlexQueryResponse>)"
        )
    return root


def _statement_rows(
    ctx: _Ctx, statement: ET.Element, executions: list[Execution], flows: list[CashFlow]
) -> None:
    account = (statement.get("accountId") or "").strip()
    trades: list[Execution] = []
    booked_events: set[tuple[str, str, date, str]] = set()
    booked_deliveries: set[tuple[str, str, date]] = set()
    for index, el in enumerate(statement.iterfind("Trades/Trade"), start=1):
        ex = _execution(ctx, el, (el.get("accountId") or account).strip(), index)
        if ex is None:
            continue
        trades.append(ex)
        day = _local_day(ex.ts, ctx.tz)
        if ex.kind != "trade":
            booked_events.add((ex.account_id, ex.contract.key, day, ex.kind))
        elif _codes(el.get("notes")) & (_ASSIGN_CODES | _EXERCISE_CODES):
            booked_deliveries.add((ex.account_id, ex.contract.key, day))
    eae: list[Execution] = []
    for index, el in enumerate(statement.iterfind("OptionEAE/OptionEAE"), start=1):
        acct = (el.get("accountId") or account).strip()
        inventory = positions_from_executions(trades, account_id=acct)
        ex = _eae_execution(ctx, el, acct, index, inventory)
        day = _local_day(ex.ts, ctx.tz)
        if ex.kind == "trade":
            duplicate = (ex.account_id, ex.contract.key, day) in booked_deliveries
        else:
            duplicate = (ex.account_id, ex.contract.key, day, ex.kind) in booked_events
        if duplicate:
            logger.info("OptionEAE row already booked in Trades exec_id=%s", ex.exec_id)
        else:
            eae.append(ex)
    executions.extend(trades)
    executions.extend(eae)
    for index, el in enumerate(statement.iterfind("CashTransactions/CashTransaction"), start=1):
        flow = _cash_flow(ctx, el, (el.get("accountId") or account).strip(), index)
        if flow is not None:
            flows.append(flow)


def parse_ibkr_flex(
    source: RawSource,
    instruments: InstrumentTable,
    *,
    tz: str = DEFAULT_TZ,
    source_name: str | None = None,
) -> ImportBatch:
    """Parse a Flex Query XML statement (path or bytes) into an :class:`ImportBatch`.

    Raises
    ------
    ImportFormatError
        For a file that is not a Flex response or a row that cannot be normalised,
        naming the file and the trade/transaction id.
    MultiplierMismatchError
        When a row's ``multiplier`` disagrees with ``config/instruments.yaml``, naming
        the file and trade (``ibkr-flex:<file>:<tradeID>``).
    """
    content, name = read_source(source, source_name)
    _zone(tz, name)
    root = _parse_xml(content, name)
    ctx = _Ctx(instruments=instruments, file=name, tz=tz)
    executions: list[Execution] = []
    flows: list[CashFlow] = []
    statements = root.findall("FlexStatements/FlexStatement")
    if not statements:
        raise ImportFormatError(f"{name}: the Flex response holds no <FlexStatement>")
    for statement in statements:
        try:
            _statement_rows(ctx, statement, executions, flows)
        except (ImportFormatError, MultiplierMismatchError):
            raise
        except DomainError as exc:
            raise ImportFormatError(f"{name}: {exc}") from exc
    batch = ImportBatch(
        broker=BROKER,
        source_name=name,
        sha256=sha256_hex(content),
        executions=tuple(executions),
        cash_flows=tuple(flows),
        skipped=tuple(ctx.skipped),
    )
    logger.info(
        "parsed ibkr flex file=%s executions=%s cash_flows=%s skipped=%s",
        name,
        len(batch.executions),
        len(batch.cash_flows),
        len(batch.skipped),
    )
    return batch

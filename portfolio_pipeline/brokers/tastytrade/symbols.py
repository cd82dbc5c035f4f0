"""Tastytrade symbology -> domain :class:`Contract` (pure functions, no I/O).

Formats handled (as Tastytrade prints them in positions, transactions and orders):

- equity / index option, OCC 2010: ``SPXW  180216P02700000`` (root padded to six
  characters, ``yymmdd``, ``C``/``P``, strike x 1000 in eight digits);
- future: ``/ESH8`` or ``/ESH18`` (product code, month code, one- or two-digit year);
- futures option: ``./ESH8 EW1G8 180209P2700`` (underlying future, option contract code
  = option root + month + year, then ``yymmdd``, ``C``/``P`` and the plain strike);
- equity / ETF: ``SPY``.

The domain root comes from the instrument table: an option root is a trading class
(``SPXW`` -> ``SPX``, ``EW`` -> ``ES``).  CME numbers its end-of-week weeklies by week
(``EW1``..``EW4``); when such a root is not itself in the table, the un-numbered class
(``EW``) is used if the table defines it — that is the whole of the mapping, nothing is
guessed beyond it.  Unknown roots raise :class:`UnknownInstrumentError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Literal

from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable, SecType
from portfolio_pipeline.domain.positions import Contract

MONTH_CODES = "FGHJKMNQUVXZ"
_MONTH_CODE = f"[{MONTH_CODES}]"

_OCC = re.compile(r"^(?P<root>[A-Z0-9]{1,6})\s*(?P<ymd>\d{6})(?P<right>[CP])(?P<strike>\d{8})$")
_FUTURE = re.compile(rf"^/(?P<product>[A-Z0-9]+?)(?P<month>{_MONTH_CODE})(?P<year>\d{{1,2}})$")
_FUTURE_OPTION = re.compile(
    rf"^\./(?P<fproduct>[A-Z0-9]+?)(?P<fmonth>{_MONTH_CODE})(?P<fyear>\d{{1,2}})\s+"
    rf"(?P<oroot>[A-Z0-9]+?)(?P<omonth>{_MONTH_CODE})(?P<oyear>\d{{1,2}})\s+"
    r"(?P<ymd>\d{6})(?P<right>[CP])(?P<strike>\d+(?:\.\d+)?)$"
)
_EQUITY = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")
_WEEK_NUMBERED = re.compile(r"^(?P<base>[A-Z]+)(?P<week>[1-5])$")

InstrumentKind = Literal["Equity", "Equity Option", "Future", "Future Option", "Index"]


class SymbolError(ValueError):
    """A Tastytrade symbol that matches none of the known formats."""


@dataclass(frozen=True, slots=True)
class ParsedSymbol:
    """A Tastytrade symbol taken apart (before the instrument table is consulted)."""

    symbol: str
    kind: InstrumentKind
    product: str  # equity ticker, option root (trading class) or futures product code
    expiry: date | None = None
    strike: float | None = None
    right: Literal["C", "P"] | None = None
    future_symbol: str | None = None  # futures and futures options: '/ESH8'
    option_code: str | None = None  # futures options: 'EW1G8'
    future_product: str | None = None  # futures options: 'ES'


def _yymmdd(text: str, symbol: str) -> date:
    try:
        return date(2000 + int(text[:2]), int(text[2:4]), int(text[4:6]))
    except ValueError:
        raise SymbolError(f"tastytrade symbol {symbol!r}: bad expiry {text!r}") from None


def _strike(text: str, symbol: str, *, scale: int = 1) -> float:
    try:
        value = Decimal(text) / scale
    except InvalidOperation:
        raise SymbolError(f"tastytrade symbol {symbol!r}: bad strike {text!r}") from None
    if value <= 0:
        raise SymbolError(f"tastytrade symbol {symbol!r}: strike must be > 0")
    return float(value)


def parse_symbol(symbol: str, instrument_type: str | None = None) -> ParsedSymbol:
    """Split a Tastytrade symbol; ``instrument_type`` (the API's) disambiguates equities/indices."""
    text = symbol.strip()
    if m := _FUTURE_OPTION.match(text):
        return ParsedSymbol(
            symbol=symbol,
            kind="Future Option",
            product=m["oroot"],
            expiry=_yymmdd(m["ymd"], symbol),
            strike=_strike(m["strike"], symbol),
            right="C" if m["right"] == "C" else "P",
            future_symbol=f"/{m['fproduct']}{m['fmonth']}{m['fyear']}",
            option_code=f"{m['oroot']}{m['omonth']}{m['oyear']}",
            future_product=m["fproduct"],
        )
    if m := _FUTURE.match(text):
        return ParsedSymbol(symbol=symbol, kind="Future", product=m["product"], future_symbol=text)
    if m := _OCC.match(symbol):
        return ParsedSymbol(
            symbol=symbol,
            kind="Equity Option",
            product=m["root"],
            expiry=_yymmdd(m["ymd"], symbol),
            strike=_strike(m["strike"], symbol, scale=1000),
            right="C" if m["right"] == "C" else "P",
        )
    if _EQUITY.match(text):
        kind: InstrumentKind = "Index" if instrument_type == "Index" else "Equity"
        return ParsedSymbol(symbol=symbol, kind=kind, product=text)
    raise SymbolError(f"tastytrade symbol {symbol!r} matches no known format")


def resolve_trading_class(instruments: InstrumentTable, option_root: str) -> tuple[str, str]:
    """``(domain root, table trading class)`` for a Tastytrade option root.

    Exact class first; a CME week-numbered weekly root (``EW1``) falls back to its
    un-numbered class (``EW``) only when the table defines that class.
    """
    try:
        return instruments.root_for_trading_class(option_root), option_root.upper()
    except UnknownInstrumentError:
        m = _WEEK_NUMBERED.match(option_root.upper())
        if m is None:
            raise
        try:
            return instruments.root_for_trading_class(m["base"]), m["base"]
        except UnknownInstrumentError:
            raise UnknownInstrumentError(
                f"unknown option trading class {option_root!r} (nor {m['base']!r}): "
                "not defined in the instrument table"
            ) from None


def to_contract(
    parsed: ParsedSymbol,
    instruments: InstrumentTable,
    *,
    underlying_symbol: str | None = None,
    future_expiry: date | None = None,
) -> tuple[Contract, SecType]:
    """Domain contract for a parsed symbol.

    ``underlying_symbol`` (the API's ``underlying-symbol``), when given, must agree with
    the root the table assigns; ``future_expiry`` is the expiry of the future (a future
    itself, or the future a futures option is written on).
    """
    source = f"tastytrade symbol {parsed.symbol!r}"
    if parsed.kind == "Equity Option":
        root, tc = resolve_trading_class(instruments, parsed.product)
        if underlying_symbol and underlying_symbol.upper() not in (root, parsed.product.upper()):
            raise UnknownInstrumentError(
                f"{source}: underlying {underlying_symbol!r} disagrees with the instrument "
                f"table, which gives option class {parsed.product!r} to {root!r}"
            )
        contract = Contract(
            underlying=root, sec_type="OPT", expiry=parsed.expiry, strike=parsed.strike,
            right=parsed.right, trading_class=tc,
        )
        return contract, "OPT"
    if parsed.kind == "Future Option":
        root, tc = resolve_trading_class(instruments, parsed.product)
        if parsed.future_product and parsed.future_product.upper() != root:
            raise UnknownInstrumentError(
                f"{source}: option class {parsed.product!r} belongs to {root!r} in the "
                f"instrument table but is written on future {parsed.future_symbol!r}"
            )
        contract = Contract(
            underlying=root, sec_type="FOP", expiry=parsed.expiry, strike=parsed.strike,
            right=parsed.right, trading_class=tc, underlying_expiry=future_expiry,
        )
        return contract, "FOP"
    if parsed.kind == "Future":
        root = parsed.product.upper()
        spec = instruments.spec(root)
        if spec.future is None:
            raise UnknownInstrumentError(f"{source}: {root!r} has no future in the instrument table")
        if future_expiry is None:
            raise SymbolError(f"{source}: the expiry of the future is unknown")
        return Contract(underlying=root, sec_type="FUT", expiry=future_expiry), "FUT"
    root = parsed.product.upper()
    spec = instruments.spec(root)
    sec_type: SecType = "IND" if parsed.kind == "Index" or spec.underlying_type in (
        "index", "volatility_index"
    ) else "STK"
    return Contract(underlying=root, sec_type=sec_type), sec_type


def occ_symbol(contract: Contract) -> str:
    """OCC 2010 symbol of an equity/index option (``SPXW  180216P02700000``)."""
    if contract.sec_type != "OPT" or contract.expiry is None or contract.strike is None:
        raise SymbolError(f"contract {contract.key}: not an equity/index option")
    root = (contract.trading_class or contract.underlying).upper()
    strike = round(Decimal(str(contract.strike)) * 1000)
    return f"{root:<6}{contract.expiry:%y%m%d}{contract.right}{strike:08d}"


def _strike_text(strike: float) -> str:
    return f"{Decimal(str(strike)).normalize():f}"


def equity_option_streamer_symbol(contract: Contract) -> str:
    """dxfeed symbol of an equity/index option (``.SPXW180216P2700``)."""
    if contract.sec_type != "OPT" or contract.expiry is None or contract.strike is None:
        raise SymbolError(f"contract {contract.key}: not an equity/index option")
    root = (contract.trading_class or contract.underlying).upper()
    return f".{root}{contract.expiry:%y%m%d}{contract.right}{_strike_text(contract.strike)}"


def future_option_streamer_symbol(parsed: ParsedSymbol, exchange_code: str) -> str:
    """dxfeed symbol of a futures option (``./EW1G18P2700:XCME``)."""
    if parsed.kind != "Future Option" or parsed.option_code is None or parsed.expiry is None:
        raise SymbolError(f"tastytrade symbol {parsed.symbol!r}: not a futures option")
    m = re.match(rf"^(?P<root>[A-Z0-9]+?)(?P<month>{_MONTH_CODE})(?P<year>\d{{1,2}})$", parsed.option_code)
    if m is None or parsed.strike is None:
        raise SymbolError(f"tastytrade symbol {parsed.symbol!r}: bad option code")
    if len(m["year"]) == 1:  # one-digit year: the decade of the option's expiry
        decade = parsed.expiry.year % 100 - parsed.expiry.year % 10
        year = f"{decade + int(m['year']):02d}"
    else:
        year = m["year"]
    return f"./{m['root']}{m['month']}{year}{parsed.right}{_strike_text(parsed.strike)}:{exchange_code}"

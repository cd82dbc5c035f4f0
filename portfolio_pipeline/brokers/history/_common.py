"""Helpers shared by the history parsers: instrument lookup, numbers, stable ids."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final

from portfolio_pipeline.brokers.history.errors import ImportFormatError
from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable

_FUTURE_MONTH: Final = re.compile(
    r"^/?(?P<root>[A-Z0-9]+?)(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{1,2})$"
)


def strip_future_month(symbol: str) -> str:
    """``ESH8`` / ``/ESH18`` -> ``ES``; anything else unchanged (without a leading ``/``)."""
    cleaned = symbol.strip().lstrip("./").upper()
    match = _FUTURE_MONTH.match(cleaned)
    return match.group("root") if match else cleaned


def resolve_root(
    instruments: InstrumentTable,
    candidates: Iterable[str | None],
    trading_class: str | None,
    *,
    source: str,
) -> str:
    """The instrument-table root for a contract: first candidate the table knows.

    Candidates are tried as given, then with a futures month code stripped; finally the
    option ``trading_class`` is looked up (``SPXW`` -> ``SPX``).
    """
    known = set(instruments)  # iterate: InstrumentTable lookups raise for unknown roots
    tried: list[str] = []
    for raw in candidates:
        if not raw or not raw.strip():
            continue
        for name in (raw.strip().lstrip("./").upper(), strip_future_month(raw)):
            if name in known:
                return name
            tried.append(name)
    if trading_class:
        try:
            return instruments.root_for_trading_class(trading_class)
        except UnknownInstrumentError:
            tried.append(f"trading class {trading_class}")
    raise ImportFormatError(
        f"{source}: unknown instrument (tried {', '.join(dict.fromkeys(tried)) or 'nothing'}); "
        "add it to config/instruments.yaml"
    )


def table_trading_class(
    instruments: InstrumentTable, root: str, trading_class: str | None
) -> str | None:
    """The table's class for ``trading_class`` of ``root`` (week-numbered weeklies such as
    ES ``EW4`` map to ``EW``: ``InstrumentTable.table_class_name``), else None (the root's
    default).

    The broker's own multiplier is still checked against the table's, so a mini or
    adjusted class missing from the table fails on the multiplier, never silently.
    """
    return instruments.table_class_name(root, trading_class)


MAX_QUANTITY: Final = 1e9
MAX_PRICE: Final = 1e9
MAX_AMOUNT: Final = 1e12

#: the range each numeric field of a history file must fall in (both parsers' names);
#: a value outside is refused naming file, row and field (1e308 contracts, a negative
#: price and the like are typos or corruption, never something to store)
FIELD_RANGES: Final[dict[str, tuple[float, float]]] = {
    "quantity": (-MAX_QUANTITY, MAX_QUANTITY),
    "Quantity": (-MAX_QUANTITY, MAX_QUANTITY),
    "tradePrice": (0.0, MAX_PRICE),
    "price": (0.0, MAX_PRICE),
    "strike": (0.0, MAX_PRICE),
    "Strike Price": (0.0, MAX_PRICE),
    "multiplier": (0.0, 1e7),
    "Multiplier": (0.0, 1e7),
    "amount": (-MAX_AMOUNT, MAX_AMOUNT),
    "Value": (-MAX_AMOUNT, MAX_AMOUNT),
    "ibCommission": (-MAX_PRICE, MAX_PRICE),
    "taxes": (-MAX_PRICE, MAX_PRICE),
    "commisionsAndTax": (-MAX_PRICE, MAX_PRICE),
    "Commissions": (-MAX_PRICE, MAX_PRICE),
    "Fees": (-MAX_PRICE, MAX_PRICE),
}


def check_range(value: float, name: str, source: str) -> float:
    """``value`` when inside :data:`FIELD_RANGES` for ``name``, else ImportFormatError."""
    low, high = FIELD_RANGES.get(name, (-math.inf, math.inf))
    if not low <= value <= high:
        if low == 0.0 and value < 0:
            raise ImportFormatError(f"{source}: {name} {value:g} is negative")
        raise ImportFormatError(f"{source}: {name} {value:g} is outside {low:g} .. {high:g}")
    return value


def check_account(raw: str | None, name: str, source: str) -> str:
    """A non-empty account id without control characters (stripped)."""
    account = (raw or "").strip()
    if not account:
        raise ImportFormatError(f"{source}: {name} is empty")
    if len(account) > 64 or not account.isprintable():
        raise ImportFormatError(f"{source}: {name} {account[:64]!r} is not an account id")
    return account


def parse_number(
    raw: str | None, name: str, source: str, *, required: bool = False
) -> float | None:
    """A float from broker text (``"1,234.50"``, ``"--"`` and ``""`` mean missing).

    Finite and inside :data:`FIELD_RANGES` for ``name``.
    """
    text = (raw or "").strip().replace(",", "")
    if text in ("", "--", "-", "N/A"):
        if required:
            raise ImportFormatError(f"{source}: {name} is missing")
        return None
    try:
        value = float(text)
    except ValueError:
        raise ImportFormatError(f"{source}: {name} is not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise ImportFormatError(f"{source}: {name} is not finite: {raw!r}")
    return check_range(value, name, source)


def stable_id(prefix: str, *parts: str) -> str:
    """A deterministic id from row content (for files that carry no transaction id)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:24]
    return f"{prefix}{digest}"


EARLIEST: Final = date(1950, 1, 1)
LATEST: Final = date(2200, 12, 31)
"""The dates a history file may hold (trades, flows, expiries); outside is a typo or junk."""

_OFFSET: Final = re.compile(r"^(?P<sign>[+-])(?P<h>\d{2}):?(?P<m>\d{2})$")


def fixed_offset(text: str, where: str) -> timezone:
    """``+HHMM``/``-HH:MM`` as a zone; hours 0-14 and minutes 0-59, else ImportFormatError."""
    match = _OFFSET.match(text.strip())
    if match is None or int(match["h"]) > 14 or int(match["m"]) > 59:
        raise ImportFormatError(f"{where}: UTC offset {text!r} is not valid (-14:00 .. +14:00)")
    delta = timedelta(hours=int(match["h"]), minutes=int(match["m"]))
    return timezone(-delta if match["sign"] == "-" else delta)


def checked_day(day: date, raw: str, name: str, where: str) -> date:
    """``day`` when within [EARLIEST, LATEST], else ImportFormatError naming the field."""
    if not EARLIEST <= day <= LATEST:
        raise ImportFormatError(f"{where}: {name} {raw!r} is outside {EARLIEST} .. {LATEST}")
    return day


def checked_utc(value: datetime, raw: str, name: str, where: str) -> datetime:
    """An aware ``value`` in UTC, its local date within [EARLIEST, LATEST]."""
    checked_day(value.date(), raw, name, where)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ImportFormatError(f"{where}: {name} {raw!r} is out of range") from None

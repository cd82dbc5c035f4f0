"""Trade legs typed by a person: ``sell 1 SPX 2018-03-16 2600P``, ``buy 2 SPXW  180316P02600000``.

One leg is ``ACTION QUANTITY INSTRUMENT [@ PRICE]``:

* ``ACTION``: ``buy`` or ``sell`` (any case);
* ``QUANTITY``: a whole number of contracts (shares for a stock/ETF), > 0;
* ``INSTRUMENT``: an OCC 2010 option symbol (root padded or not: ``SPXW  180316P02600000``),
  or ``ROOT YYYY-MM-DD STRIKE{C|P}`` (``ROOT`` a root or a trading class of
  ``config/instruments.yaml``: ``SPX`` monthlies, ``SPXW`` weeklies), or a stock/ETF root
  alone for shares (``buy 100 SPY``);
* ``@ PRICE`` (optional): the price per share/point the leg would trade at (its implied
  vol is then taken from it).

Parsing is strict: anything else is an error naming the leg (its number and text) and
what is wrong.  Pure, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from portfolio_pipeline.domain.errors import DomainError, UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import Contract

__all__ = ["TradeLeg", "TradeParseError", "parse_leg", "parse_legs"]

_OCC = re.compile(r"^(?P<root>[A-Z0-9]{1,6})\s*(?P<ymd>\d{6})(?P<right>[CP])(?P<strike>\d{8})$")
_TEXT = re.compile(r"^(?P<root>[A-Z0-9]{1,6}) (?P<expiry>\S+) (?P<strike>\S+?)(?P<right>[A-Z]?)$")
_QTY = re.compile(r"^[0-9]+$")
_PRICE = re.compile(r"^[0-9]+(\.[0-9]+)?$")


class TradeParseError(DomainError):
    """A trade leg that is not in the documented form (the message names the leg)."""


@dataclass(frozen=True, slots=True)
class TradeLeg:
    """One parsed leg: the contract, the signed quantity (sell < 0) and an optional price."""

    contract: Contract
    quantity: float
    multiplier: float
    price: float | None
    text: str

    @property
    def units(self) -> float:
        """Signed quantity x multiplier (the scenario engine's position units)."""
        return self.quantity * self.multiplier

    def opposite(self) -> TradeLeg:
        """The same leg traded the other way."""
        return TradeLeg(self.contract, -self.quantity, self.multiplier, self.price, self.text)


def _roots(instruments: InstrumentTable) -> set[str]:
    return {str(k).upper() for k in instruments}


def _option(
    root_token: str,
    expiry: date,
    strike: float,
    right: str,
    instruments: InstrumentTable,
    fail: type[TradeParseError],
    where: str,
) -> tuple[Contract, float]:
    token = root_token.upper()
    if token in _roots(instruments):
        root = token
        spec = instruments.spec(root)
        if spec.options is None:
            raise fail(f"{where}: {root} has no options in the instrument table")
        classes = [tc.name.upper() for tc in spec.options.trading_classes]
        tclass = token if token in classes else classes[0]
    else:
        try:
            root = instruments.root_for_trading_class(token)
        except UnknownInstrumentError:
            raise fail(
                f"{where}: unknown root or trading class {root_token!r} (not in instruments.yaml)"
            ) from None
        tclass = token
    spec = instruments.spec(root)
    if spec.option_underlying == "future":
        raise fail(
            f"{where}: {root} options are futures options, which trade text does not describe "
            "(no future expiry)"
        )
    if not math.isfinite(strike) or strike <= 0:
        raise fail(f"{where}: strike must be a positive number")
    contract = Contract(
        underlying=root,
        sec_type="OPT",
        expiry=expiry,
        strike=strike,
        right=right,  # type: ignore[arg-type]
        trading_class=tclass,
    )
    return contract, instruments.multiplier(root, "OPT", tclass)


def parse_leg(text: str, instruments: InstrumentTable, index: int = 1) -> TradeLeg:
    """Parse one leg (see the module docstring); ``index`` numbers it in error messages."""
    where = f"leg {index} {text.strip()!r}"
    fail = TradeParseError
    body, _, price_text = text.strip().partition("@")
    tokens = body.split()
    if len(tokens) < 3:
        raise fail(
            f"{where}: expected 'buy|sell QUANTITY INSTRUMENT [@ PRICE]', "
            "e.g. 'sell 1 SPX 2018-03-16 2600P'"
        )
    action, qty_text, rest = tokens[0].lower(), tokens[1], " ".join(tokens[2:]).upper()
    if action not in ("buy", "sell"):
        raise fail(f"{where}: the action must be 'buy' or 'sell', got {tokens[0]!r}")
    if not _QTY.match(qty_text) or int(qty_text) == 0:
        raise fail(f"{where}: the quantity must be a whole number > 0, got {qty_text!r}")
    quantity = float(int(qty_text)) * (1.0 if action == "buy" else -1.0)
    price: float | None = None
    if "@" in text:
        p = price_text.strip()
        if not _PRICE.match(p):
            raise fail(f"{where}: the price after '@' must be a number >= 0, got {p!r}")
        price = float(p)
    if m := _OCC.match(rest):
        ymd = m["ymd"]
        try:
            expiry = date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:]))
        except ValueError:
            raise fail(f"{where}: OCC symbol has an impossible date {ymd!r} (YYMMDD)") from None
        contract, mult = _option(
            m["root"], expiry, int(m["strike"]) / 1000.0, m["right"], instruments, fail, where
        )
        return TradeLeg(contract, quantity, mult, price, text.strip())
    if m := _TEXT.match(rest):
        if m["right"] not in ("C", "P"):
            raise fail(
                f"{where}: the strike must end in C or P (e.g. 2600P), got {m['strike'] + m['right']!r}"
            )
        try:
            expiry = date.fromisoformat(m["expiry"])
        except ValueError:
            raise fail(f"{where}: expiry must be a date YYYY-MM-DD, got {m['expiry']!r}") from None
        try:
            strike = float(m["strike"])
        except ValueError:
            raise fail(f"{where}: strike must be a number, got {m['strike']!r}") from None
        contract, mult = _option(m["root"], expiry, strike, m["right"], instruments, fail, where)
        return TradeLeg(contract, quantity, mult, price, text.strip())
    if len(tokens) == 3:
        root = rest
        if root not in _roots(instruments):
            raise fail(f"{where}: unknown instrument {tokens[2]!r} (not in instruments.yaml)")
        kind = instruments.spec(root).underlying_type
        if kind not in ("etf", "equity"):
            raise fail(
                f"{where}: {root} is an {kind.replace('_', ' ')}, not shares; give an option "
                "('ROOT YYYY-MM-DD STRIKE{C|P}' or an OCC symbol)"
            )
        return TradeLeg(
            Contract(underlying=root, sec_type="STK"),
            quantity,
            instruments.multiplier(root, "STK"),
            price,
            text.strip(),
        )
    raise fail(
        f"{where}: instrument not understood: give an OCC symbol (SPXW  180316P02600000), "
        "'ROOT YYYY-MM-DD STRIKE{C|P}' or a stock/ETF root"
    )


def parse_legs(texts: Sequence[str], instruments: InstrumentTable) -> list[TradeLeg]:
    """Every leg of a trade (numbered from 1 in errors); at least one."""
    if not texts:
        raise TradeParseError("a trade needs at least one leg")
    return [parse_leg(t, instruments, i) for i, t in enumerate(texts, start=1)]

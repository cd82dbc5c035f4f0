"""Contracts, positions and account snapshots: the normalised records every broker produces.

Every record carries its broker and account id, so several accounts aggregate
naturally.  Prices (``avg_price``, ``mark``) are per share/unit of the underlying, as
quoted; a value in account currency is ``price * quantity * multiplier``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal, cast, get_args

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.instruments import SecType

Right = Literal["C", "P"]
_OPTION_TYPES = ("OPT", "FOP")


def require_aware(value: datetime, name: str, source: str) -> datetime:
    """Return ``value`` if timezone-aware, else raise naming the field and source."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidDataError(f"{source}: {name} must be a timezone-aware datetime, got {value!r}")
    return value


def require_finite(value: float | None, name: str, source: str, *, positive: bool = False) -> float:
    """Return ``value`` as float if finite (and > 0 when ``positive``), else raise."""
    if value is None:
        raise InvalidDataError(f"{source}: {name} is missing")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidDataError(f"{source}: {name} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise InvalidDataError(f"{source}: {name} is not finite: {number!r}")
    if positive and number <= 0:
        raise InvalidDataError(f"{source}: {name} must be > 0, got {number!r}")
    return number


@dataclass(frozen=True, slots=True)
class Contract:
    """Broker-independent contract identity.

    ``underlying`` is the root symbol of ``config/instruments.yaml`` (``SPX``, ``ES``...).
    For futures options ``underlying_expiry`` is the expiry of the future the option
    is written on.
    """

    underlying: str
    sec_type: SecType
    expiry: date | None = None
    strike: float | None = None
    right: Right | None = None
    trading_class: str | None = None
    currency: str = "USD"
    underlying_expiry: date | None = None

    def __post_init__(self) -> None:
        source = f"contract {self.underlying}"
        if not self.underlying:
            raise InvalidDataError("contract: underlying symbol is empty")
        if self.sec_type in _OPTION_TYPES:
            if self.expiry is None or self.strike is None or self.right is None:
                raise InvalidDataError(f"{source}: an option needs expiry, strike and right")
            require_finite(self.strike, "strike", source, positive=True)
            if self.right not in ("C", "P"):
                raise InvalidDataError(f"{source}: right must be 'C' or 'P', got {self.right!r}")
        elif self.sec_type == "FUT" and self.expiry is None:
            raise InvalidDataError(f"{source}: a future needs an expiry")
        if self.sec_type == "FOP" and self.underlying_expiry is None:
            object.__setattr__(self, "underlying_expiry", self.expiry)

    @property
    def is_option(self) -> bool:
        return self.sec_type in _OPTION_TYPES

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``SPX|OPT|SPXW|2018-02-16|2700|P``."""
        parts = [self.underlying.upper(), self.sec_type]
        if self.sec_type in _OPTION_TYPES:
            parts += [
                (self.trading_class or self.underlying).upper(),
                self.expiry.isoformat() if self.expiry else "",
                f"{self.strike:g}",
                self.right or "",
            ]
            if self.sec_type == "FOP" and self.underlying_expiry != self.expiry:
                parts.append(self.underlying_expiry.isoformat() if self.underlying_expiry else "")
        elif self.sec_type == "FUT":
            parts.append(self.expiry.isoformat() if self.expiry else "")
        return "|".join(parts)

    def year_fraction(self, as_of: datetime, *, settlement_hour_utc: float = 21.0) -> float:
        """ACT/365 time to expiry in years from ``as_of`` (expiry taken at the close, UTC hour)."""
        if self.expiry is None:
            raise InvalidDataError(f"contract {self.key}: no expiry")
        require_aware(as_of, "as_of", f"contract {self.key}")
        expiry_dt = datetime(self.expiry.year, self.expiry.month, self.expiry.day, tzinfo=as_of.tzinfo)
        expiry_dt = expiry_dt.astimezone(as_of.tzinfo) + timedelta(hours=settlement_hour_utc)
        seconds = (expiry_dt - as_of).total_seconds()
        return max(seconds, 0.0) / (365.0 * 86400.0)


_SEC_TYPES: tuple[str, ...] = get_args(SecType)


def _missing(value: object) -> bool:
    # None, "", and NaN / NaT (the only values not equal to themselves)
    return value is None or value == "" or value != value


def _row_date(value: object, name: str, source: str) -> date | None:
    if _missing(value):
        return None
    if isinstance(value, datetime):  # a pandas Timestamp is one too
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise InvalidDataError(f"{source}: {name} {value!r} is not an ISO date") from None
    raise InvalidDataError(f"{source}: {name} must be a date, got {type(value).__name__}")


def _row_text(value: object) -> str | None:
    return None if _missing(value) else str(value)


def contract_from_row(row: Mapping[Any, Any], *, source: str = "stored row") -> Contract:
    """The :class:`Contract` of a stored row: the one conversion for every reader.

    ``row`` has the contract columns of the storage tables (``underlying``, ``sec_type``,
    ``expiry``, ``strike``, ``right``, ``trading_class``, optionally ``currency``,
    ``underlying_expiry`` and ``position_key``), from a result mapping, a DataFrame
    record or a JSON document: dates may be ``date``, ``datetime``/``Timestamp`` or ISO
    text; a missing value may be None, NaN or NaT.

    A futures option's ``underlying_expiry`` comes from the row's own column where the
    table has one (``executions``), otherwise from ``position_key``: :attr:`Contract.key`
    carries the future's expiry when it differs from the option's, so a position read
    back keeps the future it is written on.
    """
    sec_type = str(row["sec_type"])
    if sec_type not in _SEC_TYPES:
        raise InvalidDataError(f"{source}: unknown sec_type {sec_type!r}")
    underlying_expiry = _row_date(row.get("underlying_expiry"), "underlying_expiry", source)
    if underlying_expiry is None and sec_type == "FOP":
        parts = str(row.get("position_key") or "").split("|")
        if len(parts) > 6 and parts[6]:
            underlying_expiry = _row_date(parts[6], "underlying expiry in position_key", source)
    strike = row.get("strike")
    right = _row_text(row.get("right"))
    return Contract(
        underlying=str(row["underlying"]),
        sec_type=cast(SecType, sec_type),
        expiry=_row_date(row.get("expiry"), "expiry", source),
        strike=None if _missing(strike) else float(strike),  # type: ignore[arg-type]
        right=cast(Right | None, right),
        trading_class=_row_text(row.get("trading_class")),
        currency=_row_text(row.get("currency")) or "USD",
        underlying_expiry=underlying_expiry,
    )


@dataclass(frozen=True, slots=True)
class Position:
    """A signed position in one contract of one account."""

    broker: str
    account_id: str
    contract: Contract
    quantity: float
    multiplier: float
    avg_price: float
    mark: float
    as_of: datetime
    underlying_price: float | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = self.source or f"{self.broker}:{self.account_id}:{self.contract.key}"
        if not self.broker or not self.account_id:
            raise InvalidDataError(f"{where}: broker and account_id are required")
        qty = require_finite(self.quantity, "quantity", where)
        if qty == 0:
            raise InvalidDataError(f"{where}: quantity is zero (a closed position is not a position)")
        require_finite(self.multiplier, "multiplier", where, positive=True)
        require_finite(self.avg_price, "avg_price", where)
        require_finite(self.mark, "mark", where)
        if self.underlying_price is not None:
            require_finite(self.underlying_price, "underlying_price", where, positive=True)
        require_aware(self.as_of, "as_of", where)

    @property
    def key(self) -> str:
        return self.contract.key

    @property
    def market_value(self) -> float:
        return self.mark * self.quantity * self.multiplier

    @property
    def cost_basis(self) -> float:
        return self.avg_price * self.quantity * self.multiplier

    @property
    def unrealized_pnl(self) -> float:
        return self.market_value - self.cost_basis


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """Balances of one account at one time, in the account's base currency."""

    broker: str
    account_id: str
    as_of: datetime
    nlv: float
    cash: float
    init_margin: float
    maint_margin: float
    excess_liquidity: float
    buying_power: float
    currency: str = "USD"
    broker_daily_pnl: float | None = None

    def __post_init__(self) -> None:
        where = f"{self.broker}:{self.account_id} account snapshot"
        require_aware(self.as_of, "as_of", where)
        for name in ("nlv", "cash", "init_margin", "maint_margin", "excess_liquidity", "buying_power"):
            require_finite(getattr(self, name), name, where)
        if self.broker_daily_pnl is not None:
            require_finite(self.broker_daily_pnl, "broker_daily_pnl", where)

    @property
    def margin_utilisation(self) -> float:
        """Maintenance margin / NLV (inf when NLV <= 0)."""
        return self.maint_margin / self.nlv if self.nlv > 0 else math.inf


@dataclass(frozen=True, slots=True)
class Quote:
    """A market snapshot of one contract: quote plus the broker's model Greeks (per share)."""

    source: str
    contract: Contract
    as_of: datetime
    bid: float
    ask: float
    mark: float
    last: float | None = None
    underlying_price: float | None = None
    iv: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None

    def __post_init__(self) -> None:
        where = f"{self.source}:{self.contract.key} quote"
        require_aware(self.as_of, "as_of", where)
        for name in ("bid", "ask", "mark"):
            require_finite(getattr(self, name), name, where)
        if self.bid > self.ask:
            raise InvalidDataError(f"{where}: bid {self.bid} > ask {self.ask}")


def contract_from_key(key: str, *, source: str = "contract key") -> Contract:
    """The :class:`Contract` of its :attr:`Contract.key` (``SPX|OPT|SPXW|2018-03-16|2500|P``,
    ``SPY|STK``, ``ES|FUT|2018-03-16``), as ``portfolio orders list`` and positions print it."""
    parts = key.strip().split("|")
    if len(parts) < 2 or parts[1] not in _SEC_TYPES:
        raise InvalidDataError(
            f"{source}: {key!r} is not a contract key (e.g. SPX|OPT|SPXW|2018-03-16|2500|P or SPY|STK)"
        )
    row: dict[str, Any] = {"underlying": parts[0], "sec_type": parts[1], "position_key": key}
    if parts[1] in _OPTION_TYPES:
        if len(parts) not in (6, 7):
            raise InvalidDataError(f"{source}: {key!r}: an option key is UNDERLYING|TYPE|CLASS|EXPIRY|STRIKE|RIGHT")
        row |= {"trading_class": parts[2], "expiry": parts[3], "right": parts[5]}
        try:
            row["strike"] = float(parts[4])
        except ValueError:
            raise InvalidDataError(f"{source}: {key!r}: strike {parts[4]!r} is not a number") from None
    elif parts[1] == "FUT":
        if len(parts) != 3:
            raise InvalidDataError(f"{source}: {key!r}: a future key is UNDERLYING|FUT|EXPIRY")
        row["expiry"] = parts[2]
    elif len(parts) != 2:
        raise InvalidDataError(f"{source}: {key!r}: a {parts[1]} key is UNDERLYING|{parts[1]}")
    return contract_from_row(row, source=source)

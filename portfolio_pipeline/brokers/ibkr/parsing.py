"""Normalisation of ib_async payloads into domain objects (the one place it happens for IBKR).

Pure functions: no I/O, no event loop.  Every error names the contract (``localSymbol``
and ``conId``) and the account it came from.

IBKR conventions handled here:

- ``avgCost`` of options and futures already includes the contract multiplier while
  ``marketPrice`` is per share: ``avg_price = avgCost / multiplier`` for OPT/FOP/FUT.
- The root symbol is ``Contract.symbol`` (``SPX`` for an ``SPXW`` weekly); the trading class
  picks the settlement style and, for mini/adjusted options, the multiplier.
- The broker's multiplier is checked against ``config/instruments.yaml`` through
  :meth:`InstrumentTable.checked_multiplier`; a mismatch is an error, never a guess.
- Sentinels (``None``, NaN, +-inf, ``UNSET_DOUBLE`` = 1.7976931348623157e308, ``-1`` for
  prices/IV, ``-2`` for Greeks, ``-999``) become NaN with a logged warning naming the
  contract and the field.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Final, Literal

from ib_async import Contract as IbContract
from ib_async import Fill, Future, FuturesOption, Index, Option, OrderState, Stock

from portfolio_pipeline.brokers.base import BrokerDataError
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.errors import DomainError
from portfolio_pipeline.domain.instruments import InstrumentTable, SecType
from portfolio_pipeline.domain.orders import WhatIfResult
from portfolio_pipeline.domain.positions import Contract, Right
from portfolio_pipeline.domain.symbols import VIX, VIX3M

logger = logging.getLogger(__name__)

BROKER: Final = "ibkr"
UNSET_DOUBLE: Final = sys.float_info.max
#: Values IBKR uses for "not computed" in option computations and prices.
GREEK_SENTINELS: Final = frozenset({-2.0, -999.0})
PRICE_SENTINELS: Final = frozenset({-1.0, -999.0})
_SEC_TYPES: Final[Mapping[str, SecType]] = MappingProxyType(
    {"STK": "STK", "IND": "IND", "FUT": "FUT", "OPT": "OPT", "FOP": "FOP"}
)
_DERIVATIVES: Final = frozenset({"FUT", "OPT", "FOP"})
_RIGHTS: Final[Mapping[str, Right]] = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}

#: Account summary tags read into an AccountSnapshot (tag -> AccountSnapshot field).
SUMMARY_TAGS: Final[Mapping[str, str]] = {
    "NetLiquidation": "nlv",
    "TotalCashValue": "cash",
    "InitMarginReq": "init_margin",
    "MaintMarginReq": "maint_margin",
    "ExcessLiquidity": "excess_liquidity",
    "BuyingPower": "buying_power",
}

#: Listing exchange of index underlyings (IBKR needs it for IND contracts).
INDEX_EXCHANGES: Final[Mapping[str, str]] = MappingProxyType(
    {"SPX": "CBOE", "XSP": "CBOE", VIX: "CBOE", VIX3M: "CBOE", "NDX": "NASDAQ", "RUT": "RUSSELL"}
)
DEFAULT_INDEX_EXCHANGE: Final = "CBOE"

SentinelKind = Literal["price", "greek"]


def describe(contract: IbContract) -> str:
    """Human-readable identity of an IBKR contract for messages (no secrets in contracts)."""
    local = contract.localSymbol or contract.symbol or "?"
    parts = [local, contract.secType or "?"]
    if contract.secType in ("OPT", "FOP"):
        parts.append(
            f"{contract.tradingClass or contract.symbol} {contract.lastTradeDateOrContractMonth} "
            f"{contract.strike:g}{contract.right}"
        )
    if contract.conId:
        parts.append(f"conId={contract.conId}")
    return " ".join(parts)


def contract_source(account: str, contract: IbContract) -> str:
    """``ibkr:<account>:<localSymbol>``: where a value came from (for multiplier checks)."""
    return f"{BROKER}:{account or '-'}:{contract.localSymbol or contract.symbol or contract.conId}"


def sanitise(
    value: object, field: str, where: str, *, kind: SentinelKind, warned: set[tuple[str, str]] | None = None
) -> float:
    """``value`` as a float, or NaN with a warning naming ``where`` and ``field``.

    ``kind`` "price" treats -1 as "no value" (IBKR's empty price and IV), "greek" treats -2.
    ``warned`` (kept by a streaming caller) rate-limits the warning to once per episode:
    a repeat of the same ``(where, field)`` logs at DEBUG until the value is good again.
    """
    problem: str | None = None
    number = math.nan
    if value is None:
        problem = "missing from IBKR"
    else:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            problem = f"not a number ({value!r})"
        else:
            sentinels = PRICE_SENTINELS if kind == "price" else GREEK_SENTINELS
            if not math.isfinite(number) or number >= UNSET_DOUBLE or number in sentinels:
                problem = f"is an IBKR sentinel ({number!r})"
    key = (where, field)
    if problem is None:
        if warned is not None:
            warned.discard(key)
        return number
    if warned is not None and key in warned:
        logger.debug("ibkr: %s: %s %s -> NaN (again)", where, field, problem)
    else:
        logger.warning("ibkr: %s: %s %s -> NaN", where, field, problem)
        if warned is not None:
            warned.add(key)
    return math.nan


def clean_price(value: object) -> float | None:
    """A usable price (finite, >= 0, not a sentinel) or None, silently (for mark selection)."""
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number >= UNSET_DOUBLE or number < 0:
        return None
    return number


def parse_ib_date(text: str, *, where: str, field: str = "lastTradeDateOrContractMonth") -> date:
    """``YYYYMMDD`` (optionally followed by a time) -> date; a bare month is an error."""
    raw = (text or "").strip()
    digits = raw.split(" ")[0].split("-")[0]
    if len(digits) != 8 or not digits.isdigit():
        raise BrokerDataError(
            f"ibkr: {where}: {field} {text!r} is not a YYYYMMDD date "
            "(a contract month alone cannot be normalised)"
        )
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise BrokerDataError(f"ibkr: {where}: {field} {text!r} is not a valid date") from None


def ib_date(value: date) -> str:
    return value.strftime("%Y%m%d")


def broker_multiplier(contract: IbContract, *, where: str) -> float | None:
    raw = str(contract.multiplier or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BrokerDataError(f"ibkr: {where}: multiplier {raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise BrokerDataError(f"ibkr: {where}: multiplier {raw!r} must be > 0")
    return value


def table_trading_class(instruments: InstrumentTable, root: str, trading_class: str) -> str:
    """The instrument table's class for an IBKR option trading class of ``root``
    (``InstrumentTable.table_class_name``); unknown classes are returned unchanged, and the
    table then rejects them."""
    return instruments.table_class_name(root, trading_class) or trading_class


@dataclass(frozen=True, slots=True)
class NormalisedContract:
    contract: Contract
    multiplier: float


def normalise_contract(
    ib_contract: IbContract,
    instruments: InstrumentTable,
    *,
    account: str = "",
    underlying_expiry: date | None = None,
) -> NormalisedContract:
    """IBKR Contract -> domain Contract plus the table's (checked) multiplier.

    Raises :class:`BrokerDataError` for unusable payloads and re-raises the table's
    :class:`UnknownInstrumentError` / :class:`MultiplierMismatchError` with the contract and
    account prefixed (same exception type).
    """
    where = f"{account or '-'} {describe(ib_contract)}"
    sec_type = ib_contract.secType
    sec = _SEC_TYPES.get(sec_type)
    if sec is None:
        raise BrokerDataError(
            f"ibkr: {where}: security type {sec_type!r} is not supported "
            f"(expected one of {sorted(_SEC_TYPES)})"
        )
    root = (ib_contract.symbol or "").upper()
    if not root:
        raise BrokerDataError(f"ibkr: {where}: contract has no symbol")
    currency = ib_contract.currency or "USD"
    expiry: date | None = None
    strike: float | None = None
    right: Right | None = None
    trading_class: str | None = None
    if sec in _DERIVATIVES:
        expiry = parse_ib_date(ib_contract.lastTradeDateOrContractMonth, where=where)
    if sec in ("OPT", "FOP"):
        right = _RIGHTS.get((ib_contract.right or "").upper())
        if right is None:
            raise BrokerDataError(f"ibkr: {where}: option right {ib_contract.right!r} is not C/P")
        strike = float(ib_contract.strike)
        if not math.isfinite(strike) or strike <= 0:
            raise BrokerDataError(f"ibkr: {where}: strike {ib_contract.strike!r} must be > 0")
        trading_class = (ib_contract.tradingClass or root).upper()
    try:
        if trading_class is not None:
            trading_class = table_trading_class(instruments, root, trading_class)
        multiplier = instruments.checked_multiplier(
            root,
            sec,
            broker_multiplier(ib_contract, where=where),
            trading_class=trading_class,
            source=contract_source(account, ib_contract),
        )
        contract = Contract(
            underlying=root,
            sec_type=sec,
            expiry=expiry,
            strike=strike,
            right=right,
            trading_class=trading_class,
            currency=currency,
            underlying_expiry=underlying_expiry if sec == "FOP" else None,
        )
    except DomainError as exc:
        raise type(exc)(f"ibkr: {where}: {exc}") from exc
    return NormalisedContract(contract, multiplier)


def avg_price_from_avg_cost(avg_cost: object, sec_type: str, multiplier: float, *, where: str) -> float:
    """IBKR ``avgCost`` -> price per share/unit.

    PITFALL: for options and futures IBKR's ``avgCost`` already includes the multiplier
    (a 15.20 SPX put shows avgCost 1520.0) while ``marketPrice`` is per share, so
    derivatives are divided by the multiplier here; stocks/indices are per share already.
    """
    try:
        number = float(avg_cost)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or abs(number) >= UNSET_DOUBLE:
        raise BrokerDataError(f"ibkr: {where}: avgCost {avg_cost!r} is not a usable number")
    return number / multiplier if sec_type in _DERIVATIVES else number


def account_values(
    values: Iterable[Any],
    *,
    account: str,
    currency: str,
    model_code: str | None,
) -> dict[str, float]:
    """The :data:`SUMMARY_TAGS` of one account, base currency and model code only."""
    wanted_model = model_code or ""
    found: dict[str, float] = {}
    for value in values:
        if value.account != account or value.tag not in SUMMARY_TAGS:
            continue
        if value.currency != currency or (value.modelCode or "") != wanted_model:
            continue
        try:
            number = float(value.value)
        except (TypeError, ValueError):
            raise BrokerDataError(
                f"ibkr: account {account}: {value.tag} {value.value!r} is not a number"
            ) from None
        if not math.isfinite(number) or abs(number) >= UNSET_DOUBLE:
            raise BrokerDataError(f"ibkr: account {account}: {value.tag} is not finite ({number!r})")
        found[value.tag] = number
    missing = [tag for tag in SUMMARY_TAGS if tag not in found]
    if missing:
        raise BrokerDataError(
            f"ibkr: account {account}: account summary lacks {', '.join(missing)} in "
            f"{currency}{' model ' + wanted_model if wanted_model else ''}"
        )
    return found


def _order_state_number(raw: object) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        number = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or abs(number) >= UNSET_DOUBLE:
        return None
    return number


def whatif_result(state: OrderState, *, where: str, extra_warnings: Iterable[str] = ()) -> WhatIfResult:
    """IBKR WhatIf ``OrderState`` -> WhatIfResult; every broker warning is kept verbatim."""
    init_change = _order_state_number(state.initMarginChange)
    maint_change = _order_state_number(state.maintMarginChange)
    if init_change is None or maint_change is None:
        raise BrokerDataError(
            f"ibkr: {where}: WhatIf returned no margin change "
            f"(init={state.initMarginChange!r}, maint={state.maintMarginChange!r})"
        )
    warnings: list[str] = []
    if state.warningText:
        warnings.append(str(state.warningText).strip())
    warnings.extend(w for w in extra_warnings if w)
    commission = _order_state_number(state.commission)
    if commission is None:
        high = _order_state_number(state.maxCommission)
        low = _order_state_number(state.minCommission)
        if high is not None:
            commission = high
            warnings.append(
                f"commission is an estimate range {low if low is not None else '?'}-{high}; "
                "the maximum is shown"
            )
        else:
            commission = math.nan
            warnings.append("IBKR gave no commission estimate")
            logger.warning("ibkr: %s: WhatIf gave no commission estimate -> NaN", where)
    return WhatIfResult(
        init_margin_change=init_change,
        maint_margin_change=maint_change,
        commission=commission,
        equity_with_loan_after=_order_state_number(state.equityWithLoanAfter),
        warnings=tuple(dict.fromkeys(warnings)),
    )


def execution_from_fill(
    fill: Fill,
    contract: NormalisedContract,
    *,
    account: str,
) -> Execution:
    """An IBKR fill (execution + commission report) -> domain Execution (signed quantity)."""
    exe = fill.execution
    where = f"{account} execution {exe.execId}"
    side = (exe.side or "").upper()
    if side in ("BOT", "BUY"):
        sign = 1.0
    elif side in ("SLD", "SELL"):
        sign = -1.0
    else:
        raise BrokerDataError(f"ibkr: {where}: side {exe.side!r} is neither BOT nor SLD")
    ts = exe.time if isinstance(exe.time, datetime) else fill.time
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    report = fill.commissionReport
    commission = float(report.commission) if report is not None else 0.0
    if not math.isfinite(commission) or abs(commission) >= UNSET_DOUBLE:
        raise BrokerDataError(f"ibkr: {where}: commission {report.commission!r} is not usable")
    return Execution(
        broker=BROKER,
        account_id=account,
        exec_id=exe.execId,
        contract=contract.contract,
        ts=ts.astimezone(UTC),
        quantity=sign * float(exe.shares),
        price=float(exe.price),
        multiplier=contract.multiplier,
        commission=abs(commission),
        order_ref=exe.orderRef or None,
    )


def ib_contract_for(contract: Contract, instruments: InstrumentTable) -> IbContract:
    """Domain Contract -> unqualified IBKR contract (qualify it before use).

    Options route SMART; futures and futures options use the exchange of the table's
    ``future`` section; indices use :data:`INDEX_EXCHANGES`.
    """
    root = contract.underlying.upper()
    spec = instruments.spec(root)
    currency = contract.currency or spec.currency
    sec = contract.sec_type
    if sec == "STK":
        return Stock(root, "SMART", currency)
    if sec == "IND":
        return Index(root, INDEX_EXCHANGES.get(root, DEFAULT_INDEX_EXCHANGE), currency)
    assert contract.expiry is not None  # guaranteed by Contract for FUT/OPT/FOP
    expiry = ib_date(contract.expiry)
    multiplier = f"{instruments.multiplier(root, sec, contract.trading_class):g}"
    if sec == "FUT":
        if spec.future is None:
            raise BrokerDataError(f"ibkr: {contract.key}: {root} has no future section")
        return Future(root, expiry, spec.future.exchange, multiplier=multiplier, currency=currency)
    assert contract.strike is not None and contract.right is not None
    trading_class = contract.trading_class or root
    if sec == "FOP":
        if spec.future is None:
            raise BrokerDataError(f"ibkr: {contract.key}: {root} has no future section")
        return FuturesOption(
            root,
            expiry,
            contract.strike,
            contract.right,
            spec.future.exchange,
            multiplier,
            currency,
            tradingClass=trading_class,
        )
    return Option(
        root,
        expiry,
        contract.strike,
        contract.right,
        "SMART",
        multiplier,
        currency,
        tradingClass=trading_class,
    )

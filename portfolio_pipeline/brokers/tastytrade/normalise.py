"""Tastytrade SDK models -> domain records (pure: no I/O, no SDK session).

Numbers leave the SDK as :class:`~decimal.Decimal` and become ``float`` here, once,
with a finiteness check naming the field.  Signs: the SDK already turns every
``*-effect: Debit`` amount negative (``set_sign_for``); costs (commissions, fees) are
reported as magnitudes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

from pydantic import ValidationError
from tastytrade.account import AccountBalance, CurrentPosition, Transaction
from tastytrade.instruments import NestedFutureOptionChain, NestedOptionChain
from tastytrade.order import FeeCalculation, Message, PlacedOrderResponse, UnplacedOrder

from portfolio_pipeline.brokers.base import BrokerDataError, OptionChain
from portfolio_pipeline.brokers.history.tastytrade_types import (
    CashFlowType,
    ExecutionType,
    classify_tastytrade_transaction,
)
from portfolio_pipeline.brokers.tastytrade.symbols import resolve_trading_class
from portfolio_pipeline.domain.activity import CashFlow, CashFlowKind, ExecutionKind
from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.orders import WhatIfResult
from portfolio_pipeline.domain.positions import AccountSnapshot

BROKER = "tastytrade"


def validation_detail(exc: ValidationError) -> str:
    """``field 'x': message (input ...)`` of the first pydantic error (no full payload)."""
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
    shown = repr(first.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"field {loc!r}: {first.get('msg', 'invalid')} (input {shown}){more}"


def to_float(value: Decimal | float | int | None, field: str, where: str) -> float:
    """Decimal -> float at the boundary; missing or non-finite is a :class:`BrokerDataError`."""
    if value is None:
        raise BrokerDataError(f"{where}: field {field!r} is missing")
    number = float(value)
    if not math.isfinite(number):
        raise BrokerDataError(f"{where}: field {field!r} is not finite ({value!r})")
    return number


def require_aware_ts(value: datetime, field: str, where: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise BrokerDataError(f"{where}: field {field!r} has no time zone ({value.isoformat()})")
    return value.astimezone(UTC)


def position_sign(position: CurrentPosition, where: str) -> int:
    """+1 Long, -1 Short, 0 Zero (the API gives an unsigned quantity and a direction)."""
    direction = position.quantity_direction.strip().lower()
    if direction == "long":
        return 1
    if direction == "short":
        return -1
    if direction == "zero":
        return 0
    raise BrokerDataError(
        f"{where}: field 'quantity-direction' is {position.quantity_direction!r}, "
        "expected Long, Short or Zero"
    )


def position_mark(position: CurrentPosition, where: str) -> float:
    """Per-share mark: ``mark-price`` when the API sent marks, else ``close-price``."""
    if position.mark_price is not None:
        return to_float(position.mark_price, "mark-price", where)
    return to_float(position.close_price, "close-price", where)


def account_snapshot(balance: AccountBalance, account_id: str, as_of: datetime) -> AccountSnapshot:
    """Balances -> :class:`AccountSnapshot` (all Decimals become floats here).

    Mapping from Tastytrade ``/accounts/{n}/balances/USD``:

    - ``nlv`` <- ``net-liquidating-value``
    - ``cash`` <- ``cash-balance``
    - ``maint_margin`` <- ``maintenance-requirement``
    - ``init_margin`` <- ``reg-t-margin-requirement`` (Tastytrade's balances carry no
      separate "initial requirement"; the Reg T requirement is the initial one)
    - ``excess_liquidity`` <- ``maintenance-excess`` (NLV less the maintenance
      requirement: the excess-liquidity equivalent)
    - ``buying_power`` <- ``derivative-buying-power`` (options buying power; the
      ``equity-buying-power`` for stock is not part of the snapshot)
    """
    where = f"tastytrade:{account_id} balances"
    return AccountSnapshot(
        broker=BROKER,
        account_id=account_id,
        as_of=as_of,
        nlv=to_float(balance.net_liquidating_value, "net-liquidating-value", where),
        cash=to_float(balance.cash_balance, "cash-balance", where),
        init_margin=to_float(balance.reg_t_margin_requirement, "reg-t-margin-requirement", where),
        maint_margin=to_float(balance.maintenance_requirement, "maintenance-requirement", where),
        excess_liquidity=to_float(balance.maintenance_excess, "maintenance-excess", where),
        buying_power=to_float(balance.derivative_buying_power, "derivative-buying-power", where),
        currency="USD",
    )


def classify(tx: Transaction, where: str) -> ExecutionType | CashFlowType:
    """Execution or cash-flow kind of a transaction (the CSV importer's shared mapping).

    Raises :class:`UnknownTransactionTypeError` for a type/sub-type pair without a mapping.
    """
    return classify_tastytrade_transaction(
        tx.transaction_type, tx.transaction_sub_type, source=where
    )


def execution_kind(tx: Transaction, where: str) -> ExecutionKind | None:
    """Execution kind of a transaction, or None when it is a cash flow."""
    kind = classify(tx, where)
    return kind.kind if isinstance(kind, ExecutionType) else None


def cash_flow(tx: Transaction, account_id: str) -> CashFlow | None:
    """Money movements (deposits, withdrawals, dividends, interest, fees...) -> CashFlow."""
    where = f"tastytrade:{account_id} transaction {tx.id}"
    classified = classify(tx, where)
    if not isinstance(classified, CashFlowType):
        return None
    kind: CashFlowKind = classified.kind
    amount = to_float(tx.net_value, "net-value", where)
    if kind == "deposit" and amount < 0:
        kind = "withdrawal"
    return CashFlow(
        broker=BROKER,
        account_id=account_id,
        flow_id=str(tx.id),
        ts=require_aware_ts(tx.executed_at, "executed-at", where),
        kind=kind,
        amount=amount,
        description=tx.description,
    )


def execution_costs(tx: Transaction, where: str) -> tuple[float, float]:
    """(commission, fees): clearing + regulatory + proprietary index option fees."""
    commission = abs(to_float(tx.commission or Decimal(0), "commission", where))
    fees = sum(
        abs(to_float(getattr(tx, name) or Decimal(0), name.replace("_", "-"), where))
        for name in ("clearing_fees", "regulatory_fees", "proprietary_index_option_fees")
    )
    return commission, fees


def execution_price(tx: Transaction, signed_qty: float, multiplier: float, where: str) -> float:
    """Per-share price; for cash-settled deliveries without a price, value / (qty x mult)."""
    if tx.price is not None:
        return to_float(tx.price, "price", where)
    value = to_float(tx.value, "value", where)
    if value == 0:
        return 0.0
    return -value / (signed_qty * multiplier)


def whatif_result(response: PlacedOrderResponse[UnplacedOrder]) -> WhatIfResult:
    """Dry-run response -> :class:`WhatIfResult`.

    ``change-in-margin-requirement`` with effect Debit (SDK: negative) is an *increase*
    of the requirement, reported positive.  Tastytrade gives one requirement, used for
    both initial and maintenance change.  ``commission`` is the total of the fee
    calculation (commission + clearing + regulatory + index fees).  Every warning and
    error message is passed on verbatim, errors prefixed ``error``.
    """
    where = "tastytrade order dry-run"
    bpe = response.buying_power_effect
    change = -to_float(bpe.change_in_margin_requirement, "change-in-margin-requirement", where)
    fees: FeeCalculation | None = response.fee_calculation
    commission = abs(to_float(fees.total_fees, "total-fees", where)) if fees else 0.0
    warnings: list[str] = [_message(m) for m in response.warnings or ()]
    warnings += [f"error {_message(m)}" for m in response.errors or ()]
    return WhatIfResult(
        init_margin_change=change,
        maint_margin_change=change,
        commission=commission,
        equity_with_loan_after=None,
        warnings=tuple(warnings),
    )


def _message(message: Message) -> str:
    return f"{message.code}: {message.message}"


def equity_chain(
    chains: Sequence[NestedOptionChain],
    instruments: InstrumentTable,
    root: str,
    trading_class: str,
) -> OptionChain:
    """Nested equity/index option chain -> :class:`OptionChain` of one trading class."""
    where = f"tastytrade option chain {root}/{trading_class}"
    match = [c for c in chains if c.root_symbol.upper() == trading_class.upper()]
    if not match:
        have = sorted({c.root_symbol for c in chains})
        raise BrokerDataError(f"{where}: no chain for class {trading_class!r} (have {have})")
    chain = match[0]
    multiplier = instruments.checked_multiplier(
        root, "OPT", float(chain.shares_per_contract), trading_class=trading_class,
        source=f"{where}: shares-per-contract",
    )
    expiries: set[date] = set()
    strikes: set[float] = set()
    for exp in chain.expirations:
        expiries.add(exp.expiration_date)
        strikes.update(to_float(s.strike_price, "strike-price", where) for s in exp.strikes)
    return OptionChain(
        underlying=root, trading_class=trading_class, multiplier=multiplier,
        expiries=tuple(sorted(expiries)), strikes=tuple(sorted(strikes)),
    )


def future_chain(
    chain: NestedFutureOptionChain,
    instruments: InstrumentTable,
    root: str,
    trading_class: str,
    exchange: str,
) -> OptionChain:
    """Nested futures option chain -> :class:`OptionChain` of one trading class.

    Each expiration names its option root (``EW1``); it belongs to ``trading_class``
    when the instrument table resolves it to that class.
    """
    where = f"tastytrade futures option chain {root}/{trading_class}"
    expiries: set[date] = set()
    strikes: set[float] = set()
    for sub in chain.option_chains:
        for exp in sub.expirations:
            try:
                owner, tc = resolve_trading_class(instruments, exp.option_root_symbol)
            except UnknownInstrumentError:
                continue
            if owner != root or tc != trading_class.upper():
                continue
            expiries.add(exp.expiration_date)
            strikes.update(to_float(s.strike_price, "strike-price", where) for s in exp.strikes)
    if not expiries:
        raise BrokerDataError(f"{where}: no expiration of class {trading_class!r} in the chain")
    multiplier = instruments.multiplier(root, "FOP", trading_class)
    return OptionChain(
        underlying=root, trading_class=trading_class, multiplier=multiplier,
        expiries=tuple(sorted(expiries)), strikes=tuple(sorted(strikes)), exchange=exchange,
    )

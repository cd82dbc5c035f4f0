"""Tastytrade transaction type/sub-type -> execution kind or cash-flow kind (shared).

The CSV export of the transaction history and the API's ``Transaction`` objects
(``transaction_type`` / ``transaction_sub_type`` of the ``tastytrade`` SDK) use the same
vocabulary, so the CSV importer and the Tastytrade adapter both classify through
:func:`classify_tastytrade_transaction`::

    match classify_tastytrade_transaction(txn.transaction_type, txn.transaction_sub_type):
        case ExecutionType(kind=kind): ...   # an Execution of that kind
        case CashFlowType(kind=kind): ...    # a CashFlow of that kind

Types: ``Trade`` (fills), ``Receive Deliver`` (assignments, exercises, expirations and
the stock/future delivered by them), ``Money Movement`` (cash).  A pair not listed
here (splits, symbol changes, ACATs...) raises :class:`UnknownTransactionTypeError`:
such rows change positions in ways the importer does not model, and guessing would
corrupt the book.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from portfolio_pipeline.brokers.history.errors import UnknownTransactionTypeError
from portfolio_pipeline.domain.activity import CashFlowKind, ExecutionKind

__all__ = [
    "CashFlowType",
    "ExecutionType",
    "classify_tastytrade_transaction",
    "is_cash_settled",
]


@dataclass(frozen=True, slots=True)
class ExecutionType:
    """The transaction is an execution of ``kind``."""

    kind: ExecutionKind


@dataclass(frozen=True, slots=True)
class CashFlowType:
    """The transaction is a cash flow of ``kind`` (sign from the transaction's value)."""

    kind: CashFlowKind


_FILLS: Final[dict[str, ExecutionKind]] = {
    "buy to open": "trade",
    "sell to open": "trade",
    "buy to close": "trade",
    "sell to close": "trade",
    "buy": "trade",
    "sell": "trade",
}
_RECEIVE_DELIVER: Final[dict[str, ExecutionKind]] = {
    **_FILLS,
    "assignment": "assignment",
    "cash settled assignment": "assignment",
    "exercise": "exercise",
    "cash settled exercise": "exercise",
    "expiration": "expiry",
}
_MONEY_MOVEMENT: Final[dict[str, CashFlowKind]] = {
    "deposit": "deposit",
    "withdrawal": "withdrawal",
    "credit interest": "interest",
    "debit interest": "interest",
    "interest": "interest",
    "dividend": "dividend",
    "special dividend": "dividend",
    "fee": "fee",
    "regulatory fee": "fee",
    "wire fee": "fee",
    "withholding": "tax",
    "foreign tax": "tax",
    "transfer": "transfer",
    "balance adjustment": "other",
    "mark to market": "other",
}


def _norm(value: str | None) -> str:
    return " ".join((value or "").replace("_", " ").split()).lower()


def is_cash_settled(sub_type: str | None) -> bool:
    """True for ``Cash Settled Assignment``/``Cash Settled Exercise`` (index options)."""
    return _norm(sub_type).startswith("cash settled")


def classify_tastytrade_transaction(
    transaction_type: str, sub_type: str | None, *, source: str = "tastytrade"
) -> ExecutionType | CashFlowType:
    """Map a Tastytrade (type, sub-type) pair to an execution or cash-flow kind.

    Case, underscores and repeated blanks are ignored (``"Receive Deliver"`` and
    ``"RECEIVE_DELIVER"`` are the same).  ``source`` names the row in the error.

    Raises
    ------
    UnknownTransactionTypeError
        For a pair without a mapping, naming both values and ``source``.
    """
    ttype, sub = _norm(transaction_type), _norm(sub_type)
    if ttype == "trade" and sub in _FILLS:
        return ExecutionType(_FILLS[sub])
    if ttype == "receive deliver" and sub in _RECEIVE_DELIVER:
        return ExecutionType(_RECEIVE_DELIVER[sub])
    if ttype == "money movement" and sub in _MONEY_MOVEMENT:
        return CashFlowType(_MONEY_MOVEMENT[sub])
    raise UnknownTransactionTypeError(
        f"{source}: unsupported Tastytrade transaction type {transaction_type!r} / "
        f"sub-type {sub_type!r} (supported: Trade fills, Receive Deliver assignments/"
        "exercises/expirations and their deliveries, Money Movement cash); "
        "corporate actions and transfers of positions are not imported"
    )

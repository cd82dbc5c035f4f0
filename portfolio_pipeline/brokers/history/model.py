"""What a parser hands to the store: one file's executions and cash flows, plus views.

Semantics shared by every broker parser (broker-faithful, nothing netted or merged):

- An option that is **assigned or exercised** closes with an :class:`Execution` of kind
  ``"assignment"``/``"exercise"`` at the price the broker reports (0 for physically
  settled options); the delivered stock/future is a separate ``"trade"`` at the strike.
  Realised P&L of the option leg is therefore its premium, and the stock's basis is the
  strike: the premium is counted once, in the option leg.  Users who think of an
  assigned short put as "stock bought at strike minus premium" can ask
  :func:`stock_basis_with_premium` for that view; what is stored stays as the broker
  reported it.
- An **expiry** is an execution of kind ``"expiry"`` at price 0 that flattens the position.
- **Commissions and fees** are costs (>= 0), each counted once, on the execution that
  incurred them; regulatory/clearing fees are kept apart from the commission where the
  broker reports them apart.
- **Cash flows** (deposits, withdrawals, dividends, interest, fees, taxes) carry signed
  amounts from the account's point of view (+ money in).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from portfolio_pipeline.brokers.history.errors import ImportFormatError
from portfolio_pipeline.domain.activity import CashFlow, Execution

__all__ = [
    "ImportBatch",
    "ImportSummary",
    "RawSource",
    "positions_from_executions",
    "read_source",
    "stock_basis_with_premium",
]

RawSource = str | os.PathLike[str] | bytes
"""A path to the user's downloaded file, or its bytes."""

_FLAT = 1e-9


def read_source(source: RawSource, source_name: str | None = None) -> tuple[bytes, str]:
    """The file's bytes and the name to report it by (the file name, or ``source_name``)."""
    if isinstance(source, bytes):
        return source, source_name or "<bytes>"
    path = Path(source)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot read the file ({exc.strerror})") from None
    return content, source_name or path.name


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True, slots=True)
class ImportBatch:
    """The parsed content of one history file, ready for ``HistoryStore.import_history``.

    ``skipped`` lists rows deliberately not imported (e.g. IBKR FX conversions), each
    named, so a user can see what was left out.
    """

    broker: str
    source_name: str
    sha256: str
    executions: tuple[Execution, ...]
    cash_flows: tuple[CashFlow, ...]
    skipped: tuple[str, ...] = field(default=())
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Row id -> the id an older version of the parser gave the same row; a row stored
    under its old id is not stored again."""

    def __post_init__(self) -> None:
        self._require_unique("execution", ((e.broker, e.account_id, e.exec_id) for e in self.executions))
        self._require_unique("cash flow", ((f.broker, f.account_id, f.flow_id) for f in self.cash_flows))

    def _require_unique(self, noun: str, keys: Iterable[tuple[str, str, str]]) -> None:
        seen: set[tuple[str, str, str]] = set()
        for key in keys:
            if key in seen:
                raise ImportFormatError(
                    f"{self.source_name}: {noun} id {key[2]!r} of account {key[1]} appears twice"
                )
            seen.add(key)

    @property
    def total_commission(self) -> float:
        return math.fsum(ex.commission for ex in self.executions)

    @property
    def total_fees(self) -> float:
        return math.fsum(ex.fees for ex in self.executions)


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What ``HistoryStore.import_history`` did; ``*_new`` are rows not stored before."""

    source_name: str
    sha256: str
    batch_id: int | None
    executions_in_file: int
    cash_flows_in_file: int
    executions_new: int
    cash_flows_new: int
    already_imported: bool

    @property
    def new_rows(self) -> int:
        return self.executions_new + self.cash_flows_new


def positions_from_executions(
    executions: Iterable[Execution], *, account_id: str | None = None
) -> dict[str, float]:
    """Signed end quantity per :attr:`Contract.key` after ``executions`` (flat ones omitted).

    Sums every account unless ``account_id`` is given.  Assignments, exercises and
    expiries are executions like any other, so an assigned short put nets to zero
    options plus the delivered shares, and an expired vertical nets to flat.
    """
    totals: dict[str, list[float]] = defaultdict(list)
    for ex in executions:
        if account_id is None or ex.account_id == account_id:
            totals[ex.contract.key].append(ex.quantity)
    result: dict[str, float] = {}
    for key, quantities in totals.items():
        qty = math.fsum(quantities)
        if abs(qty) > _FLAT:
            result[key] = qty
    return result


def stock_basis_with_premium(stock_leg: Execution, option_trades: Sequence[Execution]) -> float:
    """Per-share price of a delivered stock leg with the option premium folded in.

    An optional *view* (nothing stored changes): ``stock_leg`` is the delivery at the
    strike, ``option_trades`` the executions that opened the assigned/exercised option
    (premium cash = ``-quantity * price * multiplier`` summed, costs excluded).

    - short put assigned (stock bought at K, premium p received): K - p
    - short call assigned (stock sold at K): K + p (effective sale price)
    - long put exercised (stock sold at K, premium p paid): K - p
    - long call exercised (stock bought at K): K + p
    """
    if stock_leg.contract.is_option:
        raise ValueError(f"execution {stock_leg.exec_id}: stock_leg is an option")
    for ex in option_trades:
        if not ex.contract.is_option:
            raise ValueError(f"execution {ex.exec_id}: option_trades holds a non-option")
    premium_cash = math.fsum(-ex.quantity * ex.price * ex.multiplier for ex in option_trades)
    return stock_leg.price - premium_cash / (stock_leg.quantity * stock_leg.multiplier)

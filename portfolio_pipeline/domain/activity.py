"""Account activity: executions and cash flows (for cash-flow-adjusted returns and P&L).

Signs: an execution's ``quantity`` is signed (+ bought, - sold), its ``price`` per
share/unit; ``commission`` and ``fees`` are costs (>= 0, in account currency).  A cash
flow's ``amount`` is signed from the account's point of view (+ money in).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.positions import Contract, require_aware, require_finite

ExecutionKind = Literal["trade", "assignment", "exercise", "expiry"]
CashFlowKind = Literal[
    "deposit", "withdrawal", "dividend", "interest", "fee", "tax", "transfer", "other"
]


@dataclass(frozen=True, slots=True)
class Execution:
    broker: str
    account_id: str
    exec_id: str
    contract: Contract
    ts: datetime
    quantity: float
    price: float
    multiplier: float
    commission: float = 0.0
    fees: float = 0.0
    kind: ExecutionKind = "trade"
    order_ref: str | None = None

    def __post_init__(self) -> None:
        where = f"{self.broker}:{self.account_id} execution {self.exec_id}"
        if not self.exec_id:
            raise InvalidDataError(f"{self.broker}:{self.account_id}: execution without an id")
        require_aware(self.ts, "ts", where)
        if require_finite(self.quantity, "quantity", where) == 0:
            raise InvalidDataError(f"{where}: quantity is zero")
        require_finite(self.price, "price", where)
        require_finite(self.multiplier, "multiplier", where, positive=True)
        for name in ("commission", "fees"):
            if require_finite(getattr(self, name), name, where) < 0:
                raise InvalidDataError(f"{where}: {name} is a cost and must be >= 0")

    @property
    def cash_effect(self) -> float:
        """Cash change from this execution, costs included (buying spends cash)."""
        return -self.quantity * self.price * self.multiplier - self.commission - self.fees


@dataclass(frozen=True, slots=True)
class CashFlow:
    broker: str
    account_id: str
    flow_id: str
    ts: datetime
    kind: CashFlowKind
    amount: float
    currency: str = "USD"
    description: str = ""

    def __post_init__(self) -> None:
        where = f"{self.broker}:{self.account_id} cash flow {self.flow_id}"
        if not self.flow_id:
            raise InvalidDataError(f"{self.broker}:{self.account_id}: cash flow without an id")
        require_aware(self.ts, "ts", where)
        require_finite(self.amount, "amount", where)

    @property
    def is_external(self) -> bool:
        """Money moved in or out by the owner: not a gain or loss of the portfolio."""
        return self.kind in ("deposit", "withdrawal", "transfer")

"""Orders: ONE status enum and ONE transition table.

An order is born as a ``PROPOSED`` hedge, may be checked by the broker's WhatIf /
dry run and ``STAGED`` (IBKR: transmit=False; Tastytrade: kept locally after a dry
run).  Transmission needs two explicit steps by a person: ``show`` displays the WhatIf
result and every broker warning and issues a one-time token (``SHOWN``); ``confirm``
with that token typed back moves it to ``CONFIRMED``; only a ``CONFIRMED`` order may be
handed to a broker adapter's ``transmit``, which moves it to ``TRANSMITTED`` (or to
``SENT_UNKNOWN`` when the broker did not acknowledge it in time: the reconciler settles
it later).  Nothing else reaches ``TRANSMITTED``; an illegal transition raises
:class:`IllegalTransitionError`.

A staged order that no longer exists at the broker (Gateway restart, cancelled in TWS)
becomes ``STALE``: it is never re-placed from local terms, only re-staged with a fresh
WhatIf (``STALE -> STAGED``).  Orders cancelled outside the platform become ``CANCELLED``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from portfolio_pipeline.domain.errors import IllegalTransitionError, InvalidDataError
from portfolio_pipeline.domain.positions import Contract, require_aware, require_finite

Action = Literal["BUY", "SELL"]
OrderType = Literal["LMT", "STP", "TRAIL"]
"""LMT: limit at ``limit_price``; STP: stop, triggered at ``aux_price``; TRAIL: trailing stop
that trails by ``trailing_percent`` % or by ``aux_price`` dollars (exactly one of them)."""


class OrderStatus(enum.StrEnum):
    PROPOSED = "proposed"
    STAGED = "staged"
    SHOWN = "shown"
    CONFIRMED = "confirmed"
    SENT_UNKNOWN = "sent_unknown"
    TRANSMITTED = "transmitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"
    STALE = "stale"

    @property
    def is_terminal(self) -> bool:
        return not TRANSITIONS[self]

    @property
    def is_live_at_broker(self) -> bool:
        return self in (OrderStatus.SENT_UNKNOWN, OrderStatus.TRANSMITTED, OrderStatus.PARTIALLY_FILLED)

    @property
    def is_staged_at_broker(self) -> bool:
        """Placed at the broker without transmission (IBKR transmit=False), awaiting a person."""
        return self in (OrderStatus.STAGED, OrderStatus.SHOWN)


S = OrderStatus

#: The one transition table.  SHOWN -> SHOWN re-displays and issues a fresh token.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PROPOSED: frozenset({S.STAGED, S.REJECTED, S.EXPIRED, S.FAILED}),
    S.STAGED: frozenset({S.SHOWN, S.REJECTED, S.EXPIRED, S.FAILED, S.STALE}),
    S.SHOWN: frozenset({S.SHOWN, S.CONFIRMED, S.REJECTED, S.EXPIRED, S.FAILED, S.STALE}),
    S.CONFIRMED: frozenset({S.TRANSMITTED, S.SENT_UNKNOWN, S.FAILED, S.STALE}),
    S.SENT_UNKNOWN: frozenset({S.TRANSMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.FAILED}),
    S.TRANSMITTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.FAILED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}),
    S.STALE: frozenset({S.STAGED, S.REJECTED, S.EXPIRED}),
    S.FILLED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
}


def check_transition(current: OrderStatus, target: OrderStatus, *, order_id: str = "?") -> None:
    """Raise :class:`IllegalTransitionError` unless ``current -> target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransitionError(
            f"order {order_id}: illegal transition {current.value} -> {target.value}"
        )


def require_confirmed(order: Order) -> None:
    """Guard for broker adapters' ``transmit``: only a two-step-confirmed order passes."""
    if order.status != OrderStatus.CONFIRMED:
        raise IllegalTransitionError(
            f"order {order.order_id}: transmit needs a confirmed order (status is {order.status.value})"
        )


@dataclass(frozen=True, slots=True)
class ConfirmationBounds:
    """What a person confirmed for one order: the largest size, the worst price, until when.

    ``worst_price`` is the highest price accepted for a BUY and the lowest for a SELL (a
    stop's trigger for STP: a sell stop no lower, a buy stop no higher than confirmed);
    None bounds no price (TRAIL).  ``valid_until`` (aware) ends the confirmation.
    """

    max_quantity: int
    worst_price: float | None
    valid_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.max_quantity < 1:
            raise InvalidDataError(f"confirmation bounds: max_quantity must be >= 1, got {self.max_quantity}")
        if self.worst_price is not None:
            require_finite(self.worst_price, "worst_price", "confirmation bounds")
        if self.valid_until is not None:
            require_aware(self.valid_until, "valid_until", "confirmation bounds")

    @classmethod
    def of(cls, order: Order, *, valid_until: datetime | None = None) -> ConfirmationBounds:
        """Exactly the terms shown to the person."""
        return cls(max_quantity=order.quantity, worst_price=order.bound_price, valid_until=valid_until)

    def violations(self, order: Order, *, quantity: int | None = None, at: datetime) -> list[str]:
        """Why ``order`` (at ``quantity``, default its own) is outside these bounds ([] = inside)."""
        qty = order.quantity if quantity is None else quantity
        out: list[str] = []
        if qty > self.max_quantity:
            out.append(f"quantity {qty} > confirmed max {self.max_quantity}")
        price = order.bound_price
        if self.worst_price is not None:
            if price is None:
                out.append("price not bounded by the order type but the confirmation bounds it")
            elif order.side == "BUY" and price > self.worst_price + 1e-9:
                out.append(f"price {price:g} above the confirmed worst price {self.worst_price:g} (BUY)")
            elif order.side == "SELL" and price < self.worst_price - 1e-9:
                out.append(f"price {price:g} below the confirmed worst price {self.worst_price:g} (SELL)")
        if self.valid_until is not None and at >= self.valid_until:
            out.append(f"confirmation valid until {self.valid_until.isoformat()}, now {at.isoformat()}")
        return out

    def require(self, order: Order, *, at: datetime, quantity: int | None = None) -> None:
        """Raise :class:`IllegalTransitionError` naming every bound ``order`` breaks."""
        bad = self.violations(order, quantity=quantity, at=at)
        if bad:
            raise IllegalTransitionError(f"order {order.order_id}: outside its confirmation: {'; '.join(bad)}")


def hash_token(token: str) -> str:
    """Stored form of a confirmation token (only the hash is persisted)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class OrderLeg:
    contract: Contract
    action: Action
    ratio: int = 1

    def __post_init__(self) -> None:
        if self.action not in ("BUY", "SELL"):
            raise InvalidDataError(f"order leg {self.contract.key}: action must be BUY or SELL")
        if self.ratio < 1:
            raise InvalidDataError(f"order leg {self.contract.key}: ratio must be >= 1")


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    """The broker's answer to a WhatIf / dry run: margin and commission impact, warnings."""

    init_margin_change: float
    maint_margin_change: float
    commission: float
    equity_with_loan_after: float | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: datetime
    actor: str
    from_status: OrderStatus | None
    to_status: OrderStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Order:
    """A (combo) limit order and its lifecycle.  Immutable: transitions return a new Order."""

    order_id: str
    broker: str
    account_id: str
    legs: tuple[OrderLeg, ...]
    quantity: int
    limit_price: float
    created_at: datetime
    status: OrderStatus = OrderStatus.PROPOSED
    order_type: OrderType = "LMT"
    time_in_force: Literal["DAY", "GTC"] = "DAY"
    proposal_id: str | None = None
    whatif: WhatIfResult | None = None
    broker_order_id: str | None = None
    broker_client_id: int | None = None
    """IBKR: the API client id that placed (and alone may modify or cancel) the order."""
    broker_perm_id: int | None = None
    """IBKR: the permanent order id once the Gateway reported it."""
    confirmation_token_hash: str | None = None
    expires_at: datetime | None = None
    audit: tuple[AuditEntry, ...] = field(default=())
    aux_price: float | None = None
    """STP: the stop trigger price; TRAIL: the trailing amount in dollars (else None)."""
    trailing_percent: float | None = None
    """TRAIL: the trailing amount in percent of the price (else None)."""

    def __post_init__(self) -> None:
        where = f"order {self.order_id}"
        if not self.legs:
            raise InvalidDataError(f"{where}: an order needs at least one leg")
        if self.quantity < 1:
            raise InvalidDataError(f"{where}: quantity must be a positive whole number of units")
        require_finite(self.limit_price, "limit_price", where)
        self._check_order_type(where)
        require_aware(self.created_at, "created_at", where)
        if self.expires_at is not None:
            require_aware(self.expires_at, "expires_at", where)

    def _check_order_type(self, where: str) -> None:
        if self.order_type not in ("LMT", "STP", "TRAIL"):
            raise InvalidDataError(f"{where}: order_type must be LMT, STP or TRAIL, not {self.order_type!r}")
        for name in ("aux_price", "trailing_percent"):
            value = getattr(self, name)
            if value is not None:
                require_finite(value, name, where)
                if value <= 0:
                    raise InvalidDataError(f"{where}: {name} must be positive, got {value}")
        if self.order_type != "LMT" and len(self.legs) != 1:
            raise InvalidDataError(f"{where}: a {self.order_type} order has exactly one leg")
        if self.order_type == "LMT" and (self.aux_price, self.trailing_percent) != (None, None):
            raise InvalidDataError(f"{where}: a LMT order has no aux_price or trailing_percent")
        if self.order_type == "STP" and (self.aux_price is None or self.trailing_percent is not None):
            raise InvalidDataError(f"{where}: a STP order needs aux_price (the stop price) and no trailing_percent")
        if self.order_type == "TRAIL":
            if (self.aux_price is None) == (self.trailing_percent is None):
                raise InvalidDataError(
                    f"{where}: a TRAIL order needs exactly one of trailing_percent or aux_price (dollars)"
                )
            if self.trailing_percent is not None and self.trailing_percent >= 100:
                raise InvalidDataError(f"{where}: trailing_percent must be below 100, got {self.trailing_percent}")

    @property
    def side(self) -> Action:
        """BUY or SELL: the single leg's action; a combo is bought (positive = net debit)."""
        return self.legs[0].action if len(self.legs) == 1 else "BUY"

    @property
    def bound_price(self) -> float | None:
        """The price a confirmation bounds: the limit (LMT), the stop (STP); None for TRAIL."""
        if self.order_type == "STP":
            return self.aux_price
        if self.order_type == "TRAIL":
            return None
        return self.limit_price

    def transition(
        self, target: OrderStatus, *, actor: str, at: datetime, detail: str = "", **changes: object
    ) -> Order:
        """Return a copy in ``target`` status with an audit entry; raise if illegal."""
        check_transition(self.status, target, order_id=self.order_id)
        require_aware(at, "at", f"order {self.order_id}")
        if target == OrderStatus.SHOWN and (self.whatif is None and changes.get("whatif") is None):
            raise IllegalTransitionError(
                f"order {self.order_id}: cannot be shown for confirmation without a WhatIf result"
            )
        entry = AuditEntry(ts=at, actor=actor, from_status=self.status, to_status=target, detail=detail)
        return replace(self, status=target, audit=(*self.audit, entry), **changes)  # type: ignore[arg-type]

    def show(self, *, token: str, actor: str, at: datetime) -> Order:
        """Step one: the WhatIf result and warnings were displayed; remember the token's hash."""
        if len(token) < 6:
            raise InvalidDataError(f"order {self.order_id}: confirmation token too short")
        return self.transition(
            OrderStatus.SHOWN,
            actor=actor,
            at=at,
            detail="whatif and warnings displayed",
            confirmation_token_hash=hash_token(token),
        )

    def confirm(self, *, token: str, actor: str, at: datetime) -> Order:
        """Step two: the person typed the token back; the order may now be transmitted."""
        if self.status != OrderStatus.SHOWN or self.confirmation_token_hash is None:
            raise IllegalTransitionError(
                f"order {self.order_id}: confirm needs a prior 'show' (status is {self.status.value})"
            )
        if not hmac.compare_digest(hash_token(token), self.confirmation_token_hash):
            raise IllegalTransitionError(f"order {self.order_id}: confirmation token does not match")
        if self.expires_at is not None and at >= self.expires_at:
            raise IllegalTransitionError(f"order {self.order_id}: staged order expired at {self.expires_at}")
        return self.transition(
            OrderStatus.CONFIRMED, actor=actor, at=at, detail="confirmed by token",
            confirmation_token_hash=None,
        )

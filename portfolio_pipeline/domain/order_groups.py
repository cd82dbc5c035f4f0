"""Order groups: a bracket (entry + take-profit + stop-loss) or an OCO pair, as one ticket.

Every leg is an ordinary :class:`~portfolio_pipeline.domain.orders.Order` with its own
lifecycle in the one transition table; a group has no status of its own: it is derived
from its legs (:func:`group_status`).  A group is shown and confirmed as a whole (one
token); each leg then carries the :class:`ConfirmationBounds` of what was shown, and an
adapter transmits a group only through :func:`require_transmittable` (every leg
CONFIRMED and inside its bounds).

Shapes (:func:`check_shape`):

* ``bracket``: ``entry`` (LMT, one leg), ``take_profit`` (LMT) and ``stop_loss`` (STP or
  TRAIL) on the same contract, the children on the closing side of the entry, with the
  entry's quantity.  A partial fill of the entry sizes the working children to the
  filled quantity (:func:`bracket_child_quantity`), never above what was confirmed.
* ``oco``: ``take_profit`` (LMT) and ``stop_loss`` (STP or TRAIL) on the same contract
  and side; a fill of one cancels the other (IBKR ``ocaType`` 1, Tastytrade OCO).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from portfolio_pipeline.domain.errors import IllegalTransitionError, InvalidDataError
from portfolio_pipeline.domain.orders import (
    ConfirmationBounds,
    Order,
    OrderStatus,
    require_confirmed,
)

__all__ = [
    "GROUP_ROLES",
    "GroupKind",
    "GroupLeg",
    "LegRole",
    "OrderGroup",
    "bracket_child_quantity",
    "check_shape",
    "group_status",
    "require_transmittable",
]

GroupKind = Literal["bracket", "oco"]
LegRole = Literal["entry", "take_profit", "stop_loss"]

#: The legs of each kind, in placement order (IBKR: the last one carries transmit=True).
GROUP_ROLES: dict[str, tuple[LegRole, ...]] = {
    "bracket": ("entry", "take_profit", "stop_loss"),
    "oco": ("take_profit", "stop_loss"),
}

_S = OrderStatus
#: Pre-transmission statuses, least advanced first: a group is as far as its slowest leg.
_PIPELINE = (_S.PROPOSED, _S.STALE, _S.STAGED, _S.SHOWN, _S.CONFIRMED)
#: A terminal group's status when its legs ended differently (first present wins).
_TERMINAL_ORDER = (_S.FILLED, _S.CANCELLED, _S.FAILED, _S.REJECTED, _S.EXPIRED)


@dataclass(frozen=True, slots=True)
class GroupLeg:
    role: LegRole
    order: Order
    bounds: ConfirmationBounds | None = None
    """What the person confirmed for this leg (set by the group's confirmation)."""
    working_quantity: int | None = None
    """The quantity working at the broker when the reconciler resized it (None: the order's)."""

    @property
    def quantity(self) -> int:
        return self.order.quantity if self.working_quantity is None else self.working_quantity


@dataclass(frozen=True, slots=True)
class OrderGroup:
    group_id: str
    kind: GroupKind
    broker: str
    account_id: str
    created_at: datetime
    legs: tuple[GroupLeg, ...]
    broker_group_id: str | None = None
    """Tastytrade: the complex order's id once placed."""

    def check_shape(self) -> None:
        """Checked when a group is created; a stored group loads as it is (so it can always be cancelled)."""
        check_shape(
            self.kind,
            [(leg.role, leg.order) for leg in self.legs],
            where=f"order group {self.group_id}",
        )

    @property
    def status(self) -> OrderStatus:
        return group_status([leg.order.status for leg in self.legs])

    def leg(self, role: LegRole) -> GroupLeg:
        for leg in self.legs:
            if leg.role == role:
                return leg
        raise KeyError(f"order group {self.group_id} has no {role} leg")

    @property
    def orders(self) -> tuple[Order, ...]:
        return tuple(leg.order for leg in self.legs)


def group_status(statuses: Sequence[OrderStatus]) -> OrderStatus:
    """The group's status from its legs' (one status each, in the one transition table).

    * every leg alike: that status;
    * any leg live at the broker: PARTIALLY_FILLED if any leg filled (partly or wholly),
      else SENT_UNKNOWN if any is unacknowledged, else TRANSMITTED;
    * none live, some open: the least advanced leg (PROPOSED < STALE < STAGED < SHOWN <
      CONFIRMED): the group is only as far as its slowest leg;
    * all terminal and different: FILLED if any leg filled (per-leg details in the
      audit), else CANCELLED, FAILED, REJECTED, EXPIRED in that order.
    """
    if not statuses:
        raise InvalidDataError("order group: no legs")
    distinct = set(statuses)
    if len(distinct) == 1:
        return statuses[0]
    if any(s.is_live_at_broker for s in distinct):
        if distinct & {_S.PARTIALLY_FILLED, _S.FILLED}:
            return _S.PARTIALLY_FILLED
        return _S.SENT_UNKNOWN if _S.SENT_UNKNOWN in distinct else _S.TRANSMITTED
    open_ = [s for s in distinct if not s.is_terminal]
    if open_:
        return min(open_, key=_PIPELINE.index)
    return next(s for s in _TERMINAL_ORDER if s in distinct)


def _closing(action: str) -> str:
    return "SELL" if action == "BUY" else "BUY"


def check_shape(kind: str, legs: Sequence[tuple[str, Order]], *, where: str) -> None:
    """Raise :class:`InvalidDataError` naming the leg unless ``legs`` form a ``kind`` group."""
    if kind not in GROUP_ROLES:
        raise InvalidDataError(f"{where}: kind must be one of {sorted(GROUP_ROLES)}, not {kind!r}")
    roles = tuple(role for role, _ in legs)
    if roles != GROUP_ROLES[kind]:
        raise InvalidDataError(f"{where}: a {kind} has the legs {GROUP_ROLES[kind]}, got {roles}")
    orders = dict(legs)
    for role, order in legs:
        if len(order.legs) != 1:
            raise InvalidDataError(
                f"{where}: leg {role} ({order.order_id}) must be a single contract"
            )
    first = legs[0][1]
    if len({(o.broker, o.account_id) for _, o in legs}) != 1:
        raise InvalidDataError(f"{where}: every leg must be for one broker account")
    if len({o.legs[0].contract.key for _, o in legs}) != 1:
        raise InvalidDataError(f"{where}: every leg must trade the same contract")
    tp, sl = orders["take_profit"], orders["stop_loss"]
    if tp.order_type != "LMT":
        raise InvalidDataError(f"{where}: take_profit ({tp.order_id}) must be a LMT order")
    if sl.order_type not in ("STP", "TRAIL"):
        raise InvalidDataError(f"{where}: stop_loss ({sl.order_id}) must be a STP or TRAIL order")
    if tp.side != sl.side:
        raise InvalidDataError(f"{where}: take_profit and stop_loss must be on the same side")
    if tp.quantity != sl.quantity:
        raise InvalidDataError(f"{where}: take_profit and stop_loss must have the same quantity")
    if kind == "bracket":
        entry = first
        if entry.order_type != "LMT":
            raise InvalidDataError(f"{where}: entry ({entry.order_id}) must be a LMT order")
        if tp.side != _closing(entry.side):
            raise InvalidDataError(
                f"{where}: take_profit and stop_loss must close the entry ({entry.side})"
            )
        if tp.quantity != entry.quantity:
            raise InvalidDataError(
                f"{where}: the children must have the entry's quantity {entry.quantity}"
            )
        # the take-profit is on the profitable side of the entry, the stop on the losing side
        if entry.side == "BUY":
            ok = tp.limit_price > entry.limit_price and (
                sl.aux_price is None or sl.order_type == "TRAIL" or sl.aux_price < entry.limit_price
            )
        else:
            ok = tp.limit_price < entry.limit_price and (
                sl.aux_price is None or sl.order_type == "TRAIL" or sl.aux_price > entry.limit_price
            )
        if not ok:
            raise InvalidDataError(
                f"{where}: for a {entry.side} entry at {entry.limit_price:g} the take-profit must be "
                f"{'above' if entry.side == 'BUY' else 'below'} and the stop "
                f"{'below' if entry.side == 'BUY' else 'above'} it"
            )
    elif (
        tp.side == "SELL" and sl.order_type == "STP" and not tp.limit_price > (sl.aux_price or 0.0)
    ):
        raise InvalidDataError(f"{where}: a SELL take-profit must be above the stop")
    elif tp.side == "BUY" and sl.order_type == "STP" and not tp.limit_price < (sl.aux_price or 0.0):
        raise InvalidDataError(f"{where}: a BUY take-profit must be below the stop")


def require_transmittable(group: OrderGroup, *, at: datetime) -> None:
    """Guard of every adapter's ``transmit_group``: each leg CONFIRMED and inside its bounds."""
    for leg in group.legs:
        require_confirmed(leg.order)
        if leg.bounds is None:
            raise IllegalTransitionError(
                f"order group {group.group_id}: leg {leg.role} ({leg.order.order_id}) has no confirmation bounds"
            )
        leg.bounds.require(leg.order, at=at, quantity=leg.quantity)


def bracket_child_quantity(entry_filled: float, confirmed: int) -> int:
    """Children's quantity for an entry that has filled ``entry_filled`` units.

    The whole units filled, never above the confirmed quantity; an entry with no whole
    unit filled leaves the children at the confirmed quantity (the broker holds children
    until their parent fills; an entry cancelled unfilled cancels them).
    """
    if entry_filled != entry_filled or entry_filled < 0:
        raise InvalidDataError(f"bracket: filled quantity must be >= 0, got {entry_filled}")
    whole = int(entry_filled + 1e-9)
    return confirmed if whole < 1 else min(confirmed, whole)

"""The confirmation commands, shared by the ``portfolio orders`` CLI and the service.

The only road to a broker's ``transmit``::

    PROPOSED --stage--> STAGED --show--> SHOWN --confirm(token)--> CONFIRMED --> TRANSMITTED

* ``stage`` (by a rule of the streaming service or a person's request) hands the order
  to ``broker.stage`` (IBKR transmit=False; Tastytrade dry run, kept locally; demo:
  local) and records the WhatIf result and an expiry.
* ``show`` re-runs the broker's WhatIf, renders it with **every** broker warning,
  issues a fresh one-time token (64 bits) and records in ``order_audit`` exactly what was
  shown.  ``show`` of a PROPOSED order stages it first (with the broker's WhatIf), so the
  alert's ``show ID`` then ``confirm ID TOKEN`` works from any open state.
* ``confirm`` needs that token typed back; only then is the order CONFIRMED and passed
  to ``broker.transmit`` (which itself calls ``require_confirmed``).  Every refused
  confirmation writes an audit row; after ``MAX_FAILED_CONFIRMATIONS`` wrong tokens the
  order is locked until a new ``show``.  A staged order the broker no longer has becomes
  STALE (re-stage it: a fresh WhatIf), an unacknowledged send SENT_UNKNOWN.
* ``reject`` cancels at the broker first and raises when the cancel is not confirmed (the
  order keeps its state); ``reconcile`` matches local orders with the broker's.

Nothing here confirms on its own: ``confirm`` is only ever called with a token a person
read from ``show``.  Human actions are stamped with the wall clock (``clock``), so a
staged order's expiry is about the person's response time, also in the demo replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from portfolio_pipeline.brokers.base import (
    BrokerOrderState,
    OrderBroker,
    OrderStateSource,
    SentUnknownError,
    StaleOrderError,
)
from portfolio_pipeline.clock import Clock, system_clock
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import TRANSITIONS, Order, OrderStatus, check_transition
from portfolio_pipeline.orders.store import OrderStore, whatif_to_json

__all__ = [
    "MAX_FAILED_CONFIRMATIONS",
    "MIN_TOKEN_CHARS",
    "BrokerFor",
    "ConfirmationLockedError",
    "OrderCommands",
    "ShowResult",
    "render_order",
]

logger = logging.getLogger(__name__)

BrokerFor = Callable[[Order], OrderBroker]
"""Returns the (connected or connectable) adapter that owns an order."""

#: Wrong tokens accepted before the order is locked until a new ``show``.
MAX_FAILED_CONFIRMATIONS = 3
#: A confirmation token has at least 64 bits: 16 hexadecimal characters.
MIN_TOKEN_CHARS = 16

#: Local statuses the reconciler compares with the broker.
RECONCILED = (
    OrderStatus.STAGED, OrderStatus.SHOWN, OrderStatus.SENT_UNKNOWN, OrderStatus.TRANSMITTED,
    OrderStatus.PARTIALLY_FILLED,
)


class ConfirmationLockedError(IllegalTransitionError):
    """Too many wrong tokens: the order needs a new ``show`` (fresh token)."""

#: Statuses an unconfirmed order can expire from (PROPOSED, STAGED, SHOWN), per the one table.
_OPEN = tuple(s for s in OrderStatus if OrderStatus.EXPIRED in TRANSITIONS[s])


@dataclass(frozen=True, slots=True)
class ShowResult:
    order: Order
    token: str
    text: str


def _price_terms(order: Order) -> str:
    if order.order_type == "STP":
        return f"STP stop {order.aux_price:.2f}"
    if order.order_type == "TRAIL":
        trail = f"{order.trailing_percent:g}%" if order.trailing_percent is not None else f"${order.aux_price:.2f}"
        return f"TRAIL by {trail}"
    return f"{order.order_type} @ {order.limit_price:.2f}"


def render_order(order: Order) -> str:
    """Human-readable order: legs, terms, WhatIf and every broker warning."""
    lines = [
        f"order {order.order_id}  [{order.status.value}]  {order.broker}:{order.account_id}",
        f"  {order.quantity} x {_price_terms(order)} {order.time_in_force}"
        + (f"  (proposal {order.proposal_id})" if order.proposal_id else ""),
    ]
    for leg in order.legs:
        lines.append(f"  {leg.action:<4} {leg.ratio} x {leg.contract.key}")
    if order.expires_at is not None:
        lines.append(f"  expires at {order.expires_at.isoformat()}")
    w = order.whatif
    if w is None:
        lines.append("  WhatIf: none yet")
    else:
        lines.append(
            f"  WhatIf: initial margin {w.init_margin_change:+,.2f}  maintenance {w.maint_margin_change:+,.2f}"
            f"  commission {w.commission:,.2f}"
            + (f"  equity after {w.equity_with_loan_after:,.2f}" if w.equity_with_loan_after is not None else "")
        )
        if w.warnings:
            lines.append(f"  BROKER WARNINGS ({len(w.warnings)}):")
            lines.extend(f"    ! {text}" for text in w.warnings)
        else:
            lines.append("  broker warnings: none")
    return "\n".join(lines)


class OrderCommands:
    """Stage / show / confirm / reject / expire, on top of :class:`OrderStore`.

    Parameters
    ----------
    store:
        Order persistence.
    broker_for:
        The adapter owning an order (called only when a broker is needed).
    clock:
        Wall clock for human actions and expiry.
    token_factory:
        Makes confirmation tokens (default: 16 random hex characters, 64 bits; shorter
        tokens are refused).
    """

    def __init__(
        self,
        store: OrderStore,
        broker_for: BrokerFor,
        *,
        clock: Clock = system_clock,
        token_factory: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self._store = store
        self._broker_for = broker_for
        self._clock = clock
        self._token = token_factory

    @property
    def store(self) -> OrderStore:
        return self._store

    @property
    def broker_for(self) -> BrokerFor:
        return self._broker_for

    @property
    def clock(self) -> Clock:
        return self._clock

    async def _standalone(self, order_id: str, what: str) -> None:
        """A leg of an order group is staged, shown and confirmed only with its group."""
        group_id = await asyncio.to_thread(self._store.group_of, order_id)
        if group_id is not None:
            raise IllegalTransitionError(
                f"order {order_id} is a leg of order group {group_id}: {what} the group "
                f"(`portfolio orders show {group_id}`), never one leg on its own"
            )
        order = await asyncio.to_thread(self._store.get, order_id)
        if (order.proposal_id or "").startswith("slicer:"):  # never placed whole: the slicer sends its children
            raise IllegalTransitionError(
                f"order {order_id} is a TWAP/VWAP parent: it is confirmed and worked by the slicer and never "
                f"sent as one order ({what} refused)"
            )

    async def stage(self, order_id: str, *, actor: str, ttl: timedelta, reason: str = "request") -> Order:
        """PROPOSED -> STAGED through ``broker.stage`` (never transmits)."""
        await self._standalone(order_id, "stage")
        order = await asyncio.to_thread(self._store.get, order_id)
        check_transition(order.status, OrderStatus.STAGED, order_id=order_id)  # before the broker is asked
        # a STALE order is re-staged from scratch: a fresh WhatIf, new broker ids
        request = replace(order, whatif=None, broker_order_id=None, broker_perm_id=None) \
            if order.status == OrderStatus.STALE else order
        staged = await self._broker_for(order).stage(request)
        now = self._clock()
        after = order.transition(
            OrderStatus.STAGED, actor=actor, at=now, detail=f"staged by {reason}",
            whatif=staged.whatif, broker_order_id=staged.broker_order_id, expires_at=now + ttl,
            broker_client_id=staged.client_id, broker_perm_id=staged.perm_id,
        )
        return await asyncio.to_thread(self._store.save, order, after, detail={"whatif": whatif_to_json(staged.whatif), "reason": reason})

    async def show(self, order_id: str, *, actor: str, ttl: timedelta = timedelta(hours=1)) -> ShowResult:
        """Step one: fresh WhatIf and warnings displayed; a new token issued (and its hash stored).

        A PROPOSED (or STALE) order is staged first (never transmitted), with expiry ``ttl``.
        """
        await self._standalone(order_id, "show")
        order = await asyncio.to_thread(self._store.get, order_id)
        if order.status in (OrderStatus.PROPOSED, OrderStatus.STALE):
            order = await self.stage(order_id, actor=actor, ttl=ttl, reason="show")
        check_transition(order.status, OrderStatus.SHOWN, order_id=order_id)  # before the broker is asked
        now = self._clock()
        if order.expires_at is not None and now >= order.expires_at:
            raise IllegalTransitionError(f"order {order_id}: staged order expired at {order.expires_at.isoformat()}")
        whatif = await self._broker_for(order).what_if(order)
        refreshed = replace(order, whatif=whatif)
        token = self._token()
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"confirmation token factory made a token of {len(token)} characters (< {MIN_TOKEN_CHARS})")
        shown = refreshed.show(token=token, actor=actor, at=now)
        text = render_order(shown)
        await asyncio.to_thread(self._store.save, order, shown, detail={
            "shown": text, "whatif": whatif_to_json(whatif), "warnings": list(whatif.warnings),
        })
        return ShowResult(order=shown, token=token, text=text)

    async def confirm(self, order_id: str, token: str, *, actor: str) -> Order:
        """Step two (see :meth:`_confirm`); a broker that can hold its connection (the IBKR
        order route) connects first, so an unreachable broker leaves the order SHOWN."""
        order = await asyncio.to_thread(self._store.get, order_id)
        held = getattr(self._broker_for(order), "held", None)
        async with held() if held is not None else contextlib.nullcontext():
            return await self._confirm(order_id, token, actor=actor)

    async def _confirm(self, order_id: str, token: str, *, actor: str) -> Order:
        """Step two: token matches -> CONFIRMED -> ``broker.transmit`` -> TRANSMITTED (FILLED if filled)."""
        await self._standalone(order_id, "confirm")
        order = await asyncio.to_thread(self._store.get, order_id)
        now = self._clock()
        failures = await asyncio.to_thread(self._store.failed_confirmations, order_id)
        try:
            if failures >= MAX_FAILED_CONFIRMATIONS:
                raise ConfirmationLockedError(
                    f"order {order_id}: locked after {failures} wrong confirmation tokens; "
                    f"run `portfolio orders show {order_id}` for a new token"
                )
            confirmed = order.confirm(token=token, actor=actor, at=now)
        except IllegalTransitionError as exc:
            count = await asyncio.to_thread(
                self._store.record_failed_confirmation, order, actor=actor, at=now, reason=str(exc)
            )
            logger.warning(
                "order confirmation refused order_id=%s actor=%s status=%s failures=%s",
                order_id, actor, order.status.value, count,
            )
            raise
        await asyncio.to_thread(self._store.save, order, confirmed, detail={"token": "matched"})
        broker = self._broker_for(confirmed)
        try:
            broker_order_id = await broker.transmit(confirmed)
        except StaleOrderError as exc:
            stale = confirmed.transition(OrderStatus.STALE, actor=actor, at=self._clock(), detail=str(exc))
            await asyncio.to_thread(self._store.save, confirmed, stale, detail={"error": str(exc)})
            logger.error("order not transmitted, stale at the broker order_id=%s error=%s", order_id, exc)
            raise
        except SentUnknownError as exc:
            unknown = confirmed.transition(OrderStatus.SENT_UNKNOWN, actor=actor, at=self._clock(), detail=str(exc))
            await asyncio.to_thread(self._store.save, confirmed, unknown, detail={"error": str(exc)})
            logger.error("order sent, outcome unknown order_id=%s error=%s", order_id, exc)
            raise
        except Exception as exc:
            failed = confirmed.transition(OrderStatus.FAILED, actor=actor, at=self._clock(), detail=f"transmit failed: {exc}")
            await asyncio.to_thread(self._store.save, confirmed, failed, detail={"error": str(exc)})
            logger.error("order transmit failed order_id=%s error=%s", order_id, exc)
            raise
        transmitted = confirmed.transition(
            OrderStatus.TRANSMITTED, actor=actor, at=self._clock(), detail="transmitted",
            broker_order_id=broker_order_id,
        )
        await asyncio.to_thread(self._store.save, confirmed, transmitted, detail={"broker_order_id": broker_order_id})
        logger.info("order transmitted order_id=%s broker_order_id=%s actor=%s", order_id, broker_order_id, actor)
        return await self.reconcile_fill(transmitted)

    async def reconcile_fill(self, order: Order) -> Order:
        """TRANSMITTED/PARTIALLY_FILLED -> PARTIALLY_FILLED/FILLED from the broker's executions."""
        if not order.status.is_live_at_broker or order.broker_order_id is None:
            return order
        broker = self._broker_for(order)
        since = (order.created_at - timedelta(days=7)).date()
        try:
            fills = [
                e for e in await broker.executions(order.account_id, since)
                if e.order_ref in (order.broker_order_id, order.order_id)
            ]
        except Exception as exc:
            logger.warning("fill check failed order_id=%s error=%s", order.order_id, exc)
            return order
        if not fills:
            return order
        filled = _filled_units(order, fills)
        target = OrderStatus.FILLED if filled >= order.quantity else OrderStatus.PARTIALLY_FILLED
        if target == order.status == OrderStatus.PARTIALLY_FILLED and filled <= _recorded_fill(order):
            return order
        after = order.transition(
            target, actor="broker", at=self._clock(),
            detail=f"{filled:g} of {order.quantity} filled; {len(fills)} execution(s): "
            + ", ".join(e.exec_id for e in fills),
        )
        return await asyncio.to_thread(self._store.save, order, after, detail={
            "filled": filled,
            "executions": [
                {"exec_id": e.exec_id, "contract": e.contract.key, "quantity": e.quantity, "price": e.price}
                for e in fills
            ],
        })

    async def reconcile(self, *, actor: str = "reconciler") -> list[Order]:
        """Match local open orders with the broker's; return the orders that changed.

        Staged/shown orders the broker no longer has -> STALE; sent/transmitted orders ->
        TRANSMITTED / PARTIALLY_FILLED / FILLED / CANCELLED as the broker reports them
        (changes made outside the platform, e.g. in TWS).  Brokers that cannot report an
        order's state are reconciled from their executions.
        """
        changed: list[Order] = []
        for order in await asyncio.to_thread(self._store.list_orders, list(RECONCILED), limit=10_000):
            try:
                after = await self._reconcile_one(order, actor=actor)
            except Exception as exc:
                logger.warning("reconcile failed order_id=%s error=%s", order.order_id, exc)
                continue
            if after.status != order.status or after.audit != order.audit:
                changed.append(after)
        if changed:
            logger.info("orders reconciled changed=%s", len(changed))
        return changed

    async def _reconcile_one(self, order: Order, *, actor: str) -> Order:
        broker = self._broker_for(order)
        if not isinstance(broker, OrderStateSource):
            return await self.reconcile_fill(order) if order.status.is_live_at_broker else order
        if order.broker_order_id is None:
            return order
        state = await broker.order_state(order)
        target = _reconciled_status(order, state)
        if order.status == OrderStatus.SENT_UNKNOWN and state.exists and not state.working and target is None:
            # never TRANSMITTED without evidence: a held transmitted order and one that never
            # reached the broker look the same in its open orders
            logger.warning(
                "order %s (broker order %s) is sent, outcome unknown: open at the broker as %s, which a "
                "transmitted order held until its session and an order never transmitted both show; "
                "check it in TWS (a Transmit button means it was never sent): transmit it there or cancel it",
                order.order_id, order.broker_order_id, state.status,
            )
            return order
        if target is None or (target == order.status and target != OrderStatus.PARTIALLY_FILLED):
            return order
        if target == OrderStatus.PARTIALLY_FILLED == order.status and state.filled <= _recorded_fill(order):
            return order
        detail = f"broker: {state.status}, {state.filled:g} of {state.total:g} filled" + (
            "" if state.exists else ", not open at the broker"
        )
        after = order.transition(
            target, actor=actor, at=self._clock(), detail=detail,
            broker_perm_id=state.perm_id or order.broker_perm_id,
        )
        return await asyncio.to_thread(self._store.save, order, after, detail={
            "broker_status": state.status, "filled": state.filled, "total": state.total,
        })

    async def reject(self, order_id: str, *, actor: str, reason: str = "") -> Order:
        """Any open order -> REJECTED (a staged order is cancelled at the broker first)."""
        await self._standalone(order_id, "reject")
        order = await asyncio.to_thread(self._store.get, order_id)
        check_transition(order.status, OrderStatus.REJECTED, order_id=order_id)  # before the broker cancel
        note = ""
        if order.status.is_staged_at_broker:
            try:
                await self._broker_for(order).cancel(order)
            except StaleOrderError as exc:
                note = f"; not at the broker any more ({exc})"
            # any other failure propagates: the order stays as it was, one Transmit click away
        after = order.transition(
            OrderStatus.REJECTED, actor=actor, at=self._clock(), detail=(reason or "rejected") + note
        )
        return await asyncio.to_thread(self._store.save, order, after, detail={"reason": reason})

    async def expire_stale(self, *, actor: str = "system", now: datetime | None = None) -> list[Order]:
        """Staged/shown/proposed orders past ``expires_at`` -> EXPIRED (cancelled at the broker)."""
        at = now or self._clock()
        expired: list[Order] = []
        for order in await asyncio.to_thread(self._store.list_orders, list(_OPEN), limit=10_000):
            if order.expires_at is None or at < order.expires_at:
                continue
            if order.status.is_staged_at_broker:
                await self._cancel_quietly(order)
            after = order.transition(OrderStatus.EXPIRED, actor=actor, at=at, detail="expired unconfirmed")
            try:
                expired.append(await asyncio.to_thread(self._store.save, order, after))
            except IllegalTransitionError:
                continue
        if expired:
            logger.info("staged orders expired count=%s", len(expired))
        return expired

    async def _cancel_quietly(self, order: Order) -> None:
        try:
            await self._broker_for(order).cancel(order)
        except Exception as exc:
            logger.warning("broker cancel failed order_id=%s error=%s", order.order_id, exc)


def _filled_units(order: Order, fills: Sequence[Execution]) -> float:
    """Order units filled: per leg |quantity| / ratio, the least-filled leg for a combo."""
    per_leg: list[float] = []
    for leg in order.legs:
        done = sum(abs(e.quantity) for e in fills if e.contract.key == leg.contract.key)
        per_leg.append(done / leg.ratio)
    return min(per_leg) if per_leg else 0.0


def _recorded_fill(order: Order) -> float:
    """The fill last recorded in the audit trail ("N of M filled"), 0 if none."""
    for entry in reversed(order.audit):
        head = entry.detail.split(" of ", 1)[0].rsplit(" ", 1)[-1]
        if " of " in entry.detail and entry.to_status in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED):
            try:
                return float(head)
            except ValueError:
                return 0.0
    return 0.0


def _reconciled_status(order: Order, state: BrokerOrderState) -> OrderStatus | None:
    """The local status the broker's state implies (None: nothing to change)."""
    if order.status.is_staged_at_broker:
        return None if state.exists else OrderStatus.STALE
    if state.filled >= state.total > 0:
        return OrderStatus.FILLED
    if state.status in ("Cancelled", "ApiCancelled"):
        return OrderStatus.CANCELLED  # the audit row keeps any partial fill
    if state.filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    if state.exists:
        if order.status == OrderStatus.SENT_UNKNOWN and state.working:
            return OrderStatus.TRANSMITTED
        return None
    if order.status == OrderStatus.SENT_UNKNOWN:
        return OrderStatus.FAILED  # never reached the broker
    return OrderStatus.CANCELLED

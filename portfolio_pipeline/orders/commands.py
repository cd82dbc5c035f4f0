"""The confirmation commands, shared by the ``portfolio orders`` CLI and the service.

The only road to a broker's ``transmit``::

    PROPOSED --stage--> STAGED --show--> SHOWN --confirm(token)--> CONFIRMED --> TRANSMITTED

* ``stage`` (by a rule of the streaming service or a person's request) hands the order
  to ``broker.stage`` (IBKR transmit=False; Tastytrade dry run, kept locally; demo:
  local) and records the WhatIf result and an expiry.
* ``show`` re-runs the broker's WhatIf, renders it with **every** broker warning,
  issues a fresh one-time token and records in ``order_audit`` exactly what was shown.
* ``confirm`` needs that token typed back; only then is the order CONFIRMED and passed
  to ``broker.transmit`` (which itself calls ``require_confirmed``).

Nothing here confirms on its own: ``confirm`` is only ever called with a token a person
read from ``show``.  Human actions are stamped with the wall clock (``clock``), so a
staged order's expiry is about the person's response time, also in the demo replay.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from portfolio_pipeline.brokers.base import BrokerAdapter
from portfolio_pipeline.clock import Clock, system_clock
from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import TRANSITIONS, Order, OrderStatus, check_transition
from portfolio_pipeline.orders.store import OrderStore, whatif_to_json

__all__ = ["BrokerFor", "OrderCommands", "ShowResult", "render_order"]

logger = logging.getLogger(__name__)

BrokerFor = Callable[[Order], BrokerAdapter]
"""Returns the (connected or connectable) adapter that owns an order."""

#: Statuses an unconfirmed order can expire from (PROPOSED, STAGED, SHOWN), per the one table.
_OPEN = tuple(s for s in OrderStatus if OrderStatus.EXPIRED in TRANSITIONS[s])


@dataclass(frozen=True, slots=True)
class ShowResult:
    order: Order
    token: str
    text: str


def render_order(order: Order) -> str:
    """Human-readable order: legs, terms, WhatIf and every broker warning."""
    lines = [
        f"order {order.order_id}  [{order.status.value}]  {order.broker}:{order.account_id}",
        f"  {order.quantity} x {order.order_type} @ {order.limit_price:.2f} {order.time_in_force}"
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
        Makes confirmation tokens (default: 8 random hex characters).
    """

    def __init__(
        self,
        store: OrderStore,
        broker_for: BrokerFor,
        *,
        clock: Clock = system_clock,
        token_factory: Callable[[], str] = lambda: secrets.token_hex(4),
    ) -> None:
        self._store = store
        self._broker_for = broker_for
        self._clock = clock
        self._token = token_factory

    @property
    def store(self) -> OrderStore:
        return self._store

    async def stage(self, order_id: str, *, actor: str, ttl: timedelta, reason: str = "request") -> Order:
        """PROPOSED -> STAGED through ``broker.stage`` (never transmits)."""
        order = await asyncio.to_thread(self._store.get, order_id)
        check_transition(order.status, OrderStatus.STAGED, order_id=order_id)  # before the broker is asked
        staged = await self._broker_for(order).stage(order)
        now = self._clock()
        after = order.transition(
            OrderStatus.STAGED, actor=actor, at=now, detail=f"staged by {reason}",
            whatif=staged.whatif, broker_order_id=staged.broker_order_id, expires_at=now + ttl,
        )
        return await asyncio.to_thread(self._store.save, order, after, detail={"whatif": whatif_to_json(staged.whatif), "reason": reason})

    async def show(self, order_id: str, *, actor: str) -> ShowResult:
        """Step one: fresh WhatIf and warnings displayed; a new token issued (and its hash stored)."""
        order = await asyncio.to_thread(self._store.get, order_id)
        check_transition(order.status, OrderStatus.SHOWN, order_id=order_id)  # before the broker is asked
        now = self._clock()
        if order.expires_at is not None and now >= order.expires_at:
            raise IllegalTransitionError(f"order {order_id}: staged order expired at {order.expires_at.isoformat()}")
        whatif = await self._broker_for(order).what_if(order)
        refreshed = replace(order, whatif=whatif)
        token = self._token()
        shown = refreshed.show(token=token, actor=actor, at=now)
        text = render_order(shown)
        await asyncio.to_thread(self._store.save, order, shown, detail={
            "shown": text, "whatif": whatif_to_json(whatif), "warnings": list(whatif.warnings),
        })
        return ShowResult(order=shown, token=token, text=text)

    async def confirm(self, order_id: str, token: str, *, actor: str) -> Order:
        """Step two: token matches -> CONFIRMED -> ``broker.transmit`` -> TRANSMITTED (FILLED if filled)."""
        order = await asyncio.to_thread(self._store.get, order_id)
        now = self._clock()
        try:
            confirmed = order.confirm(token=token, actor=actor, at=now)
        except IllegalTransitionError:
            logger.warning("order confirmation refused order_id=%s actor=%s status=%s", order_id, actor, order.status.value)
            raise
        await asyncio.to_thread(self._store.save, order, confirmed, detail={"token": "matched"})
        broker = self._broker_for(confirmed)
        try:
            broker_order_id = await broker.transmit(confirmed)
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
        """TRANSMITTED -> FILLED when the broker reports executions for the order."""
        if order.status != OrderStatus.TRANSMITTED or order.broker_order_id is None:
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
        filled = order.transition(
            OrderStatus.FILLED, actor="broker", at=self._clock(),
            detail=f"{len(fills)} execution(s): " + ", ".join(e.exec_id for e in fills),
        )
        return await asyncio.to_thread(self._store.save, order, filled, detail={
            "executions": [
                {"exec_id": e.exec_id, "contract": e.contract.key, "quantity": e.quantity, "price": e.price}
                for e in fills
            ]
        })

    async def reject(self, order_id: str, *, actor: str, reason: str = "") -> Order:
        """Any open order -> REJECTED (a staged order is cancelled at the broker first)."""
        order = await asyncio.to_thread(self._store.get, order_id)
        check_transition(order.status, OrderStatus.REJECTED, order_id=order_id)  # before the broker cancel
        if order.status != OrderStatus.PROPOSED:
            await self._cancel_quietly(order)
        after = order.transition(OrderStatus.REJECTED, actor=actor, at=self._clock(), detail=reason or "rejected")
        return await asyncio.to_thread(self._store.save, order, after, detail={"reason": reason})

    async def expire_stale(self, *, actor: str = "system", now: datetime | None = None) -> list[Order]:
        """Staged/shown/proposed orders past ``expires_at`` -> EXPIRED (cancelled at the broker)."""
        at = now or self._clock()
        expired: list[Order] = []
        for order in await asyncio.to_thread(self._store.list_orders, list(_OPEN), limit=10_000):
            if order.expires_at is None or at < order.expires_at:
                continue
            if order.status != OrderStatus.PROPOSED:
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

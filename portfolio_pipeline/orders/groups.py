"""Order groups (bracket, OCO): persistence and the two-step confirmation of a whole group.

A group is recorded with its legs in one transaction (``order_groups``,
``order_group_legs`` and one ``orders`` row per leg).  Each leg keeps its own lifecycle in
the one transition table and its own audit trail; the group's status is derived from them
(:func:`~portfolio_pipeline.domain.order_groups.group_status`).  The commands mirror the
single-order ones:

* ``show GROUP`` stages every leg at the broker (IBKR ``transmit=False`` linked by
  ``parentId`` / ``ocaGroup``; Tastytrade a dry run of the complex order, kept locally),
  re-runs every leg's WhatIf, prints every leg with every broker warning and issues ONE
  token for the group (each leg SHOWN with it);
* ``confirm GROUP TOKEN`` confirms every leg, records each leg's
  :class:`~portfolio_pipeline.domain.orders.ConfirmationBounds` (exactly what was shown,
  valid until the group's expiry) and hands the group to the broker's
  ``transmit_group``, which refuses unless every leg is CONFIRMED inside its bounds;
* ``cancel GROUP`` cancels every leg staged or live at the broker (a leg the broker
  could not cancel is named and keeps its state);
* ``reconcile`` sizes a bracket's working children to its entry's filled quantity (never
  above what was confirmed) and cancels the children of an entry that ended unfilled.

A leg is never staged, shown or confirmed on its own (``OrderCommands`` refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import insert, select, update

from portfolio_pipeline.brokers.base import (
    BrokerError,
    GroupBroker,
    OrderBroker,
    SentUnknownError,
    StaleOrderError,
)
from portfolio_pipeline.clock import Clock
from portfolio_pipeline.domain.errors import IllegalTransitionError, InvalidDataError
from portfolio_pipeline.domain.order_groups import (
    GroupKind,
    GroupLeg,
    LegRole,
    OrderGroup,
    bracket_child_quantity,
    require_transmittable,
)
from portfolio_pipeline.domain.orders import ConfirmationBounds, Order, OrderStatus
from portfolio_pipeline.orders.commands import (
    MAX_FAILED_CONFIRMATIONS,
    MIN_TOKEN_CHARS,
    ConfirmationLockedError,
    OrderCommands,
    _recorded_fill,
    render_order,
)
from portfolio_pipeline.orders.store import OrderStore, whatif_to_json
from portfolio_pipeline.storage.engine import Database
from portfolio_pipeline.storage.tables import order_group_legs, order_groups

__all__ = [
    "GroupCommands",
    "GroupNotFoundError",
    "GroupShowResult",
    "GroupStore",
    "bounds_from_json",
    "bounds_to_json",
    "render_group",
]

logger = logging.getLogger(__name__)

#: ``order_audit.detail["event"]`` of a bracket child resized to its entry's fill.
RESIZED = "resized_to_entry_fill"


class GroupNotFoundError(LookupError):
    """No order group with that id."""


def bounds_to_json(b: ConfirmationBounds | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {
        "max_quantity": b.max_quantity,
        "worst_price": b.worst_price,
        "valid_until": b.valid_until.isoformat() if b.valid_until else None,
    }


def bounds_from_json(d: Mapping[str, Any] | None) -> ConfirmationBounds | None:
    if d is None:
        return None
    until = d.get("valid_until")
    return ConfirmationBounds(
        max_quantity=int(d["max_quantity"]),
        worst_price=None if d.get("worst_price") is None else float(d["worst_price"]),
        valid_until=None if until is None else datetime.fromisoformat(until),
    )


class GroupStore:
    """Order groups over ``order_groups`` / ``order_group_legs``; legs through :class:`OrderStore`."""

    def __init__(self, orders: OrderStore) -> None:
        self._orders = orders

    @property
    def db(self) -> Database:
        return self._orders.db

    @property
    def orders(self) -> OrderStore:
        return self._orders

    def insert(self, group: OrderGroup, *, actor: str) -> None:
        """Record the group and every leg (PROPOSED) in one transaction (its shape checked first)."""
        group.check_shape()
        with self.db.begin() as conn:
            for leg in group.legs:
                self._orders.insert_in(
                    conn,
                    leg.order,
                    actor=actor,
                    detail={"group_id": group.group_id, "role": leg.role},
                )
            conn.execute(
                insert(order_groups).values(
                    {
                        order_groups.c.group_id.key: group.group_id,
                        order_groups.c.kind.key: group.kind,
                        order_groups.c.broker.key: group.broker,
                        order_groups.c.account_id.key: group.account_id,
                        order_groups.c.created_at.key: group.created_at,
                        order_groups.c.updated_at.key: group.created_at,
                        order_groups.c.broker_group_id.key: group.broker_group_id,
                    }
                )
            )
            for position, leg in enumerate(group.legs):
                conn.execute(
                    insert(order_group_legs).values(
                        {
                            order_group_legs.c.order_id.key: leg.order.order_id,
                            order_group_legs.c.group_id.key: group.group_id,
                            order_group_legs.c.role.key: leg.role,
                            order_group_legs.c.position.key: position,
                            order_group_legs.c.bounds.key: bounds_to_json(leg.bounds),
                            order_group_legs.c.working_quantity.key: leg.working_quantity,
                        }
                    )
                )
        logger.info(
            "order group recorded group_id=%s kind=%s legs=%d actor=%s",
            group.group_id,
            group.kind,
            len(group.legs),
            actor,
        )

    def exists(self, group_id: str) -> bool:
        with self.db.connect() as conn:
            return (
                conn.execute(
                    select(order_groups.c.group_id).where(order_groups.c.group_id == group_id)
                ).first()
                is not None
            )

    def get(self, group_id: str) -> OrderGroup:
        with self.db.connect() as conn:
            row = (
                conn.execute(select(order_groups).where(order_groups.c.group_id == group_id))
                .mappings()
                .first()
            )
            if row is None:
                raise GroupNotFoundError(f"no order group {group_id!r}")
            legs = list(
                conn.execute(
                    select(order_group_legs)
                    .where(order_group_legs.c.group_id == group_id)
                    .order_by(order_group_legs.c.position)
                ).mappings()
            )
        return OrderGroup(
            group_id=row["group_id"],
            kind=cast(GroupKind, row["kind"]),
            broker=row["broker"],
            account_id=row["account_id"],
            created_at=row["created_at"],
            broker_group_id=row["broker_group_id"],
            legs=tuple(
                GroupLeg(
                    role=cast(LegRole, leg["role"]),
                    order=self._orders.get(leg["order_id"]),
                    bounds=bounds_from_json(leg["bounds"]),
                    working_quantity=leg["working_quantity"],
                )
                for leg in legs
            ),
        )

    def group_ids(self) -> list[str]:
        with self.db.connect() as conn:
            return [
                str(r[0])
                for r in conn.execute(
                    select(order_groups.c.group_id).order_by(
                        order_groups.c.created_at, order_groups.c.group_id
                    )
                )
            ]

    def open_groups(self) -> list[OrderGroup]:
        """Groups with a leg that is not terminal."""
        out = []
        for group_id in self.group_ids():
            group = self.get(group_id)
            if not all(leg.order.status.is_terminal for leg in group.legs):
                out.append(group)
        return out

    def set_bounds(
        self, group_id: str, bounds: Mapping[str, ConfirmationBounds], now: datetime
    ) -> None:
        with self.db.begin() as conn:
            for order_id, b in bounds.items():
                conn.execute(
                    update(order_group_legs)
                    .where(order_group_legs.c.order_id == order_id)
                    .values({order_group_legs.c.bounds.key: bounds_to_json(b)})
                )
            self._touch(conn, group_id, now)

    def set_working_quantity(
        self, group_id: str, order_id: str, quantity: int, now: datetime
    ) -> None:
        with self.db.begin() as conn:
            conn.execute(
                update(order_group_legs)
                .where(order_group_legs.c.order_id == order_id)
                .values({order_group_legs.c.working_quantity.key: quantity})
            )
            self._touch(conn, group_id, now)

    def set_broker_group_id(
        self, group_id: str, broker_group_id: str | None, now: datetime
    ) -> None:
        with self.db.begin() as conn:
            conn.execute(
                update(order_groups)
                .where(order_groups.c.group_id == group_id)
                .values({order_groups.c.broker_group_id.key: broker_group_id})
            )
            self._touch(conn, group_id, now)

    @staticmethod
    def _touch(conn: Any, group_id: str, now: datetime) -> None:
        conn.execute(
            update(order_groups)
            .where(order_groups.c.group_id == group_id)
            .values({order_groups.c.updated_at.key: now})
        )


@dataclass(frozen=True, slots=True)
class GroupShowResult:
    group: OrderGroup
    token: str
    text: str


def render_group(group: OrderGroup) -> str:
    """Every leg with its terms, WhatIf and every broker warning, under one header."""
    head = (
        f"order group {group.group_id}  {group.kind}  [{group.status.value}]  "
        f"{group.broker}:{group.account_id}"
    )
    if group.broker_group_id:
        head += f"  (broker group {group.broker_group_id})"
    parts = [head]
    for i, leg in enumerate(group.legs, 1):
        text = render_order(leg.order)
        if leg.working_quantity is not None and leg.working_quantity != leg.order.quantity:
            text += f"\n  working quantity {leg.working_quantity} (entry partly filled)"
        parts.append(
            f"leg {i}/{len(group.legs)}: {leg.role}\n"
            + "\n".join("  " + line for line in text.splitlines())
        )
    return "\n".join(parts)


def new_group_id(kind: str) -> str:
    return f"{kind[:3].upper()}-{secrets.token_hex(4)}"


def build_group(
    kind: GroupKind, legs: Sequence[tuple[LegRole, Order]], *, group_id: str | None = None
) -> OrderGroup:
    """A PROPOSED group from its legs (shape checked; leg ids ``<group>-<role>``)."""
    if not legs:
        raise InvalidDataError("order group: no legs")
    gid = group_id or new_group_id(kind)
    first = legs[0][1]
    group_legs = tuple(
        GroupLeg(role=role, order=replace(order, order_id=f"{gid}-{role}")) for role, order in legs
    )
    group = OrderGroup(
        group_id=gid,
        kind=kind,
        broker=first.broker,
        account_id=first.account_id,
        created_at=first.created_at,
        legs=group_legs,
    )
    group.check_shape()
    return group


class GroupCommands:
    """Stage / show / confirm / cancel / reconcile order groups (on top of :class:`OrderCommands`)."""

    def __init__(
        self,
        commands: OrderCommands,
        broker_for: Callable[[Order], OrderBroker] | None = None,
        *,
        clock: Clock | None = None,
        token_factory: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self._commands = commands
        self._groups = GroupStore(commands.store)
        # the same adapters as the single-order commands (one broker object per account)
        self._broker_for = broker_for or commands.broker_for
        self._clock = clock or commands.clock
        self._token = token_factory

    @property
    def store(self) -> GroupStore:
        return self._groups

    def _broker(self, group: OrderGroup) -> GroupBroker:
        broker = self._broker_for(group.legs[0].order)
        if not isinstance(broker, GroupBroker):
            raise BrokerError(
                f"order group {group.group_id}: broker {group.broker} places no order groups"
            )
        return broker

    def _get(self, group_id: str) -> OrderGroup:
        return self._groups.get(group_id)

    async def _save_legs(
        self, before: OrderGroup, after: Sequence[Order], detail: Mapping[str, Any] | None = None
    ) -> OrderGroup:
        for old, new in zip(before.orders, after, strict=True):
            if new is not old:
                await asyncio.to_thread(self._commands.store.save, old, new, detail=detail)
        return await asyncio.to_thread(self._get, before.group_id)

    async def stage(
        self, group_id: str, *, actor: str, ttl: timedelta, reason: str = "request"
    ) -> OrderGroup:
        """Every leg PROPOSED/STALE -> STAGED through ``broker.stage_group`` (never transmits).

        Legs still staged at the broker while another is STALE (a partial loss) are
        cancelled there and marked STALE first: a group is re-staged whole.
        """
        group = await asyncio.to_thread(self._get, group_id)
        broker = self._broker(group)
        if any(leg.order.status == OrderStatus.STALE for leg in group.legs):
            group = await self._all_stale(group, broker, actor=actor)
        for leg in group.legs:
            if leg.order.status not in (OrderStatus.PROPOSED, OrderStatus.STALE):
                raise IllegalTransitionError(
                    f"order group {group_id}: leg {leg.role} is {leg.order.status.value}; "
                    "only a proposed or stale group is staged"
                )
        request = replace(
            group,
            legs=tuple(
                replace(
                    leg,
                    order=replace(
                        leg.order, whatif=None, broker_order_id=None, broker_perm_id=None
                    ),
                    bounds=None,
                    working_quantity=None,
                )
                for leg in group.legs
            ),
        )
        staged = await broker.stage_group(request)
        now = self._clock()
        after = [
            leg.order.transition(
                OrderStatus.STAGED,
                actor=actor,
                at=now,
                detail=f"staged with group {group_id} by {reason}",
                whatif=s.whatif,
                broker_order_id=s.broker_order_id,
                expires_at=now + ttl,
                broker_client_id=s.client_id,
                broker_perm_id=s.perm_id,
            )
            for leg, s in zip(group.legs, staged, strict=True)
        ]
        return await self._save_legs(group, after, detail={"reason": reason, "group_id": group_id})

    async def _all_stale(self, group: OrderGroup, broker: GroupBroker, *, actor: str) -> OrderGroup:
        staged = [leg for leg in group.legs if leg.order.status.is_staged_at_broker]
        if staged:
            failures = await broker.cancel_group(group)
            blocking = {k: v for k, v in failures.items() if not isinstance(v, StaleOrderError)}
            if blocking:
                raise BrokerError(
                    f"order group {group.group_id}: could not clear the staged legs: {blocking}"
                )
        now = self._clock()
        after = [
            leg.order.transition(
                OrderStatus.STALE, actor=actor, at=now, detail="another leg of the group is stale"
            )
            if leg.order.status.is_staged_at_broker
            else leg.order
            for leg in group.legs
        ]
        return await self._save_legs(group, after)

    async def show(
        self, group_id: str, *, actor: str, ttl: timedelta = timedelta(hours=1)
    ) -> GroupShowResult:
        """Step one for the whole group: fresh WhatIf of every leg, every warning, one token."""
        group = await asyncio.to_thread(self._get, group_id)
        if group.status in (OrderStatus.PROPOSED, OrderStatus.STALE):
            group = await self.stage(group_id, actor=actor, ttl=ttl, reason="show")
        now = self._clock()
        for leg in group.legs:
            if leg.order.status not in (OrderStatus.STAGED, OrderStatus.SHOWN):
                raise IllegalTransitionError(
                    f"order group {group_id}: leg {leg.role} is {leg.order.status.value}; cannot be shown"
                )
            if leg.order.expires_at is not None and now >= leg.order.expires_at:
                raise IllegalTransitionError(
                    f"order group {group_id}: staged at the broker until {leg.order.expires_at.isoformat()}, expired"
                )
        whatifs = await self._broker(group).what_if_group(group)
        token = self._token()
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"confirmation token factory made a token of {len(token)} characters (< {MIN_TOKEN_CHARS})"
            )
        shown = [
            replace(leg.order, whatif=w).show(token=token, actor=actor, at=now)
            for leg, w in zip(group.legs, whatifs, strict=True)
        ]
        preview = replace(
            group,
            legs=tuple(replace(leg, order=o) for leg, o in zip(group.legs, shown, strict=True)),
        )
        text = render_group(preview)
        for old, new, w in zip(group.orders, shown, whatifs, strict=True):
            await asyncio.to_thread(
                self._commands.store.save,
                old,
                new,
                detail={
                    "shown": text,
                    "group_id": group_id,
                    "whatif": whatif_to_json(w),
                    "warnings": list(w.warnings),
                },
            )
        # what the person sees is what the token will confirm: each leg's bounds, from the shown terms
        await asyncio.to_thread(
            self._groups.set_bounds,
            group_id,
            {o.order_id: ConfirmationBounds.of(o, valid_until=o.expires_at) for o in shown},
            now,
        )
        return GroupShowResult(
            group=await asyncio.to_thread(self._get, group_id), token=token, text=text
        )

    async def confirm(self, group_id: str, token: str, *, actor: str) -> OrderGroup:
        """Step two: the token confirms every leg, then the broker transmits the group as a whole."""
        group = await asyncio.to_thread(self._get, group_id)
        broker = self._broker(group)
        held = getattr(broker, "held", None)
        async with held() if held is not None else contextlib.nullcontext():
            return await self._confirm(group_id, token, actor=actor, broker=broker)

    async def _confirm(
        self, group_id: str, token: str, *, actor: str, broker: GroupBroker
    ) -> OrderGroup:
        group = await asyncio.to_thread(self._get, group_id)
        store = self._commands.store
        first = group.legs[0].order
        now = self._clock()
        failures = await asyncio.to_thread(store.failed_confirmations, first.order_id)
        try:
            if failures >= MAX_FAILED_CONFIRMATIONS:
                raise ConfirmationLockedError(
                    f"order group {group_id}: locked after {failures} wrong confirmation tokens; "
                    f"run `portfolio orders show {group_id}` for a new token"
                )
            confirmed = [leg.order.confirm(token=token, actor=actor, at=now) for leg in group.legs]
        except IllegalTransitionError as exc:
            await asyncio.to_thread(
                store.record_failed_confirmation,
                first,
                actor=actor,
                at=now,
                reason=f"group {group_id}: {exc}",
            )
            logger.warning("order group confirmation refused group_id=%s actor=%s", group_id, actor)
            raise
        group = await self._save_legs(
            group, confirmed, detail={"token": "matched", "group_id": group_id}
        )
        try:
            # the legs as stored now against what was shown (the bounds recorded by 'show'),
            # before the broker is asked; every adapter's transmit_group checks again
            require_transmittable(group, at=self._clock())
        except IllegalTransitionError as exc:
            # refused: withdraw the staged legs at the broker too (no Transmit button left in TWS)
            try:
                await broker.cancel_group(group)
            except Exception as cancel_exc:
                logger.error("order group %s: staged legs not withdrawn: %s", group_id, cancel_exc)
            return await self._all_to(
                group, OrderStatus.FAILED, actor, f"refused before the broker: {exc}", exc
            )
        try:
            sent = await broker.transmit_group(group)
        except StaleOrderError as exc:
            return await self._all_to(group, OrderStatus.STALE, actor, str(exc), exc)
        except SentUnknownError as exc:
            return await self._all_to(group, OrderStatus.SENT_UNKNOWN, actor, str(exc), exc)
        except Exception as exc:
            return await self._all_to(
                group, OrderStatus.FAILED, actor, f"transmit failed: {exc}", exc
            )
        at = self._clock()
        after = [
            leg.order.transition(
                OrderStatus.TRANSMITTED,
                actor=actor,
                at=at,
                detail=f"transmitted with group {group_id}",
                broker_order_id=broker_id,
            )
            for leg, broker_id in zip(group.legs, sent.broker_order_ids, strict=True)
        ]
        group = await self._save_legs(
            group, after, detail={"group_id": group_id, "broker_group_id": sent.broker_group_id}
        )
        if sent.broker_group_id is not None:
            await asyncio.to_thread(
                self._groups.set_broker_group_id, group_id, sent.broker_group_id, at
            )
        logger.info(
            "order group transmitted group_id=%s kind=%s actor=%s", group_id, group.kind, actor
        )
        for leg in group.legs:
            await self._commands.reconcile_fill(leg.order)
        return await asyncio.to_thread(self._get, group_id)

    async def _all_to(
        self, group: OrderGroup, target: OrderStatus, actor: str, detail: str, exc: Exception
    ) -> OrderGroup:
        at = self._clock()
        after = [
            leg.order.transition(target, actor=actor, at=at, detail=detail) for leg in group.legs
        ]
        await self._save_legs(group, after, detail={"error": str(exc), "group_id": group.group_id})
        logger.error(
            "order group not transmitted group_id=%s status=%s error=%s",
            group.group_id,
            target.value,
            exc,
        )
        raise exc

    async def cancel(self, group_id: str, *, actor: str, reason: str = "") -> OrderGroup:
        """Cancel every leg staged or live at the broker; open local legs are rejected.

        Raises :class:`BrokerError` naming the legs the broker did not confirm cancelled
        (they keep their state: live legs stay live until the reconciler says otherwise).
        """
        group = await asyncio.to_thread(self._get, group_id)
        if all(leg.order.status.is_terminal for leg in group.legs):
            raise IllegalTransitionError(
                f"order group {group_id}: every leg is already {group.status.value}"
            )
        at_broker = [
            leg
            for leg in group.legs
            if leg.order.status.is_live_at_broker or leg.order.status.is_staged_at_broker
        ]
        failures: dict[str, BrokerError] = {}
        if at_broker:
            failures = await self._broker(group).cancel_group(group)
        at = self._clock()
        note = reason or "group cancelled"
        after: list[Order] = []
        for leg in group.legs:
            o = leg.order
            err = failures.get(o.order_id)
            if o.status.is_terminal or o.status == OrderStatus.CONFIRMED:
                after.append(o)
            elif o.status.is_live_at_broker:
                after.append(
                    o
                    if err is not None
                    else o.transition(OrderStatus.CANCELLED, actor=actor, at=at, detail=note)
                )
            elif err is None or isinstance(err, StaleOrderError):
                after.append(
                    o.transition(
                        OrderStatus.REJECTED,
                        actor=actor,
                        at=at,
                        detail=note + ("" if err is None else f"; not at the broker ({err})"),
                    )
                )
            else:
                after.append(o)
        before = {leg.order.order_id: leg.order.status for leg in group.legs}
        group = await self._save_legs(group, after, detail={"reason": reason, "group_id": group_id})
        # a staged leg the broker no longer has is simply gone; a live one may have filled
        remaining = {
            k: v
            for k, v in failures.items()
            if before[k].is_live_at_broker or not isinstance(v, StaleOrderError)
        }
        if remaining:
            raise BrokerError(
                f"order group {group_id}: not confirmed cancelled at the broker: "
                + "; ".join(f"{k}: {v}" for k, v in remaining.items())
                + " (run `portfolio orders reconcile`)"
            )
        return group

    async def reconcile(self, *, actor: str = "reconciler") -> list[OrderGroup]:
        """Size bracket children to their entry's fill; cancel children of an entry that ended unfilled.

        Run after :meth:`OrderCommands.reconcile` (which settles each leg's own status).
        """
        changed: list[OrderGroup] = []
        for group in await asyncio.to_thread(self._groups.open_groups):
            if group.kind != "bracket":
                continue
            try:
                if await self._reconcile_bracket(group, actor=actor):
                    changed.append(await asyncio.to_thread(self._get, group.group_id))
            except Exception as exc:
                logger.warning("group reconcile failed group_id=%s error=%s", group.group_id, exc)
        return changed

    async def _reconcile_bracket(self, group: OrderGroup, *, actor: str) -> bool:
        entry = group.leg("entry").order
        children = [
            leg for leg in group.legs if leg.role != "entry" and leg.order.status.is_live_at_broker
        ]
        if not children:
            return False
        filled = (
            float(entry.quantity) if entry.status == OrderStatus.FILLED else _recorded_fill(entry)
        )
        broker = self._broker(group)
        if entry.status.is_terminal and filled < 1:
            # the entry ended with nothing filled: its children must not work on their own
            await self.cancel(
                group.group_id, actor=actor, reason=f"entry {entry.status.value} unfilled"
            )
            return True
        if filled < 1:
            return False
        changed = False
        now = self._clock()
        for leg in children:
            wanted = bracket_child_quantity(filled, leg.order.quantity)
            if wanted == leg.quantity:
                continue
            if leg.bounds is None:
                raise IllegalTransitionError(
                    f"order {leg.order.order_id}: no confirmation bounds; not resized"
                )
            # the confirmed size bounds the child for its whole life (the expiry bounded the transmission)
            replace(leg.bounds, valid_until=None).require(leg.order, at=now, quantity=wanted)
            await broker.resize(leg.order, wanted)
            await asyncio.to_thread(
                self._groups.set_working_quantity, group.group_id, leg.order.order_id, wanted, now
            )
            await asyncio.to_thread(
                self._commands.store.record_event,
                leg.order,
                actor=actor,
                at=now,
                event=RESIZED,
                detail={
                    "detail": f"resized {leg.quantity} -> {wanted}: entry {filled:g} of {entry.quantity} filled",
                    "from": leg.quantity,
                    "to": wanted,
                    "entry_filled": filled,
                },
            )
            logger.info(
                "bracket child resized order_id=%s from=%s to=%s",
                leg.order.order_id,
                leg.quantity,
                wanted,
            )
            changed = True
        return changed


def group_or_order(store: OrderStore, groups: GroupStore, ident: str) -> str:
    """``"group"`` when ``ident`` names an order group, ``"order"`` for an order (else LookupError)."""
    if groups.exists(ident):
        return "group"
    store.get(ident)  # raises OrderNotFoundError
    return "order"

"""Scheduled rolls and platform-side trailing stops (``order_schedules``).

Both build an ordinary order when they run, stage it with a FRESH WhatIf / dry run and
tell the person (``notify``); neither ever changes an order that is live at the broker.

* **Roll** (``portfolio orders schedule-roll``): at a New York time on a session of the
  exchange calendar (default 15:45 on the expiration session of the held contract; a
  holiday expiry rolls on the session before; on a half day the run keeps the same
  distance before the early close, 15:45 -> 12:45), the roll is built from live quotes
  (close the held contract, open the new one, limit at the combo's mid) and staged.
  It is transmitted only after a confirmation: a person's ``show`` / ``confirm``, or a
  **standing confirmation** given when the schedule was made, with explicit bounds (max
  net price, max size, valid until).  The bounds are checked against the built order at
  send time; the check and its result are in the order's audit trail (event
  ``standing_confirmation``); outside the bounds the order stays staged for a person.
* **Trail** (``portfolio orders trail`` where the broker has no native trailing stop for
  the contract): each run follows the mid's best level since the trail began and, when
  the stop should move, stages a NEW stop order at the new level and asks again (the
  live stop is never re-priced; the previous unconfirmed proposal is withdrawn).

``portfolio orders run-schedules`` runs what is due (cron, or any scheduler).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import insert, select, update

from portfolio_pipeline.brokers.base import OrderBroker
from portfolio_pipeline.domain.errors import IllegalTransitionError, InvalidDataError
from portfolio_pipeline.domain.orders import ConfirmationBounds, Order, OrderLeg, OrderStatus
from portfolio_pipeline.domain.positions import Contract, Position, Quote
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar
from portfolio_pipeline.orders.commands import OrderCommands
from portfolio_pipeline.orders.groups import bounds_from_json, bounds_to_json
from portfolio_pipeline.orders.store import contract_from_json, contract_to_json
from portfolio_pipeline.storage.tables import order_schedules

__all__ = [
    "REGULAR_CLOSE",
    "STANDING_CONFIRMATION",
    "OrderSchedules",
    "Schedule",
    "build_roll",
    "roll_run_at",
    "trail_stop",
]

logger = logging.getLogger(__name__)

#: The regular close in New York; a half day keeps a run's distance before its close.
REGULAR_CLOSE = time(16, 0)
#: ``order_audit.detail["event"]`` of a standing confirmation's check at send time.
STANDING_CONFIRMATION = "standing_confirmation"
#: A quote older than this at run time is stale: nothing is built from it.  The demo
#: broker quotes the last close (it has no intraday prices): up to a long weekend old.
MAX_QUOTE_AGE = timedelta(minutes=5)
DEMO_QUOTE_AGE = timedelta(days=4)

Kind = Literal["roll", "trail"]


class QuoteBroker(Protocol):
    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]: ...

    async def positions(self, account_id: str) -> list[Position]: ...


def roll_run_at(calendar: ExchangeCalendar, day: date, at: time) -> datetime:
    """``at`` New York on the session ``day`` (the session before when ``day`` is none).

    On a half day the run keeps its distance before the close (15:45 -> 12:45): the
    session's close minus (16:00 - ``at``).
    """
    before_close = datetime.combine(day, REGULAR_CLOSE) - datetime.combine(day, at)
    if before_close <= timedelta(0):
        raise InvalidDataError(
            f"schedule: {at:%H:%M} New York is not before the {REGULAR_CLOSE:%H:%M} close"
        )
    session = calendar.session_on_or_before(day)
    return calendar.session_close(session) - before_close


def _mid(quote: Quote, *, now: datetime, where: str, max_age: timedelta = MAX_QUOTE_AGE) -> float:
    if now - quote.as_of > max_age:
        raise InvalidDataError(
            f"{where}: quote of {quote.contract.key} is stale (as of {quote.as_of.isoformat()})"
        )
    if not (quote.bid >= 0 and quote.ask > 0):  # a worthless option is bid 0, offered at a tick
        raise InvalidDataError(
            f"{where}: no offer for {quote.contract.key} (bid {quote.bid}, ask {quote.ask})"
        )
    return (quote.bid + quote.ask) / 2.0


def build_roll(
    *,
    order_id: str,
    broker: str,
    account_id: str,
    held: Contract,
    held_quantity: float,
    new: Contract,
    quantity: int,
    quotes: Mapping[str, Quote],
    now: datetime,
    proposal_id: str,
    max_quote_age: timedelta = MAX_QUOTE_AGE,
) -> Order:
    """Close ``quantity`` of the held contract and open the same of ``new``, limit at the combo's mid.

    Domain combo convention: the limit is the net price per unit, positive = net debit.
    """
    where = f"roll {proposal_id}"
    if held_quantity == 0:
        raise InvalidDataError(f"{where}: {held.key} is not held")
    if quantity > abs(held_quantity):
        raise InvalidDataError(f"{where}: rolls {quantity} but {abs(held_quantity):g} are held")
    closing, opening = ("BUY", "SELL") if held_quantity < 0 else ("SELL", "BUY")
    net = 0.0
    for contract, action in ((held, closing), (new, opening)):
        quote = quotes.get(contract.key)
        if quote is None:
            raise InvalidDataError(f"{where}: no quote for {contract.key}")
        mid = _mid(quote, now=now, where=where, max_age=max_quote_age)
        net += mid if action == "BUY" else -mid
    return Order(
        order_id=order_id,
        broker=broker,
        account_id=account_id,
        legs=(OrderLeg(held, closing), OrderLeg(new, opening)),  # type: ignore[arg-type]
        quantity=quantity,
        limit_price=round(net, 2),
        created_at=now,
        proposal_id=proposal_id,
    )


def _quote_age(broker: str) -> timedelta:
    return DEMO_QUOTE_AGE if broker == "demo" else MAX_QUOTE_AGE


def trail_stop(side: str, best: float, *, percent: float | None, amount: float | None) -> float:
    """The stop of a trail from the best mid since it began (SELL stop below, BUY stop above)."""
    step = best * percent / 100.0 if percent is not None else float(amount or 0.0)
    return round(best - step if side == "SELL" else best + step, 2)


@dataclass(frozen=True, slots=True)
class Schedule:
    schedule_id: str
    kind: Kind
    broker: str
    account_id: str
    status: str
    run_at: datetime | None
    spec: dict[str, Any]
    standing: ConfirmationBounds | None
    standing_by: str | None
    order_id: str | None
    detail: dict[str, Any] | None


class OrderSchedules:
    """Schedules over ``order_schedules``, acting through :class:`OrderCommands` (stage/show/confirm)."""

    def __init__(
        self,
        commands: OrderCommands,
        *,
        calendar: ExchangeCalendar,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self._commands = commands
        self._calendar = calendar
        self._notify = notify or (lambda text: logger.warning("%s", text))

    @property
    def db(self) -> Any:
        return self._commands.store.db

    # -------------------------------------------------------------- storage

    def _insert(
        self,
        *,
        kind: Kind,
        broker: str,
        account_id: str,
        run_at: datetime | None,
        spec: dict[str, Any],
        standing: ConfirmationBounds | None,
        standing_by: str | None,
        now: datetime,
    ) -> str:
        schedule_id = f"{kind.upper()}-{secrets.token_hex(4)}"
        with self.db.begin() as conn:
            conn.execute(
                insert(order_schedules).values(
                    {
                        "schedule_id": schedule_id,
                        "kind": kind,
                        "broker": broker,
                        "account_id": account_id,
                        "status": "pending",
                        "run_at": run_at,
                        "spec": spec,
                        "standing": bounds_to_json(standing),
                        "standing_by": standing_by,
                        "order_id": None,
                        "created_at": now,
                        "updated_at": now,
                        "detail": None,
                    }
                )
            )
        logger.info(
            "order schedule recorded schedule_id=%s kind=%s run_at=%s", schedule_id, kind, run_at
        )
        return schedule_id

    def _update(self, schedule_id: str, now: datetime, **values: Any) -> None:
        with self.db.begin() as conn:
            conn.execute(
                update(order_schedules)
                .where(order_schedules.c.schedule_id == schedule_id)
                .values(updated_at=now, **values)
            )

    def get(self, schedule_id: str) -> Schedule:
        with self.db.connect() as conn:
            row = (
                conn.execute(
                    select(order_schedules).where(order_schedules.c.schedule_id == schedule_id)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise LookupError(f"no order schedule {schedule_id!r}")
        return self._schedule(row)

    def exists(self, schedule_id: str) -> bool:
        try:
            self.get(schedule_id)
        except LookupError:
            return False
        return True

    def list_schedules(self, statuses: Sequence[str] = ("pending", "staged")) -> list[Schedule]:
        with self.db.connect() as conn:
            rows = list(
                conn.execute(
                    select(order_schedules)
                    .where(order_schedules.c.status.in_(list(statuses)))
                    .order_by(order_schedules.c.created_at, order_schedules.c.schedule_id)
                ).mappings()
            )
        return [self._schedule(r) for r in rows]

    @staticmethod
    def _schedule(row: Any) -> Schedule:
        return Schedule(
            schedule_id=row["schedule_id"],
            kind=row["kind"],
            broker=row["broker"],
            account_id=row["account_id"],
            status=row["status"],
            run_at=row["run_at"],
            spec=dict(row["spec"]),
            standing=bounds_from_json(row["standing"]),
            standing_by=row["standing_by"],
            order_id=row["order_id"],
            detail=row["detail"],
        )

    def cancel(self, schedule_id: str, *, actor: str, now: datetime) -> Schedule:
        schedule = self.get(schedule_id)
        if schedule.status in ("done", "cancelled", "failed"):
            raise IllegalTransitionError(
                f"order schedule {schedule_id} is already {schedule.status}"
            )
        self._update(schedule_id, now, status="cancelled", detail={"by": actor})
        return self.get(schedule_id)

    # -------------------------------------------------------------- making schedules

    def add_roll(
        self,
        *,
        broker: str,
        account_id: str,
        held: Contract,
        new: Contract,
        quantity: int,
        day: date | None,
        at: time,
        standing: ConfirmationBounds | None,
        by: str,
        now: datetime,
    ) -> Schedule:
        """Roll ``quantity`` of ``held`` into ``new`` at ``at`` New York on ``day`` (default: held's expiry)."""
        if held.expiry is None:
            raise InvalidDataError(
                f"schedule-roll: {held.key} has no expiry; give the day to roll on"
            )
        run_at = roll_run_at(self._calendar, day or held.expiry, at)
        if run_at <= now:
            raise InvalidDataError(
                f"schedule-roll: the run time {run_at.astimezone(NEW_YORK):%Y-%m-%d %H:%M} "
                "New York is already past"
            )
        if standing is not None and standing.max_quantity < quantity:
            raise InvalidDataError(
                f"schedule-roll: the standing confirmation's max size {standing.max_quantity} "
                f"is below the roll's quantity {quantity}"
            )
        spec = {
            "held": contract_to_json(held),
            "new": contract_to_json(new),
            "quantity": quantity,
            "at": at.strftime("%H:%M"),
        }
        sid = self._insert(
            kind="roll",
            broker=broker,
            account_id=account_id,
            run_at=run_at,
            spec=spec,
            standing=standing,
            standing_by=by if standing is not None else None,
            now=now,
        )
        return self.get(sid)

    def add_trail(
        self,
        *,
        broker: str,
        account_id: str,
        contract: Contract,
        side: str,
        quantity: int,
        percent: float | None,
        amount: float | None,
        by: str,
        now: datetime,
    ) -> Schedule:
        """A platform-side trailing stop: each run may stage a new stop and ask again."""
        if (percent is None) == (amount is None):
            raise InvalidDataError("trail: give exactly one of percent or amount")
        spec = {
            "contract": contract_to_json(contract),
            "side": side,
            "quantity": quantity,
            "percent": percent,
            "amount": amount,
            "best": None,
            "stop": None,
            "by": by,
        }
        sid = self._insert(
            kind="trail",
            broker=broker,
            account_id=account_id,
            run_at=None,
            spec=spec,
            standing=None,
            standing_by=None,
            now=now,
        )
        return self.get(sid)

    # -------------------------------------------------------------- running

    def _broker(
        self, broker: str, account_id: str, contract: Contract, now: datetime
    ) -> OrderBroker:
        probe = Order(
            order_id="probe",
            broker=broker,
            account_id=account_id,
            legs=(OrderLeg(contract, "BUY"),),
            quantity=1,
            limit_price=0.0,
            created_at=now,
        )
        return self._commands.broker_for(probe)

    async def run_due(self, *, now: datetime, actor: str = "scheduler") -> list[str]:
        """Run every due schedule; one line per schedule that did something."""
        lines: list[str] = []
        for schedule in await asyncio.to_thread(self.list_schedules, ("pending",)):
            if schedule.kind == "roll" and schedule.run_at is not None and schedule.run_at > now:
                continue
            line: str | None
            try:
                if schedule.kind == "roll":
                    line = await self._run_roll(schedule, now=now, actor=actor)
                else:
                    line = await self._run_trail(schedule, now=now, actor=actor)
            except Exception as exc:
                line = f"{schedule.schedule_id}: failed: {exc}"
                if schedule.kind == "roll":
                    await asyncio.to_thread(
                        self._update,
                        schedule.schedule_id,
                        now,
                        status="failed",
                        detail={"error": str(exc)},
                    )
                logger.error(
                    "order schedule failed schedule_id=%s error=%s", schedule.schedule_id, exc
                )
            if line:
                self._notify(line)
                lines.append(line)
        return lines

    async def _run_roll(self, schedule: Schedule, *, now: datetime, actor: str) -> str:
        spec = schedule.spec
        held, new = contract_from_json(spec["held"]), contract_from_json(spec["new"])
        broker: Any = self._broker(schedule.broker, schedule.account_id, held, now)
        positions = await broker.positions(schedule.account_id)
        held_qty = sum(p.quantity for p in positions if p.contract.key == held.key)
        quotes = {q.contract.key: q for q in await broker.quotes([held, new])}
        order = build_roll(
            order_id=f"{schedule.schedule_id}-{now:%Y%m%d%H%M}",
            broker=schedule.broker,
            account_id=schedule.account_id,
            held=held,
            held_quantity=held_qty,
            new=new,
            quantity=int(spec["quantity"]),
            quotes=quotes,
            now=now,
            proposal_id=f"schedule:{schedule.schedule_id}",
            max_quote_age=_quote_age(schedule.broker),
        )
        store = self._commands.store
        await asyncio.to_thread(
            store.insert, order, actor=actor, detail={"schedule_id": schedule.schedule_id}
        )
        shown = await self._commands.show(
            order.order_id, actor=actor
        )  # staged with a fresh WhatIf, token issued
        await asyncio.to_thread(
            self._update, schedule.schedule_id, now, status="staged", order_id=order.order_id
        )
        if schedule.standing is None:
            return (
                f"{schedule.schedule_id}: roll {order.order_id} staged at {order.limit_price:+.2f} net; "
                f"needs a person: portfolio orders show {order.order_id}, then confirm"
            )
        violations = schedule.standing.violations(shown.order, at=now)
        await asyncio.to_thread(
            store.record_event,
            shown.order,
            actor=actor,
            at=now,
            event=STANDING_CONFIRMATION,
            detail={
                "detail": "standing confirmation checked at send time",
                "schedule_id": schedule.schedule_id,
                "given_by": schedule.standing_by,
                "bounds": bounds_to_json(schedule.standing),
                "limit_price": shown.order.limit_price,
                "quantity": shown.order.quantity,
                "violations": violations,
                "accepted": not violations,
            },
        )
        if violations:
            return (
                f"{schedule.schedule_id}: roll {order.order_id} outside the standing confirmation "
                f"({'; '.join(violations)}); staged for a person: portfolio orders show {order.order_id}"
            )
        done = await self._commands.confirm(
            order.order_id, shown.token, actor=f"standing:{schedule.standing_by}"
        )
        await asyncio.to_thread(
            self._update,
            schedule.schedule_id,
            now,
            status="done",
            detail={"order_status": done.status.value},
        )
        return (
            f"{schedule.schedule_id}: roll {order.order_id} {done.status.value} under the standing "
            f"confirmation of {schedule.standing_by} at {order.limit_price:+.2f} net"
        )

    async def _run_trail(self, schedule: Schedule, *, now: datetime, actor: str) -> str | None:
        spec = dict(schedule.spec)
        contract = contract_from_json(spec["contract"])
        broker: Any = self._broker(schedule.broker, schedule.account_id, contract, now)
        (quote,) = await broker.quotes([contract])
        mid = _mid(
            quote,
            now=now,
            where=f"trail {schedule.schedule_id}",
            max_age=_quote_age(schedule.broker),
        )
        side = spec["side"]
        best = (
            mid
            if spec["best"] is None
            else (max if side == "SELL" else min)(float(spec["best"]), mid)
        )
        stop = trail_stop(side, best, percent=spec["percent"], amount=spec["amount"])
        current = spec["stop"]
        improves = current is None or (
            stop > float(current) + 1e-9 if side == "SELL" else stop < float(current) - 1e-9
        )
        spec["best"] = best
        if not improves:
            await asyncio.to_thread(self._update, schedule.schedule_id, now, spec=spec)
            return None
        store = self._commands.store
        previous = schedule.order_id
        live = ""
        if (
            previous is not None
        ):  # withdraw the previous proposal if nobody confirmed it (never a live one)
            old = await asyncio.to_thread(store.get, previous)
            if old.status in (
                OrderStatus.PROPOSED,
                OrderStatus.STAGED,
                OrderStatus.SHOWN,
                OrderStatus.STALE,
            ):
                await self._commands.reject(
                    previous, actor=actor, reason=f"trail moved to {stop:.2f}"
                )
            elif old.status.is_live_at_broker:
                live = f"; the live stop {previous} is unchanged until you cancel it"
        order = Order(
            order_id=f"{schedule.schedule_id}-{now:%Y%m%d%H%M%S}",
            broker=schedule.broker,
            account_id=schedule.account_id,
            legs=(OrderLeg(contract, side),),
            quantity=int(spec["quantity"]),
            limit_price=0.0,
            created_at=now,
            order_type="STP",
            aux_price=stop,
            time_in_force="GTC",
            proposal_id=f"schedule:{schedule.schedule_id}",
        )
        await asyncio.to_thread(
            store.insert, order, actor=actor, detail={"schedule_id": schedule.schedule_id}
        )
        await self._commands.stage(
            order.order_id, actor=actor, ttl=timedelta(hours=4), reason="trail"
        )
        spec["stop"] = stop
        await asyncio.to_thread(
            self._update, schedule.schedule_id, now, spec=spec, order_id=order.order_id
        )
        return (
            f"{schedule.schedule_id}: trail moved the stop to {stop:.2f} (best mid {best:.2f}): "
            f"portfolio orders show {order.order_id}, then confirm{live}"
        )

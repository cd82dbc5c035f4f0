"""TWAP / VWAP slicer: a parent order worked as child orders over a window.

The parent (one contract, a limit = the worst price accepted, a quantity, a window) is
confirmed ONCE as a whole by a person (``show`` prints the parent's WhatIf and the slice
plan; ``confirm`` with the token records the bounds: max quantity, worst price, valid
until the window's end).  The parent itself is never placed at the broker.  Each slice
is an ordinary order (``proposal_id`` ``slicer:<parent>``) that goes through the normal
road, staged with its own WhatIf and transmitted only after the slicer checked it
against the parent's confirmation (the check is in the child's audit trail, event
``parent_confirmation``): the child's price inside the parent's worst price, the
quantity sent so far inside the parent's quantity, the time inside the window.

Plan: TWAP splits the quantity evenly over ``slices`` intervals; VWAP in proportion to
the underlying's intraday volume profile (the share of a session's volume traded in
each interval, e.g. averaged from past sessions' intraday bars: :func:`vwap_weights`).
Each child is also capped at ``max_participation`` of the volume traded in its interval
(when a volume source is given); what is not sent carries to the next slice.

The slicer stops (status ``stopped``, reason recorded) on a price breach (the market
beyond the parent's limit), a stale quote, a broker error or disconnect (a staged child
the Gateway lost is never re-placed: it becomes STALE), or a cancel; the report gives
the filled quantity, the average fill price and the benchmark (TWAP: the mean of the
mids at the slice times; VWAP: the profile-weighted mean) with the slippage.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import insert, select, update

from portfolio_pipeline.brokers.base import BrokerError
from portfolio_pipeline.domain.errors import IllegalTransitionError, InvalidDataError
from portfolio_pipeline.domain.orders import ConfirmationBounds, Order, OrderStatus
from portfolio_pipeline.domain.positions import Contract, Quote
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar
from portfolio_pipeline.orders.commands import (
    MIN_TOKEN_CHARS,
    OrderCommands,
    ShowResult,
    render_order,
)
from portfolio_pipeline.orders.groups import bounds_from_json, bounds_to_json
from portfolio_pipeline.orders.schedules import MAX_QUOTE_AGE
from portfolio_pipeline.orders.store import OrderStore
from portfolio_pipeline.storage.tables import order_schedules

__all__ = [
    "PARENT_CONFIRMATION",
    "SliceReport",
    "Slicer",
    "VolumeSource",
    "slice_quantities",
    "volume_profile",
    "vwap_weights",
]

logger = logging.getLogger(__name__)

#: ``order_audit.detail["event"]`` of a child checked against its parent's confirmation.
PARENT_CONFIRMATION = "parent_confirmation"
Style = Literal["TWAP", "VWAP"]


class VolumeSource(Protocol):
    """Volume traded in a contract between two times (for the participation cap)."""

    async def traded_volume(self, contract: Contract, start: datetime, end: datetime) -> float: ...


def slice_quantities(total: int, weights: Sequence[float]) -> list[int]:
    """Whole quantities in proportion to ``weights`` summing to ``total`` (largest remainder)."""
    if (
        total < 1
        or not weights
        or any(not math.isfinite(w) or w < 0 for w in weights)
        or sum(weights) <= 0
    ):
        raise InvalidDataError(f"slicer: cannot split {total} by weights {list(weights)}")
    s = float(sum(weights))
    exact = [total * w / s for w in weights]
    out = [math.floor(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: (out[i] - exact[i], i))[: total - sum(out)]:
        out[i] += 1
    return out


def vwap_weights(profile: Sequence[tuple[float, float]], edges: Sequence[float]) -> list[float]:
    """Share of volume in each slice ``[edges[i], edges[i+1])`` from a volume profile.

    ``profile`` is (minute of the session, volume) per intraday bar start (the bar lasting
    until the next one); a bar split by a slice edge is shared pro rata by time.
    """
    if len(edges) < 2:
        raise InvalidDataError("slicer: a VWAP plan needs at least one slice")
    bars = sorted(profile)
    out = []
    for lo, hi in itertools.pairwise(edges):
        total = 0.0
        for j, (start, volume) in enumerate(bars):
            end = (
                bars[j + 1][0]
                if j + 1 < len(bars)
                else start + (start - bars[j - 1][0] if j else 1.0)
            )
            overlap = max(0.0, min(hi, end) - max(lo, start))
            if end > start and overlap > 0:
                total += volume * overlap / (end - start)
        out.append(total)
    if sum(out) <= 0:
        raise InvalidDataError("slicer: the volume profile has no volume in the window")
    return out


def volume_profile(
    bars: Sequence[tuple[datetime, float]], calendar: ExchangeCalendar
) -> list[tuple[float, float]]:
    """The intraday volume profile of past sessions' bars: (minute after the open, mean volume).

    ``bars`` are (bar start, volume) of intraday bars of several sessions (e.g. 30-minute
    bars of the underlying); each bar is placed by its minutes after its session's open
    (half days simply have no late bars) and the volumes are averaged per minute over
    the sessions seen.  The result feeds :func:`vwap_weights`.
    """
    by_minute: dict[float, list[float]] = {}
    sessions: set[date] = set()
    for start, volume in bars:
        day = start.astimezone(NEW_YORK).date()
        if not calendar.is_session(day) or not math.isfinite(volume) or volume < 0:
            continue
        minute = (start - calendar.session_open(day)).total_seconds() / 60
        if minute < 0 or start >= calendar.session_close(day):
            continue
        sessions.add(day)
        by_minute.setdefault(minute, []).append(volume)
    if not sessions:
        raise InvalidDataError(
            "slicer: no intraday bar inside a session to build a volume profile from"
        )
    return [(m, sum(v) / len(sessions)) for m, v in sorted(by_minute.items())]


@dataclass(frozen=True, slots=True)
class SliceReport:
    parent_id: str
    status: str
    reason: str | None
    planned: tuple[int, ...]
    sent: tuple[int, ...]
    filled: float
    average_price: float | None
    benchmark: float | None
    slippage: float | None
    """Average price minus the benchmark, signed so positive = worse for the parent's side."""

    def text(self) -> str:
        lines = [
            f"slicer {self.parent_id}: {self.status}"
            + (f" ({self.reason})" if self.reason else ""),
            f"  planned {list(self.planned)}  sent {list(self.sent)}  filled {self.filled:g}",
        ]
        if (
            self.average_price is not None
            and self.benchmark is not None
            and self.slippage is not None
        ):
            lines.append(
                f"  average price {self.average_price:.4f} vs benchmark {self.benchmark:.4f}: "
                f"slippage {self.slippage:+.4f}"
            )
        return "\n".join(lines)


class Slicer:
    """Plans, confirms and works TWAP/VWAP parents; state in ``order_schedules`` (kind ``slicer``)."""

    def __init__(
        self,
        commands: OrderCommands,
        *,
        token_factory: Callable[[], str] = lambda: secrets.token_hex(8),
        volume: VolumeSource | None = None,
        max_quote_age: timedelta = MAX_QUOTE_AGE,
    ) -> None:
        self._commands = commands
        self._token = token_factory
        self._volume = volume
        self._max_age = max_quote_age

    @property
    def _store(self) -> OrderStore:
        return self._commands.store

    # -------------------------------------------------------------- state

    def _row(self, parent_id: str) -> dict[str, Any]:
        with self._store.db.connect() as conn:
            row = (
                conn.execute(
                    select(order_schedules).where(order_schedules.c.schedule_id == parent_id)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise LookupError(f"no slicer parent {parent_id!r}")
        return dict(row)

    def _save(self, parent_id: str, now: datetime, **values: Any) -> None:
        with self._store.db.begin() as conn:
            conn.execute(
                update(order_schedules)
                .where(order_schedules.c.schedule_id == parent_id)
                .values(updated_at=now, **values)
            )

    def is_parent(self, parent_id: str) -> bool:
        try:
            return bool(self._row(parent_id)["kind"] == "slicer")
        except LookupError:
            return False

    def running(self) -> list[str]:
        """Parents confirmed and being worked."""
        with self._store.db.connect() as conn:
            return [
                str(r[0])
                for r in conn.execute(
                    select(order_schedules.c.schedule_id)
                    .where(
                        order_schedules.c.kind == "slicer", order_schedules.c.status == "running"
                    )
                    .order_by(order_schedules.c.created_at, order_schedules.c.schedule_id)
                )
            ]

    # -------------------------------------------------------------- plan and confirm

    def create(
        self,
        parent: Order,
        *,
        start: datetime,
        end: datetime,
        slices: int,
        style: Style,
        max_participation: float | None = None,
        profile: Sequence[tuple[float, float]] = (),
        calendar: ExchangeCalendar | None = None,
        actor: str,
    ) -> str:
        """Record the parent (PROPOSED, never placed) and its slice plan; returns the parent id."""
        where = f"slicer {parent.order_id}"
        calendar = calendar or ExchangeCalendar()
        if len(parent.legs) != 1 or parent.order_type != "LMT":
            raise InvalidDataError(f"{where}: the parent is a limit order on one contract")
        if not start < end or slices < 1:
            raise InvalidDataError(f"{where}: needs start < end and at least one slice")
        if max_participation is not None and not 0 < max_participation <= 1:
            raise InvalidDataError(
                f"{where}: max_participation must be in (0, 1], got {max_participation}"
            )
        step = (end - start) / slices
        times = [start + step * i for i in range(slices)]
        if style == "VWAP":
            # the profile is by minute after the session's open (volume_profile): so are the edges
            day = start.astimezone(NEW_YORK).date()
            if not calendar.is_session(day):
                raise InvalidDataError(f"{where}: {day} is not an exchange session")
            opened = calendar.session_open(day)
            minute = [(t - opened).total_seconds() / 60 for t in [*times, end]]
            weights = vwap_weights(profile, minute)
        else:
            weights = [1.0] * slices
        planned = slice_quantities(parent.quantity, weights)
        parent = replace(parent, proposal_id=f"slicer:{parent.order_id}", expires_at=end)
        spec = {
            "style": style,
            "times": [t.isoformat() for t in times],
            "end": end.isoformat(),
            "planned": planned,
            "weights": weights,
            "max_participation": max_participation,
            "sent": [],
            "children": [],
            "mids": [],
            "next": 0,
            "carry": 0,
        }
        self._store.insert(parent, actor=actor, detail={"slicer": style, "planned": planned})
        with self._store.db.begin() as conn:
            conn.execute(
                insert(order_schedules).values(
                    {
                        "schedule_id": parent.order_id,
                        "kind": "slicer",
                        "broker": parent.broker,
                        "account_id": parent.account_id,
                        "status": "pending",
                        "run_at": start,
                        "spec": spec,
                        "standing": None,
                        "standing_by": None,
                        "order_id": parent.order_id,
                        "created_at": parent.created_at,
                        "updated_at": parent.created_at,
                        "detail": None,
                    }
                )
            )
        return parent.order_id

    async def show(self, parent_id: str, *, actor: str, now: datetime) -> ShowResult:
        """The parent's WhatIf (never placed) and the slice plan; one token for the whole parent."""
        parent = await asyncio.to_thread(self._store.get, parent_id)
        row = await asyncio.to_thread(self._row, parent_id)
        whatif = await self._commands.broker_for(parent).what_if(parent)
        if parent.status == OrderStatus.PROPOSED:
            staged = parent.transition(
                OrderStatus.STAGED,
                actor=actor,
                at=now,
                whatif=whatif,
                detail="slicer parent: WhatIf only, never placed",
            )
            await asyncio.to_thread(self._store.save, parent, staged)
            parent = staged
        token = self._token()
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError("slicer: confirmation token too short")
        shown = replace(parent, whatif=whatif).show(token=token, actor=actor, at=now)
        spec = row["spec"]
        plan = ", ".join(
            f"{t[11:16]}Z {q}" for t, q in zip(spec["times"], spec["planned"], strict=True)
        )
        text = (
            render_order(shown)
            + f"\n  {spec['style']} over {len(spec['planned'])} slices: {plan}"
            + (
                f"\n  max participation {spec['max_participation']:.0%}"
                if spec["max_participation"]
                else ""
            )
            + f"\n  confirms: at most {parent.quantity} at {parent.limit_price:.2f} or better until {spec['end']}"
        )
        await asyncio.to_thread(self._store.save, parent, shown, detail={"shown": text})
        return ShowResult(order=shown, token=token, text=text)

    async def confirm(self, parent_id: str, token: str, *, actor: str, now: datetime) -> Order:
        """The token confirms the parent as a whole (bounds recorded); nothing is sent yet."""
        parent = await asyncio.to_thread(self._store.get, parent_id)
        confirmed = parent.confirm(token=token, actor=actor, at=now)
        await asyncio.to_thread(
            self._store.save, parent, confirmed, detail={"token": "matched", "slicer": True}
        )
        bounds = ConfirmationBounds.of(parent, valid_until=parent.expires_at)
        await asyncio.to_thread(
            self._save,
            parent_id,
            now,
            status="running",
            standing=bounds_to_json(bounds),
            standing_by=actor,
        )
        return confirmed

    async def cancel(self, parent_id: str, *, actor: str, now: datetime) -> SliceReport:
        """Stop the parent: live children are cancelled at the broker; nothing more is sent."""
        await self._stop(parent_id, now, f"cancelled by {actor}", actor=actor)
        return await self.report(parent_id)

    # -------------------------------------------------------------- working

    async def step(
        self,
        parent_id: str,
        *,
        now: datetime,
        actor: str = "slicer",
        on_staged: Callable[[Order], Awaitable[None]] | None = None,
    ) -> SliceReport:
        """Send every slice due at ``now`` (one child each); stop on a breach, stale quote, error."""
        row = await asyncio.to_thread(self._row, parent_id)
        spec = dict(row["spec"])
        if row["status"] != "running":
            return await self.report(parent_id)
        parent = await asyncio.to_thread(self._store.get, parent_id)
        bounds = bounds_from_json(row["standing"])
        assert bounds is not None and row["standing_by"] is not None
        times = [datetime.fromisoformat(t) for t in spec["times"]]
        broker: Any = self._commands.broker_for(parent)
        contract = parent.legs[0].contract
        side = parent.legs[0].action
        while spec["next"] < len(times) and times[spec["next"]] <= now:
            i = spec["next"]
            try:
                if now >= datetime.fromisoformat(spec["end"]):
                    raise _Stop("window ended")
                (quote,) = await broker.quotes([contract])
                price, mid = self._price(quote, side, parent.limit_price, now)
                wanted = spec["planned"][i] + spec["carry"]
                qty = await self._capped(contract, wanted, times, i, spec)
                spec["mids"].append(mid)
                if qty < 1:
                    spec["carry"], spec["next"] = wanted, i + 1
                    spec["sent"].append(0)
                    continue
                child = await self._send_child(
                    parent,
                    bounds,
                    row["standing_by"],
                    spec,
                    i,
                    qty,
                    price,
                    now=now,
                    actor=actor,
                    on_staged=on_staged,
                )
                spec["children"].append(child.order_id)
                spec["sent"].append(qty)
                spec["carry"], spec["next"] = wanted - qty, i + 1
            except _Stop as stop:
                await asyncio.to_thread(self._save, parent_id, now, spec=spec)
                await self._stop(parent_id, now, str(stop), actor=actor)
                return await self.report(parent_id)
            except (BrokerError, IllegalTransitionError, OSError) as exc:
                await asyncio.to_thread(self._save, parent_id, now, spec=spec)
                await self._stop(parent_id, now, f"broker error or disconnect: {exc}", actor=actor)
                return await self.report(parent_id)
            await asyncio.to_thread(self._save, parent_id, now, spec=spec)
        if spec["next"] >= len(times):
            await asyncio.to_thread(self._save, parent_id, now, spec=spec, status="done")
        return await self.report(parent_id)

    def _price(self, quote: Quote, side: str, limit: float, now: datetime) -> tuple[float, float]:
        """The child's limit (the touch, never beyond the parent's limit) and the mid; _Stop on breach."""
        if now - quote.as_of > self._max_age:
            raise _Stop(f"stale quote for {quote.contract.key} (as of {quote.as_of.isoformat()})")
        if not (quote.bid > 0 and quote.ask >= quote.bid):
            raise _Stop(f"no two-sided quote for {quote.contract.key}")
        mid = (quote.bid + quote.ask) / 2
        touch = quote.ask if side == "BUY" else quote.bid
        if (side == "BUY" and touch > limit) or (side == "SELL" and touch < limit):
            raise _Stop(f"price breach: the market ({touch:g}) is beyond the limit {limit:g}")
        return touch, mid

    async def _capped(
        self, contract: Contract, wanted: int, times: list[datetime], i: int, spec: dict[str, Any]
    ) -> int:
        cap = spec["max_participation"]
        if cap is None or self._volume is None:
            return wanted
        start = (
            times[i - 1]
            if i > 0
            else times[0] - (times[1] - times[0] if len(times) > 1 else timedelta(minutes=1))
        )
        traded = await self._volume.traded_volume(contract, start, times[i])
        return min(wanted, math.floor(float(cap) * traded))

    async def _send_child(
        self,
        parent: Order,
        bounds: ConfirmationBounds,
        by: str,
        spec: dict[str, Any],
        i: int,
        qty: int,
        price: float,
        *,
        now: datetime,
        actor: str,
        on_staged: Callable[[Order], Awaitable[None]] | None,
    ) -> Order:
        child = replace(
            parent,
            order_id=f"{parent.order_id}-{i + 1}",
            quantity=qty,
            limit_price=price,
            created_at=now,
            status=OrderStatus.PROPOSED,
            audit=(),
            whatif=None,
            expires_at=None,
            confirmation_token_hash=None,
            proposal_id=f"slicer-child:{parent.order_id}",
        )
        sent_before = sum(spec["sent"])
        # the parent's confirmation bounds every child: its price, the running total, the window
        violations = bounds.violations(child, at=now) + bounds.violations(
            child, quantity=sent_before + qty, at=now
        )
        if violations:
            raise _Stop(
                "outside the parent's confirmation: " + "; ".join(dict.fromkeys(violations))
            )
        store = self._store
        await asyncio.to_thread(
            store.insert, child, actor=actor, detail={"parent": parent.order_id, "slice": i + 1}
        )
        await self._commands.stage(
            child.order_id, actor=actor, ttl=timedelta(minutes=30), reason="slicer"
        )
        if on_staged is not None:
            await on_staged(child)
        shown = await self._commands.show(child.order_id, actor=actor)
        await asyncio.to_thread(
            store.record_event,
            shown.order,
            actor=actor,
            at=now,
            event=PARENT_CONFIRMATION,
            detail={
                "detail": f"inside the confirmation of parent {parent.order_id} by {by}",
                "parent": parent.order_id,
                "bounds": bounds_to_json(bounds),
                "sent_before": sent_before,
                "quantity": qty,
                "price": price,
            },
        )
        return await self._commands.confirm(child.order_id, shown.token, actor=f"slicer:{by}")

    async def _stop(self, parent_id: str, now: datetime, reason: str, *, actor: str) -> None:
        row = await asyncio.to_thread(self._row, parent_id)
        if row["status"] in ("stopped", "done"):
            return
        for child_id in row["spec"]["children"]:
            child = await asyncio.to_thread(self._store.get, child_id)
            if child.status.is_live_at_broker:
                try:
                    await self._commands.broker_for(child).cancel(child)
                    after = child.transition(
                        OrderStatus.CANCELLED, actor=actor, at=now, detail=f"slicer: {reason}"
                    )
                    await asyncio.to_thread(self._store.save, child, after)
                except Exception as exc:
                    logger.error("slicer child not cancelled child=%s error=%s", child_id, exc)
        await asyncio.to_thread(
            self._save, parent_id, now, status="stopped", detail={"reason": reason}
        )
        logger.warning("slicer stopped parent=%s reason=%s", parent_id, reason)

    # -------------------------------------------------------------- report

    async def report(self, parent_id: str) -> SliceReport:
        row = await asyncio.to_thread(self._row, parent_id)
        spec = row["spec"]
        parent = await asyncio.to_thread(self._store.get, parent_id)
        children = [await asyncio.to_thread(self._store.get, c) for c in spec["children"]]
        refs = {c.broker_order_id for c in children if c.broker_order_id} | {
            c.order_id for c in children
        }
        fills = []
        if children:  # the broker is asked only when something was sent
            since: date = (parent.created_at - timedelta(days=1)).date()
            broker = self._commands.broker_for(parent)
            fills = [
                e for e in await broker.executions(parent.account_id, since) if e.order_ref in refs
            ]
        filled = sum(abs(e.quantity) for e in fills)
        average = sum(abs(e.quantity) * e.price for e in fills) / filled if filled else None
        mids = spec["mids"]
        benchmark = None
        if mids:
            weights = spec["weights"][: len(mids)]
            benchmark = (
                sum(w * m for w, m in zip(weights, mids, strict=True)) / sum(weights)
                if spec["style"] == "VWAP" and sum(weights) > 0
                else sum(mids) / len(mids)
            )
        slippage = None
        if average is not None and benchmark is not None:
            slippage = (
                (average - benchmark) if parent.legs[0].action == "BUY" else (benchmark - average)
            )
        return SliceReport(
            parent_id=parent_id,
            status=row["status"],
            reason=(row["detail"] or {}).get("reason"),
            planned=tuple(spec["planned"]),
            sent=tuple(spec["sent"]),
            filled=filled,
            average_price=average,
            benchmark=benchmark,
            slippage=slippage,
        )


class _Stop(Exception):
    """The slicer must stop (breach, stale quote, window over, outside the confirmation)."""

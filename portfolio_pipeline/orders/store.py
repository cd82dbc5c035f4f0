"""Order persistence over the ``orders`` and ``order_audit`` tables.

Every status change goes through :mod:`portfolio_pipeline.domain.orders` (the one
transition table): callers transition the immutable :class:`Order` and hand the result
to :meth:`OrderStore.save`, which writes it only if the stored status is still the one
the caller started from (optimistic concurrency: two people confirming the same order at
once cannot both succeed) and appends one ``order_audit`` row per new audit entry.

The ``orders.legs`` JSON column holds the legs *and* the order terms (quantity, limit
price, order type, time in force): ``{"legs": [...], "quantity": 2, ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import (
    AuditEntry,
    Order,
    OrderLeg,
    OrderStatus,
    WhatIfResult,
)
from portfolio_pipeline.domain.positions import Contract, contract_from_row
from portfolio_pipeline.storage.engine import Database
from portfolio_pipeline.storage.tables import (
    order_audit,
    order_broker_refs,
    order_group_legs,
    orders,
)
from portfolio_pipeline.storage.writes import dict_rows

__all__ = [
    "ConcurrentUpdateError",
    "OrderNotFoundError",
    "OrderStore",
    "contract_from_json",
    "contract_to_json",
    "whatif_from_json",
    "whatif_to_json",
]

logger = logging.getLogger(__name__)

#: ``order_audit.detail["event"]`` of a refused confirmation (wrong token, locked out).
FAILED_CONFIRMATION = "confirm_failed"


class OrderNotFoundError(LookupError):
    """No order with that id."""


class ConcurrentUpdateError(IllegalTransitionError):
    """The stored order changed since it was read (someone else acted on it)."""


def contract_to_json(c: Contract) -> dict[str, Any]:
    return {
        "underlying": c.underlying,
        "sec_type": c.sec_type,
        "expiry": c.expiry.isoformat() if c.expiry else None,
        "strike": c.strike,
        "right": c.right,
        "trading_class": c.trading_class,
        "currency": c.currency,
        "underlying_expiry": c.underlying_expiry.isoformat() if c.underlying_expiry else None,
    }


def contract_from_json(d: Mapping[str, Any]) -> Contract:
    return contract_from_row(d, source="stored order leg")


def whatif_to_json(w: WhatIfResult | None) -> dict[str, Any] | None:
    if w is None:
        return None
    return {
        "init_margin_change": w.init_margin_change,
        "maint_margin_change": w.maint_margin_change,
        "commission": w.commission,
        "equity_with_loan_after": w.equity_with_loan_after,
        "warnings": list(w.warnings),
    }


def whatif_from_json(d: Mapping[str, Any] | None) -> WhatIfResult | None:
    if d is None:
        return None
    return WhatIfResult(
        init_margin_change=float(d["init_margin_change"]),
        maint_margin_change=float(d["maint_margin_change"]),
        commission=float(d["commission"]),
        equity_with_loan_after=None if d.get("equity_with_loan_after") is None else float(d["equity_with_loan_after"]),
        warnings=tuple(str(x) for x in d.get("warnings", ())),
    )


def _terms(order: Order) -> dict[str, Any]:
    return {
        "legs": [
            {"contract": contract_to_json(leg.contract), "action": leg.action, "ratio": leg.ratio}
            for leg in order.legs
        ],
        "quantity": order.quantity,
        "limit_price": order.limit_price,
        "order_type": order.order_type,
        "time_in_force": order.time_in_force,
        **({"aux_price": order.aux_price} if order.aux_price is not None else {}),
        **({"trailing_percent": order.trailing_percent} if order.trailing_percent is not None else {}),
    }


def _row_values(order: Order, now: datetime) -> dict[str, Any]:
    return {
        orders.c.status.key: order.status.value,
        orders.c.broker.key: order.broker,
        orders.c.account_id.key: order.account_id,
        orders.c.updated_at.key: now,
        orders.c.proposal_id.key: order.proposal_id,
        orders.c.legs.key: _terms(order),
        orders.c.whatif.key: whatif_to_json(order.whatif),
        orders.c.broker_order_id.key: order.broker_order_id,
        orders.c.confirmation_token_hash.key: order.confirmation_token_hash,
        orders.c.expires_at.key: order.expires_at,
    }


def _audit_detail(entry: AuditEntry, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    detail: dict[str, Any] = {"detail": entry.detail}
    if extra:
        detail.update(extra)
    return detail


class OrderStore:
    """Reads and writes orders; status changes only via domain transitions.

    Parameters
    ----------
    db:
        The process's :class:`Database`.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def db(self) -> Database:
        return self._db

    def insert(self, order: Order, *, actor: str, detail: Mapping[str, Any] | None = None) -> None:
        """Record a new order (normally PROPOSED) with a creation audit row."""
        with self._db.begin() as conn:
            self.insert_in(conn, order, actor=actor, detail=detail)
        logger.info("order recorded order_id=%s status=%s actor=%s", order.order_id, order.status.value, actor)

    def insert_in(self, conn: Any, order: Order, *, actor: str, detail: Mapping[str, Any] | None = None) -> None:
        """:meth:`insert` inside the caller's transaction (an order group's legs: all or none)."""
        now = order.created_at
        values = _row_values(order, now)
        values[orders.c.order_id.key] = order.order_id
        values[orders.c.created_at.key] = order.created_at
        conn.execute(insert(orders).values(values))
        conn.execute(
            insert(order_audit).values({
                order_audit.c.order_id.key: order.order_id,
                order_audit.c.ts.key: now,
                order_audit.c.actor.key: actor,
                order_audit.c.from_status.key: None,
                order_audit.c.to_status.key: order.status.value,
                order_audit.c.detail.key: {"detail": "recorded", **(dict(detail) if detail else {})},
            })
        )
        self._write_audit(conn, order, order.audit, detail=None)
        self._write_refs(conn, order, now)

    def record_event(self, order: Order, *, actor: str, at: datetime, event: str, detail: Mapping[str, Any]) -> None:
        """An audit row that is not a status change (``detail["event"]`` names it)."""
        with self._db.begin() as conn:
            conn.execute(insert(order_audit).values({
                order_audit.c.order_id.key: order.order_id,
                order_audit.c.ts.key: at,
                order_audit.c.actor.key: actor,
                order_audit.c.from_status.key: None,
                order_audit.c.to_status.key: order.status.value,
                order_audit.c.detail.key: {"event": event, **dict(detail)},
            }))

    def group_of(self, order_id: str) -> str | None:
        """The order group an order is a leg of (None: a standalone order)."""
        with self._db.connect() as conn:
            row = conn.execute(
                select(order_group_legs.c.group_id).where(order_group_legs.c.order_id == order_id)
            ).first()
        return None if row is None else str(row[0])

    @staticmethod
    def _write_audit(conn: Any, order: Order, entries: Sequence[AuditEntry], detail: Mapping[str, Any] | None) -> None:
        for entry in entries:
            conn.execute(
                insert(order_audit).values({
                    order_audit.c.order_id.key: order.order_id,
                    order_audit.c.ts.key: entry.ts,
                    order_audit.c.actor.key: entry.actor,
                    order_audit.c.from_status.key: entry.from_status.value if entry.from_status else None,
                    order_audit.c.to_status.key: entry.to_status.value,
                    order_audit.c.detail.key: _audit_detail(entry, detail),
                })
            )

    def save(
        self,
        before: Order,
        after: Order,
        *,
        detail: Mapping[str, Any] | None = None,
    ) -> Order:
        """Persist ``after`` (a transition of ``before``) if the row is still in ``before``'s status.

        Raises :class:`ConcurrentUpdateError` when another writer changed it first.
        ``detail`` (e.g. what was shown to the person) goes into the new audit rows.
        """
        if after.order_id != before.order_id:
            raise ValueError("save: before and after are different orders")
        new_entries = after.audit[len(before.audit):]
        now = new_entries[-1].ts if new_entries else after.created_at
        with self._db.begin() as conn:
            result = conn.execute(
                update(orders)
                .where(orders.c.order_id == after.order_id, orders.c.status == before.status.value)
                .values(_row_values(after, now))
            )
            if result.rowcount != 1:
                raise ConcurrentUpdateError(
                    f"order {after.order_id}: status changed by someone else (expected {before.status.value})"
                )
            self._write_audit(conn, after, new_entries, detail)
            if (after.broker_client_id, after.broker_perm_id) != (before.broker_client_id, before.broker_perm_id):
                self._write_refs(conn, after, now)
        logger.info(
            "order saved order_id=%s from=%s to=%s", after.order_id, before.status.value, after.status.value
        )
        return after

    def record_failed_confirmation(self, order: Order, *, actor: str, at: datetime, reason: str) -> int:
        """Append an audit row for a refused confirmation; return the failures since the last 'show'."""
        with self._db.begin() as conn:
            conn.execute(
                insert(order_audit).values({
                    order_audit.c.order_id.key: order.order_id,
                    order_audit.c.ts.key: at,
                    order_audit.c.actor.key: actor,
                    order_audit.c.from_status.key: None,
                    order_audit.c.to_status.key: order.status.value,
                    order_audit.c.detail.key: {"detail": "confirmation refused", "event": FAILED_CONFIRMATION,
                                               "reason": reason},
                })
            )
        return self.failed_confirmations(order.order_id)

    def failed_confirmations(self, order_id: str) -> int:
        """Refused confirmations of the order since its latest 'show' (a fresh token)."""
        count = 0
        for row in reversed(self.audit_trail(order_id)):
            if row["from_status"] is not None and row["to_status"] == OrderStatus.SHOWN.value:
                break
            if row["from_status"] is None and (row["detail"] or {}).get("event") == FAILED_CONFIRMATION:
                count += 1
        return count

    @staticmethod
    def _write_refs(conn: Any, order: Order, now: datetime) -> None:
        if order.broker_client_id is None and order.broker_perm_id is None:
            return
        conn.execute(delete(order_broker_refs).where(order_broker_refs.c.order_id == order.order_id))
        conn.execute(insert(order_broker_refs).values({
            order_broker_refs.c.order_id.key: order.order_id,
            order_broker_refs.c.client_id.key: order.broker_client_id,
            order_broker_refs.c.perm_id.key: order.broker_perm_id,
            order_broker_refs.c.updated_at.key: now,
        }))

    @staticmethod
    def _refs(conn: Any, order_id: str) -> tuple[int | None, int | None]:
        row = conn.execute(
            select(order_broker_refs.c.client_id, order_broker_refs.c.perm_id)
            .where(order_broker_refs.c.order_id == order_id)
        ).first()
        if row is None:
            return None, None
        return (None if row[0] is None else int(row[0])), (None if row[1] is None else int(row[1]))

    def get(self, order_id: str) -> Order:
        with self._db.connect() as conn:
            row = conn.execute(select(orders).where(orders.c.order_id == order_id)).mappings().first()
            if row is None:
                raise OrderNotFoundError(f"no order {order_id!r}")
            audit = self._audit_rows(conn, order_id)
            refs = self._refs(conn, order_id)
        return self._order(row, audit, refs)

    def list_orders(self, statuses: Sequence[OrderStatus] | None = None, *, limit: int = 200) -> list[Order]:
        stmt = select(orders)
        if statuses:
            stmt = stmt.where(orders.c.status.in_([s.value for s in statuses]))
        stmt = stmt.order_by(orders.c.created_at.desc(), orders.c.order_id).limit(limit)
        with self._db.connect() as conn:
            rows = list(conn.execute(stmt).mappings())
            return [
                self._order(r, self._audit_rows(conn, r["order_id"]), self._refs(conn, r["order_id"])) for r in rows
            ]

    def by_proposal(self, proposal_id: str) -> list[Order]:
        with self._db.connect() as conn:
            rows = list(conn.execute(
                select(orders).where(orders.c.proposal_id == proposal_id).order_by(orders.c.order_id)
            ).mappings())
            return [
                self._order(r, self._audit_rows(conn, r["order_id"]), self._refs(conn, r["order_id"])) for r in rows
            ]

    def open_for_proposal_key(
        self, key: str, account_id: str, statuses: Sequence[OrderStatus]
    ) -> list[Order]:
        """Orders of ``account_id`` in ``statuses`` whose proposal id starts with ``key``."""
        escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._db.connect() as conn:
            rows = list(conn.execute(
                select(orders).where(
                    orders.c.proposal_id.like(escaped + "%", escape="\\"),
                    orders.c.account_id == account_id,
                    orders.c.status.in_([s.value for s in statuses]),
                ).order_by(orders.c.created_at.desc(), orders.c.order_id)
            ).mappings())
            return [
                self._order(r, self._audit_rows(conn, r["order_id"]), self._refs(conn, r["order_id"])) for r in rows
            ]

    def count(self, statuses: Sequence[OrderStatus]) -> int:
        with self._db.connect() as conn:
            return int(conn.execute(
                select(func.count()).select_from(orders).where(orders.c.status.in_([s.value for s in statuses]))
            ).scalar_one())

    def audit_trail(self, order_id: str) -> list[dict[str, Any]]:
        """Every audit row of the order (ts, actor, from, to, detail), oldest first."""
        with self._db.connect() as conn:
            return dict_rows(conn.execute(
                select(order_audit).where(order_audit.c.order_id == order_id).order_by(order_audit.c.id)
            ))

    @staticmethod
    def _audit_rows(conn: Any, order_id: str) -> tuple[AuditEntry, ...]:
        rows = conn.execute(
            select(order_audit).where(order_audit.c.order_id == order_id).order_by(order_audit.c.id)
        ).mappings()
        out: list[AuditEntry] = []
        for r in rows:
            if r["from_status"] is None:
                continue  # the "recorded" row is not a transition
            out.append(AuditEntry(
                ts=r["ts"], actor=r["actor"], from_status=OrderStatus(r["from_status"]),
                to_status=OrderStatus(r["to_status"]), detail=str((r["detail"] or {}).get("detail", "")),
            ))
        return tuple(out)

    @staticmethod
    def _order(row: Any, audit: tuple[AuditEntry, ...], refs: tuple[int | None, int | None] = (None, None)) -> Order:
        terms = row["legs"]
        legs = tuple(
            OrderLeg(contract=contract_from_json(leg["contract"]), action=leg["action"], ratio=int(leg["ratio"]))
            for leg in terms["legs"]
        )
        return Order(
            order_id=row["order_id"],
            broker=row["broker"],
            account_id=row["account_id"],
            legs=legs,
            quantity=int(terms["quantity"]),
            limit_price=float(terms["limit_price"]),
            created_at=row["created_at"],
            status=OrderStatus(row["status"]),
            order_type=terms.get("order_type", "LMT"),
            time_in_force=terms.get("time_in_force", "DAY"),
            aux_price=None if terms.get("aux_price") is None else float(terms["aux_price"]),
            trailing_percent=None if terms.get("trailing_percent") is None else float(terms["trailing_percent"]),
            proposal_id=row["proposal_id"],
            whatif=whatif_from_json(row["whatif"]),
            broker_order_id=row["broker_order_id"],
            broker_client_id=refs[0],
            broker_perm_id=refs[1],
            confirmation_token_hash=row["confirmation_token_hash"],
            expires_at=row["expires_at"],
            audit=audit,
        )

"""The SQL side of trade history import: :class:`SqlHistoryStore` implements
:class:`~portfolio_pipeline.brokers.history.store.HistoryStore` on the platform tables.

Storing an :class:`ImportBatch` is one transaction, insert-only, idempotent:

- A file whose sha256 was imported before changes nothing (``already_imported``).
- Rows are inserted with ``INSERT ... ON CONFLICT (primary key) DO NOTHING`` (the
  PostgreSQL and SQLite dialect constructs), so rows already stored, e.g. from an
  overlapping export, are kept as they are and not counted as new.  A stored row is
  never updated: the first import of an id wins.
- A batch that adds no row leaves no ``import_batches`` row either: a re-import
  changes nothing.
- Everything happens in one transaction; on any error nothing is written.

Column names come from the table metadata only; values are bound parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, Table, delete, select, update

from portfolio_pipeline.brokers.history.model import ImportBatch, ImportSummary
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.positions import contract_from_row
from portfolio_pipeline.storage.engine import Database
from portfolio_pipeline.storage.insert_ignore import insert_ignore
from portfolio_pipeline.storage.tables import cash_flows, executions, import_batches

__all__ = ["SqlHistoryStore", "import_history", "imported_batch_id", "load_cash_flows", "load_executions"]

logger = logging.getLogger(__name__)


def _row(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = [name for name in values if name not in table.c]
    if unknown:
        raise ValueError(f"unknown column {unknown[0]!r} for table {table.name!r}")
    return {table.c[name].key: value for name, value in values.items()}


def _execution_row(ex: Execution, batch_id: int) -> dict[str, Any]:
    c = ex.contract
    return _row(
        executions,
        {
            "broker": ex.broker,
            "account_id": ex.account_id,
            "exec_id": ex.exec_id,
            "contract_key": c.key,
            "underlying": c.underlying,
            "sec_type": c.sec_type,
            "expiry": c.expiry,
            "strike": c.strike,
            "right": c.right,
            "trading_class": c.trading_class,
            "currency": c.currency,
            "underlying_expiry": c.underlying_expiry,
            "ts": ex.ts,
            "quantity": ex.quantity,
            "price": ex.price,
            "multiplier": ex.multiplier,
            "commission": ex.commission,
            "fees": ex.fees,
            "kind": ex.kind,
            "order_ref": ex.order_ref,
            "import_batch": batch_id,
        },
    )


def _cash_flow_row(cf: CashFlow, batch_id: int) -> dict[str, Any]:
    return _row(
        cash_flows,
        {
            "broker": cf.broker,
            "account_id": cf.account_id,
            "flow_id": cf.flow_id,
            "ts": cf.ts,
            "kind": cf.kind,
            "amount": cf.amount,
            "currency": cf.currency,
            "description": cf.description,
            "import_batch": batch_id,
        },
    )


def _stored_aliases(conn: Connection, id_column: Any, table: Table, aliases: Mapping[str, str],
                    keys: Sequence[tuple[str, str, str]]) -> set[str]:
    """Ids (of ``keys``: broker, account, id) whose row was stored under its alias (an
    older parser's id for the same row), looked up in chunks."""
    wanted: dict[tuple[str, str], dict[str, str]] = {}
    for broker, account, row_id in keys:
        alias = aliases.get(row_id)
        if alias is not None and alias != row_id:
            wanted.setdefault((broker, account), {})[alias] = row_id
    known: set[str] = set()
    for (broker, account), by_alias in wanted.items():
        names = list(by_alias)
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            found = conn.execute(select(id_column).where(
                table.c.broker == broker, table.c.account_id == account, id_column.in_(chunk)
            )).scalars()
            known.update(by_alias[alias] for alias in found)
    return known


def _insert_new(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert ``rows``, skipping primary keys already stored; the number inserted."""
    return len(insert_ignore(conn, table, rows))


def imported_batch_id(database: Database, sha256: str) -> int | None:
    """The import batch that stored a file with this content hash, if any.

    Lets a caller skip an identical file before parsing it (a known 100k-row export is
    not re-parsed).
    """
    with database.connect() as conn:
        found = conn.execute(
            select(import_batches.c.id).where(import_batches.c.sha256 == sha256)
        ).scalar_one_or_none()
    return None if found is None else int(found)


def import_history(database: Database, batch: ImportBatch) -> ImportSummary:
    """Store ``batch`` in one transaction; re-imports change nothing and report 0 new rows."""
    with database.begin() as conn:
        existing = conn.execute(
            select(import_batches.c.id).where(import_batches.c.sha256 == batch.sha256)
        ).scalar_one_or_none()
        if existing is not None:
            logger.info(
                "history file already imported file=%s batch_id=%s", batch.source_name, existing
            )
            return ImportSummary(
                source_name=batch.source_name,
                sha256=batch.sha256,
                batch_id=None,
                executions_in_file=len(batch.executions),
                cash_flows_in_file=len(batch.cash_flows),
                executions_new=0,
                cash_flows_new=0,
                already_imported=True,
            )
        batch_id = conn.execute(
            import_batches.insert()
            .values(
                _row(
                    import_batches,
                    {
                        "broker": batch.broker,
                        "source_name": batch.source_name[:255],
                        "sha256": batch.sha256,
                        "imported_at": datetime.now(UTC),
                        "executions_in_file": len(batch.executions),
                        "cash_flows_in_file": len(batch.cash_flows),
                        "executions_new": 0,
                        "cash_flows_new": 0,
                    },
                )
            )
            .returning(import_batches.c.id)
        ).scalar_one()
        known_execs = _stored_aliases(conn, executions.c.exec_id, executions, batch.aliases,
                                      [(ex.broker, ex.account_id, ex.exec_id) for ex in batch.executions])
        known_flows = _stored_aliases(conn, cash_flows.c.flow_id, cash_flows, batch.aliases,
                                      [(cf.broker, cf.account_id, cf.flow_id) for cf in batch.cash_flows])
        exec_new = _insert_new(conn, executions, [
            _execution_row(ex, batch_id) for ex in batch.executions if ex.exec_id not in known_execs
        ])
        flows_new = _insert_new(conn, cash_flows, [
            _cash_flow_row(cf, batch_id) for cf in batch.cash_flows if cf.flow_id not in known_flows
        ])
        where = import_batches.c.id == batch_id
        if exec_new + flows_new == 0:
            conn.execute(delete(import_batches).where(where))
            stored_id: int | None = None
        else:
            conn.execute(
                update(import_batches)
                .where(where)
                .values(
                    _row(import_batches, {"executions_new": exec_new, "cash_flows_new": flows_new})
                )
            )
            stored_id = int(batch_id)
    summary = ImportSummary(
        source_name=batch.source_name,
        sha256=batch.sha256,
        batch_id=stored_id,
        executions_in_file=len(batch.executions),
        cash_flows_in_file=len(batch.cash_flows),
        executions_new=exec_new,
        cash_flows_new=flows_new,
        already_imported=False,
    )
    logger.info(
        "history imported file=%s batch_id=%s executions_new=%s cash_flows_new=%s",
        batch.source_name,
        stored_id,
        exec_new,
        flows_new,
    )
    return summary


def _filters(table: Table, broker: str | None, account_id: str | None) -> Iterable[Any]:
    if broker is not None:
        yield table.c.broker == broker
    if account_id is not None:
        yield table.c.account_id == account_id


def _stored_rows(
    database: Database, table: Table, key: str, broker: str | None, account_id: str | None
) -> Sequence[RowMapping]:
    """Rows of ``table`` (optionally of one broker/account) in ``(ts, key)`` order."""
    query = select(table).where(*_filters(table, broker, account_id)).order_by(table.c.ts, table.c[key])
    with database.connect() as conn:
        return conn.execute(query).mappings().all()


def load_executions(
    database: Database, *, broker: str | None = None, account_id: str | None = None
) -> list[Execution]:
    """Stored executions (optionally of one broker/account), in time order."""
    rows = _stored_rows(database, executions, "exec_id", broker, account_id)
    return [
        Execution(
            broker=r["broker"],
            account_id=r["account_id"],
            exec_id=r["exec_id"],
            contract=contract_from_row(r, source=f"executions {r['exec_id']}"),
            ts=r["ts"],
            quantity=r["quantity"],
            price=r["price"],
            multiplier=r["multiplier"],
            commission=r["commission"],
            fees=r["fees"],
            kind=r["kind"],
            order_ref=r["order_ref"],
        )
        for r in rows
    ]


def load_cash_flows(
    database: Database, *, broker: str | None = None, account_id: str | None = None
) -> list[CashFlow]:
    """Stored cash flows (optionally of one broker/account), in time order."""
    rows = _stored_rows(database, cash_flows, "flow_id", broker, account_id)
    return [
        CashFlow(
            broker=r["broker"],
            account_id=r["account_id"],
            flow_id=r["flow_id"],
            ts=r["ts"],
            kind=r["kind"],
            amount=r["amount"],
            currency=r["currency"],
            description=r["description"],
        )
        for r in rows
    ]


class SqlHistoryStore:
    """:class:`~portfolio_pipeline.brokers.history.store.HistoryStore` on ``database``
    (the ``import_batches``, ``executions`` and ``cash_flows`` tables)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def __repr__(self) -> str:
        return f"SqlHistoryStore({self._database!r})"

    def imported_batch_id(self, sha256: str) -> int | None:
        return imported_batch_id(self._database, sha256)

    def import_history(self, batch: ImportBatch) -> ImportSummary:
        return import_history(self._database, batch)

    def load_executions(self, *, broker: str | None = None, account_id: str | None = None) -> list[Execution]:
        return load_executions(self._database, broker=broker, account_id=account_id)

    def load_cash_flows(self, *, broker: str | None = None, account_id: str | None = None) -> list[CashFlow]:
        return load_cash_flows(self._database, broker=broker, account_id=account_id)

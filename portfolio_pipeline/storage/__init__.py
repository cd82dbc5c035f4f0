"""Storage: SQLAlchemy Core tables, the one URL builder and engine, idempotent writes, events.

Typical use by a process owner (Dagster resource, streaming service, CLI)::

    db = Database()          # PORTFOLIO_DB_URL or <PORTFOLIO_HOME>/portfolio.db
    db.migrate()
    with db.begin() as conn:
        replace_partition(conn, positions_snapshot, {"session_date": day}, rows)
        event_id = append_event(conn, event_key=..., kind=..., severity=..., ts=..., payload=...)
        notify(conn, EVENTS_CHANNEL, str(event_id))
"""

from portfolio_pipeline.storage.engine import (
    DB_URL_ENV,
    Database,
    dagster_postgres_url,
    database_url,
    libpq_conninfo,
    normalise_url,
)
from portfolio_pipeline.storage.events import (
    EVENTS_CHANNEL,
    StoredEvent,
    append_event,
    events_since,
    notify,
)
from portfolio_pipeline.storage.tables import (
    SEC_TYPES,
    UtcDateTime,
    account_snapshot,
    events,
    market_snapshot,
    metadata,
    order_audit,
    orders,
    positions_snapshot,
)
from portfolio_pipeline.storage.writes import dict_rows, read_partition, replace_partition

__all__ = [
    "DB_URL_ENV",
    "EVENTS_CHANNEL",
    "SEC_TYPES",
    "Database",
    "StoredEvent",
    "UtcDateTime",
    "account_snapshot",
    "append_event",
    "dagster_postgres_url",
    "database_url",
    "dict_rows",
    "events",
    "events_since",
    "libpq_conninfo",
    "market_snapshot",
    "metadata",
    "normalise_url",
    "notify",
    "order_audit",
    "orders",
    "positions_snapshot",
    "read_partition",
    "replace_partition",
]

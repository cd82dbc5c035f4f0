"""Alembic migrations of the platform schema, run from code (no ``alembic.ini``).

- :func:`upgrade` brings a database to the newest revision; it is what
  :meth:`portfolio_pipeline.storage.engine.Database.migrate` calls, idempotent and safe
  when two processes start together (PostgreSQL advisory lock / SQLite write lock).
- ``python -m portfolio_pipeline.storage.migrations revision -m "add X"`` autogenerates
  the next numbered revision from :data:`portfolio_pipeline.storage.tables.metadata`.

The version table is ``portfolio_alembic_version`` (not alembic's default), and only
tables of our metadata are compared, so Dagster's own tables and alembic history can
share the same PostgreSQL database without either side touching the other's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from portfolio_pipeline.storage.tables import metadata

if TYPE_CHECKING:
    from portfolio_pipeline.storage.engine import Database

__all__ = [
    "MIGRATIONS_DIR",
    "SKIP_EMPTY_AUTOGENERATE",
    "VERSION_TABLE",
    "alembic_config",
    "context_options",
    "current_revision",
    "head_revision",
    "include_name",
    "upgrade",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent
VERSION_TABLE: Final = "portfolio_alembic_version"
SKIP_EMPTY_AUTOGENERATE: Final = "skip_empty_autogenerate"
"""``Config.attributes`` flag: write no revision when autogenerate finds no change."""
_ADVISORY_LOCK_KEY: Final = 0x706F7274_666F6C69  # "portfoli": serialises concurrent migrate()


def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """Autogenerate filter: only our own tables (never Dagster's, never the version table)."""
    if type_ == "table":
        return name in metadata.tables
    return True


def context_options() -> dict[str, Any]:
    """Options for ``MigrationContext.configure`` shared by env.py and the schema tests."""
    return {
        "version_table": VERSION_TABLE,
        "target_metadata": metadata,
        "include_name": include_name,
        "compare_type": True,
        "compare_server_default": False,
        "render_as_batch": True,
    }


def alembic_config(
    *,
    connection: Connection | None = None,
    version_locations: Sequence[Path] = (),
) -> Config:
    """An in-memory alembic ``Config`` pointing at this package.

    ``version_locations`` adds revision folders beside ``versions/`` (tests use it for a
    throwaway second revision).
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.set_main_option("timezone", "UTC")
    locations = [MIGRATIONS_DIR / "versions", *version_locations]
    cfg.set_main_option("version_locations", _join_paths(locations))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _join_paths(paths: Sequence[Path]) -> str:
    return os.pathsep.join(str(p) for p in paths).replace("%", "%%")


def head_revision(version_locations: Sequence[Path] = ()) -> str:
    """The newest revision id in the scripts."""
    script = ScriptDirectory.from_config(alembic_config(version_locations=version_locations))
    head = script.get_current_head()
    if head is None:  # pragma: no cover - versions/ always holds 0001
        raise RuntimeError("no alembic revisions found")
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


def _set_sqlite_foreign_keys(conn: Connection, *, enabled: bool) -> None:
    # PRAGMA foreign_keys is ignored inside a transaction, so it goes straight to the
    # driver connection (autocommit at the driver level, see engine._configure_sqlite).
    dbapi = conn.connection.dbapi_connection
    if dbapi is None:  # pragma: no cover - a checked-out connection always has one
        raise RuntimeError("no DBAPI connection")
    dbapi.execute(f"PRAGMA foreign_keys = {'ON' if enabled else 'OFF'}")


def upgrade(
    db: Database,
    revision: str = "head",
    *,
    version_locations: Sequence[Path] = (),
) -> None:
    """Upgrade ``db`` to ``revision`` in one transaction; a no-op when already there.

    On PostgreSQL a transaction-scoped advisory lock serialises concurrent callers; on
    SQLite the transaction takes the write lock up front, and foreign keys are switched
    off while tables may be rebuilt (batch migrations), then checked.
    """
    with db.engine.connect() as conn:
        is_sqlite = conn.dialect.name == "sqlite"
        if is_sqlite:
            _set_sqlite_foreign_keys(conn, enabled=False)
            conn.execution_options(sqlite_begin="IMMEDIATE")
        try:
            with conn.begin():
                if not is_sqlite:
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
                    )
                before = current_revision(conn)
                cfg = alembic_config(connection=conn, version_locations=version_locations)
                command.upgrade(cfg, revision)
                after = current_revision(conn)
                if is_sqlite:
                    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        raise RuntimeError(
                            f"migration left {len(problems)} foreign key violations, "
                            f"first: {tuple(problems[0])}"
                        )
        finally:
            if is_sqlite:
                _set_sqlite_foreign_keys(conn, enabled=True)
    if before != after:
        logger.info("database migrated url=%s from=%s to=%s", db.url_for_display, before, after)
    else:
        logger.info("database schema current url=%s revision=%s", db.url_for_display, after)

"""The one place that builds database URLs and the one engine a process holds.

``PORTFOLIO_DB_URL`` selects the database; when it is unset the platform uses an
embedded SQLite file, ``<PORTFOLIO_HOME>/portfolio.db``.  Our own tables always talk to
PostgreSQL through psycopg 3 (``postgresql+psycopg://``); Dagster's ``dagster-postgres``
storage gets the same database as a ``postgresql+psycopg2://`` URL from
:func:`dagster_postgres_url`, because SQLAlchemy 2.1 maps a bare ``postgresql://`` to
psycopg 3, which ``dagster-postgres`` does not support.

A :class:`Database` is created once per process by its owner (the Dagster resource, the
streaming service, the CLI) and passed to whoever needs it; this module keeps no cache
of engines.  Passwords never reach logs or reprs: everything displayed goes through
``URL.render_as_string(hide_password=True)``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from portfolio_pipeline.paths import SQLITE_FILENAME, portfolio_home, private_file

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = [
    "DB_URL_ENV",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Database",
    "dagster_postgres_url",
    "database_url",
    "json_dumps",
    "libpq_conninfo",
    "normalise_url",
]

logger = logging.getLogger(__name__)

DB_URL_ENV: Final = "PORTFOLIO_DB_URL"
"""Environment variable holding the database URL (unset = embedded SQLite)."""

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
"""How long a SQLite connection waits for another writer before ``database is locked``."""


_POSTGRES_DRIVER: Final = "postgresql+psycopg"
_DAGSTER_POSTGRES_DRIVER: Final = "postgresql+psycopg2"
_POSTGRES_SCHEMES: Final = frozenset(
    {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}
)
_SQLITE_SCHEMES: Final = frozenset({"sqlite", "sqlite+pysqlite"})
_APPLICATION_NAME: Final = "portfolio_pipeline"


def normalise_url(raw: str | URL, *, source: str = DB_URL_ENV) -> URL:
    """Parse and normalise a database URL for the platform's own tables.

    ``postgresql://``, ``postgres://`` and ``postgresql+psycopg2://`` become
    ``postgresql+psycopg://`` (psycopg 3); ``sqlite://`` stays SQLite.  Anything else
    raises ``ValueError`` naming ``source`` (the variable or argument the URL came
    from).  The error never repeats the URL itself, which may carry a password.
    """
    if isinstance(raw, URL):
        url = raw
    else:
        stripped = raw.strip()
        if not stripped:
            raise ValueError(f"{source} is empty; expected a postgresql:// or sqlite:// URL")
        try:
            url = make_url(stripped)
        except ArgumentError as exc:
            raise ValueError(
                f"{source} is not a valid database URL (expected postgresql://user@host/db "
                "or sqlite:///path/to/file.db)"
            ) from exc
    scheme = url.drivername.lower()
    if scheme in _POSTGRES_SCHEMES:
        if not url.database:
            raise ValueError(f"{source} names no database (postgresql://user@host:port/<db>)")
        return url.set(drivername=_POSTGRES_DRIVER)
    if scheme in _SQLITE_SCHEMES:
        return url.set(drivername="sqlite")
    raise ValueError(
        f"{source} has unsupported scheme {url.drivername!r}; use postgresql:// "
        "(psycopg 3 is used) or sqlite:///path"
    )


def _url_from_env(environ: Mapping[str, str] | None) -> URL:
    env = os.environ if environ is None else environ
    raw = env.get(DB_URL_ENV, "").strip()
    if raw:
        return normalise_url(raw, source=DB_URL_ENV)
    path = portfolio_home(env) / SQLITE_FILENAME
    return URL.create("sqlite", database=str(path))


def database_url(environ: Mapping[str, str] | None = None) -> str:
    """The platform database URL, with the password, for ``create_engine``.

    ``PORTFOLIO_DB_URL`` when set (normalised to psycopg 3 for PostgreSQL), else
    ``sqlite:///<PORTFOLIO_HOME>/portfolio.db``.  Do not log the result; log
    :attr:`Database.url_for_display` instead.
    """
    return _url_from_env(environ).render_as_string(hide_password=False)


def dagster_postgres_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The same database as a ``postgresql+psycopg2://`` URL for ``dagster-postgres``.

    None when the platform runs on SQLite (Dagster then uses its own SQLite storage
    under ``DAGSTER_HOME``).
    """
    return _dagster_url(_url_from_env(environ))


def _dagster_url(url: URL) -> str | None:
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername=_DAGSTER_POSTGRES_DRIVER).render_as_string(hide_password=False)


def libpq_conninfo(url: str | URL) -> str:
    """A ``postgresql://`` URI for raw libpq clients (``psycopg.connect``), e.g. LISTEN."""
    parsed = normalise_url(url, source="url")
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("libpq_conninfo needs a PostgreSQL URL, not SQLite")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _is_sqlite_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys and a busy timeout on every connection; real BEGINs.

    The stdlib ``sqlite3`` driver (Python < 3.12) does not emit BEGIN before SELECT or
    DDL; we switch its own transaction handling off and emit BEGIN ourselves, as the
    SQLAlchemy SQLite documentation recommends, so transactions (and rollbacks of DDL
    in migrations) behave as on PostgreSQL.  A connection whose execution options carry
    ``sqlite_begin="IMMEDIATE"`` takes the write lock up front.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_MS)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def json_dumps(value: Any) -> str:
    """The JSON serializer for JSON columns: sorted keys (stable bytes), no NaN/inf."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _build_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        if _is_sqlite_memory(url):
            engine = create_engine(
                url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
                json_serializer=json_dumps,
            )
        else:
            path = Path(str(url.database)).expanduser()
            if not path.exists():
                private_file(path)  # 0600 from the start; SQLite gives its journals the same mode
            engine = create_engine(url, json_serializer=json_dumps)
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"application_name": _APPLICATION_NAME},
        json_serializer=json_dumps,
    )


class Database:
    """The platform database: one engine, created once, owned by one process component.

    Parameters
    ----------
    url:
        A database URL; ``None`` reads ``PORTFOLIO_DB_URL`` (or the SQLite default)
        from ``environ``.
    environ:
        The environment to read when ``url`` is None (default ``os.environ``).

    Examples
    --------
    >>> db = Database("sqlite://")
    >>> db.migrate()
    >>> db.dialect_name
    'sqlite'
    >>> db.dispose()
    """

    def __init__(
        self, url: str | URL | None = None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self._url: URL = _url_from_env(environ) if url is None else normalise_url(url, source="url")
        self._engine: Engine = _build_engine(self._url)
        logger.info("database engine created url=%s", self.url_for_display)

    @property
    def engine(self) -> Engine:
        """The process-wide SQLAlchemy engine (for pandas ``read_sql`` and the like)."""
        return self._engine

    @property
    def url(self) -> URL:
        """The URL object (``str()``/``repr()`` of a ``URL`` hide the password)."""
        return self._url

    @property
    def url_for_display(self) -> str:
        """The URL with the password masked as ``***``; safe for logs and the UI."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect_name(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def dagster_postgres_url(self) -> str | None:
        """This database as a psycopg2 URL for ``dagster-postgres``; None on SQLite."""
        return _dagster_url(self._url)

    def __repr__(self) -> str:
        return f"Database(url={self.url_for_display!r})"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside a transaction: committed on success, rolled back on error.

        On SQLite the transaction takes the write lock up front (``BEGIN IMMEDIATE``): a
        transaction that reads and then writes would otherwise have to upgrade its read
        lock, and in WAL mode SQLite refuses that at once with ``database is locked`` (no
        busy wait) when another connection -- the live monitor, a CLI command, another
        step's process -- committed in between.  Waiting for the lock at the start honours
        the busy timeout instead.  Read-only work uses :meth:`connect`.
        """
        with self._engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def connect(self) -> Connection:
        """A plain connection (``with db.connect() as conn: ...``; commit explicitly)."""
        return self._engine.connect()

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (idempotent; safe to call at start-up)."""
        from portfolio_pipeline.storage.migrations import upgrade

        upgrade(self)

    def replace_partition(
        self,
        table: Table,
        partition: Mapping[str, Any],
        rows: Sequence[Mapping[str, Any]],
    ) -> int:
        """:func:`~portfolio_pipeline.storage.writes.replace_partition` in its own transaction."""
        from portfolio_pipeline.storage.writes import replace_partition

        with self.begin() as conn:
            return replace_partition(conn, table, partition, rows)

    def dispose(self) -> None:
        """Close every pooled connection (call at process shutdown)."""
        self._engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()

"""Shared fixtures: an isolated ``PORTFOLIO_HOME`` and migrated databases on both backends.

- ``portfolio_env``: ``PORTFOLIO_HOME`` set to a temp directory, ``PORTFOLIO_DB_URL`` and
  ``DAGSTER_HOME`` unset (so everything local lands under that directory).
- ``backend``: ``"sqlite"`` / ``"postgres"`` (the latter marked ``postgres``).
- ``db_url``: the URL (with credentials; never print it) of a migrated, empty database
  of that backend; reuse it for anything that builds its own ``Database`` (a Dagster
  resource, the streaming service).
- ``db``: a :class:`~portfolio_pipeline.storage.Database` on ``db_url``.
- ``postgres_database_url``: session-wide throwaway PostgreSQL database
  ``portfolio_test_<pid>_<random>``, dropped at the end of the run.
- ``make_postgres_database``: factory for extra, *unmigrated* throwaway databases
  (migration tests), dropped at the end of the test.

PostgreSQL is expected on 127.0.0.1:5432 with trust auth for ``postgres`` (override with
``PORTFOLIO_TEST_PG_URL``).  When it is down the PostgreSQL tests fail with instructions;
deselect them with ``-m "not postgres"``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from portfolio_pipeline.storage import Database, libpq_conninfo, metadata

PG_SERVER_URL_ENV = "PORTFOLIO_TEST_PG_URL"
DEFAULT_PG_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_START_HINT = (
    "PostgreSQL is not reachable at {where}. Start it with:\n"
    "    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    f"(or point {PG_SERVER_URL_ENV} at a server where the user may CREATE DATABASE; "
    'run only the SQLite tests with -m "not postgres")'
)


def _server_conninfo() -> str:
    return libpq_conninfo(os.environ.get(PG_SERVER_URL_ENV, DEFAULT_PG_SERVER_URL))


def _server_admin() -> psycopg.Connection[tuple[object, ...]]:
    conninfo = _server_conninfo()
    try:
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip()
    where = make_url(conninfo).render_as_string(hide_password=True)
    pytest.fail(PG_START_HINT.format(where=where) + f"\n({reason})", pytrace=False)


def _create_database(name: str) -> str:
    with _server_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(_server_conninfo()).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def _drop_database(name: str) -> None:
    with _server_admin() as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _throwaway_name() -> str:
    return f"portfolio_test_{os.getpid()}_{secrets.token_hex(4)}"


@pytest.fixture
def portfolio_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``PORTFOLIO_HOME`` in a temp dir; ``PORTFOLIO_DB_URL``/``DAGSTER_HOME`` unset."""
    home = tmp_path / "portfolio_home"
    home.mkdir()
    monkeypatch.setenv("PORTFOLIO_HOME", str(home))
    monkeypatch.delenv("PORTFOLIO_DB_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return home


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """One migrated throwaway PostgreSQL database for the whole run (URL with psycopg 3)."""
    name = _throwaway_name()
    url = _create_database(name)
    try:
        db = Database(url)
        try:
            db.migrate()
        finally:
            db.dispose()
        yield url
    finally:
        _drop_database(name)


@pytest.fixture
def make_postgres_database() -> Iterator[Callable[[], str]]:
    """Factory of empty, unmigrated throwaway PostgreSQL databases (dropped after the test)."""
    created: list[str] = []

    def make() -> str:
        name = _throwaway_name()
        url = _create_database(name)
        created.append(name)
        return url

    yield make
    for name in created:
        _drop_database(name)


def _truncate_all(url: str) -> None:
    db = Database(url)
    try:
        names = ", ".join(
            db.engine.dialect.identifier_preparer.quote(t.name) for t in metadata.sorted_tables
        )
        with db.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        db.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test."""
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """URL of a migrated database with empty tables, on ``backend``."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'portfolio.db'}"
        db = Database(url)
        try:
            db.migrate()
        finally:
            db.dispose()
        return url
    url = str(request.getfixturevalue("postgres_database_url"))
    _truncate_all(url)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated :class:`Database` with empty tables (SQLite file or PostgreSQL)."""
    database = Database(db_url)
    try:
        yield database
    finally:
        database.dispose()

"""URL building, password hiding and the engine's per-dialect settings."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import text

from portfolio_pipeline.storage import Database, dagster_postgres_url, database_url, events
from portfolio_pipeline.storage.engine import DB_URL_ENV, libpq_conninfo

SECRET = "s3cr3t-P@ss"  # pragma: allowlist secret (a test's fake)
PG_WITH_PASSWORD = f"postgresql://trader:{SECRET.replace('@', '%40')}@db.example:5432/book"


def test_default_is_sqlite_under_portfolio_home(portfolio_env: Path) -> None:
    assert database_url() == f"sqlite:///{portfolio_env / 'portfolio.db'}"
    assert dagster_postgres_url() is None


def test_explicit_environ_mapping_wins_over_os_environ(portfolio_env: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_home"
    assert database_url({"PORTFOLIO_HOME": str(other)}) == f"sqlite:///{other / 'portfolio.db'}"


@pytest.mark.parametrize(
    ("raw", "ours", "dagster"),
    [
        (
            "postgresql://u@h:5432/d",
            "postgresql+psycopg://u@h:5432/d",
            "postgresql+psycopg2://u@h:5432/d",
        ),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d", "postgresql+psycopg2://u@h/d"),
        (
            "postgresql+psycopg2://u@h/d",
            "postgresql+psycopg://u@h/d",
            "postgresql+psycopg2://u@h/d",
        ),
        (
            "  postgresql://u@h/d?sslmode=verify-full  ",
            "postgresql+psycopg://u@h/d?sslmode=verify-full",
            "postgresql+psycopg2://u@h/d?sslmode=verify-full",
        ),
        ("sqlite:////var/lib/p/portfolio.db", "sqlite:////var/lib/p/portfolio.db", None),
    ],
)
def test_url_normalisation(raw: str, ours: str, dagster: str | None) -> None:
    env = {DB_URL_ENV: raw}
    assert database_url(env) == ours
    assert dagster_postgres_url(env) == dagster


def test_password_is_kept_for_connecting_but_never_displayed() -> None:
    env = {DB_URL_ENV: PG_WITH_PASSWORD}
    assert SECRET.replace("@", "%40") in database_url(env)
    assert SECRET.replace("@", "%40") in (dagster_postgres_url(env) or "")
    db = Database(environ=env)  # no connection is made until first use
    try:
        shown = [db.url_for_display, repr(db), str(db), str(db.url), repr(db.url)]
        for text_ in shown:
            assert SECRET not in text_
            assert "%40" not in text_
            assert "***" in text_
        assert db.url_for_display == "postgresql+psycopg://trader:***@db.example:5432/book"
    finally:
        db.dispose()


def test_creating_a_database_logs_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = Database(PG_WITH_PASSWORD)
    db.dispose()
    assert "db.example" in caplog.text
    assert SECRET not in caplog.text and "%40" not in caplog.text


@pytest.mark.parametrize(
    "raw",
    ["mysql://u@h/d", "mssql+pyodbc://u@h/d", "oracle://u@h/d", "http://example.com", "nonsense"],
)
def test_unknown_scheme_is_rejected_naming_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match=DB_URL_ENV):
        database_url({DB_URL_ENV: raw})


def test_bad_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(ValueError, match=DB_URL_ENV) as info:
        database_url({DB_URL_ENV: f"mysql://u:{SECRET}@h/d"})
    assert SECRET not in str(info.value)


def test_postgres_url_without_database_is_rejected() -> None:
    with pytest.raises(ValueError, match="names no database"):
        database_url({DB_URL_ENV: "postgresql://u@h:5432"})


def test_libpq_conninfo_is_a_plain_postgresql_uri() -> None:
    assert libpq_conninfo("postgresql+psycopg://u:p@h:5/d") == "postgresql://u:p@h:5/d"
    with pytest.raises(ValueError, match="PostgreSQL"):
        libpq_conninfo("sqlite:///x.db")


def test_database_from_environment_uses_portfolio_home(portfolio_env: Path) -> None:
    with Database() as db:
        assert db.dialect_name == "sqlite"
        assert db.dagster_postgres_url is None
        with db.connect() as conn:
            conn.execute(text("SELECT 1"))
    assert (portfolio_env / "portfolio.db").exists()


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    with Database(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'p.db'}") as db:
        for _ in range(2):  # every pooled connection, not only the first
            with db.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_engine_is_created_once_per_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import portfolio_pipeline.storage.engine as engine_module

    calls: list[object] = []
    real = sqlalchemy.create_engine

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "create_engine", counting)
    with Database(f"sqlite:///{tmp_path / 'p.db'}") as db:
        engine = db.engine
        db.migrate()
        db.migrate()
        db.replace_partition(events, {"kind": "x"}, [])
        with db.begin() as conn:
            conn.execute(text("SELECT 1"))
        with db.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert db.engine is engine
    assert len(calls) == 1


def test_begin_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.begin() as conn:
        conn.execute(
            events.insert(),
            {
                "event_key": "k",
                "kind": "breach",
                "severity": "warning",
                "ts": datetime.now(UTC),
                "payload": {},
            },
        )
        raise RuntimeError("boom")
    with db.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar() == 0


def test_postgres_dagster_url_points_at_the_same_database(db: Database, backend: str) -> None:
    if backend == "sqlite":
        assert db.dagster_postgres_url is None
        return
    dagster = db.dagster_postgres_url
    assert dagster is not None and dagster.startswith("postgresql+psycopg2://")
    assert dagster.split("/")[-1] == db.url.database
    assert db.dialect_name == "postgresql"


def test_a_read_then_write_transaction_waits_for_another_writer_on_sqlite(tmp_path: Path) -> None:
    """Two engines on one SQLite file (two processes: the EOD run and the live monitor, or
    two steps).  A transaction that reads, then writes after the other committed, used to
    fail at once with ``database is locked`` (WAL refuses to upgrade a stale read lock and
    does not wait); ``begin()`` now takes the write lock up front, so the other writer
    waits for it and both commits land."""
    import threading

    url = f"sqlite:///{tmp_path / 'p.db'}"

    def row(key: str) -> dict[str, Any]:
        return {"event_key": key, "kind": "breach", "severity": "warning",
                "ts": datetime.now(UTC), "payload": {}}

    with Database(url) as eod, Database(url) as monitor:
        eod.migrate()
        errors: list[BaseException] = []

        def other_writer() -> None:
            try:
                with monitor.begin() as conn:
                    conn.execute(events.insert(), row("monitor"))
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        with eod.begin() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar() == 0  # the read
            writer = threading.Thread(target=other_writer)
            writer.start()
            writer.join(timeout=1.0)  # old code: it commits here; now it waits for this transaction
            conn.execute(events.insert(), row("eod"))  # the write after the read
        writer.join(timeout=30)
        assert not writer.is_alive() and errors == []
        with eod.connect() as conn:
            keys = set(conn.execute(text("SELECT event_key FROM events")).scalars())
        assert keys == {"eod", "monitor"}

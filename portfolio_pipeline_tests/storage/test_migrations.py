"""Migrations: schema equals tables.py, re-runs are no-ops, data survives upgrades."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, inspect, select, text

from portfolio_pipeline.storage import (
    Database,
    metadata,
    order_audit,
    orders,
    positions_snapshot,
    read_partition,
)
from portfolio_pipeline.storage.migrations import (
    VERSION_TABLE,
    context_options,
    current_revision,
    head_revision,
    upgrade,
)
from portfolio_pipeline.storage.migrations.__main__ import next_revision_id
from portfolio_pipeline.storage.tables import NAMING_CONVENTION
from portfolio_pipeline_tests.storage.builders import DAY, position_row, stock_row

NOW = datetime(2018, 2, 5, 21, 0, tzinfo=UTC)

TEST_REVISION = '''
"""Test-only revision: rebuild ``orders`` (a table other rows reference) with a new column."""

import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{down}"
branch_labels = None
depends_on = None


def _recreate() -> str:
    # force SQLite's copy-and-rename path (what most ALTERs need there)
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade() -> None:
    with op.batch_alter_table("orders", recreate=_recreate()) as batch:
        batch.add_column(sa.Column("test_note", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders", recreate=_recreate()) as batch:
        batch.drop_column("test_note")
'''


@pytest.fixture
def empty_db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A database with no tables at all (fresh file / fresh PostgreSQL database)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        url = make()
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()


def _diff(db: Database, target: MetaData = metadata) -> list[object]:
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts=context_options())
        return list(compare_metadata(context, target))


def test_migrated_schema_matches_tables_py(db: Database) -> None:
    assert _diff(db) == []


def test_a_table_without_a_migration_is_detected(db: Database) -> None:
    extended = MetaData(naming_convention=NAMING_CONVENTION)
    for table in metadata.tables.values():
        table.to_metadata(extended)
    Table("var_history", extended, Column("id", Integer, primary_key=True))
    diff = _diff(db, extended)
    assert [(op[0], op[1].name) for op in diff] == [("add_table", "var_history")]  # type: ignore[index]


def test_foreign_tables_in_the_same_database_are_left_alone(empty_db: Database) -> None:
    # Dagster keeps its own tables and its own `alembic_version` in the same database.
    with empty_db.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('dagster_rev_1')"))
        conn.execute(text("CREATE TABLE runs (id INTEGER PRIMARY KEY, body TEXT)"))
    empty_db.migrate()
    assert _diff(empty_db) == []
    with empty_db.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            "dagster_rev_1"
        )
        assert current_revision(conn) == head_revision()
        assert VERSION_TABLE in inspect(conn).get_table_names()


def test_migrate_twice_is_a_noop(db: Database) -> None:
    db.replace_partition(positions_snapshot, {"session_date": DAY}, [position_row("a")])
    with db.connect() as conn:
        before = current_revision(conn)
    db.migrate()
    db.migrate()
    with db.connect() as conn:
        assert current_revision(conn) == before == head_revision()
        assert read_partition(conn, positions_snapshot, {"session_date": DAY}) == [
            position_row("a")
        ]
    assert _diff(db) == []


def test_concurrent_first_migrations_do_not_collide(empty_db: Database) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            empty_db.migrate()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with empty_db.connect() as conn:
        assert current_revision(conn) == head_revision()


def test_data_written_at_an_older_revision_survives_an_upgrade(
    empty_db: Database, tmp_path: Path
) -> None:
    head = head_revision()
    upgrade(empty_db, head)
    with empty_db.begin() as conn:
        conn.execute(
            orders.insert(),
            {
                "order_id": "o1",
                "status": "STAGED",
                "broker": "demo",
                "account_id": "DU123",
                "created_at": NOW,
                "updated_at": NOW,
                "legs": [{"symbol": "SPX", "qty": 1}],
                "whatif": None,
            },
        )
        conn.execute(
            order_audit.insert(),
            {"order_id": "o1", "ts": NOW, "actor": "test", "to_status": "STAGED", "detail": {}},
        )
    rows = [position_row("a"), stock_row("b")]
    empty_db.replace_partition(positions_snapshot, {"session_date": DAY}, rows)

    extra = tmp_path / "extra_versions"
    extra.mkdir()
    (extra / "9999_test_rebuild_orders.py").write_text(
        textwrap.dedent(TEST_REVISION.format(down=head))
    )
    upgrade(empty_db, "heads", version_locations=[extra])

    with empty_db.connect() as conn:
        assert current_revision(conn) == "9999"
        assert read_partition(conn, positions_snapshot, {"session_date": DAY}) == rows
        stored = conn.execute(text("SELECT order_id, test_note FROM orders")).all()
        assert [tuple(r) for r in stored] == [("o1", None)]
        audit = conn.execute(select(order_audit.c.order_id, order_audit.c.ts)).all()
        assert [tuple(r) for r in audit] == [("o1", NOW)]
        legs = conn.execute(select(orders.c.legs, orders.c.whatif)).one()
        assert tuple(legs) == ([{"symbol": "SPX", "qty": 1}], None)
        if empty_db.dialect_name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_next_revision_id_follows_the_head() -> None:
    assert int(next_revision_id()) == int(head_revision()) + 1
    assert len(next_revision_id()) == 4

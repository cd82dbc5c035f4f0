"""``python -m portfolio_pipeline.storage.migrations`` — write and apply schema revisions.

Commands::

    revision -m "add var_history"   autogenerate the next numbered revision from
                                    storage/tables.py (compared against a scratch SQLite
                                    database at head, or --url <scratch database>)
    upgrade                         migrate PORTFOLIO_DB_URL (or --url) to head
    current                         print the revision of PORTFOLIO_DB_URL (or --url)
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from portfolio_pipeline.storage.engine import Database
from portfolio_pipeline.storage.migrations import (
    SKIP_EMPTY_AUTOGENERATE,
    alembic_config,
    current_revision,
    upgrade,
)


def next_revision_id() -> str:
    """The next four-digit revision id (``0002`` after ``0001``)."""
    script = ScriptDirectory.from_config(alembic_config())
    numbers = [int(rev.revision) for rev in script.walk_revisions() if rev.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def _add_ruff_hooks(cfg: Config) -> None:
    """Format new revision files with ruff (when installed) so they pass the linters."""
    if importlib.util.find_spec("ruff") is None:
        return
    cfg.set_section_option("post_write_hooks", "hooks", "ruff_fix, ruff_format")
    for name, options in (
        ("ruff_fix", "check --fix --quiet REVISION_SCRIPT_FILENAME"),
        ("ruff_format", "format --quiet REVISION_SCRIPT_FILENAME"),
    ):
        cfg.set_section_option("post_write_hooks", f"{name}.type", "module")
        cfg.set_section_option("post_write_hooks", f"{name}.module", "ruff")
        cfg.set_section_option("post_write_hooks", f"{name}.options", options)


def _revision(message: str, url: str | None, empty: bool) -> Path | None:
    with tempfile.TemporaryDirectory(prefix="portfolio-autogen-") as scratch:
        db = Database(url if url else f"sqlite:///{Path(scratch) / 'autogen.db'}")
        try:
            upgrade(db)
            with db.engine.connect() as conn:
                cfg = alembic_config(connection=conn)
                cfg.attributes[SKIP_EMPTY_AUTOGENERATE] = not empty
                _add_ruff_hooks(cfg)
                script = command.revision(
                    cfg, message=message, autogenerate=not empty, rev_id=next_revision_id()
                )
        finally:
            db.dispose()
    scripts = script if isinstance(script, list) else [script]
    for item in scripts:
        if item is not None:
            return Path(item.path)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m portfolio_pipeline.storage.migrations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("revision", help="autogenerate the next revision from tables.py")
    rev.add_argument("-m", "--message", required=True, help="what the revision does")
    rev.add_argument("--url", help="scratch database to compare against (default: temp SQLite)")
    rev.add_argument("--empty", action="store_true", help="an empty revision (data migrations)")
    up = sub.add_parser("upgrade", help="migrate the database to head")
    up.add_argument("--url", help="database URL (default: PORTFOLIO_DB_URL / SQLite)")
    cur = sub.add_parser("current", help="print the database's revision")
    cur.add_argument("--url", help="database URL (default: PORTFOLIO_DB_URL / SQLite)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "revision":
        path = _revision(args.message, args.url, args.empty)
        if path is None:
            print("tables.py matches the migrations: no revision written", file=sys.stderr)
            return 1
        print(f"wrote {path}")
        print("review it, run the storage tests, then check it in")
        return 0
    db = Database(args.url) if args.url else Database()
    try:
        if args.command == "upgrade":
            db.migrate()
        with db.connect() as conn:
            print(f"{db.url_for_display}: {current_revision(conn)}")
    finally:
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prepare ``DAGSTER_HOME`` (under ``PORTFOLIO_HOME``) and Dagster's own storage settings.

SQLite by default.  When ``PORTFOLIO_DB_URL`` points at PostgreSQL, Dagster's run,
event and schedule storage go to the same database through ``dagster-postgres``; its
URL (psycopg2 driver) comes from the one URL builder in ``storage.engine`` and reaches
``dagster.yaml`` through the ``DAGSTER_PG_URL`` environment variable.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from portfolio_pipeline.paths import dagster_home, write_private_text
from portfolio_pipeline.storage.engine import dagster_postgres_url

DAGSTER_PG_URL_ENV = "DAGSTER_PG_URL"

_SQLITE_YAML = """\
# Written by `portfolio`: Dagster keeps runs, events and schedules in SQLite here.
telemetry:
  enabled: false
"""

_POSTGRES_YAML = """\
# Written by `portfolio`: Dagster storage in PostgreSQL (URL from DAGSTER_PG_URL).
telemetry:
  enabled: false
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
"""


def prepare_dagster_home(environ: MutableMapping[str, str] | None = None) -> Path:
    """Create ``DAGSTER_HOME`` with a ``dagster.yaml`` and export the variables Dagster reads."""
    env = os.environ if environ is None else environ
    home = dagster_home(env)
    env["DAGSTER_HOME"] = str(home)
    pg_url = dagster_postgres_url(env)
    if pg_url is not None:
        env[DAGSTER_PG_URL_ENV] = pg_url
    text = _POSTGRES_YAML if pg_url is not None else _SQLITE_YAML
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        write_private_text(target, text)
    return home

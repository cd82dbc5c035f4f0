"""``portfolio workers``: local Celery workers for ``PORTFOLIO_EXECUTOR=celery``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import click

from portfolio_pipeline.cli_errors import CliError

logger = logging.getLogger("portfolio")

CELERY_APP = "portfolio_pipeline.defs.celery_app"


def worker_command(queue: str, name: str, loglevel: str) -> list[str]:
    """One Celery worker of the platform: one step at a time in the worker's own process
    (``--pool solo``: killing the worker kills its step, which the broker hands to another
    worker, since steps are acknowledged only once done)."""
    celery = Path(sys.executable).with_name("celery")
    return [
        str(celery),
        "-A",
        CELERY_APP,
        "worker",
        "--pool",
        "solo",
        "--prefetch-multiplier",
        "1",
        "-Q",
        queue,
        "-n",
        f"{name}@%h",
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]


@click.group()
def workers() -> None:
    """Celery workers that run the pipeline's steps (PORTFOLIO_EXECUTOR=celery)."""


@workers.command("start")
@click.option(
    "-n",
    "--count",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes (one step at a time each).",
)
@click.option(
    "--name",
    default=None,
    help="Worker name (name-i@host with -n > 1); unique on the broker. Default: the queue's name.",
)
@click.option(
    "--loglevel",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def workers_start(count: int, name: str | None, loglevel: str) -> None:
    """Start COUNT local workers on PORTFOLIO_CELERY_BROKER / PORTFOLIO_CELERY_QUEUE.

    The workers read the run from Dagster's PostgreSQL storage (PORTFOLIO_DB_URL) and write
    the platform tables there.  SIGTERM (or Ctrl-C) stops them after their current step."""
    from portfolio_pipeline.dagster_home import prepare_dagster_home
    from portfolio_pipeline.defs.execution import EXECUTOR_ENV, execution_settings
    from portfolio_pipeline.storage import Database

    env = dict(os.environ)
    env[EXECUTOR_ENV] = "celery"
    try:
        settings = execution_settings(env)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    assert settings.celery is not None
    with Database() as database:  # an unreachable database fails here, not in the first step
        database.migrate()
    home = prepare_dagster_home(env)  # DAGSTER_HOME and DAGSTER_PG_URL for the workers
    queue = settings.celery.queue
    name = name or queue  # two workers of one name on a broker clash (Celery's control queue)
    click.echo(f"{count} worker(s) on queue {queue!r}, DAGSTER_HOME={home}", err=True)
    if count == 1:  # the worker replaces this process (a supervisor sees Celery itself)
        command = worker_command(queue, name, loglevel)
        os.execve(command[0], command, env)
    children = [
        subprocess.Popen(worker_command(queue, f"{name}-{i + 1}", loglevel), env=env)
        for i in range(count)
    ]

    def _stop(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)  # Celery's warm shutdown: finish the step

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    codes = [child.wait() for child in children]
    failed = [c for c in codes if c not in (0, -signal.SIGTERM)]
    sys.exit(1 if failed else 0)

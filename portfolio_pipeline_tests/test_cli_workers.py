"""``portfolio workers start``: refuses a setup the workers cannot run on, stops on SIGTERM."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.defs.execution import DEFAULT_BROKER


def test_workers_refuse_sqlite_storage_naming_the_variable(portfolio_env: Path) -> None:
    done = CliRunner().invoke(main, ["workers", "start", "-n", "2"])
    assert done.exit_code == 2
    assert (
        "PORTFOLIO_EXECUTOR=celery needs Dagster's run/event storage in PostgreSQL" in done.output
    )


def test_a_bad_executor_setting_stops_a_run_before_it_starts(
    portfolio_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTFOLIO_EXECUTOR", "threads")
    done = CliRunner().invoke(main, ["demo", "--start", "2018-02-05", "--end", "2018-02-05"])
    assert done.exit_code == 2
    assert (
        "PORTFOLIO_EXECUTOR='threads': expected one of in_process, multiprocess, celery"
        in done.output
    )
    monkeypatch.setenv("PORTFOLIO_EXECUTOR", "in_process")
    monkeypatch.setenv("PORTFOLIO_BACKFILL_CHUNK", "0")
    done = CliRunner().invoke(main, ["demo", "--start", "2018-02-05", "--end", "2018-02-05"])
    assert (
        done.exit_code == 2
        and "PORTFOLIO_BACKFILL_CHUNK=0: must be at least 1 session" in done.output
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_start_and_stop_cleanly_on_sigterm(
    tmp_path: Path, make_postgres_database: Callable[[], str]
) -> None:
    queue = f"portfolio-test-{os.getpid()}-{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTFOLIO_", "DAGSTER_"))}
    env.update(
        PORTFOLIO_HOME=str(tmp_path),
        PORTFOLIO_DB_URL=make_postgres_database(),
        PORTFOLIO_CELERY_QUEUE=queue,
    )
    log = tmp_path / "workers.log"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("portfolio")),
            "workers",
            "start",
            "-n",
            "2",
            "--loglevel",
            "INFO",
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while log.read_text().count(" ready.") < 2:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, log.read_text()
        assert log.read_text().count("Warm shutdown") == 2  # each worker was told, and stopped
    finally:
        if proc.poll() is None:
            proc.kill()
        from kombu import Connection

        with Connection(DEFAULT_BROKER) as conn:
            conn.default_channel.queue_delete(queue)

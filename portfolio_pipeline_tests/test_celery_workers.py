"""End to end on Dagster's Celery executor: two workers (separate processes) on the local
RabbitMQ and a throwaway PostgreSQL database run a two-week demo backfill in two chunks of
5 sessions; the platform tables equal, row for row, those of the same window run in one
process as one run, even though one worker is SIGKILLed in the middle of a step (the broker
hands the step to the other one).

Needs RabbitMQ on 127.0.0.1:5672 (guest/guest, or PORTFOLIO_CELERY_BROKER) and PostgreSQL."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from portfolio_pipeline.defs.execution import DEFAULT_BROKER
from portfolio_pipeline.storage import Database, metadata
from portfolio_pipeline.storage.tables import UtcDateTime

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FIRST, LAST = "2018-01-29", "2018-02-09"  # two weeks, 10 sessions (the February 2018 VIX spike)
PORTFOLIO = str(Path(sys.executable).with_name("portfolio"))
WALL_CLOCK_COLUMNS = {"created_at", "fetched_at", "updated_at", "imported_at"}
"""When a row was written (wall clock): differs between any two runs, excluded."""


def _env(tmp_path: Path, name: str, db_url: str, **extra: str) -> dict[str, str]:
    home = tmp_path / name
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PORTFOLIO_", "DAGSTER_")) or k == "PORTFOLIO_TEST_PG_URL"
    }
    env.update(PORTFOLIO_HOME=str(home), PORTFOLIO_DB_URL=db_url, **extra)
    return env


def _rows(url: str) -> dict[str, list[tuple[str, ...]]]:
    """Every platform table, rows as text sorted, without wall-clock and surrogate-key columns."""
    db = Database(url)
    out: dict[str, list[tuple[str, ...]]] = {}
    try:
        with db.connect() as conn:
            for table in metadata.sorted_tables:
                columns = [
                    c
                    for c in table.columns
                    if not (c.name in WALL_CLOCK_COLUMNS and isinstance(c.type, UtcDateTime))
                    and not (c.primary_key and c.autoincrement is True)
                ]
                rows = conn.execute(select(*columns)).all()
                out[table.name] = sorted(tuple(repr(v) for v in row) for row in rows)
    finally:
        db.dispose()
    return out


def _received(log: str) -> list[str]:
    """Ids of the Celery tasks (steps) a worker log says it received, in order."""
    return re.findall(r"execute_plan\[([0-9a-f-]+)\] received", log)


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test only; deleted (with anything left in it) afterwards."""
    name = f"portfolio-test-{os.getpid()}-{secrets.token_hex(4)}"
    yield name
    from kombu import Connection

    with Connection(os.environ.get("PORTFOLIO_CELERY_BROKER") or DEFAULT_BROKER) as conn:
        conn.default_channel.queue_delete(name)


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float, procs: list[Any]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            assert proc.poll() is None, (
                f"{proc.args} exited with {proc.returncode} while waiting for {what}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_celery_workers_match_the_single_process_run_and_survive_a_killed_worker(
    tmp_path: Path,
    make_postgres_database: Callable[[], str],
    queue: str,
) -> None:
    single_url, celery_url = make_postgres_database(), make_postgres_database()
    single = subprocess.run(
        [PORTFOLIO, "demo", "--start", FIRST, "--end", LAST],
        env=_env(tmp_path, "single", single_url),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert single.returncode == 0, single.stdout + single.stderr

    # ... in two runs of at most 5 sessions: chunked on workers == one run in one process
    env = _env(
        tmp_path,
        "celery",
        celery_url,
        PORTFOLIO_EXECUTOR="celery",
        PORTFOLIO_CELERY_QUEUE=queue,
        PORTFOLIO_BACKFILL_CHUNK="5",
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("w1", "w2")}
    workers = {
        name: subprocess.Popen(  # -n 1: the process IS the Celery worker (exec)
            [
                PORTFOLIO,
                "workers",
                "start",
                "-n",
                "1",
                "--name",
                f"{queue}-{name}",
                "--loglevel",
                "INFO",
            ],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for name, log in logs.items()
    }
    demo: subprocess.Popen[str] | None = None
    try:
        _wait_for(
            lambda: all(" ready." in log.read_text() for log in logs.values()),
            "the workers",
            180,
            list(workers.values()),
        )
        demo = subprocess.Popen(
            [PORTFOLIO, "demo", "--start", FIRST, "--end", LAST],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # w1 dies (SIGKILL, no goodbye) while running its second step
        _wait_for(
            lambda: logs["w1"].read_text().count("] received") >= 2,
            "w1's second step",
            900,
            [demo, workers["w1"]],
        )
        workers["w1"].send_signal(signal.SIGKILL)
        workers["w1"].wait(30)
        killed = _received(logs["w1"].read_text())[-1]
        out, _ = demo.communicate(timeout=1800)
        assert demo.returncode == 0, out
    finally:
        for proc in [*workers.values(), *([demo] if demo else [])]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
    w1, w2 = logs["w1"].read_text(), logs["w2"].read_text()
    assert " succeeded in " in w2  # steps ran on the workers, not in the demo's process
    # the step w1 was running when it died was delivered again, to w2, and done there
    assert f"[{killed}] succeeded" not in w1
    assert killed in _received(w2) and f"[{killed}] succeeded" in w2

    expected, got = _rows(single_url), _rows(celery_url)
    for name in (
        "positions_snapshot",
        "market_history",
        "portfolio_returns",
        "monte_carlo_var",
        "stress_shock_grid",
    ):
        assert expected[name], name  # (risk_metrics needs a longer record than two weeks)
    assert got.keys() == expected.keys()
    different = [name for name in expected if got[name] != expected[name]]
    assert different == [], {n: (len(expected[n]), len(got[n])) for n in different}

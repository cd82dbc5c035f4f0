"""Alerts with the real processes: ``portfolio-stream`` (demo replay) and
``dagster-daemon run`` (breach_sensor -> breach_response runs; notification_housekeeping
-> outbox retries) against a throwaway PostgreSQL database, with local fake Telegram and
Slack servers on 127.0.0.1.

The story a trader lives through:

1. The stream has already written breaches (2017-11-14, a calm-regime short-gamma breach) before the daemon first starts:
   no flood, the sensor skips them and says how many.
2. Telegram is down (connection refused) while the 2018-02-05 spike trips the limits:
   Slack gets each alert at once, Telegram's deliveries wait in the outbox.
3. Telegram comes back: the housekeeping sensor delivers each alert there exactly once.
4. The message names the account and broker, gives the metric in % of NLV and VIX to two
   decimals, and its ack command works as printed.

Every process is stopped with SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import select

from portfolio_pipeline.paths import config_dir
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.notifications import delivery_rows, get_alert
from portfolio_pipeline.storage.tables import events
from portfolio_pipeline_tests.notify.conftest import (
    SLACK_PATH,
    TELEGRAM_TOKEN,
    FakeHttp,
    _handler,
    make_config,
)
from portfolio_pipeline_tests.stubs import REPO_ROOT

BIN = Path(sys.executable).parent
TG_PATH = f"/bot{TELEGRAM_TOKEN}/sendMessage"
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
"""


class FakeServer:
    """A fake HTTP server on a fixed loopback port that can go down and come back."""

    def __init__(self) -> None:
        self.fake = FakeHttp(base_url="")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.fake))
        self.port = int(self._server.server_address[1])
        self.fake.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_for(what: str, check: Callable[[], bool], timeout: float, procs: list[subprocess.Popen[bytes]],
             logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, f"{log.name} exited:\n{log.read_text()[-4000:]}"
        if check():
            return
        time.sleep(1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def stream(session: str, env: dict[str, str], log: Path) -> None:
    """One demo session replayed as fast as it goes; the process exits 0 at the close."""
    with process([str(BIN / "portfolio-stream"), "--broker", "demo", "--health-port", "0",
                  "--speed", "100000", "--session", session], env, log) as proc:
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]


def breach_ids(db: Database) -> list[int]:
    with db.connect() as conn:
        return list(conn.execute(select(events.c.id).where(events.c.kind == "limit_breach")
                                 .order_by(events.c.id)).scalars())


def sensor_state(home: Path) -> tuple[str | None, list[str]]:
    """breach_sensor's cursor and tick skip messages, read from the daemon's instance
    (nothing while the daemon is still creating its storage)."""
    if not (home / "schedules").exists():
        return None, []
    try:
        return _sensor_state(home)
    except Exception:  # the daemon is still migrating its SQLite storage
        return None, []


def skipped_housekeeping_since(home: Path, since: float) -> bool:
    """Whether notification_housekeeping has completed a tick after ``since`` (a Unix time)
    that found nothing due (a skip): from then on nothing more is sent."""
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for state in instance.all_instigator_state():
                if state.instigator_name == "notification_housekeeping":
                    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
                    return any(t.timestamp > since and (t.skip_reason or "").startswith("no outbox retry")
                               for t in ticks)
    except Exception:  # the daemon is writing its storage at that moment
        return False
    return False


def _sensor_state(home: Path) -> tuple[str | None, list[str]]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for state in instance.all_instigator_state():
            if state.instigator_name == "breach_sensor":
                ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
                cursor = getattr(state.instigator_data, "cursor", None)
                return cursor, [t.skip_reason for t in ticks if t.skip_reason]
    return None, []


@pytest.fixture
def own_postgres(make_postgres_database: Callable[[], str]) -> Iterator[tuple[Database, str]]:
    """A migrated PostgreSQL database of this test alone (dropped with FORCE afterwards,
    whatever run worker still holds a connection)."""
    url = make_postgres_database()
    database = Database(url)
    database.migrate()
    try:
        yield database, url
    finally:
        database.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_outage_and_recovery_with_the_real_processes(own_postgres: tuple[Database, str], tmp_path: Path) -> None:
    db, db_url = own_postgres
    telegram, slack = FakeServer(), FakeServer()
    telegram.start()
    slack.start()
    cfg_dir = tmp_path / "config"
    shutil.copytree(config_dir(), cfg_dir)
    # the single demo account this test's breach counts and texts are about (the shipped
    # config runs three demo accounts: test_cli_day_accounts / test_book_engine cover them)
    (cfg_dir / "accounts.yaml").write_text(
        "accounts:\n  - {name: demo, broker: demo, account_id: DEMO-001, demo: {seed: 7, book: index}}\n")
    notifications = make_config(
        telegram.fake.base_url,
        routes={"breach": {"channels": ["telegram", "slack"], "quiet_hours": "deliver"},
                "data_quality": {"channels": ["log"]}},
        quiet={"enabled": False},
        retry={"max_attempts": 2, "initial_backoff_seconds": 1, "max_backoff_seconds": 5},
    )
    (cfg_dir / "notifications.yaml").write_text(
        yaml.safe_dump(notifications.model_dump(mode="json")), encoding="utf-8")
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in {"DAGSTER_PG_URL", "PYTEST_CURRENT_TEST"}}
    env.update({
        "DAGSTER_HOME": str(home), "PORTFOLIO_HOME": str(tmp_path / "home"),
        "PORTFOLIO_DB_URL": db_url, "PORTFOLIO_CONFIG_DIR": str(cfg_dir),
        "TEST_TG_TOKEN": TELEGRAM_TOKEN, "TEST_SLACK_URL": slack.fake.base_url + SLACK_PATH,
    })
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        # 1. breaches stored before the daemon's first start (2017-11-14: the calm-regime
        #    short-gamma limit trips on the demo book; no hedge rule, so nothing is proposed
        #    that would hold back the spike's proposals below)
        stream("2017-11-14", env, logs / "stream-1.log")
        backlog = breach_ids(db)
        first_log = logs / "daemon-1.log"
        with process([str(BIN / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
                     env, first_log) as first:
            wait_for("breach_sensor's first tick", lambda: sensor_state(home)[0] is not None,
                     240, [first], [first_log])
            _cursor, skips = sensor_state(home)
            assert backlog, "2017-11-14 trips a limit"
            assert any(s.startswith(f"first start: skipped {len(backlog)} breach event(s)")
                       for s in skips), skips
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=60) is not None

        # 2. Telegram down while the 2018-02-05 spike trips the limits (the daemon is
        #    restarted after the replay, so each breach_response run sees its proposals)
        telegram.stop()
        stream("2018-02-05", env, logs / "stream-2.log")
        new = [i for i in breach_ids(db) if i not in backlog]
        assert new, "the 2018-02-05 spike must trip a limit"
        with db.connect() as conn:
            keys = [f"breach:{k}" for k in conn.execute(
                select(events.c.event_key).where(events.c.id.in_(new)).order_by(events.c.id)).scalars()]
        daemon_log = logs / "daemon-2.log"
        with process([str(BIN / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
                     env, daemon_log) as daemon:

            def statuses() -> dict[tuple[str, str], str]:
                return {(r["alert_key"], r["channel"]): r["status"]
                        for k in keys for r in delivery_rows(db, k)}

            wait_for("Slack deliveries and Telegram in the outbox",
                     lambda: all(statuses().get((k, "slack")) == "delivered"
                                 and statuses().get((k, "telegram")) == "retrying" for k in keys),
                     300, [daemon], [daemon_log])
            assert telegram.fake.requests == []

            # 3. Telegram back on the same port: the outbox delivers once per alert
            telegram.start()
            wait_for("Telegram deliveries after recovery",
                     lambda: all(statuses().get((k, "telegram")) == "delivered" for k in keys),
                     240, [daemon], [daemon_log])
            # one more housekeeping tick that finds nothing due: nothing is sent twice
            recovered = time.time()
            wait_for("a housekeeping tick with nothing due",
                     lambda: skipped_housekeeping_since(home, recovered),
                     240, [daemon], [daemon_log])
            assert len(telegram.fake.accepted(TG_PATH)) == len(keys)
            assert len(slack.fake.accepted(SLACK_PATH)) == len(keys)
            assert all(r["attempts"] >= 3 for k in keys for r in delivery_rows(db, k)
                       if r["channel"] == "telegram")
            # no alert for the skipped backlog
            sent = [r.body["text"] for r in telegram.fake.accepted(TG_PATH)]
            assert not any("2017-11-14" in text for text in sent)

            # 4. the message a trader reads, and its ack command run as printed
            text = next(t for t in sent if t.startswith("Limit breach: beta-weighted delta"))
            assert "account DEMO-001 (demo broker)" in text
            assert re.search(r"beta-weighted delta [+-]\d+\.\d{2}% of NLV", text), text
            assert re.search(r"VIX \d+\.\d{2}\b", text) and not re.search(r"VIX \d+\.\d{3}", text)
            assert re.search(r"2018-02-05 \d\d:\d\d EST", text)
            # every proposal the breach_response run recorded is in its message, with the
            # order commands naming that order
            with db.connect() as conn:
                records = list(conn.execute(select(events.c.payload)
                                            .where(events.c.kind == "breach_response")).scalars())
            proposed = [p["order_id"] for r in records for p in r["proposals"]]
            assert proposed, "the replay proposes hedges for the delta and vega breaches"
            for order_id in proposed:
                assert any(f"to act: portfolio orders show {order_id}, then portfolio orders "
                           f"confirm {order_id} TOKEN" in t for t in sent), order_id
            command = re.search(r"portfolio alerts ack [0-9a-f]{8}", text)
            assert command is not None, text
            ack = subprocess.run([str(BIN / "portfolio"), *command.group(0).split()[1:], "--by", "trader"],
                                 cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert ack.returncode == 0 and "acknowledged" in ack.stdout, ack.stdout + ack.stderr
            acked = [k for k in keys if (a := get_alert(db, k)) is not None and a.acknowledged_by == "trader"]
            assert len(acked) == 1
        assert daemon.returncode is not None
    finally:
        telegram.stop()
        slack.stop()


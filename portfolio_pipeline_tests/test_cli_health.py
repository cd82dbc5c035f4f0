"""``portfolio health``: real databases (SQLite, PostgreSQL), a real ``/health`` server (the
streaming service's own :class:`HealthServer`), Dagster instances with and without daemon
heartbeats (written by Dagster's own daemon), real sockets for the broker checks."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.cli_health import (
    CheckResult,
    Heartbeat,
    check_brokers,
    check_daemon,
    check_database,
    check_stream,
    evaluate_heartbeats,
    overall,
)
from portfolio_pipeline.dagster_home import prepare_dagster_home
from portfolio_pipeline.domain.accounts import AccountConfig, IbkrConnection, TastytradeConnection
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.migrations import head_revision, upgrade
from portfolio_pipeline_tests.stubs import REPO_ROOT
from streaming_service.health import HealthServer

# --- database ---------------------------------------------------------------------------


def _url(backend: str, tmp_path: Path, make_postgres_database: Callable[[], str]) -> str:
    return f"sqlite:///{tmp_path / 'p.db'}" if backend == "sqlite" else make_postgres_database()


def _migrate(url: str, revision: str = "head") -> None:
    with Database(url) as db:
        upgrade(db, revision)


def test_database_at_head_is_ok(backend: str, tmp_path: Path, make_postgres_database: Callable[[], str]) -> None:
    url = _url(backend, tmp_path, make_postgres_database)
    _migrate(url)
    result = check_database({"PORTFOLIO_DB_URL": url}, 5.0)
    assert (result.status, result.data["revision"]) == ("ok", head_revision()), result


def test_database_behind_head_is_degraded(backend: str, tmp_path: Path,
                                          make_postgres_database: Callable[[], str]) -> None:
    url = _url(backend, tmp_path, make_postgres_database)
    _migrate(url, "0001")
    result = check_database({"PORTFOLIO_DB_URL": url}, 5.0)
    assert result.status == "degraded", result
    assert result.data["revision"] == "0001" and result.data["head"] == head_revision() != "0001"
    assert "portfolio db migrate" in result.detail


def test_database_without_schema_fails(backend: str, tmp_path: Path,
                                       make_postgres_database: Callable[[], str]) -> None:
    url = _url(backend, tmp_path, make_postgres_database)
    if backend == "sqlite":  # an empty file
        Database(url).dispose()
        Path(url.removeprefix("sqlite:///")).touch()
    result = check_database({"PORTFOLIO_DB_URL": url}, 5.0)
    assert result.status == "failed" and "no platform schema" in result.detail, result


def test_missing_sqlite_file_fails_without_creating_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = check_database({"PORTFOLIO_HOME": str(home)}, 5.0)
    assert result.status == "failed" and "no database file" in result.detail
    assert not (home / "portfolio.db").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgres_fails_naming_the_variable_and_hiding_the_password() -> None:
    url = f"postgresql://user:hunter2@127.0.0.1:{_closed_port()}/x"  # pragma: allowlist secret
    result = check_database({"PORTFOLIO_DB_URL": url}, 2.0)
    assert result.status == "failed"
    assert "PORTFOLIO_DB_URL" in result.detail and "cannot connect" in result.detail
    assert "hunter2" not in json.dumps(result.data) + result.detail


# --- Dagster daemon ------------------------------------------------------------------------


def test_heartbeat_rules() -> None:
    required = ["BACKFILL", "SCHEDULER", "SENSOR"]
    fresh = {t: Heartbeat(1000.0) for t in required}
    assert evaluate_heartbeats(required, fresh, now=1030.0, max_age_s=60).status == "ok"
    assert evaluate_heartbeats(required, fresh, now=1061.0, max_age_s=60).status == "failed"
    some = {"SENSOR": Heartbeat(1000.0), "BACKFILL": Heartbeat(500.0)}
    partly = evaluate_heartbeats(required, some, now=1010.0, max_age_s=60)
    assert partly.status == "degraded" and "BACKFILL, SCHEDULER" in partly.detail
    erring = {**fresh, "SENSOR": Heartbeat(1000.0, errors=2)}
    assert evaluate_heartbeats(required, erring, now=1010.0, max_age_s=60).status == "degraded"
    assert evaluate_heartbeats(required, {}, now=1010.0, max_age_s=60).status == "failed"
    assert evaluate_heartbeats([], {}, now=1010.0, max_age_s=60).status == "failed"


def test_no_dagster_instance_fails(tmp_path: Path) -> None:
    result = check_daemon({"PORTFOLIO_HOME": str(tmp_path)}, now=time.time(), max_age_s=60)
    assert result.status == "failed" and "no dagster.yaml" in result.detail


def _dagster_env(tmp_path: Path) -> dict[str, str]:
    env = {"PORTFOLIO_HOME": str(tmp_path / "home"), "PORTFOLIO_DB_URL": f"sqlite:///{tmp_path / 'p.db'}"}
    prepare_dagster_home(env)
    return env


def test_instance_without_heartbeat_fails(tmp_path: Path) -> None:
    env = _dagster_env(tmp_path)
    result = check_daemon(env, now=time.time(), max_age_s=300)
    assert result.status == "failed", result
    assert "no heartbeat ever" in result.detail
    assert "SENSOR" in result.data["required"]


def test_one_daemon_heartbeat_is_degraded(tmp_path: Path) -> None:
    """``dagster-daemon debug heartbeat`` writes one SENSOR heartbeat, as a lone daemon would."""
    env = _dagster_env(tmp_path)
    subprocess.run([str(Path(sys.executable).parent / "dagster-daemon"), "debug", "heartbeat"],
                   env={**os.environ, **env}, check=True, capture_output=True, timeout=300)
    result = check_daemon(env, now=time.time(), max_age_s=300)
    assert result.status == "degraded", result
    assert result.data["fresh"] == ["SENSOR"]
    later = check_daemon(env, now=time.time() + 301, max_age_s=300)
    assert later.status == "failed"


@pytest.mark.slow
def test_running_daemon_is_ok(tmp_path: Path) -> None:
    env = _dagster_env(tmp_path)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
        env={**os.environ, **env}, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        result = check_daemon(env, now=time.time(), max_age_s=300)
        while result.status != "ok" and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(2)
            result = check_daemon(env, now=time.time(), max_age_s=300)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert result.status == "ok", result
    assert set(result.data["fresh"]) == set(result.data["required"])


# --- streaming service /health ----------------------------------------------------------------


@pytest.fixture
def health_server() -> Iterator[Callable[[dict[str, Any]], str]]:
    """The streaming service's HealthServer on a free port; the test sets the document."""
    doc: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    server = HealthServer(lambda: dict(doc), lambda: "", 0)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)

    def serve(document: dict[str, Any]) -> str:
        doc.clear()
        doc.update(document)
        return f"http://127.0.0.1:{server.port}/health"

    yield serve
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_stream_ok_and_degraded(health_server: Callable[[dict[str, Any]], str]) -> None:
    url = health_server({"status": "ok", "regime": "calm", "db": "up", "broker_connected": True})
    ok = check_stream(url, 5.0)
    assert (ok.status, ok.data["http_status"]) == ("ok", 200)
    url = health_server({"status": "degraded", "db": "down", "broker_connected": False, "stale_symbols": ["SPX"]})
    degraded = check_stream(url, 5.0)
    assert (degraded.status, degraded.data["http_status"]) == ("degraded", 503)
    assert "db down" in degraded.detail and "broker disconnected" in degraded.detail and "SPX" in degraded.detail


def test_stream_not_listening_fails() -> None:
    result = check_stream(f"http://127.0.0.1:{_closed_port()}/health", 2.0)
    assert result.status == "failed" and "no answer" in result.detail


def test_stream_answering_something_else_fails(health_server: Callable[[dict[str, Any]], str]) -> None:
    url = health_server({"status": "ok"}).replace("/health", "/metrics")  # 200, but not JSON
    result = check_stream(url, 5.0)
    assert result.status == "failed" and "not a health document" in result.detail


# --- brokers ----------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_brokers_demo_ibkr_tastytrade(listener: int) -> None:
    closed = _closed_port()
    accounts = [
        AccountConfig(name="demo", broker="demo", account_id="DEMO-001"),
        AccountConfig(name="ib", broker="ibkr", account_id="U1", ibkr=IbkrConnection(port=listener)),
        AccountConfig(name="tt", broker="tastytrade", account_id="5WX1",
                      tastytrade=TastytradeConnection(client_secret_env="TT_S", refresh_token_env="TT_R")),
    ]
    env = {"TT_S": "s", "TT_R": "r"}
    results = {r.name: r for r in check_brokers(accounts, env, 2.0, tastytrade_endpoint=lambda _: ("127.0.0.1", listener))}
    assert {n: r.status for n, r in results.items()} == {
        "broker:demo": "ok", "broker:ibkr": "ok", "broker:tastytrade": "ok"}
    accounts[1] = AccountConfig(name="ib", broker="ibkr", account_id="U1", ibkr=IbkrConnection(port=closed))
    down = {r.name: r for r in check_brokers(accounts, {"TT_S": "s"}, 2.0,
                                             tastytrade_endpoint=lambda _: ("127.0.0.1", listener))}
    assert down["broker:ibkr"].status == "failed" and f"127.0.0.1:{closed}" in down["broker:ibkr"].detail
    assert down["broker:tastytrade"].status == "failed" and "TT_R" in down["broker:tastytrade"].detail
    assert down["broker:demo"].status == "ok"


# --- the command ------------------------------------------------------------------------------


def test_overall_is_the_worst() -> None:
    assert overall([]) == "ok"
    assert overall([CheckResult("a", "ok", ""), CheckResult("b", "degraded", "")]) == "degraded"
    assert overall([CheckResult("a", "failed", ""), CheckResult("b", "degraded", "")]) == "failed"


def test_command_exit_codes_and_json(portfolio_env: Path, health_server: Callable[[dict[str, Any]], str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _migrate(f"sqlite:///{portfolio_env / 'portfolio.db'}")
    url = health_server({"status": "ok", "regime": "calm"})
    args = ["health", "--skip", "daemon", "--stream-url", url, "--json"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["status"] == "ok"
    assert [c["name"] for c in doc["checks"]] == ["database", "stream", "broker:demo"]
    health_server({"status": "degraded"})
    degraded = CliRunner().invoke(main, args)
    assert degraded.exit_code == 1 and json.loads(degraded.stdout)["status"] == "degraded"
    table = CliRunner().invoke(main, ["health", "--stream-url", url])
    assert table.exit_code == 1  # no Dagster instance under this PORTFOLIO_HOME
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["check", "status", "detail"]
    assert lines[2].split()[:2] == ["daemon", "failed"] and lines[-1].split() == ["overall", "failed"]
    bad = CliRunner().invoke(main, ["health", "--timeout", "nan"])
    assert bad.exit_code == 2

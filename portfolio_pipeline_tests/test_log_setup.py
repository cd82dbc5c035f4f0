"""``PORTFOLIO_LOG_FORMAT=json``: every process writes one JSON object per stderr line.

The CLI, the Dagster code location and ``portfolio-stream`` run as real processes; each
stderr line is parsed with ``json.loads`` and its fields checked.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portfolio_pipeline.log_setup import (
    LOG_FORMAT_ENV,
    LogFormatError,
    configure_code_location_logging,
    configure_logging,
    log_format,
)
from portfolio_pipeline_tests.stubs import REPO_ROOT

PORTFOLIO = [sys.executable, "-c", "from portfolio_pipeline.cli import main; main()"]
STREAM = [sys.executable, "-c", "from streaming_service.main import main; main()"]


def _parse_lines(text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        doc = json.loads(line)  # every line is one JSON object, or the test fails here
        assert isinstance(doc, dict), line
        docs.append(doc)
    return docs


def _assert_record_shape(doc: dict[str, Any]) -> None:
    assert {"timestamp", "level", "logger", "message"} <= doc.keys(), doc
    stamp = datetime.fromisoformat(doc["timestamp"])
    assert stamp.utcoffset() == timedelta(0), doc["timestamp"]  # aware, UTC
    assert abs(datetime.now(UTC) - stamp) < timedelta(hours=1)  # the record's own time, not a constant
    assert doc["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Loggers this module reconfigures are put back as they were."""
    names = ["", "portfolio", "portfolio_pipeline", "streaming_service"]
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    yield
    for n, (handlers, level, propagate) in saved.items():
        target = logging.getLogger(n)
        target.handlers[:] = handlers
        target.setLevel(level)
        target.propagate = propagate


def test_log_format_reads_the_variable_and_names_it_on_a_bad_value() -> None:
    assert log_format({}) == "text"
    assert log_format({}, default="json") == "json"
    assert log_format({LOG_FORMAT_ENV: " JSON "}) == "json"
    assert log_format({LOG_FORMAT_ENV: "text"}, default="json") == "text"
    with pytest.raises(LogFormatError, match=r"PORTFOLIO_LOG_FORMAT: 'yaml' is not a log format"):
        log_format({LOG_FORMAT_ENV: "yaml"})


def test_json_lines_carry_time_level_logger_message_extra_and_exception(restore_logging: None) -> None:
    root = logging.getLogger()
    root.handlers[:] = []  # as in a fresh process
    out = io.StringIO()
    assert configure_logging(logging.INFO, environ={LOG_FORMAT_ENV: "json"}, stream=out) == "json"
    configure_logging(logging.INFO, environ={LOG_FORMAT_ENV: "json"}, stream=out)  # twice: still one handler
    log = logging.getLogger("portfolio_pipeline.test")
    log.info("recorded session=%s", "2018-02-05", extra={"session": "2018-02-05", "rows": 3})
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.exception("failed step=%s", "risk_metrics")
    first, second = _parse_lines(out.getvalue())
    for doc in (first, second):
        _assert_record_shape(doc)
    assert first["message"] == "recorded session=2018-02-05"
    assert (first["level"], first["logger"]) == ("INFO", "portfolio_pipeline.test")
    assert (first["session"], first["rows"]) == ("2018-02-05", 3)
    assert "exception" not in first
    assert second["level"] == "ERROR"
    assert second["message"] == "failed step=risk_metrics"
    assert second["exception"].startswith("Traceback") and "ZeroDivisionError" in second["exception"]


def test_setup_keeps_a_harness_handler_and_adds_none(restore_logging: None) -> None:
    """Like basicConfig: a handler someone else installed on the root stays the only one."""
    theirs = logging.StreamHandler(io.StringIO())
    logging.getLogger().handlers[:] = [theirs]
    configure_logging(logging.WARNING, environ={LOG_FORMAT_ENV: "json"})
    assert logging.getLogger().handlers == [theirs]


def test_code_location_logging_only_when_asked(restore_logging: None) -> None:
    logging.getLogger().handlers[:] = []
    assert configure_code_location_logging({}) is None
    assert configure_code_location_logging({LOG_FORMAT_ENV: "text"}) is None
    assert logging.getLogger("portfolio_pipeline").propagate  # untouched
    out = io.StringIO()
    assert configure_code_location_logging({LOG_FORMAT_ENV: "json"}, stream=out) == "json"
    logging.getLogger("portfolio_pipeline.defs.risk").info("risk step done")
    logging.getLogger("streaming_service.engine").info("engine step done")
    docs = _parse_lines(out.getvalue())
    assert [d["message"] for d in docs] == ["risk step done", "engine step done"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    return {**os.environ, "PORTFOLIO_HOME": str(home), "PORTFOLIO_DB_URL": f"sqlite:///{tmp_path / 'p.db'}",
            **extra}


def test_cli_writes_json_lines_to_stderr(tmp_path: Path) -> None:
    done = subprocess.run([*PORTFOLIO, "-v", "db", "migrate"], env=_env(tmp_path, PORTFOLIO_LOG_FORMAT="json"),
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert "schema up to date" in done.stdout  # the command's own output stays plain text
    docs = _parse_lines(done.stderr)
    assert any(d["message"].startswith("database migrated") for d in docs), docs
    for doc in docs:
        _assert_record_shape(doc)


@pytest.mark.parametrize("command", [[*PORTFOLIO, "db", "migrate"], [*STREAM, "--health-port", "0"]],
                         ids=["portfolio", "portfolio-stream"])
def test_an_unknown_format_is_refused_in_one_line(tmp_path: Path, command: list[str]) -> None:
    done = subprocess.run(command, env=_env(tmp_path, PORTFOLIO_LOG_FORMAT="xml"),
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: PORTFOLIO_LOG_FORMAT: 'xml' is not a log format; expected one of text, json"]


def test_dagster_code_location_writes_json_lines(tmp_path: Path) -> None:
    """Loading the code location (as the webserver, the daemon and run workers do) with json."""
    code = ("import logging, portfolio_pipeline.definitions\n"
            "logging.getLogger('portfolio_pipeline.defs.risk.assets').info('asset step x=%s', 1)\n"
            "logging.getLogger('portfolio_pipeline.defs.risk.assets').debug('not shown')\n")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code],
                          env=_env(tmp_path, PORTFOLIO_LOG_FORMAT="json"),
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    docs = _parse_lines(done.stderr)
    assert [d["message"] for d in docs if d["logger"] == "portfolio_pipeline.defs.risk.assets"] == ["asset step x=1"]
    for doc in docs:
        _assert_record_shape(doc)


@pytest.mark.slow
def test_streaming_service_writes_json_lines_until_it_stops(tmp_path: Path) -> None:
    env = _env(tmp_path, PORTFOLIO_LOG_FORMAT="json")
    proc = subprocess.Popen([*STREAM, "--broker", "demo", "--health-port", "0", "--speed", "600"],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO_ROOT)
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "health endpoint listening" in line:
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(180), "".join(lines[-20:])
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert rc == 0, "".join(lines[-20:])
    docs = _parse_lines("".join(lines))
    assert any(d["logger"] == "streaming_service.health" for d in docs)
    assert any(d["message"].startswith("shutdown requested") for d in docs)
    for doc in docs:
        _assert_record_shape(doc)


def test_run_progress_lines_follow_the_format(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                              restore_logging: None) -> None:
    """``portfolio demo``/``run`` progress (defs/progress.py) is JSON too when asked for."""
    from portfolio_pipeline.cli import _show_progress
    from portfolio_pipeline.defs.progress import PROGRESS_LOGGER

    progress = logging.getLogger(PROGRESS_LOGGER)
    saved = progress.handlers[:], progress.level, progress.propagate
    try:
        monkeypatch.setenv(LOG_FORMAT_ENV, "json")
        _show_progress()
        progress.info("broker_snapshots: session %d/%d", 4, 4)
        (doc,) = _parse_lines(capsys.readouterr().err)
        _assert_record_shape(doc)
        assert (doc["logger"], doc["message"]) == (PROGRESS_LOGGER, "broker_snapshots: session 4/4")
        monkeypatch.setenv(LOG_FORMAT_ENV, "text")
        _show_progress()
        progress.info("broker_snapshots: session %d/%d", 1, 4)
        assert capsys.readouterr().err == "  broker_snapshots: session 1/4\n"
    finally:
        progress.handlers[:], progress.level, progress.propagate = saved

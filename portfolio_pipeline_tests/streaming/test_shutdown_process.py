"""The real `portfolio-stream` process against an IB Gateway that is down (issue 13.5, 13.8).

SIGTERM while the Gateway is down stops the process within 10 s (the issue's bound is
the test's timeout); a wrong port ends the process with one line naming the usual ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from portfolio_pipeline_tests.stubs import CONFIG_DIR

STREAM = [sys.executable, "-c", "from streaming_service.main import main; main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ibkr_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    (config / "accounts.yaml").write_text(
        "accounts:\n  - name: ib\n    broker: ibkr\n    account_id: U1\n"
        f"    ibkr: {{host: 127.0.0.1, port: {_free_port()}, client_id: 17, timeout_seconds: 1}}\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PORTFOLIO_HOME": str(home), "PORTFOLIO_DB_URL": f"sqlite:///{home / 'db.sqlite'}"}
    return env, config


def test_sigterm_stops_the_service_while_the_gateway_is_down(ibkr_env: tuple[dict[str, str], Path]) -> None:
    env, config = ibkr_env
    proc = subprocess.Popen([*STREAM, "--broker", "ibkr", "--health-port", "0", "--config-dir", str(config)],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    retrying = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "feed: starting book failed (attempt" in line:
                retrying.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert retrying.wait(120), "".join(lines[-20:])
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)  # issue 13.5: within 10 s while the Gateway is down
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert rc == 0, "".join(lines[-20:])
    assert any("stopped before the book was loaded" in line for line in lines)
    assert not any("Traceback" in line for line in lines)


def test_wrong_port_is_one_line_naming_the_usual_api_ports(ibkr_env: tuple[dict[str, str], Path]) -> None:
    env, config = ibkr_env
    done = subprocess.run([*STREAM, "--broker", "ibkr", "--health-port", "0", "--config-dir", str(config)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nothing listens on 127.0.0.1" in errors[0]
    assert all(port in errors[0] for port in ("4001", "4002", "7496", "7497"))
    assert "Traceback" not in done.stderr

"""The code location as the Dagster webserver serves it (a real process on loopback)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from portfolio_pipeline_tests.stubs import REPO_ROOT

QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        assetNodes {
          assetKey { path }
          assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
        }
        schedules { name cronSchedule executionTimezone }
        jobs { name }
      }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_webserver_serves_assets_checks_and_schedules(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "PORTFOLIO_HOME": str(tmp_path / "home")}
    env.pop("PORTFOLIO_DB_URL", None)
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(webserver), "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        payload: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "exited"
            try:
                payload = _post(f"{base}/graphql", QUERY)
                nodes = payload["data"]["repositoriesOrError"].get("nodes")
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        [repo] = payload["data"]["repositoriesOrError"]["nodes"]
        assert repo["location"]["name"] == "portfolio_pipeline"
        assets = {"/".join(a["assetKey"]["path"]): a for a in repo["assetNodes"]}
        assert {"positions_snapshot", "account_snapshot", "market_snapshot"} <= set(assets)
        checks = {c["name"]: c["blocking"] for c in assets["positions_snapshot"]["assetChecksOrError"]["checks"]}
        assert checks == {"positions_quality": True}
        schedules = {s["name"]: s for s in repo["schedules"]}
        assert schedules["eod_schedule"]["executionTimezone"] == "America/New_York"
        assert "eod_job" in {j["name"] for j in repo["jobs"]}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None

"""The real `portfolio-stream --broker ibkr` process against the socket Gateway double.

Issue 13.5: /health and /metrics report the broker as disconnected within seconds of the
Gateway going away (it used to say ``broker_connected: true`` for 15 minutes), and SIGTERM
stops the process within 10 s while the Gateway stays down.  The Gateway double speaks the
IB API wire protocol on 127.0.0.1 (:mod:`gateway_server`); the book holds no positions,
so the monitor follows VIX and VIX3M only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from portfolio_pipeline_tests.brokers.ibkr.fake_ib import FakeGateway, MarketScript, ib_index
from portfolio_pipeline_tests.brokers.ibkr.gateway_server import GatewayServer
from portfolio_pipeline_tests.stubs import CONFIG_DIR


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:  # 503 while degraded: the body is still the document
        return exc.code, exc.read().decode()


def _until(predicate: Callable[[], Any], timeout: float) -> Any:
    """Poll ``predicate`` every 0.2 s until it returns a truthy value (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except OSError as exc:  # the health server is not up yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


def test_health_says_disconnected_and_sigterm_stops_while_the_gateway_is_down(tmp_path: Path) -> None:
    gw = FakeGateway(accounts=["U1"])
    gw.add_contract(ib_index(601, "VIX"))
    gw.add_contract(ib_index(602, "VIX3M"))
    gw.market[601] = MarketScript(last=17.31)
    gw.market[602] = MarketScript(last=18.1)
    gw.account_summary += [("U1", tag, value, "USD") for tag, value in (
        ("NetLiquidation", "1000000"), ("TotalCashValue", "1000000"), ("InitMarginReq", "0"),
        ("MaintMarginReq", "0"), ("ExcessLiquidity", "1000000"), ("BuyingPower", "4000000"))]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        health_port = int(s.getsockname()[1])
    health = f"http://127.0.0.1:{health_port}/health"
    with GatewayServer(gw) as server:
        config = tmp_path / "config"
        shutil.copytree(CONFIG_DIR, config)
        (config / "accounts.yaml").write_text(
            "accounts:\n  - name: ib\n    broker: ibkr\n    account_id: U1\n"
            f"    ibkr: {{host: 127.0.0.1, port: {server.port}, client_id: 17, timeout_seconds: 2}}\n"
        )
        (tmp_path / "home").mkdir()
        env = {**os.environ, "PORTFOLIO_HOME": str(tmp_path / "home"),
               "PORTFOLIO_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
        log = (tmp_path / "stream.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-c", "from streaming_service.main import main; main()", "--broker", "ibkr",
             "--health-port", str(health_port), "--config-dir", str(config)],
            env=env, stderr=log, stdout=subprocess.DEVNULL,
        )
        try:
            up = _until(lambda: (doc := json.loads(_get(health)[1]))["broker_connected"] and doc["vix"] and doc, 120)
            assert up["status"] == "ok" and up["vix"] == 17.31
            server.go_down()  # the Gateway goes away and stays away
            down = _until(lambda: (doc := json.loads(_get(health)[1]))["broker_connected"] is False and doc, 10)
            code, metrics = _get(f"http://127.0.0.1:{health_port}/metrics")
            assert down["status"] == "degraded" and _get(health)[0] == 503
            assert code == 200 and "portfolio_stream_broker_connected 0" in metrics
            proc.terminate()  # SIGTERM
            rc = proc.wait(timeout=10)  # issue 13.5: within 10 s while the Gateway is down
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    text = (tmp_path / "stream.log").read_text()
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text

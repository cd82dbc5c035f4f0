"""The code location as the Dagster webserver serves it (a real process on loopback), and
each partition's own numbers as the UI reads them through GraphQL after a demo window."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import (
    margin_history,
    monte_carlo_var,
    portfolio_greeks,
    portfolio_returns,
)
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


@contextmanager
def _webserver(env: dict[str, str]) -> Iterator[str]:
    """A dagster-webserver on a free loopback port with ``env``; yields its GraphQL URL once it serves."""
    port = _free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(webserver), "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "exited"
            try:
                if _post(url, QUERY)["data"]["repositoriesOrError"].get("nodes"):
                    break
            except OSError:
                pass
            time.sleep(1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


MATERIALIZATIONS = """
{
  assetOrError(assetKey: {path: ["%s"]}) {
    ... on Asset {
      assetMaterializations(partitions: [%s]) {
        partition
        metadataEntries {
          label
          ... on IntMetadataEntry { intRepr }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on MarkdownMetadataEntry { mdStr }
          ... on UrlMetadataEntry { url }
        }
      }
    }
  }
}
"""

WINDOW = [date(2018, 2, 1), date(2018, 2, 2), date(2018, 2, 5), date(2018, 2, 6), date(2018, 2, 7)]


def _shown(url: str, asset: str) -> dict[date, dict[str, Any]]:
    """Per partition of WINDOW: the metadata the UI shows for ``asset`` (its latest materialization)."""
    keys = ", ".join(f'"{d.isoformat()}"' for d in WINDOW)
    events = _post(url, MATERIALIZATIONS % (asset, keys))["data"]["assetOrError"]["assetMaterializations"]
    out: dict[date, dict[str, Any]] = {}
    for event in events:  # newest first
        day = date.fromisoformat(event["partition"])
        if day in out:
            continue
        out[day] = {e["label"]: int(e["intRepr"]) if "intRepr" in e else
                    e.get("floatValue", e.get("text", e.get("mdStr", e.get("url"))))
                    for e in event["metadataEntries"]}
    return out


def _book(db_url: str, table: Any, **where: Any) -> dict[date, dict[str, Any]]:
    db = Database(db_url)
    try:
        with db.connect() as conn:
            stmt = select(table).where(table.c.broker == "*", table.c.account_id == "*",
                                       *[table.c[k] == v for k, v in where.items()])
            return {r["session_date"]: dict(r) for r in conn.execute(stmt).mappings()}
    finally:
        db.dispose()


@pytest.mark.slow
def test_each_partition_shows_its_own_sessions_numbers(tmp_path: Path) -> None:
    """After `portfolio demo` over a window (one single-run backfill), the UI's GraphQL gives
    every partition the numbers stored for THAT session (the oracle: the stored rows)."""
    home = tmp_path / "home"
    env = {**os.environ, "PORTFOLIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    env.pop("PORTFOLIO_DB_URL", None)
    portfolio = Path(sys.executable).with_name("portfolio")
    demo = subprocess.run([str(portfolio), "demo", "--start", WINDOW[0].isoformat(), "--end", WINDOW[-1].isoformat()],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    db_url = f"sqlite:///{home / 'portfolio.db'}"
    returns = _book(db_url, portfolio_returns)
    margin = _book(db_url, margin_history)
    greeks = _book(db_url, portfolio_greeks, underlying="*")
    mc = _book(db_url, monte_carlo_var, group_key="*", horizon_days=1)
    assert sorted(returns) == WINDOW
    with _webserver(env) as url:
        shown_returns = _shown(url, "portfolio_returns")
        shown_margin = _shown(url, "margin_history")
        shown_greeks = _shown(url, "portfolio_greeks")
        shown_mc = _shown(url, "monte_carlo_var")
        shown_pack = _shown(url, "risk_pack")
    for day in WINDOW:
        r, m = returns[day], margin[day]
        assert shown_returns[day]["NLV ($)"] == round(r["nlv"]), day
        assert shown_returns[day]["drawdown (%)"] == pytest.approx(round(100 * r["drawdown"], 2)), day
        assert shown_returns[day]["sessions"] == len(WINDOW)  # one run over the whole window
        assert shown_margin[day]["regime"] == m["regime"]
        assert shown_margin[day]["margin utilisation (%)"] == pytest.approx(round(100 * m["margin_utilisation"], 2))
        assert shown_greeks[day]["beta-weighted delta ($)"] == round(greeks[day]["beta_weighted_dollar_delta"])
        assert shown_mc[day]["MC VaR 99% 1d ($)"] == round(mc[day]["var_99"])
        if day != WINDOW[0]:  # the first session's P&L needs the session before the window
            assert shown_returns[day]["day P&L ($)"] == round(r["pnl"]), day
    # the plots over partitions move: the spike (2018-02-05) is not the last session's figure
    assert len({shown_returns[d]["NLV ($)"] for d in WINDOW}) == len(WINDOW)
    assert shown_margin[date(2018, 2, 5)]["regime"] == "crisis" and shown_margin[date(2018, 2, 1)]["regime"] != "crisis"
    # the risk pack: a link the UI can open (served on loopback) and the key tables in markdown
    spike = shown_pack[date(2018, 2, 5)]
    assert spike["risk pack (portfolio report --serve)"] == "http://127.0.0.1:8800/risk_pack_2018-02-05.html"
    assert f"NLV ${round(returns[date(2018, 2, 5)]['nlv']):,}" in spike["headline"]
    assert "**maintenance margin**" in spike["headline"]  # the breached crisis limit, in bold
    assert (home / "reports" / "risk_pack_2018-02-05.html").is_file() and (home / "reports" / "index.html").is_file()

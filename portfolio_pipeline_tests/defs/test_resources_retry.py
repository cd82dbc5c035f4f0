"""Issue 13.7: every attempt of a broker step gets a new connection and event loop.

Two ``asyncio.run`` calls on one PlatformResource (what a retried Dagster step does)
against the IBKR Gateway double: the second one used to die with "... is bound to a
different event loop" because the adapter (and its asyncio objects) was cached.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from ib_async import CommissionReport

from portfolio_pipeline.brokers.ibkr import adapter as ibkr_adapter
from portfolio_pipeline.defs.resources import PlatformResource
from portfolio_pipeline_tests.brokers.ibkr.book import SPX_AM, gateway
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import execution
from portfolio_pipeline_tests.stubs import CONFIG_DIR


def test_a_retry_gets_a_new_connection_and_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = gateway()
    gw.executions.append((SPX_AM, execution("E1", "U1", "SLD", 1, 12.0), CommissionReport(execId="E1", commission=1.1)))
    monkeypatch.setattr(ibkr_adapter, "_default_ib", gw.make_ib)
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    (config / "accounts.yaml").write_text(
        "accounts:\n  - name: ib\n    broker: ibkr\n    account_id: U1\n"
        "    ibkr: {port: 4002, client_id: 17, timeout_seconds: 1}\n"
    )
    platform = PlatformResource(config_dir=str(config))
    first = platform.activity(date(2018, 1, 1), date(2018, 2, 2))  # attempt 1 (its own event loop)
    second = platform.activity(date(2018, 1, 1), date(2018, 2, 2))  # attempt 2: a new loop
    assert [e.exec_id for e in first[1]] == [e.exec_id for e in second[1]] == ["E1"]
    assert len(gw.clients) == 2  # one connection per attempt
    assert gw.connect_attempts == [17, 17]

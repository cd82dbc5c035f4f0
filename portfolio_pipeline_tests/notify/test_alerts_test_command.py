"""`portfolio alerts test [--channel NAME]`: a test message through each configured channel,
one outcome per channel, against local servers on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline_tests.notify.conftest import ALL_TYPES, SLACK_PATH, FakeHttp
from portfolio_pipeline_tests.stubs import CONFIG_DIR

NOTIFY = """
channels:
  log: {type: log}
  slack: {type: slack, webhook_url_env: TEST_SLACK_URL}
  telegram: {type: telegram, bot_token_env: TEST_TG_TOKEN, chat_id: "42", api_base_url: "BASE"}
  pager: {type: slack, webhook_url_env: TEST_PAGER_URL}
routes:
""" + "".join(f"  {t}: {{channels: [log]}}\n" for t in ALL_TYPES)


def test_alerts_test_sends_through_each_channel(fake_http: FakeHttp, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    (config / "notifications.yaml").write_text(NOTIFY.replace("BASE", fake_http.base_url))
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(config))
    monkeypatch.setenv("TEST_SLACK_URL", fake_http.slack_url)
    monkeypatch.setenv("TEST_TG_TOKEN", "123456:SECRET-telegram-token")
    monkeypatch.delenv("TEST_PAGER_URL", raising=False)
    fake_http.script("/bot", (401, {"ok": False, "description": "Unauthorized"}, {}))
    runner = CliRunner()
    result = runner.invoke(main, ["alerts", "test"])
    lines = result.output.splitlines()
    assert lines[0].split() == ["log", "delivered"]
    assert lines[1].split() == ["slack", "delivered"]
    assert lines[2].startswith("telegram") and "FAILED" in lines[2]
    assert lines[3].startswith("pager") and "FAILED" in lines[3] and "TEST_PAGER_URL" in lines[3]
    assert "SECRET" not in result.output
    assert result.exit_code == 1 and lines[-1] == "error: 2 of 4 channel(s) did not deliver"
    [slack] = fake_http.accepted(SLACK_PATH)
    assert "portfolio: test message" in str(slack.body)

    one = runner.invoke(main, ["alerts", "test", "--channel", "slack"])
    assert one.exit_code == 0 and one.output.split() == ["slack", "delivered"]
    assert len(fake_http.accepted(SLACK_PATH)) == 2
    unknown = runner.invoke(main, ["alerts", "test", "--channel", "sms"])
    assert unknown.exit_code == 2 and "error: --channel 'sms': not configured" in unknown.output
    assert "configured: log, slack, telegram, pager" in unknown.output

"""`portfolio alerts list` and `portfolio alerts ack ID`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.defs.notifications.resources import log_only_config
from portfolio_pipeline.notify import Alert, AlertType, Notifier
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.notifications import SqlNotificationStore


def test_list_and_ack(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    runner = CliRunner()
    assert runner.invoke(main, ["alerts", "list"]).output.strip() == "no alerts"
    Notifier(SqlNotificationStore(db), log_only_config()).dispatch(
        Alert(key="breach:2018-02-05:vega", type=AlertType.BREACH, title="Vega limit", text="x"))

    listed = runner.invoke(main, ["alerts", "list"])
    assert listed.exit_code == 0, listed.output
    assert "breach:2018-02-05:vega  [breach/warning]  UNACKED  (log=delivered)" in listed.output

    ack = runner.invoke(main, ["alerts", "ack", "breach:2018-02-05:vega", "--by", "alice"])
    assert ack.exit_code == 0 and "acknowledged breach:2018-02-05:vega by alice" in ack.output
    assert "acked by alice" in runner.invoke(main, ["alerts", "list"]).output
    assert runner.invoke(main, ["alerts", "list", "--unacked"]).output.strip() == "no alerts"
    twice = runner.invoke(main, ["alerts", "ack", "breach:2018-02-05:vega"])
    assert twice.exit_code == 0 and "already acknowledged by alice" in twice.output

    unknown = runner.invoke(main, ["alerts", "ack", "nope"])
    assert unknown.exit_code == 2
    assert unknown.output == "error: no alert with id 'nope'\n"


def test_ack_by_the_short_id_of_the_message(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from portfolio_pipeline.notify.store import ack_command, short_id

    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    runner = CliRunner()
    key = "breach:limit_breach:DEMO-001:vega:2018-02-05T15:31:00+00:00"
    Notifier(SqlNotificationStore(db), log_only_config()).dispatch(Alert(key=key, type=AlertType.BREACH, title="Vega", text="x"))
    sid = short_id(key)
    assert f"  {sid}  {key}  " in runner.invoke(main, ["alerts", "list"]).output
    # the command the message prints, run as printed
    args = ack_command(key).split()[1:]
    assert args == ["alerts", "ack", sid]
    ack = runner.invoke(main, [*args, "--by", "bob"])
    assert ack.exit_code == 0 and f"acknowledged {sid} by bob" in ack.output
    again = runner.invoke(main, args)
    assert "already acknowledged by bob" in again.output

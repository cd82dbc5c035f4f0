"""exit_signal_sensor (JSON cursor, run_key per event, old events skipped) and its alert
job; notification_housekeeping (a run only when a held digest or escalation is due)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from portfolio_pipeline.defs.notifications.jobs import (
    exit_signal_alert_job,
    notification_housekeeping_job,
)
from portfolio_pipeline.defs.notifications.sensors import (
    exit_signal_sensor,
    notification_housekeeping,
)
from portfolio_pipeline.notify import Alert, AlertType
from portfolio_pipeline.storage import Database, append_event
from portfolio_pipeline.storage.notifications import delivery_rows
from portfolio_pipeline_tests.defs.notifications.conftest import AFTER_THURSDAY_CLOSE, resources
from portfolio_pipeline_tests.notify.conftest import FakeHttp

CLOSE = datetime(2018, 3, 29, 20, 0, tzinfo=UTC)


def _event(db: Database, key: str, *, kind: str = "exit_signal", ts: datetime = CLOSE) -> int:
    with db.begin() as conn:
        new_id = append_event(conn, event_key=key, kind=kind, severity="warning", ts=ts,
                              account_id="A1", payload={"position": f"pos {key}",
                                                        "reason": "21 DTE", "rule": "dte"})
    assert new_id is not None
    return new_id


def _tick(db_url: str, config: Path, cursor: str | None, instance: dg.DagsterInstance
          ) -> tuple[list[dg.RunRequest], str | None]:
    res = resources(db_url, config)
    with dg.build_sensor_context(cursor=cursor, instance=instance,
                                 resources={"db": res["db"], "notifications": res["notifications"]}) as ctx:
        result = exit_signal_sensor(ctx)
        requests = [r for r in (result or []) if isinstance(r, dg.RunRequest)]
        return requests, ctx.cursor


def test_exit_signal_sensor_one_run_per_event(
    db: Database, db_url: str, notify_config_dir: Path, fake_http: FakeHttp,
    instance: dg.DagsterInstance,
) -> None:
    first = _event(db, "exit:S1:dte:2018-03-29")
    _event(db, "breach:1", kind="limit_breach")
    _event(db, "exit:S0:dte:2018-01-05", ts=datetime(2018, 1, 5, 21, tzinfo=UTC))  # backfilled
    second = _event(db, "exit:S2:dte:2018-03-29")
    requests, cursor = _tick(db_url, notify_config_dir, None, instance)
    assert [r.run_key for r in requests] == [f"exit_signal:{first}", f"exit_signal:{second}"]
    assert json.loads(cursor or "{}")["last_id"] == second
    again, cursor = _tick(db_url, notify_config_dir, cursor, instance)
    assert again == []
    third = _event(db, "exit:S3:dte:2018-03-29")
    later, _ = _tick(db_url, notify_config_dir, cursor, instance)
    assert [r.run_key for r in later] == [f"exit_signal:{third}"]

    # the launched job alerts once per channel, however often it runs
    run_config = requests[0].run_config
    for _ in range(2):
        assert exit_signal_alert_job.execute_in_process(
            run_config=run_config, resources=resources(db_url, notify_config_dir), instance=instance
        ).success
    [telegram] = fake_http.accepted("/bot")
    assert len(fake_http.accepted("/services")) == 1
    assert telegram.body["text"].startswith("Exit signal: pos exit:S1:dte:2018-03-29 (dte)")
    assert {r["status"] for r in delivery_rows(db, "exit_signal:exit:S1:dte:2018-03-29")} == {"delivered"}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_housekeeping_flushes_held_digest_when_due(
    db: Database, db_url: str, notify_config_dir: Path, fake_http: FakeHttp,
    instance: dg.DagsterInstance,
) -> None:
    import yaml

    path = notify_config_dir / "notifications.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["quiet_hours"] = {"enabled": True}
    doc["routes"]["fill"] = {"channels": ["telegram"], "quiet_hours": "hold"}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    night = datetime(2018, 3, 29, 3, 0, tzinfo=UTC)  # 23:00 New York: quiet
    morning = datetime(2018, 3, 29, 13, 5, tzinfo=UTC)  # 09:05 New York: open - 25 min
    res = resources(db_url, notify_config_dir, at=night)
    notifier = res["notifications"].notifier(res["db"].database, res["platform"])
    for i in range(2):
        notifier.dispatch(Alert(key=f"fill:{i}", type=AlertType.FILL, title=f"fill {i}", text="x"))
    assert fake_http.requests == []

    def tick(at: datetime) -> dg.RunRequest | dg.SkipReason:
        r = resources(db_url, notify_config_dir, at=at)
        with dg.build_sensor_context(instance=instance, resources=r) as ctx:
            result = notification_housekeeping(ctx)
            assert isinstance(result, dg.RunRequest | dg.SkipReason)
            return result

    assert isinstance(tick(night), dg.SkipReason)
    request = tick(morning)
    assert isinstance(request, dg.RunRequest) and request.tags["held"] == "2"
    assert notification_housekeeping_job.execute_in_process(
        resources=resources(db_url, notify_config_dir, at=morning), instance=instance
    ).success
    [digest] = fake_http.accepted("/bot")
    assert "2 alert(s) held during quiet hours" in digest.body["text"]
    assert isinstance(tick(morning), dg.SkipReason)


def test_registered_in_the_code_location() -> None:
    from portfolio_pipeline.definitions import defs

    eod = defs.resolve_job_def("eod_job")
    assert {"daily_summary", "weekly_digest"} <= {k.to_user_string() for k in eod.asset_layer.selected_asset_keys}
    assert defs.resolve_sensor_def("exit_signal_sensor").job_name == "exit_signal_alert_job"
    assert defs.resolve_sensor_def("notification_housekeeping").job_name == "notification_housekeeping_job"
    assert "notifications" in (defs.resources or {})


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_outbox_retry_through_the_housekeeping_sensor_and_the_deliveries_check(
    db: Database, db_url: str, notify_config_dir: Path, fake_http: FakeHttp,
    instance: dg.DagsterInstance,
) -> None:
    from portfolio_pipeline.defs.notifications.outbox import NOTIFICATION_OUTBOX, OUTBOX_CHECK

    event_id = _event(db, "exit:S1:dte:2018-03-29")
    # Slack is down for both attempts of the alert run (max_attempts 2), Telegram refuses for good.
    fake_http.script("/services", (503, "down", {}), (503, "down", {}))
    fake_http.script("/bot", (400, {"ok": False, "description": "Bad Request: chat not found"}, {}))
    run_config = {"ops": {"exit_signal_alert": {"config": {"event_id": event_id}}}}
    result = exit_signal_alert_job.execute_in_process(
        run_config=run_config, resources=resources(db_url, notify_config_dir), instance=instance)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.asset_key, evaluation.check_name) == (NOTIFICATION_OUTBOX, OUTBOX_CHECK)
    assert evaluation.passed is False and evaluation.severity is dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["failed"].value == 1 and evaluation.metadata["retrying"].value == 1
    rows = {r["channel"]: r["status"] for r in delivery_rows(db, "exit_signal:exit:S1:dte:2018-03-29")}
    assert rows == {"telegram": "failed", "slack": "retrying"}
    # the final Telegram failure was reported on another channel (data_quality -> log)
    assert {r["status"] for r in delivery_rows(db, "delivery_failed:telegram:exit_signal:exit:S1:dte:2018-03-29")} == {"delivered"}

    later = AFTER_THURSDAY_CLOSE + timedelta(minutes=1)
    res = resources(db_url, notify_config_dir, at=later)
    with dg.build_sensor_context(instance=instance, resources=res) as ctx:
        request = notification_housekeeping(ctx)
    assert isinstance(request, dg.RunRequest) and request.tags["retries"] == "1"
    housekeeping = notification_housekeeping_job.execute_in_process(resources=res, instance=instance)
    assert housekeeping.success and housekeeping.get_asset_check_evaluations() == []
    [slack] = fake_http.accepted("/services")
    assert "P&amp;L" in slack.body["text"] and "portfolio alerts ack" in slack.body["text"]  # Slack escapes &
    assert {r["channel"]: r["status"] for r in delivery_rows(db, "exit_signal:exit:S1:dte:2018-03-29")} == {
        "telegram": "failed", "slack": "delivered"}
    with dg.build_sensor_context(instance=instance, resources=res) as ctx:
        assert isinstance(notification_housekeeping(ctx), dg.SkipReason)


def test_housekeeping_runs_often_enough_for_minute_escalations() -> None:
    from portfolio_pipeline.definitions import defs

    # a step due at T fires by T + interval + run launch: the interval must leave room
    assert defs.resolve_sensor_def("notification_housekeeping").minimum_interval_seconds <= 30

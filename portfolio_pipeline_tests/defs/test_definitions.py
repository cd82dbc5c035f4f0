"""The code location as a whole: what it serves, and its partitions and schedule."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from portfolio_pipeline.definitions import build_definitions, defs
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline_tests.stubs import REPO_ROOT, ephemeral_instance


def test_definitions_snapshot() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"positions_snapshot", "account_snapshot", "market_snapshot"} <= keys
    checks = {k.name for k in graph.asset_check_keys}
    assert {"positions_quality", "account_quality", "market_quality"} <= checks
    assert "options_flow" in keys and "option_chain_no_crossed_quotes" in checks
    eod = defs.resolve_job_def("eod_job")
    assert dg.AssetKey("options_flow") in eod.asset_layer.executable_asset_keys
    assert defs.resolve_job_def("eod_job") is not None
    assert defs.resolve_schedule_def("eod_schedule").execution_timezone == "America/New_York"
    assert set(defs.resources or {}) >= {"db", "platform"}


def test_partitions_are_exchange_sessions() -> None:
    cal = ExchangeCalendar()
    parts = session_partitions(cal, end=date(2026, 1, 1))
    keys = parts.get_partition_keys()
    assert "2018-02-05" in keys and "2018-02-03" not in keys  # Saturday
    assert "2025-11-27" not in keys  # Thanksgiving
    assert "2025-11-28" in keys  # half day is a session
    assert "2025-01-09" not in keys  # national day of mourning (ad hoc closure)
    assert keys == [d.isoformat() for d in cal.sessions(date(2014, 6, 2), date(2025, 12, 31))]


def _tick(ny_date: str, hour: int, minute: int) -> datetime:
    from portfolio_pipeline.exchange_calendar import NEW_YORK

    y, m, d = map(int, ny_date.split("-"))
    return datetime(y, m, d, hour, minute, tzinfo=NEW_YORK)


@pytest.fixture
def broker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped configuration with the example's live broker accounts (IBKR, Tastytrade)."""
    directory = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", directory)
    shutil.copy(REPO_ROOT / "config" / "accounts.example.yaml", directory / "accounts.yaml")
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(directory))
    return directory


def test_eod_schedule_skips_sessions_the_demo_broker_cannot_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: on the demo-only default configuration the schedule failed every weekday."""
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(REPO_ROOT / "config"))
    schedule = defs.resolve_schedule_def("eod_schedule")
    repo = defs.get_repository_def()
    with ephemeral_instance() as instance:
        today = dg.build_schedule_context(instance=instance, repository_def=repo,
                                          scheduled_execution_time=_tick("2025-07-03", 16, 30))
        result = schedule.evaluate_tick(today)
        assert not result.run_requests
        assert "only the demo broker is configured" in (result.skip_message or "")
        assert "demo record ends 2018-06-29" in (result.skip_message or "")
        inside = dg.build_schedule_context(instance=instance, repository_def=repo,
                                           scheduled_execution_time=_tick("2018-02-05", 16, 30))
        [request] = schedule.evaluate_tick(inside).run_requests or []
        assert request.partition_key == "2018-02-05"


def test_alert_sensors_are_on_by_default() -> None:
    assert schedule_status("eod_schedule") == dg.DefaultScheduleStatus.RUNNING
    for name in ("breach_sensor", "run_failure_alert"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING, name


def schedule_status(name: str) -> dg.DefaultScheduleStatus:
    return defs.resolve_schedule_def(name).default_status


def test_eod_schedule_runs_on_sessions_only(broker_config: Path) -> None:
    live = build_definitions()  # live broker accounts: open-ended partitions
    schedule = live.resolve_schedule_def("eod_schedule")
    repo = live.get_repository_def()
    with ephemeral_instance() as instance:
        ctx = dg.build_schedule_context(instance=instance, repository_def=repo, scheduled_execution_time=_tick("2018-02-05", 16, 30))
        [request] = schedule.evaluate_tick(ctx).run_requests or []
        assert request.partition_key == "2018-02-05"
        assert request.run_key == "eod-2018-02-05"
        holiday = dg.build_schedule_context(instance=instance, repository_def=repo, scheduled_execution_time=_tick("2025-11-27", 16, 30))
        result = schedule.evaluate_tick(holiday)
        assert not result.run_requests
        assert "not an XNYS session" in (result.skip_message or "")
        # DST: the tick is 16:30 New York in both winter and summer
        summer = dg.build_schedule_context(instance=instance, repository_def=repo, scheduled_execution_time=_tick("2025-07-03", 16, 30))
        [req] = schedule.evaluate_tick(summer).run_requests or []
        assert req.partition_key == "2025-07-03"
    assert _tick("2025-07-03", 16, 30).astimezone(UTC).hour == 20
    assert _tick("2025-01-03", 16, 30).astimezone(UTC).hour == 21


def test_partitions_start_at_the_first_session_with_data() -> None:
    from portfolio_pipeline.defs.partitions import HISTORY_START, HISTORY_START_ENV, history_start

    # the served assets begin at the demo record's first session (2017-07-03), not 2014
    asset = defs.resolve_assets_def("account_snapshot")
    assert asset.partitions_def is not None
    first = asset.partitions_def.get_first_partition_key()
    assert first == HISTORY_START.isoformat() == "2017-07-03"
    # demo-only configuration: they end with the demo record (2018-06-29), so plots end with the data
    assert asset.partitions_def.get_last_partition_key() == "2018-06-29"
    from portfolio_pipeline.cli import DEMO_END, DEMO_START
    from portfolio_pipeline.demo_window import DEMO_END as RECORD_END
    from portfolio_pipeline.demo_window import DEMO_START as RECORD_START

    assert (DEMO_START, DEMO_END) == (RECORD_START, RECORD_END) == (HISTORY_START, date(2018, 6, 29))
    assert history_start({HISTORY_START_ENV: "2019-01-02"}) == date(2019, 1, 2)
    assert history_start({}) == HISTORY_START
    for bad, message in (("2019-13-01", "not a date"), ("2001-01-02", "before 2014-06-02")):
        try:
            history_start({HISTORY_START_ENV: bad})
        except ValueError as exc:
            assert HISTORY_START_ENV in str(exc) and message in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")

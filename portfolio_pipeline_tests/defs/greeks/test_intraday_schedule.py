"""The intraday refresh: every 15 minutes in regular trading hours only (calendar-driven)."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from portfolio_pipeline.definitions import build_definitions
from portfolio_pipeline.exchange_calendar import NEW_YORK
from portfolio_pipeline_tests.stubs import REPO_ROOT, ephemeral_instance


@pytest.fixture(scope="module")
def live_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped configuration with the example's live broker accounts (no demo-only skip)."""
    directory = tmp_path_factory.mktemp("live") / "config"
    shutil.copytree(REPO_ROOT / "config", directory)
    shutil.copy(REPO_ROOT / "config" / "accounts.example.yaml", directory / "accounts.yaml")
    return directory


@pytest.fixture(autouse=True)
def _live(live_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(live_config))


def _evaluate(y: int, m: int, d: int, hh: int, mm: int) -> dg.SensorResult | object:
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("intraday_schedule")
    with ephemeral_instance() as instance:
        ctx = dg.build_schedule_context(
            instance=instance, repository_def=defs.get_repository_def(),
            scheduled_execution_time=datetime(y, m, d, hh, mm, tzinfo=NEW_YORK),
        )
        return schedule.evaluate_tick(ctx)


@pytest.mark.parametrize(
    ("when", "partition"),
    [
        ((2018, 2, 5, 9, 30), "2018-02-05"),   # the open (winter, UTC-5)
        ((2018, 2, 5, 15, 45), "2018-02-05"),  # last tick before the close
        ((2025, 7, 3, 12, 45), "2025-07-03"),  # half day (summer, UTC-4), before 13:00
    ],
)
def test_ticks_in_market_hours_request_todays_partition(when: tuple[int, ...], partition: str) -> None:
    [request] = _evaluate(*when).run_requests or []  # type: ignore[attr-defined]
    assert request.partition_key == partition
    assert request.run_key == f"intraday-{partition}T{when[3]:02d}{when[4]:02d}"


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ((2018, 2, 5, 9, 15), "outside market hours"),    # before the open
        ((2018, 2, 5, 16, 0), "outside market hours"),    # the close belongs to the EOD run
        ((2025, 7, 3, 13, 0), "outside market hours"),    # half day closes at 13:00
        ((2025, 11, 27, 11, 0), "not an XNYS session"),   # Thanksgiving
        ((2018, 2, 3, 11, 0), "not an XNYS session"),     # Saturday
        ((2025, 3, 10, 9, 15), "outside market hours"),   # Monday after the DST switch
    ],
)
def test_ticks_outside_market_hours_skip(when: tuple[int, ...], reason: str) -> None:
    result = _evaluate(*when)
    assert not result.run_requests  # type: ignore[attr-defined]
    assert reason in (result.skip_message or "")  # type: ignore[attr-defined]


def test_dst_open_is_half_past_nine_new_york() -> None:
    assert _evaluate(2025, 3, 10, 9, 30).run_requests  # type: ignore[attr-defined]
    schedule = build_definitions().resolve_schedule_def("intraday_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("*/15 * * * 1-5", "America/New_York")


def test_jobs_select_the_analytics() -> None:
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    mine = {"position_greeks", "portfolio_greeks", "portfolio_returns", "pnl_attribution",
            "risk_metrics", "margin_history", "daily_report"}
    assert mine <= keys
    eod = defs.resolve_job_def("eod_job")
    selected = {k.to_user_string() for k in eod.asset_layer.asset_graph.get_all_asset_keys()
                if eod.asset_layer.asset_graph.get(k).is_executable}
    assert mine | {"positions_snapshot", "account_snapshot", "market_snapshot"} <= selected
    intraday = defs.resolve_job_def("intraday_job")
    assert {"position_greeks", "portfolio_greeks", "market_snapshot"} <= {
        k.to_user_string() for k in intraday.asset_layer.asset_graph.get_all_asset_keys()}
    checks = {k.name for k in graph.asset_check_keys}
    assert {"position_greeks_quality", "portfolio_greeks_quality", "returns_quality",
            "pnl_reconciliation", "attribution_identity", "attribution_unexplained",
            "risk_metrics_quality", "margin_quality", "limit_breaches"} <= checks


def test_demo_only_configuration_skips_sessions_past_the_demo_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(REPO_ROOT / "config"))
    result = _evaluate(2025, 7, 3, 12, 45)
    assert not result.run_requests  # type: ignore[attr-defined]
    assert "only the demo broker is configured" in (result.skip_message or "")  # type: ignore[attr-defined]

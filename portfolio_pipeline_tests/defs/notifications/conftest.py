"""Fixtures of the notification asset/sensor tests: a config directory whose
notifications.yaml routes to the local Telegram/Slack fake, a pinned clock, and a small
stored book written straight into the analytics tables (Holy Week 2018: Good Friday
2018-03-30 is an exchange holiday, so Thursday 2018-03-29 ends the week)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from sqlalchemy import Float, Table

from portfolio_pipeline.defs.notifications.resources import NotificationsResource
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.paths import config_dir
from portfolio_pipeline.storage import Database, replace_partition
from portfolio_pipeline.storage.tables import (
    margin_history,
    pnl_attribution,
    portfolio_greeks,
    portfolio_returns,
    risk_metrics,
    strategy_performance,
)
from portfolio_pipeline_tests.notify.conftest import (
    TELEGRAM_TOKEN,
    FakeHttp,
    fake_http,
    make_config,
)
from portfolio_pipeline_tests.stubs import ephemeral_instance

__all__ = ["fake_http"]

WEEK = [date(2018, 3, 26), date(2018, 3, 27), date(2018, 3, 28), date(2018, 3, 29)]
THURSDAY = WEEK[-1]
AFTER_THURSDAY_CLOSE = datetime(2018, 3, 29, 22, 0, tzinfo=UTC)  # 18:00 New York
SENT_ROUTE = {"channels": ["telegram", "slack"], "quiet_hours": "deliver"}
PNL = {WEEK[0]: 1200.0, WEEK[1]: -800.0, WEEK[2]: 350.0, WEEK[3]: 510.0}


class PinnedNotifications(NotificationsResource):
    """The notifications resource with time pinned (ISO 8601, aware)."""

    at: str

    def now(self) -> datetime:
        return datetime.fromisoformat(self.at)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with ephemeral_instance() as inst:
        yield inst


@pytest.fixture
def notify_config_dir(tmp_path: Path, fake_http: FakeHttp, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Required config files of the checkout plus a notifications.yaml on the local fake."""
    directory = tmp_path / "config"
    directory.mkdir()
    for name in ("instruments.yaml", "risk_matrix.yaml", "accounts.yaml"):
        shutil.copy(config_dir() / name, directory / name)
    config = make_config(
        fake_http.base_url,
        routes={t: SENT_ROUTE for t in ("daily_summary", "weekly_digest", "exit_signal")},
        quiet={"enabled": False},
        retry={"max_attempts": 2, "initial_backoff_seconds": 0},
    )
    (directory / "notifications.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=False)), encoding="utf-8"
    )
    monkeypatch.setenv("TEST_TG_TOKEN", TELEGRAM_TOKEN)
    monkeypatch.setenv("TEST_SLACK_URL", fake_http.slack_url)
    return directory


def resources(db_url: str, config: Path, at: datetime = AFTER_THURSDAY_CLOSE) -> dict[str, Any]:
    return {
        "db": DatabaseResource(url=db_url),
        "platform": PlatformResource(config_dir=str(config)),
        "notifications": PinnedNotifications(at=at.isoformat()),
    }


def _row(table: Table, **values: Any) -> dict[str, Any]:
    """``values`` plus 0.0 for every other NOT NULL float column."""
    row = dict(values)
    for column in table.columns:
        if column.name not in row and not column.nullable and isinstance(column.type, Float):
            row[column.name] = 0.0
    return row


def write_book(db: Database, days: list[date] = WEEK) -> None:
    """Consolidated ('*') rows of every table the summaries read, plus two positions and
    two strategies of account A1."""
    book = {"broker": "*", "account_id": "*"}
    acct = {"broker": "demo", "account_id": "A1"}
    nlv = 100_000.0
    with db.begin() as conn:
        for i, day in enumerate(days):
            pnl = PNL[day]
            part = {"session_date": day}
            replace_partition(conn, portfolio_returns, part, [_row(
                portfolio_returns, **part, **book, nlv=nlv + pnl, prev_nlv=nlv, pnl=pnl,
                twr=pnl / nlv, growth_index=1.0, high_water_mark=1.0)])
            nlv += pnl
            replace_partition(conn, pnl_attribution, part, [
                _row(pnl_attribution, **part, **book, position_key="*", underlying="*",
                     bucket="total", actual=pnl, delta_pnl=pnl * 0.6, gamma_pnl=-40.0,
                     theta_pnl=95.0, vega_pnl=pnl * 0.3, explained=pnl, unexplained=7.5,
                     dt_days=1.0, large_unexplained=False),
                _row(pnl_attribution, **part, **acct, position_key="SPX|OPT|2600|P", underlying="SPX",
                     bucket="held", actual=pnl * 0.75, dt_days=1.0, large_unexplained=False),
                _row(pnl_attribution, **part, **acct, position_key="SPY|STK", underlying="SPY",
                     bucket="held", actual=pnl * 0.25 - 100.0, dt_days=1.0, large_unexplained=False),
            ])
            replace_partition(conn, portfolio_greeks, part, [_row(
                portfolio_greeks, **part, **book, underlying="*", positions=2,
                dollar_delta=25_000.0 + 1000 * i, dollar_gamma_1pct=-900.0, theta_per_day=120.0,
                vega_per_point=-450.0 - 10 * i)])
            replace_partition(conn, margin_history, part, [_row(
                margin_history, **part, **book, nlv=nlv, regime="elevated", vix=22.9 + i,
                backwardation=False, breaches=0, breached_metrics="")])
            replace_partition(conn, risk_metrics, part, [
                _row(risk_metrics, **part, **book, window="full", metric=m, value=v,
                     value_usd=v * nlv, observations=60)
                for m, v in (("var_95_historical", 0.021), ("var_99_historical", 0.034),
                             ("sharpe", 1.35), ("max_drawdown", 0.084),
                             ("current_drawdown", -0.012))
            ])
            replace_partition(conn, strategy_performance, part, [
                _row(strategy_performance, **part, **acct, strategy_id=sid, underlying="SPX",
                     strategy_type=kind, status="open", opened_on=WEEK[0], daily_pnl=pnl * share,
                     greeks_source="market", entry_prices={})
                for sid, kind, share in (("S1", "short_put", 0.75), ("S2", "stock", 0.25))
            ])

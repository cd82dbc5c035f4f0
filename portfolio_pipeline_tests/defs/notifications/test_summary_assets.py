"""daily_summary / weekly_digest end to end on a stored book (SQLite and PostgreSQL),
delivering to the local Telegram/Slack fake: once per channel, no backfill spam, the
weekly digest on the week's last session only, and failures visible as a WARN check."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from portfolio_pipeline.defs.notifications import FORCE, NOTIFY_TAG, send_decision
from portfolio_pipeline.defs.notifications.assets import make_notification_assets
from portfolio_pipeline.defs.notifications.summary import is_week_end
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.orders import OrderStore
from portfolio_pipeline.storage import Database, append_event
from portfolio_pipeline.storage.notifications import delivery_rows
from portfolio_pipeline_tests.defs.notifications.conftest import (
    AFTER_THURSDAY_CLOSE,
    THURSDAY,
    WEEK,
    resources,
    write_book,
)
from portfolio_pipeline_tests.notify.conftest import TELEGRAM_TOKEN, FakeHttp
from portfolio_pipeline_tests.stubs import option

CALENDAR = ExchangeCalendar()
DAILY, WEEKLY = make_notification_assets(session_partitions(CALENDAR))


def _run(
    asset: dg.AssetsDefinition,
    db_url: str,
    config: Path,
    instance: dg.DagsterInstance,
    *,
    day: date | None = THURSDAY,
    tags: dict[str, str] | None = None,
    at: datetime = AFTER_THURSDAY_CLOSE,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset], partition_key=None if day is None else day.isoformat(), instance=instance,
        resources=resources(db_url, config, at), tags=tags,
    )


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    *_, event = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    mat = event.event_specific_data.materialization  # type: ignore[union-attr]
    return {k: v.value for k, v in mat.metadata.items()}


def test_daily_summary_sent_once_per_channel(
    db: Database, db_url: str, notify_config_dir: Path, fake_http: FakeHttp, instance: dg.DagsterInstance
) -> None:
    write_book(db)
    close = CALENDAR.session_close(THURSDAY)
    with db.begin() as conn:
        append_event(conn, event_key="exit:S1:take_profit:2018-03-29", kind="exit_signal",
                     severity="warning", ts=close, account_id="A1",
                     payload={"position": "short_put SPX (S1)", "reason": "50% of max profit"})
        append_event(conn, event_key="exit:S1:take_profit:2018-03-28", kind="exit_signal",
                     severity="warning", ts=CALENDAR.session_close(WEEK[2]), payload={})
    OrderStore(db).insert(Order(
        "ORD-1", "demo", "A1", (OrderLeg(option(strike=2500.0, expiry=date(2018, 4, 20)), "BUY"),),
        1, 2.35, close, status=OrderStatus.STAGED), actor="test")
    first = _run(DAILY, db_url, notify_config_dir, instance)
    again = _run(DAILY, db_url, notify_config_dir, instance)  # re-materialized partition
    assert first.success and again.success
    [telegram] = fake_http.accepted("/bot")
    assert len(fake_http.accepted("/services")) == 1
    text = telegram.body["text"]
    assert text.startswith("Daily summary 2018-03-29 (Thu)")
    assert "P&L: +$510.00" in text and "Regime: elevated (VIX 25.9)" in text
    assert "unexplained +$7.50" in text and "99% $3,442.84" in text
    assert "dollar delta: +27,000 -> +28,000 (+1,000)" in text  # vs the prior session
    assert "Exit signals (1):\n  - short_put SPX (S1): 50% of max profit\n" in text
    assert "  - ORD-1 1 x BUY 1 SPX" in text and "@ 2.35 [staged]" in text
    meta = _meta(first)
    assert meta["sent"] is True and meta["channels_delivered"] == ["slack", "telegram"]
    assert meta["text"].strip("`\n") == text
    assert _meta(again)["channels_already_sent"] == ["slack", "telegram"]
    assert {(r["channel"], r["status"]) for r in delivery_rows(db, "daily_summary:2018-03-29")} == {
        ("slack", "delivered"), ("telegram", "delivered")}
    [check] = again.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("notification_delivery", True)


def test_backfill_of_past_sessions_sends_nothing(
    db: Database, db_url: str, notify_config_dir: Path, fake_http: FakeHttp, instance: dg.DagsterInstance
) -> None:
    write_book(db)
    backfill = _run(DAILY, db_url, notify_config_dir, instance, day=None, tags={
        "dagster/asset_partition_range_start": WEEK[0].isoformat(),
        "dagster/asset_partition_range_end": WEEK[2].isoformat(),
    })
    assert backfill.success
    meta = _meta(backfill)  # the last partition of the range carries its own session's values
    assert (meta["sent"], meta["sessions_sent"]) == (False, 0)
    assert "not the latest completed session (2018-03-29)" in meta["reason"]
    assert "Daily summary 2018-03-28" in meta["text"]
    # the latest session replayed a week later is history too ...
    late = _run(DAILY, db_url, notify_config_dir, instance, at=datetime(2018, 4, 6, 22, tzinfo=UTC))
    assert _meta(late)["sent"] is False
    assert fake_http.requests == [] and delivery_rows(db) == []
    # ... unless the run is forced
    forced = _run(DAILY, db_url, notify_config_dir, instance, day=WEEK[1], tags={NOTIFY_TAG: FORCE})
    assert _meta(forced)["sent"] is True
    assert "Daily summary 2018-03-27" in fake_http.accepted("/bot")[0].body["text"]


def test_weekly_digest_on_the_weeks_last_session_only(
    db: Database, db_url: str, notify_config_dir: Path, fake_http: FakeHttp, instance: dg.DagsterInstance
) -> None:
    write_book(db)
    wednesday = _run(WEEKLY, db_url, notify_config_dir, instance, day=WEEK[2])
    assert _meta(wednesday)["status"] == "not a week end" and fake_http.requests == []
    for _ in range(2):
        assert _run(WEEKLY, db_url, notify_config_dir, instance).success  # Good Friday: Thursday
    [telegram] = fake_http.accepted("/bot")
    assert len(fake_http.accepted("/services")) == 1
    text = telegram.body["text"]
    assert text.startswith("Weekly digest, week ending 2018-03-29")
    assert "P&L: +$1,260.00" in text  # Monday to Thursday
    assert "Sharpe: 1.35 | max drawdown 8.4%, current 1.2%" in text
    assert "  short_put: +$945.00" in text and "  stock: +$315.00" in text
    assert "  + SPX|OPT|2600|P: +$945.00" in text and "  - SPY|STK: -$85.00" in text


def test_week_end_and_send_decision() -> None:
    assert is_week_end(CALENDAR, date(2018, 3, 29)) and not is_week_end(CALENDAR, date(2018, 3, 28))
    assert is_week_end(CALENDAR, date(2018, 3, 23)) and not is_week_end(CALENDAR, date(2018, 3, 22))
    assert is_week_end(CALENDAR, date(2025, 11, 28))  # half day after Thanksgiving
    before_close = datetime(2018, 3, 29, 19, 59, tzinfo=UTC)
    assert send_decision(THURSDAY, now=before_close, calendar=CALENDAR, tags={})[0] is False
    assert send_decision(THURSDAY, now=AFTER_THURSDAY_CLOSE, calendar=CALENDAR, tags={})[0] is True
    weekend = datetime(2018, 4, 1, 12, tzinfo=UTC)  # Easter Sunday: Thursday still the latest
    assert send_decision(THURSDAY, now=weekend, calendar=CALENDAR, tags={})[0] is True


def test_delivery_check_fails_after_a_permanent_failure(
    db: Database, db_url: str, notify_config_dir: Path, fake_http: FakeHttp, instance: dg.DagsterInstance
) -> None:
    write_book(db)
    fake_http.script("/bot", (400, {"ok": False, "error_code": 400,
                                    "description": "Bad Request: chat not found"}, {}))
    result = _run(DAILY, db_url, notify_config_dir, instance)
    assert result.success  # the asset is recorded; the failure shows on the check
    assert _meta(result)["channels_failed"] == ["telegram"]
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "notification_delivery" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["failures"].value == 1
    details = str(check.metadata["deliveries"].value)
    assert "daily_summary:2018-03-29 | telegram | failed" in details
    assert TELEGRAM_TOKEN not in details
    assert len([r for r in fake_http.requests if r.path.startswith("/bot")]) == 1  # not retried

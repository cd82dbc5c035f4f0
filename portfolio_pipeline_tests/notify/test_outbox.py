"""The durable outbox: failed deliveries retried with backoff until delivered (once) or
expired; a final failure reported on another channel; escalation past failed channels;
short alert ids and the ack command in every actionable message.

Both database backends, against the local Telegram/Slack server of ``conftest.py``.
The expected retry times are hand-computed from ``RetrySettings.policy().delay``:
``initial * multiplier ** (attempt - 1)`` capped at ``max_backoff_seconds``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.config.notifications import NotificationsFile
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.notify import (
    Alert,
    AlertType,
    DeliveryOutcome,
    Notifier,
    Severity,
)
from portfolio_pipeline.notify.store import short_id
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.notifications import (
    SqlNotificationStore,
    acknowledge,
    delivery_rows,
    get_alert,
    recent_failures,
)
from portfolio_pipeline_tests.notify.conftest import (
    OPEN_TIME,
    SLACK_PATH,
    TELEGRAM_TOKEN,
    FakeHttp,
    make_config,
)

TG = f"/bot{TELEGRAM_TOKEN}/sendMessage"
DOWN = (503, "service unavailable", {})


@pytest.fixture
def make(
    db: Database,
    fake_http: FakeHttp,
    clock: SettableClock,
    sleeps: list[float],
    secret_env: dict[str, str],
    calendar: ExchangeCalendar,
) -> Any:
    def build(**kwargs: Any) -> Notifier:
        cfg: NotificationsFile = make_config(fake_http.telegram_base, **kwargs)
        return Notifier(SqlNotificationStore(db), cfg, environ=secret_env, clock=clock, sleep=sleeps.append, calendar=calendar)

    return build


def breach(key: str = "breach:1", **kw: Any) -> Alert:
    return Alert(key=key, type=AlertType.BREACH, title="Delta limit breached",
                 text="beta-weighted delta +62.3% of NLV vs limit 50.0%", **kw)


def test_outage_then_recovery_delivers_exactly_once(
    make: Any, fake_http: FakeHttp, db: Database, clock: SettableClock, sleeps: list[float]
) -> None:
    fake_http.script(SLACK_PATH, *[DOWN] * 4)  # 2 in the run, 2 retries, then up again
    n = make(routes={"breach": {"channels": ["slack"]}},
             retry={"max_attempts": 2, "initial_backoff_seconds": 10, "multiplier": 3,
                    "max_backoff_seconds": 120})
    [first] = n.dispatch(breach())
    assert first.outcome is DeliveryOutcome.RETRYING and sleeps == [10.0]
    t0 = OPEN_TIME
    # backoff(2) = 10 * 3 = 30 s
    assert delivery_rows(db)[0]["next_attempt_at"] == t0 + timedelta(seconds=30)
    assert n.due_work(t0 + timedelta(seconds=29)).retries == 0
    assert n.retry_due(t0 + timedelta(seconds=29)) == []
    assert n.due_work(t0 + timedelta(seconds=30)).retries == 1

    clock.set(t0 + timedelta(seconds=30))
    [r1] = n.retry_due()
    assert r1.outcome is DeliveryOutcome.RETRYING and r1.attempts == 1
    # backoff(3) = 10 * 9 = 90 s after the third stored attempt
    assert delivery_rows(db)[0]["next_attempt_at"] == t0 + timedelta(seconds=120)
    clock.set(t0 + timedelta(seconds=120))
    [r2] = n.retry_due()
    # backoff(4) = 270 s, capped at 120 s
    assert delivery_rows(db)[0]["next_attempt_at"] == t0 + timedelta(seconds=240)
    assert r2.outcome is DeliveryOutcome.RETRYING
    assert fake_http.accepted(SLACK_PATH) == []

    clock.set(t0 + timedelta(seconds=240))
    [r3] = n.retry_due()
    assert r3.outcome is DeliveryOutcome.DELIVERED
    [row] = delivery_rows(db)
    assert row["status"] == "delivered" and row["attempts"] == 5 and row["next_attempt_at"] is None
    assert len(fake_http.accepted(SLACK_PATH)) == 1
    # nothing more: no retry due, a re-dispatch is a duplicate, sleeps only in the first run
    clock.set(t0 + timedelta(hours=1))
    assert n.retry_due() == []
    assert [r.outcome for r in n.dispatch(breach())] == [DeliveryOutcome.DUPLICATE]
    assert len(fake_http.accepted(SLACK_PATH)) == 1 and sleeps == [10.0]
    assert len([r for r in fake_http.requests if r.path == SLACK_PATH]) == 5


def test_expired_delivery_fails_and_is_reported_on_another_channel(
    make: Any, fake_http: FakeHttp, db: Database, clock: SettableClock
) -> None:
    fake_http.script(SLACK_PATH, *[DOWN] * 10)
    n = make(routes={"breach": {"channels": ["slack"], "expire_after_minutes": 5},
                     "data_quality": {"channels": ["slack", "telegram"]}},
             retry={"max_attempts": 1, "initial_backoff_seconds": 60, "multiplier": 2,
                    "max_backoff_seconds": 600})
    [first] = n.dispatch(breach(severity=Severity.CRITICAL))
    assert first.outcome is DeliveryOutcome.RETRYING
    clock.set(OPEN_TIME + timedelta(minutes=1))
    [again] = n.retry_due()
    # backoff(2) = 120 s -> 15:03 is before the 15:05 expiry: still in the outbox
    assert again.outcome is DeliveryOutcome.RETRYING
    clock.set(OPEN_TIME + timedelta(minutes=3))
    [final] = n.retry_due()
    # backoff(3) = 240 s -> 15:07 is past the expiry: failed for good, no fourth attempt
    assert final.outcome is DeliveryOutcome.FAILED and final.error is not None
    assert "expired" in final.error and "503" in final.error
    [failure] = recent_failures(db, OPEN_TIME, now=OPEN_TIME + timedelta(minutes=4))
    assert (failure.alert_key, failure.channel, failure.status) == ("breach:1", "slack", "failed")
    # the data-quality report went to telegram only (slack is the channel that failed)
    [report] = fake_http.accepted(TG)
    assert "Notification not delivered on slack" in report.body["text"]
    assert "beta-weighted delta +62.3% of NLV" in report.body["text"]
    slack_posts = [r for r in fake_http.requests if r.path == SLACK_PATH]
    assert len(slack_posts) == 3
    stored = get_alert(db, "delivery_failed:slack:breach:1")
    assert stored is not None and stored.type == "data_quality" and stored.severity == "critical"
    clock.set(OPEN_TIME + timedelta(hours=2))
    assert n.retry_due() == []


def test_permanent_failure_is_reported_once_and_never_loops(
    make: Any, fake_http: FakeHttp, db: Database
) -> None:
    bad = (400, {"ok": False, "description": "Bad Request: chat not found"}, {})
    fake_http.script("/bot", bad, bad, bad)
    n = make(routes={"breach": {"channels": ["telegram"]},
                     "data_quality": {"channels": ["telegram"]}})
    [result] = n.dispatch(breach())
    assert result.outcome is DeliveryOutcome.FAILED
    # the data_quality route has no other channel: any other configured one (log) gets it
    rows = {(r["alert_key"], r["channel"]): r["status"] for r in delivery_rows(db)}
    assert rows == {("breach:1", "telegram"): "failed",
                    ("delivery_failed:telegram:breach:1", "log"): "delivered"}


def test_escalation_counts_a_failed_channel_as_not_reached(
    make: Any, fake_http: FakeHttp, db: Database, clock: SettableClock
) -> None:
    fake_http.script("/bot", (401, {"ok": False, "description": "Unauthorized"}, {}))
    n = make(routes={"breach": {"channels": ["telegram"]}},
             escalation={"enabled": True, "after_minutes": 15, "regimes": ["crisis"],
                         "channels": ["telegram", "slack"]})
    [result] = n.dispatch(breach(regime="crisis"))
    assert result.outcome is DeliveryOutcome.FAILED
    # step 1: telegram never reached the person, so it is the first rung again (fixed token)
    [step1] = n.escalate_due(OPEN_TIME + timedelta(minutes=15))
    assert (step1.channel, step1.outcome) == ("telegram", DeliveryOutcome.DELIVERED)
    [step2] = n.escalate_due(OPEN_TIME + timedelta(minutes=30))
    assert (step2.channel, step2.outcome) == ("slack", DeliveryOutcome.DELIVERED)
    assert n.escalate_due(OPEN_TIME + timedelta(hours=2)) == []
    assert len(fake_http.accepted(TG)) == 1 and len(fake_http.accepted(SLACK_PATH)) == 1


def test_escalation_does_not_resend_a_delivered_channel(
    make: Any, fake_http: FakeHttp, db: Database
) -> None:
    n = make(routes={"breach": {"channels": ["telegram"]}},
             escalation={"enabled": True, "after_minutes": 15, "regimes": ["crisis"],
                         "channels": ["telegram", "slack"]})
    n.dispatch(breach(regime="crisis"))
    [step1] = n.escalate_due(OPEN_TIME + timedelta(minutes=15))
    assert step1.channel == "slack"
    assert len(fake_http.accepted(TG)) == 1


def test_held_digest_that_fails_is_retried_as_one_digest(
    make: Any, fake_http: FakeHttp, db: Database, clock: SettableClock
) -> None:
    saturday = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    clock.set(saturday)
    n = make(routes={"fill": {"channels": ["slack"], "quiet_hours": "hold"}},
             retry={"max_attempts": 1, "initial_backoff_seconds": 30})
    n.dispatch(Alert("fill:1", AlertType.FILL, "Filled 1", "x"))
    n.dispatch(Alert("fill:2", AlertType.FILL, "Filled 2", "y"))
    monday = datetime(2026, 3, 9, 13, 0, tzinfo=UTC)  # open - 30 min
    clock.set(monday)
    fake_http.script(SLACK_PATH, DOWN)
    [failed] = n.flush_due()
    assert failed.outcome is DeliveryOutcome.RETRYING and set(failed.alert_keys) == {"fill:1", "fill:2"}
    assert {r["status"] for r in delivery_rows(db)} == {"held"}
    assert n.due_work(monday + timedelta(seconds=29)).held == 0
    clock.set(monday + timedelta(seconds=30))
    [sent] = n.flush_due()
    assert sent.outcome is DeliveryOutcome.DELIVERED
    [digest] = fake_http.accepted(SLACK_PATH)
    assert "2 alert(s) held" in digest.body["text"]


def test_short_id_and_ack_command_in_the_message(
    make: Any, fake_http: FakeHttp, db: Database
) -> None:
    n = make(routes={"breach": {"channels": ["telegram"]}})
    key = "breach:limit_breach:DEMO-001:beta_weighted_delta:2018-02-05T15:31:00+00:00"
    n.dispatch(breach(key))
    sid = short_id(key)
    assert len(sid) == 8
    [msg] = fake_http.accepted(TG)
    assert f"portfolio alerts ack {sid}" in msg.body["text"]
    assert acknowledge(db, sid, "alice")
    stored = get_alert(db, sid)
    assert stored is not None and stored.alert_key == key and stored.acknowledged_by == "alice"
    with pytest.raises(KeyError):
        acknowledge(db, "0000zzzz", "alice")


def test_summaries_carry_no_ack_line(make: Any, fake_http: FakeHttp) -> None:
    n = make(routes={"daily_summary": {"channels": ["telegram"]}})
    n.dispatch(Alert("daily_summary:2026-03-10", AlertType.DAILY_SUMMARY, "Daily summary", "P&L"))
    [msg] = fake_http.accepted(TG)
    assert "portfolio alerts ack" not in msg.body["text"]


def test_expiry_of_a_held_alert_counts_from_the_end_of_quiet_hours(
    make: Any, db: Database, clock: SettableClock
) -> None:
    saturday = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    clock.set(saturday)
    n = make(routes={"fill": {"channels": ["slack"], "quiet_hours": "hold",
                              "expire_after_minutes": 60}})
    n.dispatch(Alert("fill:1", AlertType.FILL, "Filled", "x"))
    [row] = delivery_rows(db)
    assert row["hold_until"] == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    assert row["expires_at"] == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)


def test_now_must_be_aware(make: Any) -> None:
    n = make()
    with pytest.raises(ValueError):
        n.retry_due(datetime(2026, 3, 10, 15, 0))
    assert n.retry_due(datetime(2026, 3, 10, 15, 0, tzinfo=UTC)) == []

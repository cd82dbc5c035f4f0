"""The dispatcher on both database backends, against a local Telegram/Slack server."""

from __future__ import annotations

import logging
import threading
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
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.notifications import (
    SqlNotificationStore,
    acknowledge,
    delivery_rows,
    get_alert,
    recent_failures,
)
from portfolio_pipeline_tests.notify.conftest import (
    SLACK_PATH,
    TELEGRAM_TOKEN,
    FakeHttp,
    make_config,
)

TG = f"/bot{TELEGRAM_TOKEN}/sendMessage"
SATURDAY = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
MONDAY_PRE_OPEN = datetime(2026, 3, 9, 13, 0, tzinfo=UTC)  # 09:00 EDT = open - 30 min


@pytest.fixture
def notifier_factory(
    db: Database,
    fake_http: FakeHttp,
    clock: SettableClock,
    sleeps: list[float],
    secret_env: dict[str, str],
    calendar: ExchangeCalendar,
) -> Any:
    def make(config: NotificationsFile | None = None, **kwargs: Any) -> Notifier:
        cfg = config if config is not None else make_config(fake_http.telegram_base, **kwargs)
        return Notifier(
            SqlNotificationStore(db), cfg, environ=secret_env, clock=clock, sleep=sleeps.append, calendar=calendar
        )

    return make


def breach(key: str = "breach:1", **kw: Any) -> Alert:
    base: dict[str, Any] = {
        "key": key,
        "type": AlertType.BREACH,
        "title": "Delta limit breached",
        "text": "dollar delta 512,000 > limit 400,000",
    }
    base.update(kw)
    return Alert(**base)


def outcomes(results: list[Any]) -> dict[str, DeliveryOutcome]:
    return {r.channel: r.outcome for r in results}


def test_routes_follow_the_table(
    notifier_factory: Any, fake_http: FakeHttp, caplog: pytest.LogCaptureFixture
) -> None:
    n = notifier_factory(
        routes={
            "breach": {"channels": ["log", "telegram"]},
            "run_failure": {"channels": ["slack"]},
        }
    )
    caplog.set_level(logging.INFO)
    assert outcomes(n.dispatch(breach())) == {
        "log": DeliveryOutcome.DELIVERED,
        "telegram": DeliveryOutcome.DELIVERED,
    }
    failure = Alert("run:9", AlertType.RUN_FAILURE, "Run failed", "job daily <broken> & co")
    assert outcomes(n.dispatch(failure)) == {"slack": DeliveryOutcome.DELIVERED}
    assert outcomes(n.dispatch(Alert("fill:1", AlertType.FILL, "Filled", "1 SPY"))) == {
        "log": DeliveryOutcome.DELIVERED
    }
    tg = fake_http.accepted("/bot")
    assert [r.body["chat_id"] for r in tg] == ["42"]
    assert "Delta limit breached" in tg[0].body["text"]
    slack = fake_http.accepted(SLACK_PATH)
    assert len(slack) == 1
    assert "&lt;broken&gt; &amp; co" in slack[0].body["text"]  # Slack control characters
    assert any("title=Filled" in r.getMessage() for r in caplog.records)


def test_severity_defaults_to_route_and_can_be_overridden(
    notifier_factory: Any, db: Database
) -> None:
    n = notifier_factory(routes={"fill": {"channels": ["log"], "severity": "info"}})
    n.dispatch(Alert("fill:1", AlertType.FILL, "t", "x"))
    n.dispatch(Alert("fill:2", AlertType.FILL, "t", "x", severity=Severity.CRITICAL))
    assert (alert := get_alert(db, "fill:1")) is not None and alert.severity == "info"
    assert (alert := get_alert(db, "fill:2")) is not None and alert.severity == "critical"


def test_two_500s_then_success_is_one_delivery(
    notifier_factory: Any, fake_http: FakeHttp, db: Database, sleeps: list[float]
) -> None:
    fake_http.script("/bot", (500, {"ok": False}, {}), (502, "bad gateway", {}))
    n = notifier_factory(routes={"breach": {"channels": ["telegram"]}})
    [result] = n.dispatch(breach())
    assert result.outcome is DeliveryOutcome.DELIVERED and result.attempts == 3
    assert len(fake_http.accepted(TG)) == 1
    assert sleeps == [1.0, 2.0]  # exponential backoff, injected sleep
    [row] = delivery_rows(db, "breach:1")
    assert row["status"] == "delivered" and row["attempts"] == 3
    assert row["delivered_at"] == datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    assert row["last_error"] is None


def test_telegram_429_honours_retry_after(
    notifier_factory: Any, fake_http: FakeHttp, sleeps: list[float]
) -> None:
    too_many = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    fake_http.script("/bot", (429, too_many, {}))
    n = notifier_factory(routes={"breach": {"channels": ["telegram"]}})
    [result] = n.dispatch(breach())
    assert result.outcome is DeliveryOutcome.DELIVERED
    assert sleeps == [3.0]
    assert len(fake_http.accepted(TG)) == 1


def test_slack_429_honours_retry_after_header(
    notifier_factory: Any, fake_http: FakeHttp, sleeps: list[float]
) -> None:
    fake_http.script(SLACK_PATH, (429, "rate_limited", {"Retry-After": "7"}))
    n = notifier_factory(routes={"breach": {"channels": ["slack"]}})
    [result] = n.dispatch(breach())
    assert result.outcome is DeliveryOutcome.DELIVERED
    assert sleeps == [7.0]
    assert len(fake_http.accepted(SLACK_PATH)) == 1


def test_duplicate_dispatch_sends_once_per_channel(
    notifier_factory: Any, fake_http: FakeHttp, db: Database
) -> None:
    n = notifier_factory(routes={"breach": {"channels": ["log", "telegram", "slack"]}})
    first = n.dispatch(breach())
    second = n.dispatch(breach(title="Delta limit breached (again)"))
    assert set(outcomes(first).values()) == {DeliveryOutcome.DELIVERED}
    assert set(outcomes(second).values()) == {DeliveryOutcome.DUPLICATE}
    assert len(fake_http.requests) == 2  # one Telegram, one Slack; nothing re-sent
    assert [r["status"] for r in delivery_rows(db, "breach:1")] == ["delivered"] * 3


def test_concurrent_dispatchers_send_once(
    notifier_factory: Any, fake_http: FakeHttp, db: Database
) -> None:
    notifiers = [
        notifier_factory(routes={"breach": {"channels": ["telegram", "slack"]}}) for _ in range(4)
    ]
    barrier = threading.Barrier(len(notifiers))
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(n: Notifier) -> None:
        try:
            barrier.wait(5)
            results.extend(n.dispatch(breach()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in notifiers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    delivered = [r for r in results if r.outcome is DeliveryOutcome.DELIVERED]
    assert sorted(r.channel for r in delivered) == ["slack", "telegram"]
    assert len(fake_http.accepted(TG)) == 1
    assert len(fake_http.accepted(SLACK_PATH)) == 1


def test_permanent_failure_is_recorded_and_reported(
    notifier_factory: Any, fake_http: FakeHttp, db: Database, sleeps: list[float]
) -> None:
    fake_http.script(
        "/bot",
        (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, {}),
    )
    n = notifier_factory(routes={"breach": {"channels": ["telegram", "log"]}})
    res = outcomes(n.dispatch(breach()))
    assert res == {"telegram": DeliveryOutcome.FAILED, "log": DeliveryOutcome.DELIVERED}
    assert sleeps == []
    [failure] = recent_failures(
        db, datetime(2026, 3, 10, tzinfo=UTC), now=datetime(2026, 3, 10, 16, tzinfo=UTC)
    )
    assert failure.channel == "telegram" and failure.alert_type == "breach"
    assert failure.attempts == 1 and failure.status == "failed"
    assert failure.last_error is not None and "chat not found" in failure.last_error
    assert TELEGRAM_TOKEN not in failure.last_error
    # A failed delivery is not re-sent by a later dispatch of the same alert.
    assert outcomes(n.dispatch(breach()))["telegram"] is DeliveryOutcome.DUPLICATE
    assert recent_failures(db, datetime(2026, 3, 11, tzinfo=UTC)) == []


def test_transient_errors_go_to_the_outbox_after_max_attempts(
    notifier_factory: Any, fake_http: FakeHttp, db: Database, sleeps: list[float]
) -> None:
    fake_http.script(SLACK_PATH, *[(503, "unavailable", {})] * 5)
    n = notifier_factory(
        routes={"breach": {"channels": ["slack"]}},
        retry={"max_attempts": 3, "initial_backoff_seconds": 2, "multiplier": 3},
    )
    [result] = n.dispatch(breach())
    assert result.outcome is DeliveryOutcome.RETRYING and result.attempts == 3
    assert sleeps == [2.0, 6.0]
    [row] = delivery_rows(db)
    assert row["status"] == "retrying" and row["attempts"] == 3 and "503" in row["last_error"]
    # backoff(3) = 2 * 3**2 = 18 s after the third failure (hand-computed)
    assert row["next_attempt_at"] == datetime(2026, 3, 10, 15, 0, 18, tzinfo=UTC)
    assert recent_failures(db, datetime(2026, 3, 10, tzinfo=UTC)) == []  # not failed for good


def test_connection_refused_is_retried_then_failed(
    db: Database,
    clock: SettableClock,
    sleeps: list[float],
    secret_env: dict[str, str],
    calendar: ExchangeCalendar,
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config(
        f"http://127.0.0.1:{port}",
        routes={"breach": {"channels": ["telegram"]}},
        retry={"max_attempts": 2},
    )
    n = Notifier(SqlNotificationStore(db), cfg, environ=secret_env, clock=clock, sleep=sleeps.append, calendar=calendar)
    [result] = n.dispatch(breach())
    assert result.outcome is DeliveryOutcome.RETRYING and result.attempts == 2
    assert result.error is not None and "ConnectError" in result.error
    assert sleeps == [1.0]


def test_quiet_hours_hold_drop_deliver_and_one_digest(
    notifier_factory: Any, fake_http: FakeHttp, db: Database, clock: SettableClock
) -> None:
    n = notifier_factory(
        routes={
            "fill": {"channels": ["telegram", "log"], "quiet_hours": "hold"},
            "exit_signal": {"channels": ["telegram"], "quiet_hours": "hold"},
            "weekly_digest": {"channels": ["telegram"], "quiet_hours": "drop"},
            "run_failure": {"channels": ["slack"], "quiet_hours": "deliver"},
            "breach": {"channels": ["telegram"], "quiet_hours": "hold"},
        }
    )
    clock.set(SATURDAY)
    held = [
        n.dispatch(Alert("fill:1", AlertType.FILL, "Filled 1 SPY put", "avg 4.10")),
        n.dispatch(Alert("fill:2", AlertType.FILL, "Filled 2 QQQ calls", "avg 1.05")),
        n.dispatch(Alert("exit:1", AlertType.EXIT_SIGNAL, "Exit IWM strangle", "21 DTE")),
    ]
    assert all(r.outcome is DeliveryOutcome.HELD for batch in held for r in batch)
    dropped = n.dispatch(Alert("wk:1", AlertType.WEEKLY_DIGEST, "Weekly", "..."))
    assert outcomes(dropped) == {"telegram": DeliveryOutcome.DROPPED}
    delivered = n.dispatch(Alert("run:1", AlertType.RUN_FAILURE, "Run failed", "..."))
    assert outcomes(delivered) == {"slack": DeliveryOutcome.DELIVERED}
    # Critical overrides quiet hours even on a "hold" route.
    crit = n.dispatch(breach("breach:crit", severity=Severity.CRITICAL))
    assert outcomes(crit) == {"telegram": DeliveryOutcome.DELIVERED}
    assert len(fake_http.accepted(TG)) == 1

    assert n.flush_due(MONDAY_PRE_OPEN - timedelta(minutes=1)) == []
    clock.set(MONDAY_PRE_OPEN + timedelta(minutes=2))
    flushed = n.flush_due()
    assert {r.channel: len(r.alert_keys) for r in flushed} == {"telegram": 3, "log": 2}
    assert all(r.outcome is DeliveryOutcome.DELIVERED for r in flushed)
    tg = fake_http.accepted(TG)
    assert len(tg) == 2  # the critical breach + ONE digest
    digest = tg[1].body["text"]
    assert digest.startswith("3 alert(s) held during quiet hours")
    for title in ("Filled 1 SPY put", "Filled 2 QQQ calls", "Exit IWM strangle"):
        assert title in digest
    assert "Sat 2026-03-07 10:00 EST" in digest
    assert n.flush_due() == []  # nothing left
    statuses = {(r["alert_key"], r["channel"]): r["status"] for r in delivery_rows(db)}
    assert statuses[("wk:1", "telegram")] == "dropped"
    assert statuses[("fill:1", "telegram")] == "delivered"
    # A re-dispatch of a held-then-flushed alert sends nothing.
    assert set(outcomes(n.dispatch(Alert("fill:1", AlertType.FILL, "x", "y"))).values()) == {
        DeliveryOutcome.DUPLICATE
    }


def test_critical_override_can_be_switched_off(notifier_factory: Any, clock: SettableClock) -> None:
    n = notifier_factory(
        routes={"breach": {"channels": ["telegram"], "quiet_hours": "hold"}},
        quiet={"critical_overrides": False},
    )
    clock.set(SATURDAY)
    assert outcomes(n.dispatch(breach(severity=Severity.CRITICAL))) == {
        "telegram": DeliveryOutcome.HELD
    }


def test_escalation_timing_and_acknowledgement(
    notifier_factory: Any, fake_http: FakeHttp, db: Database, clock: SettableClock
) -> None:
    n = notifier_factory(
        routes={"breach": {"channels": ["log", "telegram"]}},
        escalation={
            "enabled": True,
            "after_minutes": 15,
            "regimes": ["crisis"],
            "channels": ["telegram", "slack", "log"],
        },
    )
    t0 = clock()
    n.dispatch(breach("b:crisis", regime="crisis", severity=Severity.CRITICAL))
    n.dispatch(breach("b:acked", regime="crisis"))
    n.dispatch(breach("b:normal", regime="normal"))
    assert acknowledge(db, "b:acked", "alice", clock=lambda: t0 + timedelta(minutes=5))
    assert not acknowledge(db, "b:acked", "bob")
    with pytest.raises(KeyError):
        acknowledge(db, "nope", "alice")
    assert len(fake_http.accepted(TG)) == 3

    assert n.escalate_due(t0 + timedelta(minutes=14, seconds=59)) == []
    # Step 1 at +15 min: telegram already had it, so the next rung (slack) gets it.
    [step1] = n.escalate_due(t0 + timedelta(minutes=15))
    assert (step1.channel, step1.outcome, step1.alert_keys) == (
        "slack",
        DeliveryOutcome.DELIVERED,
        ("b:crisis",),
    )
    assert "ESCALATED (unacknowledged 15 min)" in fake_http.accepted(SLACK_PATH)[0].body["text"]
    assert n.escalate_due(t0 + timedelta(minutes=29)) == []
    # Step 2 at +30 min: log already had it too -> ladder exhausted, nothing more is sent.
    assert n.escalate_due(t0 + timedelta(minutes=30)) == []
    assert n.escalate_due(t0 + timedelta(hours=3)) == []
    stored = get_alert(db, "b:crisis")
    assert stored is not None and stored.escalation_level == 3
    assert stored.escalated_at == t0 + timedelta(minutes=30)
    assert len(fake_http.accepted(SLACK_PATH)) == 1
    acked = get_alert(db, "b:acked")
    assert acked is not None and acked.acknowledged_by == "alice" and acked.escalation_level == 0


def test_acknowledged_before_due_is_not_escalated(
    notifier_factory: Any, fake_http: FakeHttp, db: Database, clock: SettableClock
) -> None:
    n = notifier_factory(
        routes={"breach": {"channels": ["log"]}},
        escalation={"enabled": True, "after_minutes": 10, "channels": ["telegram", "slack"]},
    )
    t0 = clock()
    n.dispatch(breach("b:1", regime="Crisis"))
    [first] = n.escalate_due(t0 + timedelta(minutes=10))
    assert first.channel == "telegram"
    acknowledge(db, "b:1", "carol", clock=lambda: t0 + timedelta(minutes=12))
    assert n.escalate_due(t0 + timedelta(minutes=20)) == []
    assert fake_http.accepted(SLACK_PATH) == []


def test_secrets_never_reach_logs_or_the_database(
    notifier_factory: Any,
    fake_http: FakeHttp,
    db: Database,
    caplog: pytest.LogCaptureFixture,
    secret_env: dict[str, str],
) -> None:
    caplog.set_level(logging.DEBUG)  # including httpx2/httpcore2 debug lines
    fake_http.script("/bot", (500, {"ok": False, "description": f"echo {TELEGRAM_TOKEN}"}, {}))
    fake_http.script(SLACK_PATH, (404, f"no_service at {SLACK_PATH}", {}))
    n = notifier_factory(routes={"breach": {"channels": ["telegram", "slack", "log"]}})
    n.dispatch(breach())
    assert len(fake_http.accepted(TG)) == 1
    text = caplog.text + repr(n) + repr(delivery_rows(db)) + repr(n._channels)
    for secret in (TELEGRAM_TOKEN, SLACK_PATH.rsplit("/", 1)[1], secret_env["TEST_SLACK_URL"]):
        assert secret not in text
    assert "***" in caplog.text  # the echoed token was redacted, not dropped silently

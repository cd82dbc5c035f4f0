"""`portfolio run` is honest about time (issue 13.7).

During market hours it records an intraday snapshot of today's session (intraday job),
never the previous session's close; a session is recorded only after its close; a failed
run prints its root cause in one line.  Oracle: the XNYS calendar (2018-07-18, a regular
session 09:30-16:00 EDT = 13:30-20:00 UTC).  The Dagster run itself is replaced by a
recorder here (what is asserted is which job and session are chosen); `_root_causes` is
checked on a real failing in-process Dagster run.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import pytest
from click.testing import CliRunner

from portfolio_pipeline import cli, demo_window
from portfolio_pipeline import clock as clock_module


def _invoke(monkeypatch: pytest.MonkeyPatch, now: datetime, *args: str, ok: bool = True,
            cause: str | None = None) -> tuple[object, list[tuple[date, str]]]:
    calls: list[tuple[date, str]] = []

    def fake_run(first: date, last: date, *, demo: bool, job_name: str = "eod_job",
                 causes: list[str] | None = None) -> tuple[bool, str]:
        calls.append((first, job_name))
        if cause is not None and causes is not None:
            causes.append(cause)
        return ok, "run-1"

    monkeypatch.setattr(cli, "_run_sessions", fake_run)
    monkeypatch.setattr(clock_module, "system_clock", lambda: now)
    # as on a configuration with a live broker: the demo-only refusal of sessions past the
    # demo record is tested in test_cli_day.py
    monkeypatch.setattr(demo_window, "outside_demo_history", lambda config, day: None)
    return CliRunner().invoke(cli.main, ["run", *args]), calls


def test_market_hours_record_an_intraday_snapshot_of_today(monkeypatch: pytest.MonkeyPatch) -> None:
    result, calls = _invoke(monkeypatch, datetime(2018, 7, 18, 15, 0, tzinfo=UTC))  # 11:00 New York
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert calls == [(date(2018, 7, 18), "intraday_job")]
    assert "intraday snapshot of session 2018-07-18 at 11:00 New York" in result.output  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("now", "session"),
    [
        (datetime(2018, 7, 18, 20, 30, tzinfo=UTC), date(2018, 7, 18)),  # after the 16:00 close
        (datetime(2018, 7, 18, 12, 0, tzinfo=UTC), date(2018, 7, 17)),  # before the open
        (datetime(2018, 7, 3, 17, 30, tzinfo=UTC), date(2018, 7, 3)),  # after a half day's 13:00 close
    ],
)
def test_outside_market_hours_the_latest_closed_session(
    monkeypatch: pytest.MonkeyPatch, now: datetime, session: date
) -> None:
    result, calls = _invoke(monkeypatch, now)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert calls == [(session, "eod_job")]


def test_a_session_is_recorded_only_after_its_close(monkeypatch: pytest.MonkeyPatch) -> None:
    result, calls = _invoke(monkeypatch, datetime(2018, 7, 18, 15, 0, tzinfo=UTC), "--date", "2018-07-18")
    assert result.exit_code == 2 and calls == []  # type: ignore[attr-defined]
    assert "only after its close" in result.output  # type: ignore[attr-defined]


def test_a_failed_run_prints_its_root_cause_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    result, _ = _invoke(monkeypatch, datetime(2018, 7, 18, 21, 0, tzinfo=UTC), ok=False,
                        cause="positions_snapshot: BrokerError: ibkr: nothing listens on 127.0.0.1:4001")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    lines = [line for line in result.output.splitlines() if line.startswith("cause:")]  # type: ignore[attr-defined]
    assert lines == ["cause: positions_snapshot: BrokerError: ibkr: nothing listens on 127.0.0.1:4001"]


def test_root_causes_of_a_real_dagster_failure() -> None:
    @dg.op
    def fetch() -> None:
        try:
            raise ConnectionRefusedError("[Errno 111] Connect call failed ('127.0.0.1', 4001)")
        except ConnectionRefusedError as exc:
            raise RuntimeError("broker step failed") from exc

    @dg.job
    def failing() -> None:
        fetch()

    result = failing.execute_in_process(raise_on_error=False)
    assert cli._root_causes(result) == [
        "fetch: ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 4001)"]

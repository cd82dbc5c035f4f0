"""Quiet hours from the XNYS calendar: DST, half days, holidays, no hand-written hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portfolio_pipeline.config.notifications import QuietHoursConfig
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.notify.quiet import QuietHours


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def quiet(calendar: ExchangeCalendar) -> QuietHours:
    return QuietHours(QuietHoursConfig(minutes_before_open=30, minutes_after_close=60), calendar)


@pytest.mark.parametrize(
    ("at", "is_quiet"),
    [
        # Friday 2026-03-06, EST (UTC-5): window 09:00-17:00 New York = 14:00-22:00 UTC.
        (utc(2026, 3, 6, 13, 59), True),
        (utc(2026, 3, 6, 14, 0), False),
        (utc(2026, 3, 6, 21, 30), False),
        (utc(2026, 3, 6, 22, 0), True),
        # Sunday 2026-03-08: DST starts; a weekend, quiet all day.
        (utc(2026, 3, 8, 15, 0), True),
        # Monday 2026-03-09, EDT (UTC-4): the same local window is 13:00-21:00 UTC.
        (utc(2026, 3, 9, 13, 10), False),  # 09:10 New York; fixed EST hours would say quiet
        (utc(2026, 3, 9, 12, 59), True),
        (utc(2026, 3, 9, 20, 59), False),
        (utc(2026, 3, 9, 21, 30), True),  # 17:30 New York; fixed EST hours would say open
    ],
)
def test_dst_change_march_2026(quiet: QuietHours, at: datetime, is_quiet: bool) -> None:
    assert quiet.is_quiet(at) is is_quiet


def test_weekend_quiet_ends_at_monday_pre_open_in_edt(quiet: QuietHours) -> None:
    assert quiet.quiet_until(utc(2026, 3, 7, 12, 0)) == utc(2026, 3, 9, 13, 0)
    assert quiet.quiet_until(utc(2026, 3, 6, 22, 30)) == utc(2026, 3, 9, 13, 0)


def test_half_day_closes_at_13_new_york(quiet: QuietHours) -> None:
    # 2025-11-28 (day after Thanksgiving): close 13:00 EST = 18:00 UTC; +60 min = 19:00 UTC.
    assert not quiet.is_quiet(utc(2025, 11, 28, 18, 30))
    assert quiet.is_quiet(utc(2025, 11, 28, 19, 0))
    assert quiet.is_quiet(utc(2025, 11, 28, 20, 30))  # 15:30 New York: open on a normal day
    assert not quiet.is_quiet(utc(2025, 11, 26, 20, 30))  # a normal Wednesday
    # Quiet until Monday 2025-12-01 09:00 New York.
    assert quiet.quiet_until(utc(2025, 11, 28, 19, 30)) == utc(2025, 12, 1, 14, 0)


def test_holiday_is_quiet_all_day(quiet: QuietHours) -> None:
    thanksgiving_noon = utc(2025, 11, 27, 17, 0)
    assert quiet.is_quiet(thanksgiving_noon)
    assert quiet.quiet_until(thanksgiving_noon) == utc(2025, 11, 28, 14, 0)
    good_friday_2026 = utc(2026, 4, 3, 15, 0)
    assert quiet.is_quiet(good_friday_2026)


def test_late_margin_past_midnight_and_disabled(calendar: ExchangeCalendar) -> None:
    late = QuietHours(QuietHoursConfig(minutes_before_open=0, minutes_after_close=540), calendar)
    # Tuesday 2026-03-10 close 16:00 EDT + 9 h = 01:00 EDT Wednesday = 05:00 UTC.
    assert not late.is_quiet(utc(2026, 3, 11, 4, 30))
    assert late.is_quiet(utc(2026, 3, 11, 5, 30))
    off = QuietHours(QuietHoursConfig(enabled=False), calendar)
    assert off.quiet_until(utc(2026, 3, 8, 3, 0)) is None


def test_naive_time_is_rejected(quiet: QuietHours) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        quiet.is_quiet(datetime(2026, 3, 9, 12, 0))

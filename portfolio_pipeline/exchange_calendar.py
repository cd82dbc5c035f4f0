"""The exchange calendar (XNYS by default), the one place market hours come from.

Backed by ``exchange_calendars``: DST, holidays and half days come from the library,
never from hand-written hours.  Dates are exchange session dates (America/New_York);
times are aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd

NEW_YORK = ZoneInfo("America/New_York")
DEFAULT_START = date(2010, 1, 1)
DEFAULT_END = date(2030, 12, 31)


def _ts(day: date) -> pd.Timestamp:
    return pd.Timestamp(day.year, day.month, day.day)


def _utc(ts: Any) -> datetime:
    value = pd.Timestamp(ts)
    if value.tzinfo is None:
        value = value.tz_localize("UTC")
    result: datetime = value.tz_convert("UTC").to_pydatetime()
    return result


@dataclass(frozen=True)
class ExchangeCalendar:
    """Sessions and hours of one exchange over ``[start, end]``."""

    name: str = "XNYS"
    start: date = DEFAULT_START
    end: date = DEFAULT_END
    _cal: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cal = xcals.get_calendar(self.name, start=_ts(self.start), end=_ts(self.end))
        object.__setattr__(self, "_cal", cal)

    def _check(self, day: date) -> None:
        if not self.start <= day <= self.end:
            raise ValueError(
                f"{self.name} calendar: {day} is outside the loaded range {self.start}..{self.end}"
            )

    def is_session(self, day: date) -> bool:
        self._check(day)
        return bool(self._cal.is_session(_ts(day)))

    def sessions(self, start: date, end: date) -> list[date]:
        """Session dates in ``[start, end]`` (inclusive)."""
        self._check(start)
        self._check(end)
        if end < start:
            return []
        return [ts.date() for ts in self._cal.sessions_in_range(_ts(start), _ts(end))]

    def session_open(self, day: date) -> datetime:
        return _utc(self._cal.session_open(_ts(day)))

    def session_close(self, day: date) -> datetime:
        """Close of ``day`` (13:00 New York on half days) as aware UTC."""
        return _utc(self._cal.session_close(_ts(day)))

    def is_half_day(self, day: date) -> bool:
        close_ny = self.session_close(day).astimezone(NEW_YORK)
        return (close_ny.hour, close_ny.minute) < (16, 0)

    def previous_session(self, day: date) -> date:
        """The last session strictly before ``day``."""
        self._check(day)
        return self._cal.date_to_session(_ts(day - timedelta(days=1)), direction="previous").date()  # type: ignore[no-any-return]

    def next_session(self, day: date) -> date:
        """The first session strictly after ``day``."""
        self._check(day)
        return self._cal.date_to_session(_ts(day + timedelta(days=1)), direction="next").date()  # type: ignore[no-any-return]

    def session_on_or_before(self, day: date) -> date:
        self._check(day)
        return self._cal.date_to_session(_ts(day), direction="previous").date()  # type: ignore[no-any-return]

    def is_open(self, at: datetime) -> bool:
        """Whether the market is in regular trading hours at aware time ``at``."""
        if at.tzinfo is None:
            raise ValueError(f"{self.name} calendar: is_open needs an aware datetime, got {at!r}")
        day = at.astimezone(NEW_YORK).date()
        if not self.is_session(day):
            return False
        return self.session_open(day) <= at.astimezone(UTC) < self.session_close(day)

    def last_completed_session(self, at: datetime) -> date:
        """The latest session whose close is at or before ``at``."""
        if at.tzinfo is None:
            raise ValueError(f"{self.name} calendar: needs an aware datetime, got {at!r}")
        day = self.session_on_or_before(at.astimezone(NEW_YORK).date())
        if self.session_close(day) > at:
            day = self.previous_session(day)
        return day

    def closed_weekdays(self, start: date, end: date) -> list[date]:
        """Weekdays in ``[start, end]`` that are not sessions (holidays)."""
        sessions = set(self.sessions(start, end))
        out: list[date] = []
        day = start
        while day <= end:
            if day.weekday() < 5 and day not in sessions:
                out.append(day)
            day += timedelta(days=1)
        return out

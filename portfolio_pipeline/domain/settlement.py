"""THE settlement instant of an option expiry (one function for every time to expiry).

AM-settled classes (SPX and NDX monthlies, ...) settle on the opening of the expiry
session; PM-settled classes (SPXW, weeklies, equity options, ...) on its close, which is
13:00 New York on a half day.  An expiry on a non-session day (a holiday such as Good
Friday) settles on the session before.  Hours come from the exchange calendar passed in
(:class:`portfolio_pipeline.exchange_calendar.ExchangeCalendar`: DST, holidays, half
days); outside the calendar's loaded range the regular 09:30/16:00 America/New_York hours
are used, still DST-correct.  Used by the pipeline's Greeks, stress tests, the streaming
engine and the hedge proposer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Final, Literal, Protocol
from zoneinfo import ZoneInfo

from portfolio_pipeline.domain.positions import require_aware

__all__ = [
    "YEAR_SECONDS",
    "SessionHours",
    "settlement_instant",
    "years_to_settlement",
]

NEW_YORK: Final = ZoneInfo("America/New_York")
REGULAR_OPEN: Final = time(9, 30)
REGULAR_CLOSE: Final = time(16, 0)
YEAR_SECONDS: Final = 365.0 * 86400.0
"""ACT/365: a year of time to expiry, in seconds."""

SettlementTime = Literal["AM", "PM"]


class SessionHours(Protocol):
    """The part of an exchange calendar settlement needs (ValueError outside its range)."""

    def session_on_or_before(self, day: date) -> date: ...

    def session_open(self, day: date) -> datetime: ...

    def session_close(self, day: date) -> datetime: ...


def settlement_instant(expiry: date, settlement_time: str, calendar: SessionHours | None = None) -> datetime:
    """Aware UTC instant an option of ``expiry`` settles: AM = session open, PM = session close."""
    if settlement_time not in ("AM", "PM"):
        raise ValueError(f"settlement time must be 'AM' or 'PM', got {settlement_time!r}")
    am = settlement_time == "AM"
    if calendar is not None:
        try:
            day = calendar.session_on_or_before(expiry)
            return (calendar.session_open(day) if am else calendar.session_close(day)).astimezone(UTC)
        except ValueError:
            pass  # outside the loaded calendar (long-dated options): regular hours below
    local = datetime.combine(expiry, REGULAR_OPEN if am else REGULAR_CLOSE, tzinfo=NEW_YORK)
    return local.astimezone(UTC)


def years_to_settlement(
    as_of: datetime, expiry: date, settlement_time: str, calendar: SessionHours | None = None
) -> float:
    """ACT/365 years from ``as_of`` to the settlement instant (0 once it has passed)."""
    require_aware(as_of, "as_of", f"time to expiry {expiry}")
    seconds = (settlement_instant(expiry, settlement_time, calendar) - as_of).total_seconds()
    return max(seconds, 0.0) / YEAR_SECONDS

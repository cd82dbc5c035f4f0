"""Quiet hours on the exchange calendar.

Alerts may go out from ``minutes_before_open`` before a session's open until
``minutes_after_close`` after its close (13:00 New York on half days); any other time,
and all of every non-session day, is quiet.  Hours, DST, holidays and early closes come
from :class:`~portfolio_pipeline.exchange_calendar.ExchangeCalendar`, never from
hand-written times.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from portfolio_pipeline.config.notifications import QuietHoursConfig
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar

__all__ = ["QuietHours"]

_LOOKBEHIND = timedelta(days=2)
_LOOKAHEAD = timedelta(days=15)


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"quiet hours: {what} must be timezone-aware, got {at!r}")
    return at.astimezone(UTC)


class QuietHours:
    """Answers "is it quiet now?" and "when does this quiet period end?"."""

    def __init__(self, config: QuietHoursConfig, calendar: ExchangeCalendar | None = None) -> None:
        self._config = config
        self._calendar = calendar if calendar is not None else ExchangeCalendar(config.calendar)
        self._before = timedelta(minutes=config.minutes_before_open)
        self._after = timedelta(minutes=config.minutes_after_close)

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    @property
    def critical_overrides(self) -> bool:
        return self._config.critical_overrides

    def _windows(self, at: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Delivery windows of sessions around ``at``, in order."""
        day = at.astimezone(NEW_YORK).date()
        for session in self._calendar.sessions(day - _LOOKBEHIND, day + _LOOKAHEAD):
            yield (
                self._calendar.session_open(session) - self._before,
                self._calendar.session_close(session) + self._after,
            )

    def quiet_until(self, at: datetime) -> datetime | None:
        """None when ``at`` is not quiet, else the aware UTC time the quiet period ends."""
        at = _aware(at, "time")
        if not self._config.enabled:
            return None
        for start, end in self._windows(at):
            if end <= at:
                continue
            if start <= at:
                return None
            return start
        raise RuntimeError(f"quiet hours: no session within {_LOOKAHEAD.days} days of {at}")

    def is_quiet(self, at: datetime) -> bool:
        return self.quiet_until(at) is not None

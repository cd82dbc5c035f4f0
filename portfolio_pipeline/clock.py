"""Clocks: every component that needs "now" takes a clock, so time is injectable in tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def to_utc(value: object, column: str) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive or non-datetime values raise.

    ``column`` names where the value was headed, for the error message.
    """
    if not isinstance(value, datetime):
        raise ValueError(
            f"column {column!r} needs a timezone-aware datetime, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"column {column!r} got a naive datetime {value.isoformat()}; "
            "use an aware UTC datetime, e.g. datetime.now(UTC)"
        )
    return value.astimezone(UTC)


def system_clock() -> datetime:
    """The real time, aware UTC."""
    return datetime.now(UTC)


class SettableClock:
    """A clock that returns a time the owner sets (for as-of runs, backfills and tests)."""

    def __init__(self, at: datetime) -> None:
        self._at = self._check(at)

    @staticmethod
    def _check(at: datetime) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"clock: time must be timezone-aware, got {at!r}")
        return at.astimezone(UTC)

    def set(self, at: datetime) -> None:
        self._at = self._check(at)

    def __call__(self) -> datetime:
        return self._at

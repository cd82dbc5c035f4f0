"""Clocks: every component that needs "now" takes a clock, so time is injectable in tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


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

"""Per-session progress of a daily asset over a range of sessions, with an ETA.

A single-run backfill (``portfolio demo`` over a year) runs each asset over hundreds of
sessions; :class:`SessionProgress` logs ``<asset>: session i/N (date), elapsed, ETA`` on
the ``portfolio_pipeline.progress`` logger at most every ``every_seconds`` (and for the
last session), so the console shows steady progress instead of minutes of silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

PROGRESS_LOGGER = "portfolio_pipeline.progress"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


class SessionProgress:
    """Counts the sessions of one asset's run and logs progress with an ETA."""

    def __init__(self, asset: str, total: int, *, every_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger | None = None,
                 run_log: Any = None) -> None:
        self.asset = asset
        self.total = total
        self.done = 0
        self._every = every_seconds
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._logger = logger or logging.getLogger(PROGRESS_LOGGER)
        self._run_log = run_log
        """The run's Dagster log (``context.log``): backfills show progress in the UI's run logs."""

    def eta_seconds(self) -> float | None:
        """Seconds left at the mean pace so far (None before the first session)."""
        if self.done == 0:
            return None
        return (self._clock() - self._start) / self.done * (self.total - self.done)

    def step(self, day: date) -> None:
        """Session ``day`` is done."""
        self.done += 1
        now = self._clock()
        if self.total <= 1 or (now - self._last < self._every and self.done < self.total):
            return
        self._last = now
        eta = self.eta_seconds()
        args = (self.asset, self.done, self.total, day.isoformat(), _clock(now - self._start), _clock(eta or 0.0))
        self._logger.info("%s: session %d/%d (%s), %s elapsed, ETA %s", *args)
        if self._run_log is not None:
            self._run_log.info("progress %s: session %d/%d (%s), %s elapsed, ETA %s", *args)


def tracked(asset: str, days: list[date], run_log: Any = None) -> Iterator[date]:
    """``days`` one by one; each counts as done when the loop asks for the next one."""
    progress = SessionProgress(asset, len(days), run_log=run_log)
    for day in days:
        yield day
        progress.step(day)

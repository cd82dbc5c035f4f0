"""Per-session progress with an ETA (defs/progress.py): a hand-timed fake clock."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pytest

from portfolio_pipeline.defs.progress import SessionProgress


def test_progress_logs_throttled_with_eta(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    logger = logging.getLogger("portfolio_tests.progress")  # outside the CLI-configured logger
    progress = SessionProgress("position_greeks", 10, every_seconds=5.0, clock=lambda: now[0], logger=logger)
    caplog.set_level(logging.INFO, logger=logger.name)
    for i in range(10):
        now[0] += 2.0  # two seconds a session
        progress.step(date(2018, 2, 1) + timedelta(days=i))
    lines = [r.getMessage() for r in caplog.records if r.name == logger.name]
    # logged every >= 5 s (sessions 3, 6, 9: 6 s apart) and for the last session
    assert lines == [
        "position_greeks: session 3/10 (2018-02-03), 0:06 elapsed, ETA 0:14",  # 7 left x 2 s
        "position_greeks: session 6/10 (2018-02-06), 0:12 elapsed, ETA 0:08",
        "position_greeks: session 9/10 (2018-02-09), 0:18 elapsed, ETA 0:02",
        "position_greeks: session 10/10 (2018-02-10), 0:20 elapsed, ETA 0:00",
    ]


def test_one_session_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("portfolio_tests.progress")
    caplog.set_level(logging.INFO, logger=logger.name)
    SessionProgress("x", 1, logger=logger).step(date(2018, 2, 5))
    assert not [r for r in caplog.records if r.name == logger.name]

"""Shared helpers of the analytics assets: reading stored rows as frames, config lookups."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from portfolio_pipeline.defs.quality import suite_check_result
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.settlement import settlement_instant
from portfolio_pipeline.exchange_calendar import ExchangeCalendar


def on(frame: pd.DataFrame, day: date) -> pd.DataFrame:
    """The rows of one session."""
    if frame.empty:
        return frame
    return frame[frame["session_date"] == day]


def settlement_hour(calendar: ExchangeCalendar) -> Callable[[date, bool], float]:
    """(expiry, am) -> UTC hour of THE settlement instant (:mod:`portfolio_pipeline.domain.settlement`)."""

    def hour(expiry: date, am: bool) -> float:
        at = settlement_instant(expiry, "AM" if am else "PM", calendar)
        midnight = datetime(expiry.year, expiry.month, expiry.day, tzinfo=UTC)
        return (at - midnight).total_seconds() / 3600.0

    return hour


def market_history() -> Any:
    """The shipped daily history (SPX, NDX proxy, VIX), or None when it cannot be loaded."""
    try:
        from portfolio_pipeline.marketdata.history import MarketHistory

        return MarketHistory()
    except Exception:  # optional completion of stored closes; never fatal
        return None


check_result = suite_check_result


def beta_history(db: DatabaseResource, platform: PlatformResource, as_of: date) -> pd.DataFrame:
    """Closes completing the beta estimation: the stored broker history (every symbol,
    up to ``as_of`` only) with a live broker, else the shipped data (SPX, NDX proxy, VIX);
    estimate_betas cuts each session's window at that session."""
    from portfolio_pipeline.analytics.beta import history_closes
    from portfolio_pipeline.defs.marketdata.reader import uses_stored_history

    if not uses_stored_history(platform):
        return history_closes(market_history())
    from portfolio_pipeline.marketdata.store import StoredHistory

    with db.database.connect() as conn:
        return StoredHistory(conn, as_of).closes_frame()

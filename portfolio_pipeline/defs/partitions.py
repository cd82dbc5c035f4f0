"""Daily partitions = exchange sessions (XNYS, America/New_York).

Weekends are excluded by cron and holidays by date, so no partition exists for a
closed day.  The current session's partition exists from midnight New York on, so the
intraday refresh and the after-close EOD run write to it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime

import dagster as dg

from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar

PARTITIONS_START = date(2014, 6, 2)
"""The earliest session any partition can have (the start of the VIX history)."""
HISTORY_START = date(2017, 7, 3)
"""Default first partition: the first session of the demo book's record."""
HISTORY_START_ENV = "PORTFOLIO_HISTORY_START"
"""Environment variable naming the first session with data (YYYY-MM-DD)."""
TIMEZONE = "America/New_York"


def history_start(environ: Mapping[str, str] | None = None) -> date:
    """The first session with data: ``PORTFOLIO_HISTORY_START`` or :data:`HISTORY_START`.

    Partitions begin there, so the UI counts no years of "missing" sessions before the
    record begins.  A bad value is an error naming the variable.
    """
    raw = (os.environ if environ is None else environ).get(HISTORY_START_ENV, "").strip()
    if not raw:
        return HISTORY_START
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{HISTORY_START_ENV}={raw!r}: not a date (YYYY-MM-DD)") from None
    if day < PARTITIONS_START:
        raise ValueError(f"{HISTORY_START_ENV}={raw}: before {PARTITIONS_START}, the start of the market history")
    return day


def session_partitions(
    calendar: ExchangeCalendar, *, start: date | None = None, end: date | None = None
) -> dg.DailyPartitionsDefinition:
    """Daily partitions on exchange sessions from ``start`` (default :data:`PARTITIONS_START`)."""
    first = start or PARTITIONS_START
    holidays = calendar.closed_weekdays(first, calendar.end)
    return dg.DailyPartitionsDefinition(
        start_date=first.isoformat(),
        end_date=None if end is None else end.isoformat(),
        timezone=TIMEZONE,
        end_offset=1,  # today's session exists during the day (EOD and intraday runs)
        exclusions=[
            "0 0 * * 6",
            "0 0 * * 0",
            *[datetime(d.year, d.month, d.day, tzinfo=NEW_YORK) for d in holidays],
        ],
    )


def partition_dates(context: dg.AssetExecutionContext) -> list[date]:
    """The session dates a run covers (one key, or a range under a single-run backfill)."""
    return [date.fromisoformat(k) for k in context.partition_keys]

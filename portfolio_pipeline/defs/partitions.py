"""Daily partitions = exchange sessions (XNYS, America/New_York).

Weekends are excluded by cron and holidays by date, so no partition exists for a
closed day.  The current session's partition exists from midnight New York on, so the
intraday refresh and the after-close EOD run write to it.
"""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar

PARTITIONS_START = date(2014, 6, 2)
TIMEZONE = "America/New_York"


def session_partitions(calendar: ExchangeCalendar, *, end: date | None = None) -> dg.DailyPartitionsDefinition:
    """Daily partitions on exchange sessions from :data:`PARTITIONS_START`."""
    holidays = calendar.closed_weekdays(PARTITIONS_START, calendar.end)
    return dg.DailyPartitionsDefinition(
        start_date=PARTITIONS_START.isoformat(),
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

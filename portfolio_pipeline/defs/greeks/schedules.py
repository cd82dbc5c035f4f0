"""Intraday refresh: broker snapshots and Greeks every 15 minutes while the market is open."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.greeks.checks import PORTFOLIO_GREEKS, POSITION_GREEKS
from portfolio_pipeline.defs.jobs import demo_skip, session_tick
from portfolio_pipeline.defs.positions.checks import ACCOUNTS, MARKET, POSITIONS
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar

INTRADAY_CRON = "*/15 * * * 1-5"


def intraday_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "intraday_job",
        selection=dg.AssetSelection.assets(POSITIONS, ACCOUNTS, MARKET, POSITION_GREEKS, PORTFOLIO_GREEKS),
        description="Refresh today's broker snapshots and Greeks (the EOD run overwrites them "
        "with the close).",
    )


def intraday_schedule(job: dg.UnresolvedAssetJobDefinition, calendar: ExchangeCalendar) -> dg.ScheduleDefinition:
    """Every 15 minutes in New York; runs only in regular trading hours of a session.

    ``open <= tick < close`` on the exchange calendar: 09:30 runs, the close itself does
    not (the EOD schedule takes over); half days end at 13:00; DST comes from the calendar.
    """

    @dg.schedule(
        job=job,
        cron_schedule=INTRADAY_CRON,
        execution_timezone="America/New_York",
        name="intraday_schedule",
        description="Snapshots and Greeks every 15 minutes between the open and the close "
        "of XNYS sessions (holidays, weekends and after a half day's 13:00 close skipped).",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def _intraday(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        at = session_tick(context, calendar)
        if isinstance(at, dg.SkipReason):
            return at
        tick, day = at
        if not calendar.is_open(tick):
            return dg.SkipReason(f"{tick.astimezone(NEW_YORK):%Y-%m-%d %H:%M} is outside market hours")
        stamp = tick.astimezone(NEW_YORK).strftime("%Y-%m-%dT%H%M")
        reason = demo_skip(day)
        if reason is not None:
            return dg.SkipReason(reason)
        return dg.RunRequest(run_key=f"intraday-{stamp}", partition_key=day.isoformat())

    return _intraday

"""Jobs and schedules over the daily session partitions."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar

EOD_CRON = "30 16 * * 1-5"
EOD_GROUPS: tuple[str, ...] = ("positions", "marketdata", "greeks", "risk", "stress", "strategies", "reporting",
                               "notifications", "flow")
"""Asset groups of the daily (session-partitioned) record the EOD job materializes."""


def eod_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "eod_job",
        selection=dg.AssetSelection.groups(*EOD_GROUPS),
        description="End-of-day record of the book for one exchange session.",
    )


def eod_schedule(job: dg.UnresolvedAssetJobDefinition, calendar: ExchangeCalendar) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=job,
        cron_schedule=EOD_CRON,
        execution_timezone="America/New_York",
        name="eod_schedule",
        description="After the close on every XNYS session (holidays skipped, half days included).",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def _eod(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        at = session_tick(context, calendar)
        if isinstance(at, dg.SkipReason):
            return at
        tick, day = at
        if calendar.session_close(day) > tick:
            return dg.SkipReason(f"{day}: the session has not closed yet")
        reason = demo_skip(day)
        if reason is not None:
            return dg.SkipReason(reason)
        return dg.RunRequest(run_key=f"eod-{day.isoformat()}", partition_key=day.isoformat())

    return _eod


def session_tick(
    context: dg.ScheduleEvaluationContext, calendar: ExchangeCalendar
) -> tuple[datetime, date] | dg.SkipReason:
    """A schedule tick (now when evaluated by hand) and its New York day; a skip when
    that day is not an XNYS session."""
    tick = context.scheduled_execution_time or datetime.now(NEW_YORK)
    day = tick.astimezone(NEW_YORK).date()
    if not calendar.is_session(day):
        return dg.SkipReason(f"{day} is not an XNYS session")
    return tick, day


def demo_skip(day: date) -> str | None:
    """A skip reason when only the demo broker is configured and ``day`` is past its history."""
    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.demo_window import outside_demo_history
    from portfolio_pipeline.paths import config_dir

    return outside_demo_history(load_platform_config(config_dir()), day)

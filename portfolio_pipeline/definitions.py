"""The Dagster code location: merges what ``defs/`` holds into one ``Definitions``."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from portfolio_pipeline.defs import (
    backtest,
    flow,
    greeks,
    jobs,
    marketdata,
    notifications,
    positions,
    reporting,
    risk,
    strategies,
    stress,
)
from portfolio_pipeline.defs.alerts import definitions as alerts_definitions
from portfolio_pipeline.defs.execution import execution_settings
from portfolio_pipeline.defs.greeks.schedules import intraday_job, intraday_schedule
from portfolio_pipeline.defs.partitions import history_start, session_partitions
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.demo_window import demo_partitions_end
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.log_setup import configure_code_location_logging


def build_definitions(config_directory: Path | None = None) -> dg.Definitions:
    """Everything under defs/; partitions from the first session with data to, on a
    demo-only configuration (``config_directory`` or the active one), the demo history's end."""
    calendar = ExchangeCalendar()
    partitions = session_partitions(calendar, start=history_start(), end=demo_partitions_end(config_directory))
    eod = jobs.eod_job()
    intraday = intraday_job()
    return dg.Definitions.merge(
        positions.definitions(partitions),
        stress.definitions(partitions),
        marketdata.definitions(partitions),
        alerts_definitions(),
        greeks.definitions(partitions),
        risk.definitions(partitions),
        backtest.definitions(partitions),
        reporting.definitions(partitions),
        strategies.definitions(partitions),
        notifications.definitions(partitions),
        flow.definitions(partitions),
        dg.Definitions(jobs=[intraday], schedules=[intraday_schedule(intraday, calendar)]),
        dg.Definitions(
            jobs=[eod],
            schedules=[jobs.eod_schedule(eod, calendar)],
            resources={"db": DatabaseResource(), "platform": PlatformResource()},
            executor=execution_settings().executor(),  # PORTFOLIO_EXECUTOR (defs/execution.py)
        ),
    )


configure_code_location_logging()  # PORTFOLIO_LOG_FORMAT=json: JSON lines from our loggers
defs = build_definitions()

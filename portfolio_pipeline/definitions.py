"""The Dagster code location: merges what ``defs/`` holds into one ``Definitions``."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs import jobs, positions, stress
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.exchange_calendar import ExchangeCalendar


def build_definitions() -> dg.Definitions:
    calendar = ExchangeCalendar()
    partitions = session_partitions(calendar)
    eod = jobs.eod_job()
    return dg.Definitions.merge(
        positions.definitions(partitions),
        stress.definitions(partitions),
        dg.Definitions(
            jobs=[eod],
            schedules=[jobs.eod_schedule(eod, calendar)],
            resources={"db": DatabaseResource(), "platform": PlatformResource()},
        ),
    )


defs = build_definitions()

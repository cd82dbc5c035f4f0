"""``notification_delivery``: failed or stuck notification deliveries, visible as a WARN check."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import dagster as dg

from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.notifications import recent_failures

__all__ = ["DAILY_SUMMARY", "DELIVERY_CHECK", "WEEKLY_DIGEST", "delivery_check_result"]

DAILY_SUMMARY: Final = dg.AssetKey("daily_summary")
WEEKLY_DIGEST: Final = dg.AssetKey("weekly_digest")

DELIVERY_CHECK: Final = dg.AssetCheckSpec(
    "notification_delivery",
    asset=DAILY_SUMMARY,
    description="No notification (of any alert type) failed for good or got stuck while "
    "sending in the last hours (window: the notifications resource's failure_window_hours).",
)


def delivery_check_result(
    db: Database, *, now: datetime, window: timedelta, stuck_after: timedelta
) -> dg.AssetCheckResult:
    """WARN-severity result listing failed/stuck deliveries since ``now - window``."""
    failures = recent_failures(db, now - window, now=now, stuck_after=stuck_after)
    lines = [
        "| alert | channel | status | attempts | error |",
        "|---|---|---|---|---|",
        *(
            f"| {f.alert_key} | {f.channel} | {f.status} | {f.attempts} | "
            f"{(f.last_error or '').replace('|', '/').replace(chr(10), ' ')[:200]} |"
            for f in failures
        ),
    ]
    return dg.AssetCheckResult(
        check_name=DELIVERY_CHECK.name,
        asset_key=DAILY_SUMMARY,
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if not failures
        else f"{len(failures)} notification delivery(ies) failed or stuck",
        metadata={
            "failures": dg.MetadataValue.int(sum(f.status == "failed" for f in failures)),
            "stuck": dg.MetadataValue.int(sum(f.status == "sending" for f in failures)),
            "window_hours": dg.MetadataValue.float(window.total_seconds() / 3600),
            "deliveries": dg.MetadataValue.md("\n".join(lines) if failures else "none"),
        },
    )

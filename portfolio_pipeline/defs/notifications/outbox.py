"""The notification outbox in the Dagster UI: the ``notification_outbox`` asset (the
``notification_deliveries`` table) and its ``deliveries`` check.

A run that sends alerts (``breach_response``, ``exit_signal_alert``,
``notification_housekeeping``) records a ``deliveries`` check evaluation whenever a
delivery of the run failed: WARN while the delivery waits in the outbox for a retry,
ERROR (check failed) when it failed for good.  Running the check from the UI reports
every delivery that failed for good or got stuck in the failure window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import dagster as dg

from portfolio_pipeline.defs.notifications.resources import NotificationsResource
from portfolio_pipeline.defs.resources import DatabaseResource
from portfolio_pipeline.notify import DeliveryOutcome, DeliveryResult
from portfolio_pipeline.storage.notifications import recent_failures

__all__ = [
    "NOTIFICATION_OUTBOX",
    "OUTBOX_CHECK",
    "outbox_asset",
    "outbox_check",
    "outbox_check_evaluation",
    "record_deliveries",
]

NOTIFICATION_OUTBOX: Final = dg.AssetKey("notification_outbox")
OUTBOX_CHECK: Final = "deliveries"

outbox_asset: Final = dg.AssetSpec(
    NOTIFICATION_OUTBOX,
    group_name="alerts",  # not in the EOD job's groups: the outbox is not session-partitioned
    description="One row per alert per channel (table notification_deliveries): delivered, "
    "held for quiet hours, waiting for a retry (backoff until the route's "
    "expire_after_minutes) or failed for good.",
    kinds={"sql"},
)


def _table(results: Sequence[DeliveryResult]) -> str:
    lines = ["| alert | channel | outcome | error |", "|---|---|---|---|"]
    for r in results:
        error = (r.error or "").replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| {', '.join(r.alert_keys)} | {r.channel} | {r.outcome.value} | {error} |")
    return "\n".join(lines)


def outbox_check_evaluation(results: Sequence[DeliveryResult]) -> dg.AssetCheckEvaluation | None:
    """The check evaluation for the deliveries of one run; None when nothing failed."""
    failed = [r for r in results if r.outcome is DeliveryOutcome.FAILED]
    waiting = [r for r in results if r.outcome is DeliveryOutcome.RETRYING]
    if not failed and not waiting:
        return None
    return dg.AssetCheckEvaluation(
        asset_key=NOTIFICATION_OUTBOX,
        check_name=OUTBOX_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if failed else dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(failed)} notification delivery(ies) failed for good"
            if failed
            else f"{len(waiting)} notification delivery(ies) wait in the outbox for a retry"
        ),
        metadata={
            "failed": dg.MetadataValue.int(len(failed)),
            "retrying": dg.MetadataValue.int(len(waiting)),
            "deliveries": dg.MetadataValue.md(_table([*failed, *waiting])),
        },
    )


def record_deliveries(
    context: dg.OpExecutionContext, results: Sequence[DeliveryResult]
) -> dg.AssetCheckEvaluation | None:
    """Log the run's ``deliveries`` check evaluation (when a delivery failed)."""
    evaluation = outbox_check_evaluation(results)
    if evaluation is not None:
        # log_event accepts check evaluations (dagster 1.13) though its annotation omits them
        context.log_event(evaluation)  # type: ignore[arg-type]
    return evaluation


@dg.asset_check(
    asset=NOTIFICATION_OUTBOX,
    name=OUTBOX_CHECK,
    description="No notification delivery failed for good or got stuck while sending within "
    "the notifications resource's failure_window_hours.",
)
def outbox_check(db: DatabaseResource, notifications: NotificationsResource) -> dg.AssetCheckResult:
    now = notifications.now()
    failures = recent_failures(
        db.database, now - notifications.failure_window, now=now,
        stuck_after=notifications.stuck_after,
    )
    rows = "\n".join(
        f"| {f.alert_key} | {f.channel} | {f.status} | {f.attempts} | "
        f"{(f.last_error or '').replace('|', '/').replace(chr(10), ' ')[:200]} |"
        for f in failures
    )
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if not failures else f"{len(failures)} delivery(ies) failed or stuck",
        metadata={
            "failed": dg.MetadataValue.int(len(failures)),
            "deliveries": dg.MetadataValue.md(
                "| alert | channel | status | attempts | error |\n|---|---|---|---|---|\n" + rows
                if failures
                else "none"
            ),
        },
    )

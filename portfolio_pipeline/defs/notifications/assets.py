"""``daily_summary`` and ``weekly_digest``: the end-of-day summary and the weekly digest,
rendered from the stored analytics and sent through :class:`~portfolio_pipeline.notify.Notifier`.

Sending rules
-------------
* Exactly once per channel: the alert key is ``daily_summary:<session>`` /
  ``weekly_digest:<week end>`` and the notify delivery log claims each (alert, channel)
  before sending, so re-materializing a partition sends nothing more.
* No spam from backfills: a partition is *sent* only when its session is the latest
  completed session on the exchange calendar at run time, or when the run carries the
  tag ``portfolio/notify=force``.  Otherwise the asset still materializes, with the
  rendered text in its metadata and ``sent = false`` plus the reason: the record is the
  materialization; nothing is written to ``alerts`` and nothing is delivered.
* ``weekly_digest`` sends only on the last session of a week (Friday, or Thursday when
  Friday is a holiday, ...); other sessions materialize with ``week_end = false``.
"""

from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any, Final

import dagster as dg

from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.greeks.checks import PORTFOLIO_GREEKS
from portfolio_pipeline.defs.metadata import SessionMetadata
from portfolio_pipeline.defs.notifications.checks import (
    DAILY_SUMMARY,
    DELIVERY_CHECK,
    WEEKLY_DIGEST,
    delivery_check_result,
)
from portfolio_pipeline.defs.notifications.resources import NotificationsResource
from portfolio_pipeline.defs.notifications.summary import (
    daily_summary_data,
    is_week_end,
    weekly_digest_data,
)
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.risk.checks import ATTRIBUTION, MARGIN, RETURNS, RISK
from portfolio_pipeline.defs.strategies.checks import POSITION_LIFECYCLE, STRATEGY_PERFORMANCE
from portfolio_pipeline.defs.stress.checks import MONTE_CARLO
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.notify import (
    Alert,
    DeliveryOutcome,
    DeliveryResult,
    daily_summary_alert,
    weekly_digest_alert,
)

__all__ = ["FORCE", "NOTIFY_TAG", "make_notification_assets", "send_decision"]

NOTIFY_TAG: Final = "portfolio/notify"
FORCE: Final = "force"
GROUP: Final = "notifications"


def send_decision(
    session: date, *, now: datetime, calendar: ExchangeCalendar, tags: Mapping[str, str]
) -> tuple[bool, str]:
    """Whether a notification about ``session`` goes out now, and why (see module doc)."""
    if tags.get(NOTIFY_TAG) == FORCE:
        return True, f"run tag {NOTIFY_TAG}={FORCE}"
    latest = calendar.last_completed_session(now)
    if session == latest:
        return True, "latest completed session"
    return False, (
        f"session {session} is not the latest completed session ({latest}): recorded, not "
        f"sent (tag {NOTIFY_TAG}={FORCE} sends it)"
    )


def _channels(results: list[DeliveryResult], outcome: DeliveryOutcome) -> list[str]:
    return sorted(r.channel for r in results if r.outcome is outcome)


def _send(
    context: dg.AssetExecutionContext,
    alert: Alert,
    session: date,
    *,
    db: DatabaseResource,
    platform: PlatformResource,
    notifications: NotificationsResource,
) -> dict[str, dg.MetadataValue]:
    """Dispatch (or only record) ``alert`` about ``session``; metadata describing what happened."""
    now = notifications.now()
    send, reason = send_decision(
        session, now=now, calendar=platform.calendar, tags=context.run.tags
    )
    meta: dict[str, dg.MetadataValue] = {
        "alert_key": dg.MetadataValue.text(alert.key),
        "text": dg.MetadataValue.md(f"```\n{alert.text}\n```"),
        "sent": dg.MetadataValue.bool(send),
        "reason": dg.MetadataValue.text(reason),
    }
    if not send:
        context.log.info("notification not sent alert_key=%s reason=%s", alert.key, reason)
        return meta
    results = notifications.notifier(db.database, platform).dispatch(alert)
    outcomes = {
        "delivered": _channels(results, DeliveryOutcome.DELIVERED),
        "already_sent": _channels(results, DeliveryOutcome.DUPLICATE),
        "held": _channels(results, DeliveryOutcome.HELD),
        "dropped": _channels(results, DeliveryOutcome.DROPPED),
        "failed": _channels(results, DeliveryOutcome.FAILED),
        "retrying": _channels(results, DeliveryOutcome.RETRYING),  # in the outbox
    }
    context.log.info("notification dispatched alert_key=%s outcomes=%s", alert.key, outcomes)
    meta.update({f"channels_{k}": dg.MetadataValue.json(v) for k, v in outcomes.items()})
    return meta


def daily_summary(
    context: dg.AssetExecutionContext,
    db: DatabaseResource,
    platform: PlatformResource,
    notifications: NotificationsResource,
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    meta = SessionMetadata(context)
    sent = 0
    for day in meta.days:
        gathered = daily_summary_data(db.database, day)
        outcome = _send(
            context,
            daily_summary_alert(gathered.data),
            day,
            db=db,
            platform=platform,
            notifications=notifications,
        )
        sent += outcome["sent"].value is True
        if gathered.missing:
            # Expected on a book's first sessions (no prior close to attribute against);
            # worth a warning only when the summary actually went out with gaps.
            log = context.log.warning if outcome["sent"].value is True else context.log.info
            log("daily_summary %s: not stored: %s", day, ", ".join(gathered.missing))
        meta.record(day, DAILY_SUMMARY, {
            **outcome, "missing": dg.MetadataValue.json(list(gathered.missing)),
            "pnl": gathered.data.pnl, "var_95": gathered.data.var_95, "var_99": gathered.data.var_99,
        })
    yield dg.MaterializeResult(asset_key=DAILY_SUMMARY,
                               metadata=meta.output_metadata(DAILY_SUMMARY, {"sessions_sent": sent}))
    yield delivery_check_result(
        db.database,
        now=notifications.now(),
        window=notifications.failure_window,
        stuck_after=notifications.stuck_after,
    )


def weekly_digest(
    context: dg.AssetExecutionContext,
    db: DatabaseResource,
    platform: PlatformResource,
    notifications: NotificationsResource,
) -> dg.MaterializeResult[Any]:
    meta = SessionMetadata(context)
    sent = 0
    for day in meta.days:
        if not is_week_end(platform.calendar, day):
            meta.record(day, WEEKLY_DIGEST, {"week_end": False, "status": "not a week end", "sent": False})
            continue
        gathered = weekly_digest_data(db.database, platform.calendar, day)
        outcome = _send(
            context,
            weekly_digest_alert(gathered.data),
            day,
            db=db,
            platform=platform,
            notifications=notifications,
        )
        sent += outcome["sent"].value is True
        meta.record(day, WEEKLY_DIGEST, {
            **outcome, "week_end": True, "missing": dg.MetadataValue.json(list(gathered.missing)),
            "pnl": gathered.data.pnl,
        })
    return dg.MaterializeResult(asset_key=WEEKLY_DIGEST,
                                metadata=meta.output_metadata(WEEKLY_DIGEST, {"sessions_sent": sent}))


def make_notification_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The assets on ``partitions`` (session partitions; tests pass a short range)."""
    return [
        dg.asset(
            key=DAILY_SUMMARY,
            deps=[RETURNS, ATTRIBUTION, PORTFOLIO_GREEKS, RISK, MARGIN, MONTE_CARLO, POSITION_LIFECYCLE],
            check_specs=[DELIVERY_CHECK],
            description="End-of-day summary (P&L and its Greek attribution, Greeks vs the prior "
            "session, regime/VIX, VaR, exit signals, staged orders) sent once per channel for the "
            "latest completed session; backfilled sessions are recorded, not sent.",
            partitions_def=partitions,
            backfill_policy=session_backfill_policy(),
            group_name=GROUP,
            kinds={"python"},
        )(daily_summary),
        dg.asset(
            key=WEEKLY_DIGEST,
            deps=[RETURNS, ATTRIBUTION, RISK, STRATEGY_PERFORMANCE, DAILY_SUMMARY],
            description="Weekly digest (P&L, Sharpe, drawdown, strategy attribution, best/worst "
            "positions) on the last session of each exchange week; other sessions send nothing.",
            partitions_def=partitions,
            backfill_policy=session_backfill_policy(),
            group_name=GROUP,
            kinds={"python"},
        )(weekly_digest),
    ]

"""The one activity reader of the Dagster layer: live broker activity merged with
imported history (:func:`portfolio_pipeline.brokers.history.merge.merge_activity`), used
by ``portfolio_returns``, ``pnl_attribution`` and the strategy assets."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from portfolio_pipeline.brokers.base import BrokerError
from portfolio_pipeline.brokers.history.merge import merge_activity
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.activity import CashFlow, Execution

__all__ = ["read_activity"]

logger = logging.getLogger(__name__)


def read_activity(
    db: DatabaseResource, platform: PlatformResource, start: date, end: date, *,
    imported_only_on_broker_error: bool = False,
) -> tuple[list[CashFlow], list[Execution]]:
    """Cash flows and executions since ``start`` as known at the close of session ``end``:
    the brokers' live report plus imported history, deduplicated by broker id.

    A :class:`BrokerError` propagates (the asset's retry policy applies) unless
    ``imported_only_on_broker_error``, where it is logged and imported history is used."""
    try:
        live_flows, live_fills = platform.activity(start, end)
    except BrokerError as exc:
        if not imported_only_on_broker_error:
            raise
        logger.warning("broker activity unavailable, using imported history only: %s", exc)
        live_flows, live_fills = [], []
    until = platform.calendar.session_close(end) + timedelta(minutes=1)
    flows, fills = merge_activity(live_flows, live_fills, db.history.load_cash_flows(),
                                  db.history.load_executions(), start=start, until=until)
    logger.info("activity %s..%s: %d cash flows, %d executions (live %d/%d)", start, end,
                len(flows), len(fills), len(live_flows), len(live_fills))
    return flows, fills

"""The history the models read: the stored broker history, bounded by the session.

With a live broker configured the models read :class:`~portfolio_pipeline.marketdata.
store.StoredHistory` (what ``market_history`` stored, never past ``as_of``); a demo-only
configuration reads the shipped data (:class:`~portfolio_pipeline.marketdata.history.
MarketHistory`), which is what the demo's ``market_history`` stores, label for label.
"""

from __future__ import annotations

from datetime import date

from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.marketdata.store import StoredHistory


def uses_stored_history(platform: PlatformResource) -> bool:
    """True when a non-demo broker is configured (its history is the stored one)."""
    return any(a.broker != "demo" for a in platform._accounts())


def model_history(db: DatabaseResource, platform: PlatformResource, as_of: date) -> MarketHistory | StoredHistory:
    """The history a model run up to session ``as_of`` reads (module docstring)."""
    if not uses_stored_history(platform):
        return MarketHistory()
    with db.database.connect() as conn:
        return StoredHistory(conn, as_of)

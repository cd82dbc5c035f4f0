"""The history the models read: the stored broker history, bounded by the session.

With a live broker configured the models read :class:`~portfolio_pipeline.marketdata.
store.StoredHistory` (what ``market_history`` stored, never past ``as_of``); a demo-only
configuration reads the shipped data (:class:`~portfolio_pipeline.marketdata.history.
MarketHistory`), which is what the demo's ``market_history`` stores, label for label.
"""

from __future__ import annotations

from datetime import date

from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.symbols import VIX
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.marketdata.store import PublishedThenStored, StoredHistory
from portfolio_pipeline.quant.scenario_config import StressScenariosFile


def uses_stored_history(platform: PlatformResource) -> bool:
    """True when a non-demo broker is configured (its history is the stored one)."""
    return any(a.broker != "demo" for a in platform._accounts())


def model_history(db: DatabaseResource, platform: PlatformResource, as_of: date) -> MarketHistory | StoredHistory:
    """The history a model run up to session ``as_of`` reads (module docstring)."""
    if not uses_stored_history(platform):
        return MarketHistory()
    with db.database.connect() as conn:
        return StoredHistory(conn, as_of)


def replay_history(db: DatabaseResource, platform: PlatformResource, as_of: date) -> MarketHistory:
    """The history the replays read: the shipped published data, continued (live brokers)
    by the stored closes up to ``as_of`` (:class:`PublishedThenStored`)."""
    if not uses_stored_history(platform):
        return MarketHistory()
    with db.database.connect() as conn:
        return PublishedThenStored(StoredHistory(conn, as_of, ["SPX", VIX]))


def ended_windows(cfg: StressScenariosFile, last: date) -> StressScenariosFile:
    """``cfg`` without the configured replay windows that end after ``last`` (the run's
    last session): their broker history does not exist yet for the run."""
    hc = cfg.historical
    kept = [w for w in hc.windows if w.end <= last]
    return cfg.model_copy(update={"historical": hc.model_copy(update={"windows": kept})})

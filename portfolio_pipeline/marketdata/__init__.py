"""Market history loaders (published data plus clearly labelled model-derived series)."""

from portfolio_pipeline.marketdata.history import (
    NDX_ANCHOR_CLOSE,
    NDX_ANCHOR_DATE,
    VIX3M_LONG_RUN,
    VIX3M_REVERSION,
    MarketHistory,
    realised_vol,
)

__all__ = [
    "NDX_ANCHOR_CLOSE",
    "NDX_ANCHOR_DATE",
    "VIX3M_LONG_RUN",
    "VIX3M_REVERSION",
    "MarketHistory",
    "realised_vol",
]

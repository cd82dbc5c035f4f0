"""Interactive Brokers adapter (ib_async): :class:`IbkrBroker`."""

from portfolio_pipeline.brokers.ibkr.adapter import IbkrBroker
from portfolio_pipeline.brokers.ibkr.pacing import RateLimiter

__all__ = ["IbkrBroker", "RateLimiter"]

"""Tastytrade broker adapter (tastytrade SDK 13.x over httpx2; DXLink for quotes/Greeks)."""

from portfolio_pipeline.brokers.tastytrade.adapter import TastytradeAdapter
from portfolio_pipeline.brokers.tastytrade.streaming import FeedState
from portfolio_pipeline.brokers.tastytrade.transport import RetryingTransport

__all__ = ["FeedState", "RetryingTransport", "TastytradeAdapter"]

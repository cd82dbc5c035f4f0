"""Tick sources: a feed yields :class:`~streaming_service.engine.Tick` s and the starting book."""

from streaming_service.feeds.base import Feed, StartingBook
from streaming_service.feeds.broker import BrokerFeed

__all__ = ["BrokerFeed", "Feed", "StartingBook"]

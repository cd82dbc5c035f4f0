"""Fixtures of the analytics asset tests (the stub book lives in :mod:`.book`)."""

from portfolio_pipeline_tests.defs.risk.book import dated_broker, instance

__all__ = ["dated_broker", "instance"]

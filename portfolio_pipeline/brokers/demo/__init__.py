"""The demo broker: a deterministic simulated options book priced off real market history.

See :mod:`.broker` (the adapter), :mod:`.book` (strategies and rules), :mod:`.market`
(underlyings, vol surface, quotes, chains) and :mod:`.margin` (margin and commissions).
"""

from portfolio_pipeline.brokers.demo.book import DemoBook, ManualTrade
from portfolio_pipeline.brokers.demo.broker import DEFAULT_START, DemoBroker
from portfolio_pipeline.brokers.demo.market import DemoMarket

__all__ = ["DEFAULT_START", "DemoBook", "DemoBroker", "DemoMarket", "ManualTrade"]

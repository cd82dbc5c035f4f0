"""Order persistence and the confirmation commands (CLI and streaming service share them)."""

from portfolio_pipeline.orders.commands import BrokerFor, OrderCommands, ShowResult, render_order
from portfolio_pipeline.orders.store import ConcurrentUpdateError, OrderNotFoundError, OrderStore

__all__ = [
    "BrokerFor",
    "ConcurrentUpdateError",
    "OrderCommands",
    "OrderNotFoundError",
    "OrderStore",
    "ShowResult",
    "render_order",
]

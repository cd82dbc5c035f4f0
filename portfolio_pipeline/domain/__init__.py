"""Pure data and rules (no I/O): instruments, positions, orders, regime, limits."""

from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.errors import (
    DomainError,
    IllegalTransitionError,
    InvalidDataError,
    MultiplierMismatchError,
    UnknownInstrumentError,
)
from portfolio_pipeline.domain.greeks import PositionGreeks, position_greeks
from portfolio_pipeline.domain.instruments import InstrumentSpec, InstrumentTable
from portfolio_pipeline.domain.limits import LimitCheck, RiskSnapshot, breaches, evaluate_limits
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus, WhatIfResult
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline.domain.regime import RegimeService, RegimeState, RiskMatrix

__all__ = [
    "AccountSnapshot",
    "CashFlow",
    "Contract",
    "DomainError",
    "Execution",
    "IllegalTransitionError",
    "InstrumentSpec",
    "InstrumentTable",
    "InvalidDataError",
    "LimitCheck",
    "MultiplierMismatchError",
    "Order",
    "OrderLeg",
    "OrderStatus",
    "Position",
    "PositionGreeks",
    "Quote",
    "RegimeService",
    "RegimeState",
    "RiskMatrix",
    "RiskSnapshot",
    "UnknownInstrumentError",
    "WhatIfResult",
    "breaches",
    "evaluate_limits",
    "position_greeks",
]

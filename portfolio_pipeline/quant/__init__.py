"""Numeric kernels: pure numpy/scipy, no pandas in hot paths, no I/O.

The pricing kernel (vectorised BSM/Black-76 prices, Greeks, implied vol, American) is
re-exported here; see :mod:`portfolio_pipeline.quant.pricing` for the unit conventions.
The other kernels are imported from their modules: ``quant.risk_metrics`` (VaR/CVaR,
ratios, drawdown), ``quant.vol`` (GARCH via arch), ``quant.attribution``,
``quant.returns``, ``quant.sizing`` and the scenario engine (``quant.scenario_book``,
``quant.scenario_set``, ``quant.revaluation``, ``quant.premium_grid``, ``quant.monte_carlo``,
``quant.scenario_risk``; its YAML schema ``quant.scenario_config``).
"""

from portfolio_pipeline.quant.pricing import (
    Greeks,
    InvalidInput,
    IVReason,
    american_greeks,
    american_price,
    greeks,
    implied_vol,
    parse_kind,
    price,
    validate_inputs,
)

__all__ = [
    "Greeks",
    "IVReason",
    "InvalidInput",
    "american_greeks",
    "american_price",
    "greeks",
    "implied_vol",
    "parse_kind",
    "price",
    "validate_inputs",
]

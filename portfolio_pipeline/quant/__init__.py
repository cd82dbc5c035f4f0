"""Option pricing kernel: vectorised BSM/Black-76 prices, Greeks, implied vol, American.

See :mod:`portfolio_pipeline.quant.pricing` for the unit conventions.
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

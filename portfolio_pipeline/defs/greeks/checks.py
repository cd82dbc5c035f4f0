"""Data-quality suites on position and portfolio Greeks (Great Expectations, called directly)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from portfolio_pipeline.defs.quality import (
    SuiteOutcome,
    between,
    in_set,
    not_null,
    unique_compound,
    validate_frame,
)

POSITION_GREEKS = dg.AssetKey("position_greeks")
PORTFOLIO_GREEKS = dg.AssetKey("portfolio_greeks")

GREEKS_CHECK = dg.AssetCheckSpec(
    "position_greeks_quality", asset=POSITION_GREEKS, blocking=True,
    description="Model Greeks and dollar Greeks finite, spot positive, one row per "
    "(session, broker, account, position).",
)
PORTFOLIO_CHECK = dg.AssetCheckSpec(
    "portfolio_greeks_quality", asset=PORTFOLIO_GREEKS, blocking=True,
    description="Summed Greeks finite; one row per (session, broker, account, underlying).",
)

_FINITE = ("delta", "gamma", "vega", "theta", "vanna", "volga", "share_delta", "dollar_delta",
           "dollar_gamma_1pct", "theta_per_day", "vega_per_point", "beta_weighted_dollar_delta")


def position_greeks_suite(frame: pd.DataFrame) -> SuiteOutcome:
    # NaN/inf never reach storage (NULL or rejected), so not-null is "finite" on read-back.
    return validate_frame(
        "position_greeks",
        frame,
        [
            *(not_null(c) for c in _FINITE),
            between("spot", min_value=0.0, strict_min=True),
            in_set("vol_source", ["broker", "implied", "intrinsic", "none"]),
            unique_compound(["session_date", "broker", "account_id", "position_key"]),
        ],
    )


def portfolio_greeks_suite(frame: pd.DataFrame) -> SuiteOutcome:
    return validate_frame(
        "portfolio_greeks",
        frame,
        [
            *(not_null(c) for c in ("dollar_delta", "dollar_gamma_1pct", "theta_per_day",
                                    "vega_per_point", "beta_weighted_dollar_delta")),
            unique_compound(["session_date", "broker", "account_id", "underlying"]),
        ],
    )

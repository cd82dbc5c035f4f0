"""Data-quality suites on the broker snapshots (Great Expectations, called directly)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from portfolio_pipeline.defs.quality import (
    SuiteOutcome,
    a_ge_b,
    between,
    in_set,
    not_in,
    not_null,
    suite_check_result,
    unique_compound,
    validate_frame,
)

POSITIONS = dg.AssetKey("positions_snapshot")
ACCOUNTS = dg.AssetKey("account_snapshot")
MARKET = dg.AssetKey("market_snapshot")

CHECK_SPECS: tuple[dg.AssetCheckSpec, ...] = (
    dg.AssetCheckSpec(
        "positions_quality", asset=POSITIONS, blocking=True,
        description="No null marks, non-zero quantities, known positive multipliers, finite "
        "prices, one row per (session, account, position).",
    ),
    dg.AssetCheckSpec(
        "account_quality", asset=ACCOUNTS, blocking=True,
        description="NLV positive, margins non-negative and finite.",
    ),
    dg.AssetCheckSpec(
        "market_quality", asset=MARKET, blocking=True,
        description="bid <= ask, finite non-negative marks, option expiries not before the session.",
    ),
)


def positions_suite(frame: pd.DataFrame, known_multipliers: list[float]) -> SuiteOutcome:
    return validate_frame(
        "positions_snapshot",
        frame,
        [
            not_null("mark"),
            not_null("avg_price"),
            not_in("quantity", [0, 0.0]),
            in_set("multiplier", known_multipliers),
            between("mark", min_value=0.0),
            unique_compound(["session_date", "broker", "account_id", "position_key"]),
        ],
    )


def account_suite(frame: pd.DataFrame) -> SuiteOutcome:
    return validate_frame(
        "account_snapshot",
        frame,
        [
            not_null("nlv"),
            between("nlv", min_value=0.0, strict_min=True),
            between("maint_margin", min_value=0.0),
            between("init_margin", min_value=0.0),
            unique_compound(["session_date", "broker", "account_id"]),
        ],
    )


def market_suite(frame: pd.DataFrame) -> SuiteOutcome:
    options = frame[frame["sec_type"].isin(["OPT", "FOP"])].copy()
    options["days_to_expiry"] = (
        pd.to_datetime(options["expiry"]) - pd.to_datetime(options["session_date"])
    ).dt.days
    market = validate_frame(
        "market_snapshot",
        frame,
        [
            not_null("mark"),
            between("mark", min_value=0.0),
            a_ge_b("ask", "bid"),
            unique_compound(["session_date", "source", "instrument_key"]),
        ],
    )
    if options.empty:
        return market
    expiries = validate_frame("market_snapshot_expiries", options, [between("days_to_expiry", min_value=0)])
    return SuiteOutcome(market.name, market.rows, market.outcomes + expiries.outcomes)


check_result = suite_check_result

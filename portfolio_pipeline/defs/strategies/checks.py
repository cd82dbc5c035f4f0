"""Checks of the strategy assets: types and statuses valid, every position fully assigned
to strategies, strategy P&L summing to the account P&L (GE suites where tabular)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
import pandas as pd

from portfolio_pipeline.defs.quality import (
    SuiteOutcome,
    between,
    in_set,
    not_null,
    problems_check_result,
    suite_check_result,
    unique_compound,
    validate_frame,
)
from portfolio_pipeline.domain.strategies.legs import STRATEGY_TYPES

STRATEGY_GROUPS = dg.AssetKey("strategy_groups")
STRATEGY_PERFORMANCE = dg.AssetKey("strategy_performance")
POSITION_LIFECYCLE = dg.AssetKey("position_lifecycle")
KELLY_SIZING = dg.AssetKey("kelly_sizing")
LIQUIDITY_FLAGS = dg.AssetKey("liquidity_flags")
THETA_VEGA_HISTORY = dg.AssetKey("theta_vega_history")

GROUPS_CHECK = dg.AssetCheckSpec(
    "strategy_groups_quality", asset=STRATEGY_GROUPS, blocking=True,
    description="Known strategy types and statuses, one row per (session, account, strategy).",
)
COVERAGE_CHECK = dg.AssetCheckSpec(
    "strategy_legs_cover_positions", asset=STRATEGY_GROUPS, blocking=True,
    description="The open strategies' legs add up to every position's quantity exactly.",
)
PNL_SUM_CHECK = dg.AssetCheckSpec(
    "strategy_pnl_sums_to_portfolio", asset=STRATEGY_PERFORMANCE, blocking=True,
    description="Per account and session, the strategies' daily P&L sums to the account's "
    "P&L from portfolio_returns (NLV change net of external flows, less income such as "
    "interest and dividends), commissions included, from the book's first session.",
)
LIFECYCLE_CHECK = dg.AssetCheckSpec(
    "position_lifecycle_quality", asset=POSITION_LIFECYCLE,
    description="Status green/yellow/red, days in trade >= 0, one row per strategy.",
)
TOLERANCE = 1e-6


def groups_suite(frame: pd.DataFrame) -> SuiteOutcome:
    return validate_frame("strategy_groups", frame, [
        in_set("strategy_type", list(STRATEGY_TYPES)),
        in_set("status", ["open", "closed"]),
        in_set("source", ["auto", "manual"]),
        not_null("opened_on"),
        unique_compound(["session_date", "broker", "account_id", "strategy_id"]),
    ])


def lifecycle_suite(frame: pd.DataFrame) -> SuiteOutcome:
    return validate_frame("position_lifecycle", frame, [
        in_set("status", ["green", "yellow", "red"]),
        between("days_in_trade", min_value=0),
        not_null("pnl"),
        unique_compound(["session_date", "broker", "account_id", "strategy_id"]),
    ])


def coverage_problems(positions: Iterable[Mapping[str, Any]], groups: Iterable[Mapping[str, Any]]) -> list[str]:
    """Position keys whose quantity differs from the sum of the open strategies' legs."""
    held: dict[tuple[Any, ...], float] = defaultdict(float)
    for g in groups:
        if g["status"] != "open":
            continue
        for leg in g["legs"] or []:
            held[(g["session_date"], g["broker"], g["account_id"], leg["position_key"])] += float(leg["quantity"])
    want = {(p["session_date"], p["broker"], p["account_id"], p["position_key"]): float(p["quantity"])
            for p in positions}
    problems = []
    for key in sorted(set(held) | set(want), key=str):
        if abs(held.get(key, 0.0) - want.get(key, 0.0)) > 1e-9:
            problems.append(f"{key[0]} {key[2]} {key[3]}: position {want.get(key, 0.0):g}, "
                            f"strategies {held.get(key, 0.0):g}")
    return problems


def pnl_sum_problems(
    day: Any, rows: Iterable[Mapping[str, Any]], accounts: Iterable[tuple[str, str]], returns: pd.DataFrame
) -> tuple[float, list[str]]:
    """Largest gap and problems between each account's summed strategy P&L and its
    ``portfolio_returns`` P&L less income (independent: NLV change net of flows).

    An account whose ``portfolio_returns`` row has no previous NLV (its first snapshot:
    the NLV counts as money in) has no P&L to compare and is skipped."""
    session = returns[returns["session_date"] == day] if not returns.empty else returns
    by = {(r["broker"], r["account_id"]): r for r in session.to_dict("records")}
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for r in rows:
        totals[(r["broker"], r["account_id"])] += float(r["daily_pnl"])
    worst = 0.0
    problems: list[str] = []
    for account in sorted(set(accounts) | set(totals)):
        ret = by.get(account)
        if ret is None:
            problems.append(f"{day} {account[1]}: no portfolio_returns row to compare with")
            continue
        if ret["prev_nlv"] is None or not math.isfinite(float(ret["prev_nlv"])):
            continue
        expected = float(ret["pnl"]) - float(ret["income"] or 0.0)
        diff = abs(totals.get(account, 0.0) - expected)
        worst = max(worst, diff)
        if diff > TOLERANCE * max(1.0, abs(expected)):
            problems.append(f"{day} {account[1]}: strategies {totals.get(account, 0.0):.2f} vs "
                            f"account {expected:.2f} (portfolio_returns)")
    return worst, problems


simple_result = problems_check_result


suite_result = suite_check_result

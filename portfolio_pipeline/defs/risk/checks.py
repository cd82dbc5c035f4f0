"""Data-quality suites on returns, attribution, risk metrics and margin history."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from portfolio_pipeline.analytics.attribution import identity_error
from portfolio_pipeline.config.pricing import ReconciliationSettings
from portfolio_pipeline.defs.quality import (
    SuiteOutcome,
    between,
    in_set,
    not_null,
    unique_compound,
    validate_frame,
)
from portfolio_pipeline.domain.symbols import AGGREGATE

RETURNS = dg.AssetKey("portfolio_returns")
ATTRIBUTION = dg.AssetKey("pnl_attribution")
RISK = dg.AssetKey("risk_metrics")
MARGIN = dg.AssetKey("margin_history")

RETURNS_CHECK = dg.AssetCheckSpec(
    "returns_quality", asset=RETURNS, blocking=True,
    description="NLV positive, daily returns finite and > -100%, growth index positive, one "
    "row per (session, broker, account).",
)
RECONCILIATION_CHECK = dg.AssetCheckSpec(
    "pnl_reconciliation", asset=RETURNS, blocking=False,
    description="Computed daily P&L (NLV change net of external flows) agrees with the "
    "broker's own daily P&L where the broker reports one (tolerance in config/pricing.yaml).",
)
ATTRIBUTION_CHECK = dg.AssetCheckSpec(
    "attribution_identity", asset=ATTRIBUTION, blocking=True,
    description="actual = delta + gamma + theta + vega + vanna + volga + unexplained on every "
    "row (to 1e-9 relative); no duplicate (session, broker, account, position).",
)
UNEXPLAINED_CHECK = dg.AssetCheckSpec(
    "attribution_unexplained", asset=ATTRIBUTION, blocking=False,
    description="The book's unexplained P&L is not large (thresholds in config/pricing.yaml).",
)
RISK_CHECK = dg.AssetCheckSpec(
    "risk_metrics_quality", asset=RISK, blocking=True,
    description="One row per (session, scope, window, metric); VaR/CVaR finite where reported.",
)
MARGIN_CHECK = dg.AssetCheckSpec(
    "margin_quality", asset=MARGIN, blocking=True,
    description="Margin utilisation finite and >= 0, a configured regime, live VIX > 0.",
)
BREACH_CHECK = dg.AssetCheckSpec(
    "limit_breaches", asset=MARGIN, blocking=False,
    description="No limit of the regime in force is breached at the close (warning).",
)

IDENTITY_TOLERANCE = 1e-9


def returns_suite(frame: pd.DataFrame) -> SuiteOutcome:
    return validate_frame(
        "portfolio_returns",
        frame,
        [
            not_null("nlv"),
            between("nlv", min_value=0.0, strict_min=True),
            not_null("twr"),
            between("twr", min_value=-1.0, strict_min=True),
            not_null("pnl"),
            between("growth_index", min_value=0.0, strict_min=True),
            unique_compound(["session_date", "broker", "account_id"]),
        ],
    )


def reconciliation_frame(frame: pd.DataFrame, settings: ReconciliationSettings) -> pd.DataFrame:
    """Rows with a broker daily P&L: ``excess = |pnl - broker| - tolerance`` (<= 0 agrees)."""
    sel = frame[frame["broker_daily_pnl"].notna() & frame["prev_nlv"].notna()].copy()
    broker = sel["broker_daily_pnl"].astype("float64")
    diff = (sel["pnl"].astype("float64") - broker).abs()
    tol = (broker.abs() * settings.relative).clip(lower=settings.absolute)
    sel["excess"] = diff - tol
    return sel


def reconciliation_suite(frame: pd.DataFrame, settings: ReconciliationSettings) -> SuiteOutcome:
    rec = reconciliation_frame(frame, settings)
    if rec.empty:
        rec = pd.DataFrame({"excess": pd.Series([], dtype="float64")})
    return validate_frame("pnl_reconciliation", rec, [between("excess", max_value=0.0)])


def attribution_suite(frame: pd.DataFrame) -> SuiteOutcome:
    checked = frame.copy()
    checked["identity_error"] = identity_error(frame) if not frame.empty else pd.Series(dtype="float64")
    return validate_frame(
        "pnl_attribution",
        checked,
        [
            not_null("actual"),
            not_null("identity_error"),
            between("identity_error", max_value=IDENTITY_TOLERANCE),
            unique_compound(["session_date", "broker", "account_id", "position_key"]),
        ],
    )


def unexplained_suite(frame: pd.DataFrame) -> SuiteOutcome:
    book = frame[(frame["broker"] == AGGREGATE) & (frame["position_key"] == AGGREGATE)]
    return validate_frame("pnl_unexplained", book, [in_set("large_unexplained", [False])])


def risk_suite(frame: pd.DataFrame) -> SuiteOutcome:
    var = frame[frame["metric"].str.startswith(("var_", "cvar_"))]
    var = var[~var["metric"].str.contains("garch")]
    outcome = validate_frame(
        "risk_metrics",
        frame,
        [
            between("observations", min_value=1),
            unique_compound(["session_date", "broker", "account_id", "window", "metric"]),
        ],
    )
    if var.empty:
        return outcome
    finite = validate_frame("risk_metrics_var", var, [not_null("value")])
    return SuiteOutcome(outcome.name, outcome.rows, outcome.outcomes + finite.outcomes)


def margin_suite(frame: pd.DataFrame, regimes: list[str]) -> SuiteOutcome:
    return validate_frame(
        "margin_history",
        frame,
        [
            not_null("margin_utilisation"),
            between("margin_utilisation", min_value=0.0),
            in_set("regime", regimes),
            between("vix", min_value=0.0, strict_min=True),
            unique_compound(["session_date", "broker", "account_id"]),
        ],
    )


_LIMIT_UNITS = {"margin_utilisation": "maintenance margin"}


def breach_lines(limits: pd.DataFrame, margin: pd.DataFrame) -> list[str]:
    """One line per breached limit: session, account, metric, value and limit (% of NLV and $).

    ``limits`` are rows of ``limit_checks`` (values as fractions of NLV), ``margin`` the rows
    of ``margin_history`` of the same sessions (the NLV of each scope).
    """
    if limits.empty:
        return []
    nlv = {(r["session_date"], r["broker"], r["account_id"]): float(r["nlv"])
           for r in margin.to_dict("records")} if not margin.empty else {}
    out = []
    hit = limits[limits["breached"].astype(bool)].sort_values(["session_date", "broker", "account_id", "metric"])
    for r in hit.to_dict("records"):
        scale = nlv.get((r["session_date"], r["broker"], r["account_id"]))
        value, limit = float(r["value"]), float(r["limit_value"])
        dollars = "" if scale is None else f" (${value * scale:,.0f} vs ${limit * scale:,.0f})"
        scope = "book" if r["account_id"] == AGGREGATE else f"{r['broker']}:{r['account_id']}"
        if str(r["metric"]).startswith("naked_short_"):  # a structure ban: a count of contracts
            out.append(f"{r['session_date']} {scope} {r['metric']}: {value:g} naked short contract(s) "
                       f"held, none allowed for this account type")
            continue
        out.append(f"{r['session_date']} {scope} {r['metric']}: {100 * value:+.2f}% of NLV, limit "
                   f"{100 * limit:+.2f}%{dollars}, {100 * float(r['utilisation']):.0f}% used, {r['regime']}")
    return out

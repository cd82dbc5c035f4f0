"""Position Greeks (model and broker, side by side) and their totals per account and underlying."""


from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import dagster as dg
import pandas as pd

from portfolio_pipeline.analytics.beta import (
    beta_window,
    combine_closes,
    estimate_betas,
    reference_close,
    stored_closes,
)
from portfolio_pipeline.analytics.greeks import portfolio_greek_rows, position_greek_rows
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.greeks.checks import (
    GREEKS_CHECK,
    PORTFOLIO_CHECK,
    PORTFOLIO_GREEKS,
    POSITION_GREEKS,
    portfolio_greeks_suite,
    position_greeks_suite,
)
from portfolio_pipeline.defs.greeks.frames import (
    beta_history,
    check_result,
    on,
    settlement_hour,
)
from portfolio_pipeline.defs.metadata import SessionMetadata, usd
from portfolio_pipeline.defs.partitions import partition_dates
from portfolio_pipeline.defs.positions.checks import MARKET, POSITIONS
from portfolio_pipeline.defs.progress import tracked
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.storage import market_snapshot, positions_snapshot, replace_partition
from portfolio_pipeline.storage.frames import read_frame
from portfolio_pipeline.storage.tables import portfolio_greeks, position_greeks

BETA_LOOKBACK = timedelta(days=400)
"""Calendar days of stored closes read for a 252-session beta."""

_PLOTTED = {
    "beta_weighted_dollar_delta": "beta-weighted delta ($)",
    "dollar_delta": "dollar delta ($)",
    "dollar_gamma_1pct": "dollar gamma per 1% move ($)",
    "theta_per_day": "theta ($/day)",
    "vega_per_point": "vega ($/vol point)",
    "market_value": "market value ($)",
}
"""Column of the book row -> metadata label (with its unit)."""


def _totals(book: pd.DataFrame) -> dict[str, Any]:
    """The plotted totals of the book row ('*', '*') of one session, in whole dollars."""
    if book.empty:
        return {}
    row = book.iloc[-1]
    return {label: None if row[c] is None else usd(float(row[c])) for c, label in _PLOTTED.items()}


def _book(totals: pd.DataFrame) -> pd.DataFrame:
    if totals.empty:
        return totals
    return totals[(totals["account_id"] == "*") & (totals["underlying"] == "*")]


def _position_metadata(session: pd.DataFrame, day: date, beta_window: str) -> dict[str, Any]:
    """Per-session metadata of position_greeks: counts, the model-valued options, book totals."""
    implied = int((session["vol_source"] == "implied").sum()) if not session.empty else 0
    at_model = session[session["value_source"] == "model"] if not session.empty else session
    return {
        "positions": len(session), "implied_vols": implied,
        "options_valued_at_model": len(at_model),
        "beta_window": beta_window,
        "valued_at_model": ", ".join(at_model["position_key"]) if len(at_model) else "none",
        **_totals(_book(pd.DataFrame(portfolio_greek_rows(session, day)))),
    }


def position_greeks_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    cfg = platform.config.pricing
    calendar = platform.calendar
    positions = read_frame(db, positions_snapshot, days)
    market = read_frame(db, market_snapshot, days)
    spot_rows = read_frame(db, market_snapshot, start=days[0] - BETA_LOOKBACK, end=days[-1])
    closes = combine_closes(stored_closes(spot_rows), beta_history(db, platform, days[-1]))
    hour = settlement_hour(calendar)
    windows: dict[date, str] = {}
    for day in tracked("position_greeks", days, context.log):
        pos = on(positions, day)
        windows[day] = beta_window(closes, day, cfg.beta.window, cfg.beta.reference)
        rows = position_greek_rows(
            pos, on(market, day), session=day, as_of=calendar.session_close(day),
            instruments=platform.config.instruments, pricing_config=cfg,
            betas=estimate_betas(closes, day, set(pos["underlying"]), cfg.beta),
            reference_price=reference_close(closes, cfg.beta.reference, day), settlement_hour=hour,
        )
        with db.database.begin() as conn:
            replace_partition(conn, position_greeks, {"session_date": day}, rows)
        context.log.info("session=%s position greeks=%d", day, len(rows))
    stored = read_frame(db, position_greeks, days)
    meta = SessionMetadata(context, days)
    for day in days:
        meta.record(day, POSITION_GREEKS, _position_metadata(on(stored, day), day, windows.get(day, "none")))
    yield dg.MaterializeResult(asset_key=POSITION_GREEKS, metadata=meta.output_metadata(POSITION_GREEKS))
    yield check_result(GREEKS_CHECK, position_greeks_suite(stored))


def portfolio_greeks_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    days = partition_dates(context)
    positions = read_frame(db, position_greeks, days)
    for day in tracked("portfolio_greeks", days, context.log):
        rows = portfolio_greek_rows(on(positions, day), day)
        with db.database.begin() as conn:
            replace_partition(conn, portfolio_greeks, {"session_date": day}, rows)
    stored = read_frame(db, portfolio_greeks, days)
    meta = SessionMetadata(context, days)
    for day in days:
        meta.record(day, PORTFOLIO_GREEKS, _totals(_book(on(stored, day))))
    yield dg.MaterializeResult(asset_key=PORTFOLIO_GREEKS, metadata=meta.output_metadata(PORTFOLIO_GREEKS))
    yield check_result(PORTFOLIO_CHECK, portfolio_greeks_suite(stored))


def make_greeks_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The two Greeks assets on ``partitions`` (session partitions; tests pass a short range)."""
    common: dict[str, Any] = {"partitions_def": partitions, "backfill_policy": session_backfill_policy(),
                              "group_name": "greeks", "kinds": {"sql"}}
    return [
        dg.asset(key=POSITION_GREEKS, deps=[POSITIONS, MARKET], check_specs=[GREEKS_CHECK],
                 description="Per position: model Greeks (broker IV or IV implied from the mark; model, "
                 "exercise and multiplier from config/instruments.yaml; r, q, beta from "
                 "config/pricing.yaml) beside the broker's Greeks; dollar and beta-weighted Greeks.",
                 **common)(position_greeks_asset),
        dg.asset(key=PORTFOLIO_GREEKS, deps=[POSITION_GREEKS], check_specs=[PORTFOLIO_CHECK],
                 description="Position Greeks summed per account, per account and underlying, per "
                 "underlying across accounts and for the whole book ('*').", **common)(portfolio_greeks_asset),
    ]

"""The ``risk_profile`` asset: P&L vs underlying price of the session's book.

The book is the shock grid's (``book.load_book``), priced with the grid's settings
(``grid.skew_rule``, ``min_vol``, the American pricer of ``grid``); the curves are
:func:`portfolio_pipeline.analytics.risk_profile.build_profiles`; the axis and dates are
``risk_profile`` of ``config/stress_scenarios.yaml``.  The check compares the book's
beta-weighted T+0 curve with the stored ``stress_shock_grid`` on the spot shocks both have.
"""

import math
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
from sqlalchemy import Connection, select

from portfolio_pipeline.analytics.risk_profile import (
    BOOK_PROFILE,
    ProfileInputs,
    ProfileSet,
    StrategyLegs,
    build_profiles,
    default_moves,
    profile_markdown,
    profile_rows,
    summary_rows,
)
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.metadata import SessionMetadata, usd
from portfolio_pipeline.defs.progress import tracked
from portfolio_pipeline.defs.quality import problems_check_result
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.stress.book import StressBook, american_kwargs, session_book
from portfolio_pipeline.domain.settlement import YEAR_SECONDS
from portfolio_pipeline.domain.symbols import AGGREGATE as ALL
from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar
from portfolio_pipeline.quant.risk_profile import Horizon
from portfolio_pipeline.quant.scenario_config import StressScenariosFile
from portfolio_pipeline.storage import (
    market_snapshot,
    read_partition,
    replace_partition,
)
from portfolio_pipeline.storage.tables import (
    risk_profile,
    risk_profile_summary,
    strategy_groups,
    stress_shock_grid,
)

__all__ = ["PROFILE", "PROFILE_CHECK", "make_profile_asset", "profile_inputs", "session_horizons"]

PROFILE = dg.AssetKey("risk_profile")
PROFILE_CHECK = dg.AssetCheckSpec(
    "risk_profile_matches_grid",
    asset=PROFILE,
    description="The book's beta-weighted T+0 curve equals the stored stress_shock_grid P&L (its vol "
    "column of the same points, 0 days) on every spot shock both have; T+0 at today's price is 0.",
)
GRID_TOLERANCE = 1e-6
"""Dollars (relative to max(1, |P&L|)) the profile and the grid may differ by: summation order."""


def session_horizons(
    calendar: ExchangeCalendar, day: date, sessions_forward: Sequence[int]
) -> list[Horizon]:
    """T+0 and T+n: the time from the session's close to the close n exchange sessions later."""
    close = calendar.session_close(day)
    out = [Horizon("T+0", 0.0)]
    if not sessions_forward:
        return out
    later = calendar.sessions(
        day + timedelta(days=1),
        min(day + timedelta(days=2 * max(sessions_forward) + 14), calendar.end),
    )
    for n in sorted(sessions_forward):
        if n <= len(later):
            out.append(
                Horizon(
                    f"T+{n}",
                    (calendar.session_close(later[n - 1]) - close).total_seconds() / YEAR_SECONDS,
                )
            )
    return out


def _expiry_label(as_of: datetime) -> Any:
    def label(decay: float) -> str:
        return (
            "exp "
            + (as_of + timedelta(seconds=decay * YEAR_SECONDS))
            .astimezone(NEW_YORK)
            .date()
            .isoformat()
        )

    return label


def read_strategies(conn: Connection, day: date) -> list[StrategyLegs]:
    """Open strategies of the session with their units (qty x multiplier) per instrument key."""
    out = []
    for r in read_partition(conn, strategy_groups, {"session_date": day}):
        if r["status"] != "open":
            continue
        units: dict[str, float] = {}
        for leg in r["legs"] or []:
            key = str(leg["position_key"])
            units[key] = units.get(key, 0.0) + float(leg["quantity"]) * float(leg["multiplier"])
        if units:
            out.append(
                StrategyLegs(
                    str(r["broker"]),
                    str(r["account_id"]),
                    str(r["strategy_id"]),
                    str(r["strategy_type"]),
                    str(r["underlying"]),
                    units,
                )
            )
    return out


def spx_level(conn: Connection, day: date) -> float | None:
    """The session's SPX index mark (the beta-weighted axis), if quoted."""
    t = market_snapshot
    mark = conn.execute(
        select(t.c.mark)
        .where(t.c.session_date == day, t.c.underlying == "SPX", t.c.sec_type == "IND")
        .limit(1)
    ).scalar()
    return None if mark is None or not float(mark) > 0 else float(mark)


def profile_inputs(
    sb: StressBook,
    cfg: StressScenariosFile,
    calendar: ExchangeCalendar,
    spx: float,
    strategies: Sequence[StrategyLegs] = (),
) -> ProfileInputs:
    """The profile's inputs for a loaded book, priced as the shock grid prices it."""
    pc = cfg.risk_profile
    as_of = calendar.session_close(sb.session)
    return ProfileInputs(
        book=sb.book,
        contract_keys=sb.contract_keys,
        beta=np.where(sb.is_vol_factor, 0.0, sb.per_factor("beta")),
        is_vol_factor=sb.is_vol_factor,
        spx=spx,
        vix=sb.vix,
        session_horizons=session_horizons(calendar, sb.session, pc.sessions_forward),
        expiry_label=_expiry_label(as_of),
        moves=default_moves(pc.range_pct, pc.points, cfg.grid.spot_shocks_pct),
        revalue_kw={
            "skew_slope": sb.per_factor("skew_slope"),
            "skew_rule": cfg.grid.skew_rule,
            "min_vol": cfg.grid.min_vol,
            **american_kwargs(cfg.grid),
        },
        vol_shift_points=pc.vol_shift_points,
        max_expiries=pc.max_expiries,
        strategies=strategies,
    )


def grid_differences(
    conn: Connection, day: date, profiles: ProfileSet
) -> tuple[int, float, list[str]]:
    """(points compared, largest |difference| in $, problems) of the book's T+0 curve
    against the stored grid (portfolio rows, 0 days, the vol column of the curve's shift)."""
    book = profiles.book()
    if book is None:
        return 0, 0.0, []
    column = f"{book.vol_shift_points:+g}pt"
    g = stress_shock_grid
    stored = {
        float(r[0]): float(r[1])
        for r in conn.execute(
            select(g.c.spot_shock, g.c.pnl).where(
                g.c.session_date == day,
                g.c.broker == ALL,
                g.c.account_id == ALL,
                g.c.group_key == ALL,
                g.c.strategy_id.is_(None),
                g.c.vol_scenario == column,
                g.c.horizon_days == 0,
            )
        )
    }
    if not stored:
        return 0, 0.0, [f"{day}: stress_shock_grid has no '{column}' 0-day rows to compare with"]
    h0 = next(i for i, h in enumerate(book.curves.horizons) if h.decay == 0.0)
    curve = book.curves.curve(h0, 0)
    problems, worst, n = [], 0.0, 0
    for i, m in enumerate(book.curves.moves):
        key = next((s for s in stored if math.isclose(s, float(m), abs_tol=1e-12)), None)
        if key is None:
            continue
        n += 1
        diff = abs(float(curve[i]) - stored[key])
        worst = max(worst, diff)
        if diff > GRID_TOLERANCE * max(1.0, abs(stored[key])):
            problems.append(
                f"{day}: spot {key:+.0%}: profile {float(curve[i]):,.2f} vs grid {stored[key]:,.2f}"
            )
        if m == 0.0 and curve[i] != 0.0:
            problems.append(f"{day}: T+0 at today's price is {float(curve[i])!r}, not 0")
    if n == 0:
        problems.append(f"{day}: no spot shock of the grid is on the profile's axis")
    return n, worst, problems


def _metadata(
    summaries: list[dict[str, Any]], n_rows: int, compared: int, worst: float
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "profiles": dg.MetadataValue.md(profile_markdown(summaries)),
        "rows": n_rows,
        "points compared with the grid": compared,
        "largest profile - grid difference ($)": worst,
    }
    book = [r for r in summaries if r["profile"] == BOOK_PROFILE]
    if book:
        values["book max loss in range, T+0 ($)"] = usd(float(book[0]["max_loss"]))
        values["book max loss in range, last horizon ($)"] = usd(float(book[-1]["max_loss"]))
        values["book breakevens T+0 (SPX)"] = dg.MetadataValue.text(
            ", ".join(f"{b:,.2f}" for b in book[0]["breakevens"]) or "none"
        )
    return values


def risk_profile_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    meta = SessionMetadata(context)
    cfg = platform.config.stress_scenarios
    problems: list[str] = []
    compared, worst = 0, 0.0
    for day in tracked("risk_profile", meta.days, context.log):
        as_of = platform.calendar.session_close(day)
        with db.database.connect() as conn:  # the stress steps' book of the session (read once per run)
            sb = session_book(
                platform.run_memo(context.run.run_id), conn, day, as_of, platform.config, cfg,
                platform.calendar,
            )
            spx = spx_level(conn, day)
            strategies = read_strategies(conn, day)
        if sb is None or spx is None:
            with db.database.begin() as conn:
                replace_partition(conn, risk_profile, {"session_date": day}, [])
                replace_partition(conn, risk_profile_summary, {"session_date": day}, [])
            context.log.info(
                "session=%s: %s", day, "no positions" if sb is None else "no SPX quote"
            )
            continue
        profiles = build_profiles(profile_inputs(sb, cfg, platform.calendar, spx, strategies))
        rows, summaries = profile_rows(day, profiles), summary_rows(day, profiles)
        with db.database.begin() as conn:
            replace_partition(conn, risk_profile, {"session_date": day}, rows)
            replace_partition(conn, risk_profile_summary, {"session_date": day}, summaries)
        with db.database.connect() as conn:
            n, w, p = grid_differences(conn, day, profiles)
        compared, worst = compared + n, max(worst, w)
        problems += p
        meta.record(day, PROFILE, _metadata(summaries, len(rows), n, w))
    yield dg.MaterializeResult(asset_key=PROFILE, metadata=meta.output_metadata(PROFILE))
    yield problems_check_result(
        PROFILE_CHECK, problems, points_compared=float(compared), largest_difference=worst
    )


def make_profile_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    return dg.asset(
        name="risk_profile",
        description="P&L vs underlying price (the risk graph) per underlying, per open strategy and for "
        "the book beta-weighted to SPX, at T+0, T+n exchange sessions and the nearest expiries, by full "
        "revaluation with the shock grid's vol rule and pricers; breakevens, max profit/loss in the "
        "range and the expected move from ATM IV (risk_profile, risk_profile_summary).",
        check_specs=[PROFILE_CHECK],
        partitions_def=partitions,
        backfill_policy=session_backfill_policy(),
        group_name="stress",
        deps=[
            dg.AssetKey("positions_snapshot"),
            dg.AssetKey("market_snapshot"),
            dg.AssetKey("position_greeks"),
            dg.AssetKey("strategy_groups"),
            dg.AssetKey("stress_shock_grid"),
        ],
        kinds={"sql"},
    )(risk_profile_asset)

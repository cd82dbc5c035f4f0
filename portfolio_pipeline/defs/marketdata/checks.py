"""Checks of the market history (gaps, splits, stale closes) and model vs market sanity.

The history checks run inside the ``market_history`` asset over what is stored up to the
run's last session.  ``model_vs_market`` is a standalone check on ``position_greeks``:
it flags options whose model price differs from the mark by more than a tolerance (in
price, relative to the mark, and in implied-vol points) and stale or crossed quotes of
``market_snapshot``, naming the contract.
"""


from collections.abc import Sequence
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd

from portfolio_pipeline.defs.quality import problems_check_result
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.marketdata.store import find_gaps, find_jumps, find_stale
from portfolio_pipeline.marketdata.valuation import MarkTolerance, mark_problems

MARKET_HISTORY = dg.AssetKey("market_history")
POSITION_GREEKS = dg.AssetKey("position_greeks")

GAPS_CHECK = dg.AssetCheckSpec(
    "market_history_no_gaps", asset=MARKET_HISTORY,
    description="Every XNYS session between a symbol's first and last stored bar has a bar "
    "(missing sessions are reported, never filled).",
)
JUMPS_CHECK = dg.AssetCheckSpec(
    "market_history_no_unexplained_jumps", asset=MARKET_HISTORY,
    description="No overnight close-to-close move beyond the threshold (default |ln| > 0.25): "
    "a split, a bad print or a wrong contract (volatility indices exempt).",
)
STALE_CHECK = dg.AssetCheckSpec(
    "market_history_fresh", asset=MARKET_HISTORY,
    description="Every symbol has a close on the session, and no close is repeated over the "
    "last N sessions.",
)
HISTORY_CHECKS = [GAPS_CHECK, JUMPS_CHECK, STALE_CHECK]


def history_check_results(
    frame: pd.DataFrame, symbols: Sequence[str], sessions: Sequence[date], session: date,
    *, jump_threshold: float, stale_repeats: int, jump_exempt: frozenset[str] = frozenset(),
) -> list[dg.AssetCheckResult]:
    """The three history checks over stored bars ``frame`` (long format) up to ``session``.

    ``jump_exempt``: symbols that cannot split and legitimately move more than any split
    threshold overnight (volatility indices: the VIX rose 115% on 2018-02-05)."""
    gaps: list[str] = []
    jumps: list[str] = []
    stale: list[str] = []
    for symbol in symbols:
        part = frame[frame["symbol"] == symbol]
        closes = pd.Series(part["close"].to_numpy(dtype="float64"),
                           index=pd.DatetimeIndex(pd.to_datetime(part["session_date"])))
        gaps += find_gaps(closes, sessions, symbol)
        if symbol not in jump_exempt:
            jumps += find_jumps(closes, symbol, jump_threshold)
        stale += find_stale(closes, symbol, session, stale_repeats)
    return [
        problems_check_result(GAPS_CHECK, gaps, symbols=len(symbols)),
        problems_check_result(JUMPS_CHECK, jumps, severity=dg.AssetCheckSeverity.WARN,
                              threshold=jump_threshold),
        problems_check_result(STALE_CHECK, stale, severity=dg.AssetCheckSeverity.WARN,
                              repeats=stale_repeats),
    ]


class MarkCheckConfig(dg.Config):
    """Tolerances of the model vs market check."""

    price_tolerance: float = 0.10
    """|model - mark| / mark above which an option is flagged (0.10 = 10%)."""
    min_price_gap: float = 0.05
    """... and only when the gap is also at least this many price units."""
    iv_points: float = 5.0
    """|model vol - vol implied from the mark| in vol points above which it is flagged."""
    stale_minutes: float = 30.0
    """A quote older than this before the session close is stale."""


def make_mark_checks() -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(
        asset=POSITION_GREEKS, name="model_vs_market",
        description="Options whose model price differs from the mark by more than the tolerance "
        "(price and implied-vol points) and stale or crossed quotes, each contract named; on "
        "the run's session (the last of a range), else the latest stored one.",
    )
    def model_vs_market(
        context: dg.AssetCheckExecutionContext, config: MarkCheckConfig, db: DatabaseResource,
        platform: PlatformResource,
    ) -> dg.AssetCheckResult:
        from portfolio_pipeline.storage import market_snapshot
        from portfolio_pipeline.storage.frames import read_frame
        from portfolio_pipeline.storage.tables import position_greeks

        greeks = read_frame(db, position_greeks)
        if greeks.empty:
            return problems_check_result(
                dg.AssetCheckSpec("model_vs_market", asset=POSITION_GREEKS), [], options=0)
        tags = context.run.tags
        tagged = tags.get("dagster/partition") or tags.get("dagster/asset_partition_range_end")
        day = date.fromisoformat(tagged) if tagged else max(greeks["session_date"])
        greeks = greeks[greeks["session_date"] == day]
        quotes = read_frame(db, market_snapshot, [day])
        tol = MarkTolerance(config.price_tolerance, config.min_price_gap, config.iv_points,
                            config.stale_minutes)
        rows: list[dict[str, Any]] = greeks.to_dict("records")
        problems = mark_problems(rows, quotes.to_dict("records"), platform.calendar.session_close(day), tol)
        context.log.info("model_vs_market session=%s options=%s flagged=%s", day,
                         int((greeks["sec_type"].isin(["OPT", "FOP"])).sum()), len(problems))
        return problems_check_result(
            dg.AssetCheckSpec("model_vs_market", asset=POSITION_GREEKS), problems,
            severity=dg.AssetCheckSeverity.WARN,
            options=float((greeks["sec_type"].isin(["OPT", "FOP"])).sum()),
        )

    return [model_vs_market]

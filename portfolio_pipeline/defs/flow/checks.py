"""Data-quality checks of the option chain snapshots (run inside ``options_flow``).

Each counts the failing contracts per session and underlying; a check fails when the
share of failing contracts exceeds ``checks.max_bad_fraction`` of ``config/flow.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import dagster as dg

from portfolio_pipeline.analytics.flow import ChainQuality
from portfolio_pipeline.defs.quality import problems_check_result

OPTIONS_FLOW = dg.AssetKey("options_flow")

CROSSED_CHECK = dg.AssetCheckSpec(
    "option_chain_no_crossed_quotes",
    asset=OPTIONS_FLOW,
    description="No more than the tolerated share of contracts quoted with bid > ask.",
)
ZERO_OI_CHECK = dg.AssetCheckSpec(
    "option_chain_oi_where_traded",
    asset=OPTIONS_FLOW,
    description="No more than the tolerated share of contracts with volume but zero open "
    "interest (open interest is yesterday's: new strikes can show this; many is a feed fault).",
)
STALE_CHECK = dg.AssetCheckSpec(
    "option_chain_fresh_quotes",
    asset=OPTIONS_FLOW,
    description="No more than the tolerated share of quotes older than the snapshot by "
    "checks.stale_quote_minutes.",
)
FLOW_CHECKS = [CROSSED_CHECK, ZERO_OI_CHECK, STALE_CHECK]


def quality_results(
    found: Sequence[tuple[date, str, ChainQuality]], max_bad_fraction: float
) -> list[dg.AssetCheckResult]:
    """The three checks over every (session, underlying, counts) of the run."""
    out: list[dg.AssetCheckResult] = []
    for spec, field, what in (
        (CROSSED_CHECK, "crossed", "crossed quotes"),
        (ZERO_OI_CHECK, "zero_oi_traded", "traded with zero OI"),
        (STALE_CHECK, "stale", "stale quotes"),
    ):
        problems = []
        worst = 0.0
        for day, underlying, q in found:
            bad = getattr(q, field)
            share = bad / q.contracts if q.contracts else 0.0
            worst = max(worst, share)
            if share > max_bad_fraction:
                problems.append(f"{day} {underlying}: {bad} of {q.contracts} contracts {what}")
        out.append(problems_check_result(spec, problems, worst_fraction=worst))
    return out

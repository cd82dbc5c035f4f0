"""Market history per session (daily bars of the book's underlyings and the indices from
the configured broker, or the demo's shipped data) and its checks."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.marketdata.assets import make_market_history_asset
from portfolio_pipeline.defs.marketdata.checks import make_mark_checks


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=[make_market_history_asset(partitions)],
                          asset_checks=make_mark_checks())

"""Strategies and position lifecycle: tagging, performance, exit signals, Kelly, liquidity."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.strategies.assets import make_strategy_assets


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=make_strategy_assets(partitions))

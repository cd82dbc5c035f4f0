"""Position and portfolio Greeks, with their data-quality checks."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.greeks.assets import make_greeks_assets


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=make_greeks_assets(partitions))

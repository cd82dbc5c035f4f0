"""Returns, P&L attribution, risk metrics and margin/limit history, with their checks."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.risk.assets import make_risk_assets


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=make_risk_assets(partitions))

"""VaR backtest: exceedances of every stored VaR model, Kupiec/Christoffersen, Basel zone."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.backtest.assets import make_backtest_assets


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=make_backtest_assets(partitions))

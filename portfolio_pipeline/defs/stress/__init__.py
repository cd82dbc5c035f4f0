"""Stress tests and Monte Carlo: shock grid, historical replay, Monte Carlo VaR and
correlation stress, with their checks."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.stress.assets import make_stress_assets
from portfolio_pipeline.defs.stress.profile import make_profile_asset


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=[*make_stress_assets(partitions), make_profile_asset(partitions)])

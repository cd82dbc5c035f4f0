"""Stress tests and Monte Carlo: shock grid, historical replay, Monte Carlo VaR and
correlation stress, with their checks; the risk profile; named what-if scenarios (scenario_job)."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.stress.assets import make_stress_assets
from portfolio_pipeline.defs.stress.profile import make_profile_asset
from portfolio_pipeline.defs.stress.scenario import scenario_job, scenario_result


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=[*make_stress_assets(partitions), make_profile_asset(partitions), scenario_result],
                          jobs=[scenario_job])

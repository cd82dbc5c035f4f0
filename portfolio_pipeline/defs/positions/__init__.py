"""Broker snapshots: positions, balances and quotes, with their data-quality checks."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.positions.assets import make_snapshot_assets


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=[make_snapshot_assets(partitions)])

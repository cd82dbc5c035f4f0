"""The daily HTML report and the daily risk pack."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.reporting.assets import make_report_asset
from portfolio_pipeline.defs.reporting.pack import make_pack_asset


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=[make_report_asset(partitions), make_pack_asset(partitions)])

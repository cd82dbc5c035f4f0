"""The daily HTML report."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.reporting.assets import make_report_asset


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=[make_report_asset(partitions)])

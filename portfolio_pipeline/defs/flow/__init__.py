"""Options flow per session: chain snapshots of the configured underlyings, dealer GEX and
zero gamma, vanna/charm exposure, put/call, pinning and unusual activity, and the chain's
data-quality checks (``config/flow.yaml``)."""

from __future__ import annotations

import dagster as dg

from portfolio_pipeline.defs.flow.assets import make_options_flow_asset


def definitions(partitions: dg.PartitionsDefinition) -> dg.Definitions:
    return dg.Definitions(assets=[make_options_flow_asset(partitions)])

"""Demo data provenance is stated where users look (issue 14, item 9): the README and the
Dagster UI description of the market data asset say SPY = SPX/10, NDX from Nasdaq
Composite returns and VIX3M modelled -- the facts of brokers/demo/market.py's table."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from portfolio_pipeline.brokers.demo import market
from portfolio_pipeline.definitions import build_definitions

FACTS = ("SPX/10", "Nasdaq Composite", "VIX3M", "modelled")


def test_market_snapshot_description_and_readme_state_the_demo_sources() -> None:
    doc = market.__doc__ or ""
    assert "SPX / 10" in doc and "Nasdaq Composite" in doc and "VIX3M: MODEL" in doc
    graph = build_definitions().resolve_asset_graph()
    node = graph.get(dg.AssetKey("market_snapshot"))
    description = node.description or ""
    for fact in FACTS:
        assert fact in description, fact
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for fact in ("SPX / 10", "Nasdaq Composite", "**modelled**"):
        assert fact in readme, fact

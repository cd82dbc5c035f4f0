"""The ``options_flow`` asset: per session, the option chain of each configured underlying
(``config/flow.yaml``) from the broker (the demo's SIMULATED chain, labelled so), and the
flow figures of :mod:`portfolio_pipeline.analytics.flow` stored in
``option_chain_snapshots``, ``option_flow_metrics``, ``option_flow_strikes`` and
``option_flow_unusual`` (each session replaced as a whole)."""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from portfolio_pipeline.analytics.flow import (
    FlowResult,
    analyse,
    headline_table,
    load_volume_history,
)
from portfolio_pipeline.brokers.chain import ChainWindow
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.flow.checks import FLOW_CHECKS, OPTIONS_FLOW, quality_results
from portfolio_pipeline.defs.metadata import SessionMetadata
from portfolio_pipeline.defs.progress import tracked
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.storage.tables import (
    option_chain_snapshots,
    option_flow_metrics,
    option_flow_strikes,
    option_flow_unusual,
)
from portfolio_pipeline.storage.writes import replace_partition

GROUP = "flow"
_TABLES = (
    (option_chain_snapshots, "chain"),
    (option_flow_metrics, "metrics"),
    (option_flow_strikes, "strikes"),
    (option_flow_unusual, "unusual"),
)


def session_values(results: list[FlowResult], notes: list[str]) -> dict[str, Any]:
    """The per-partition metadata of one session: a markdown table and plottable numbers."""
    values: dict[str, Any] = {
        "flow": dg.MetadataValue.md(
            headline_table(results) + ("\n\n" + "; ".join(notes) if notes else "")
        ),
        "contracts": sum(len(r.chain) for r in results),
        "simulated": any(r.simulated for r in results),
    }
    for r in results:
        h = r.headline
        u = r.underlying
        values |= {
            f"{u} GEX ($ per 1%)": h["total_gex"],
            f"{u} zero gamma": h["zero_gamma"],
            f"{u} vanna ($ delta per vol point)": h["vanna"],
            f"{u} charm ($ delta per day)": h["charm"],
            f"{u} put/call OI": h["put_call_oi"],
            f"{u} put/call volume": h["put_call_volume"],
            f"{u} max pain": h["max_pain"],
            f"{u} unusual contracts": h["unusual"],
        }
    return values


def options_flow(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    meta = SessionMetadata(context)
    cfg = platform.config.flow
    window = ChainWindow(cfg.window.max_days, cfg.window.moneyness)
    with db.database.connect() as conn:
        history = load_volume_history(conn, meta.days[0], cfg.unusual.average_sessions)
    found = []
    cpu = 0.0
    for day in tracked("options_flow", meta.days, context.log):
        snapshots, notes = platform.chain_snapshots(day, cfg.underlyings, window)
        start = time.process_time()
        results = [analyse(day, s, cfg, history) for s in snapshots]
        with db.database.begin() as conn:
            for table, attr in _TABLES:
                rows = [row for r in results for row in getattr(r, attr)]
                replace_partition(conn, table, {"session_date": day}, rows)
        cpu += time.process_time() - start
        for note in notes:
            context.log.warning("options_flow %s: %s", day, note)
        found += [(day, r.underlying, r.quality) for r in results]
        meta.record(day, OPTIONS_FLOW, session_values(results, notes))
    context.log.info(
        "options_flow: %.1f ms CPU per session (analysis and writes)", 1e3 * cpu / len(meta.days)
    )
    yield dg.MaterializeResult(
        asset_key=OPTIONS_FLOW,
        metadata=meta.output_metadata(
            OPTIONS_FLOW,
            {
                "positioning": cfg.positioning,
                "underlyings": ", ".join(cfg.underlyings),
                "CPU per session (ms)": round(1e3 * cpu / len(meta.days), 1),
            },
        ),
    )
    yield from quality_results(found, cfg.checks.max_bad_fraction)


def make_options_flow_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The options_flow asset on ``partitions``."""
    return dg.asset(
        name="options_flow",
        description="Option chain snapshot per configured underlying (config/flow.yaml; the demo's "
        "chain is SIMULATED) and its flow: dealer GEX per strike and total ($ per 1% move, under "
        "the stated positioning), zero-gamma level (full revaluation), vanna/charm exposure per "
        "expiry, put/call ratios, OpEx pinning and max pain, unusual activity.",
        partitions_def=partitions,
        backfill_policy=session_backfill_policy(),
        group_name=GROUP,
        check_specs=FLOW_CHECKS,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
        kinds={"sql"},
    )(options_flow)

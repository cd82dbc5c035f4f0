"""The EOD analytics on the demo broker's replayed book across the February 2018 VIX spike."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline_tests.defs.risk.book import ASSETS, rows
from portfolio_pipeline_tests.stubs import CONFIG_DIR

FILES = ("instruments.yaml", "risk_matrix.yaml", "accounts.yaml", "pricing.yaml")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    for name in FILES:
        shutil.copy(CONFIG_DIR / name, directory / name)
    return directory


def _run(db_url: str, instance: dg.DagsterInstance, config_dir: Path, **kw: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS, instance=instance,
        resources={"db": DatabaseResource(url=db_url),
                   "platform": PlatformResource(demo_only=True, config_dir=str(config_dir))},
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_demo_book_backfill_then_rerun(db_url: str, instance: dg.DagsterInstance, config_dir: Path,
                                       portfolio_env: Path) -> None:
    backfill = _run(db_url, instance, config_dir, tags={
        "dagster/asset_partition_range_start": "2018-02-01",
        "dagster/asset_partition_range_end": "2018-02-06",
    })
    assert backfill.success
    blocking = {"position_greeks_quality", "portfolio_greeks_quality", "returns_quality",
                "attribution_identity", "risk_metrics_quality", "margin_quality"}
    evaluations = {e.check_name: e.passed for e in backfill.get_asset_check_evaluations()}
    assert all(evaluations[name] for name in blocking), evaluations
    stored = rows(db_url)
    regimes = {(r["session_date"].isoformat(), r["regime"]) for r in stored["margin_history"] if r["broker"] == "*"}
    assert ("2018-02-05", "crisis") in regimes  # VIX 37.32 at the close
    book = [r for r in stored["pnl_attribution"] if r["broker"] == "*"]
    assert len(book) == 3  # sessions 02-01, 02, 05, 06: attribution from the second on
    spike = next(r for r in book if r["session_date"].isoformat() == "2018-02-05")
    assert spike["actual"] < 0 and spike["vega_pnl"] < 0  # the short-vol book loses on the spike
    assert (portfolio_env / "reports" / "daily_2018-02-06.html").is_file()

    rerun = _run(db_url, instance, config_dir, partition_key="2018-02-06")
    assert rerun.success
    assert rows(db_url) == stored  # the single-session re-run reproduces the backfill

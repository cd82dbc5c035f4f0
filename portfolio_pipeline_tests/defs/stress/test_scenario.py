"""Named scenarios on the seeded stress book: against the shock grid and a hand-priced NDX put,
trades that cancel, the last N kept, the CLI and the job's run config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pydantic
import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.config import load_platform_config
from portfolio_pipeline.config.scenario import ScenarioSpec
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.stress.book import american_kwargs, grid_scenarios, load_book
from portfolio_pipeline.defs.stress.scenario import (
    ScenarioRunConfig,
    list_scenarios,
    run_scenario,
    scenario_result,
    store_scenario,
)
from portfolio_pipeline.domain.settlement import years_to_settlement
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.quant.revaluation import revalue
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.defs.stress.test_stress import DAY
from portfolio_pipeline_tests.defs.stress.test_whatif import _seed_book
from portfolio_pipeline_tests.quant._reference import reference_greeks
from portfolio_pipeline_tests.stubs import CONFIG_DIR

CONFIG = load_platform_config(CONFIG_DIR)
CAL = ExchangeCalendar()


def _run(db_url: str, **spec: object) -> dict[str, dict[str, object]]:
    db = Database(db_url)
    try:
        with db.connect() as conn:
            result = run_scenario(
                conn, ScenarioSpec.model_validate({"name": "t", **spec}), CONFIG, CAL
            )
    finally:
        db.dispose()
    return {str(r["underlying"]): r for r in result.rows}


def test_spx_move_equals_the_shock_grid_cell(db_url: str) -> None:
    _seed_book(db_url)
    got = _run(db_url, spx_move_pct=-10)
    cfg = CONFIG.stress_scenarios
    db = Database(db_url)
    try:
        with db.connect() as conn:
            sb = load_book(conn, DAY, CAL.session_close(DAY), CONFIG, cfg, CAL)
    finally:
        db.dispose()
    grid = grid_scenarios(sb, cfg)
    kw = {
        "skew_slope": sb.per_factor("skew_slope"),
        "skew_rule": cfg.grid.skew_rule,
        "min_vol": cfg.grid.min_vol,
        **american_kwargs(cfg.grid),
    }
    cell = next(
        n
        for n, (i, j, k) in enumerate(grid.cells)
        if grid.spot_shocks[i] == -0.1
        and grid.vol_labels[j] == "+0pt"
        and grid.horizons_days[k] == 0
    )
    want = revalue(sb.book, grid.scenarios.take(cell, cell + 1), **kw).sum()  # type: ignore[arg-type]
    assert got["*"]["pnl"] == pytest.approx(float(want), rel=1e-12)
    assert got["*"]["pnl_with_trades"] == got["*"]["pnl"]


def test_ndx_put_by_hand_with_vol_rate_and_time(db_url: str) -> None:
    _seed_book(db_url)
    got = _run(
        db_url,
        spot_moves_pct={"ndx": -5},
        vol_scale=1.2,
        vol_shift_points=2,
        rate_shift_bp=50,
        days_forward=7,
    )
    cfg = CONFIG.stress_scenarios
    q = cfg.underlying("NDX").dividend_yield
    tc = CONFIG.instruments.trading_class("NDX", None)
    from datetime import date

    T = years_to_settlement(CAL.session_close(DAY), date(2018, 3, 16), tc.settlement_time, CAL)
    s, k, vol, r = 6847.5, 6500.0, 0.2, cfg.rate
    before = float(reference_greeks(False, s, k, T, r, q, vol)["price"])
    after = float(
        reference_greeks(False, s * 0.95, k, T - 7 / 365, r + 0.005, q, 1.2 * vol + 0.02)["price"]
    )
    assert got["NDX"]["pnl"] == pytest.approx(
        100 * (after - before), rel=1e-9
    )  # long 1 NDX put, x100
    assert got["NDX"]["spot_after"] == pytest.approx(s * 0.95)
    assert got["SPY"]["spot_after"] == got["SPY"]["spot"]  # not moved: no spx_move_pct


def test_a_trade_and_its_opposite_leave_the_book_as_is(db_url: str) -> None:
    _seed_book(db_url)
    got = _run(
        db_url, spx_move_pct=5, trades=["buy 3 SPX 2018-03-16 2700C", "sell 3 SPX 2018-03-16 2700C"]
    )
    assert all(r["pnl_with_trades"] == r["pnl"] for r in got.values())
    one = _run(db_url, spx_move_pct=5, trades=["buy 3 SPX 2018-03-16 2700C"])
    assert one["SPX"]["pnl_with_trades"] > one["SPX"]["pnl"]  # a long call gains when SPX rises


def test_store_keeps_the_last_names_and_replaces_a_name(db_url: str) -> None:
    _seed_book(db_url)
    db = Database(db_url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        for n, name in enumerate(["a", "b", "a", "c"]):
            with db.begin() as conn:
                result = run_scenario(conn, ScenarioSpec(name=name, spx_move_pct=-n), CONFIG, CAL)
                store_scenario(conn, result, 2, t0 + timedelta(minutes=n))
        with db.connect() as conn:
            rows = list_scenarios(conn)
    finally:
        db.dispose()
    assert [r["name"] for r in rows] == ["c", "a"]
    assert rows[1]["spec"]["spx_move_pct"] == -2  # the second run of "a" replaced the first


def test_cli_run_list_and_a_bad_file(
    db_url: str, portfolio_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _seed_book(db_url)
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(CONFIG_DIR))
    good = tmp_path / "crash.yaml"
    good.write_text(
        "name: crash\nspx_move_pct: -10\nvol_shift_points: 8\ntrades: ['buy 1 SPX 2018-03-16 2450P']\n"
    )
    runner = CliRunner()
    out = runner.invoke(main, ["scenario", "run", str(good)])
    assert out.exit_code == 0, out.output
    assert "scenario crash on the 2018-02-02 book (stored)" in out.output and "NDX" in out.output
    listed = runner.invoke(main, ["scenario", "list"])
    assert listed.exit_code == 0 and "crash" in listed.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: crash\nspx_move: -10\n")
    err = runner.invoke(main, ["scenario", "run", str(bad)])
    assert err.exit_code == 2
    assert f"{bad}: spx_move: unknown key" in err.output


def test_job_run_config_and_direct_asset_call(db_url: str) -> None:
    _seed_book(db_url)
    with pytest.raises(pydantic.ValidationError, match="name"):
        ScenarioRunConfig(name="no spaces allowed").spec()
    result = scenario_result(
        ScenarioRunConfig(name="ui-crash", spx_move_pct=-20, keep_last=5),
        db=DatabaseResource(url=db_url),
        platform=PlatformResource(config_dir=str(CONFIG_DIR)),
    )
    md = result.metadata["result"].value  # type: ignore[union-attr, index]
    assert "Scenario **ui-crash**" in md and "| book |" in md
    db = Database(db_url)
    try:
        with db.connect() as conn:
            assert [r["name"] for r in list_scenarios(conn)] == ["ui-crash"]
    finally:
        db.dispose()
    assert np.isfinite(result.metadata["book P&L ($)"].value)  # type: ignore[union-attr, index, arg-type]

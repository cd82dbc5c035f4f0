"""Stress assets end to end on a seeded book, the March 2020 replay by hand, strict config."""

from __future__ import annotations

import math
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from sqlalchemy import func, select

from portfolio_pipeline.config import ConfigError, load_platform_config
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.stress.assets import make_stress_assets
from portfolio_pipeline.defs.stress.book import replay_paths
from portfolio_pipeline.domain.positions import Contract, Quote
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.quant.scenarios import Book, ContractSet, StressScenariosFile, revalue
from portfolio_pipeline.storage import (
    Database,
    market_snapshot,
    positions_snapshot,
    replace_partition,
)
from portfolio_pipeline.storage.records import position_row, quote_row
from portfolio_pipeline.storage.tables import (
    correlation_stress,
    monte_carlo_var,
    stress_historical,
    stress_shock_grid,
)
from portfolio_pipeline_tests.stubs import CONFIG_DIR, T0, option, position

DAY = date(2018, 2, 2)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def test_march_2020_replay_of_a_short_spx_put_matches_hand_computation() -> None:
    cfg = StressScenariosFile.model_validate({"historical": {"builtin": ["mar_2020"]}})
    [path] = replay_paths(MarketHistory(), ExchangeCalendar(), cfg)
    assert path.dates[0] == date(2020, 2, 19) and path.dates[-1] == date(2020, 3, 23)
    published = {d for d, s in zip(path.dates, path.spx_source, strict=True) if s == "published"}
    assert published == {date(2020, 2, 19), date(2020, 3, 9), date(2020, 3, 12),
                          date(2020, 3, 16), date(2020, 3, 23)}
    i10 = path.dates.index(date(2020, 3, 10))
    assert path.spx_source[i10] == "interpolated"  # geometric fill, never "published"
    assert path.spx[i10] == pytest.approx(2746.56 * (2480.64 / 2746.56) ** (1 / 3), rel=1e-12)

    # Book "today": short 1 SPX put, K 3000, expiring 2020-03-23, spot 3386.15 (the
    # 2020-02-19 close), vol 14.38% (that day's VIX), r = q = 0, vix_beta 1.
    T0 = 33 / 365  # 2020-02-19 -> 2020-03-23 is 33 calendar days
    cs = ContractSet.build(factor=[0], is_option=True, is_call=False, black76=False,
                           spot=3386.15, strike=3000.0, T=T0, r=0.0, q=0.0, vol=0.1438)
    book = Book(cs, np.array([[-100.0]]), ("short put",), ("SPX",))
    from portfolio_pipeline.defs.stress.book import StressBook

    sb = StressBook(DAY, book, (("demo", "A", "SPX"),), (cfg.underlying("SPX"),), 14.38, None, 1)
    pnl = revalue(book, path.scenarios(sb))[:, 0]
    # Hand computation. Start value, Black-Scholes put with r = q = 0:
    #   sd = 0.1438 sqrt(33/365) = 0.043238; d1 = (ln(3386.15/3000) + sd^2/2)/sd = 2.8220,
    #   d2 = d1 - sd = 2.7788; P0 = 3000 N(-d2) - 3386.15 N(-d1) ~= 0.10 per unit.
    # On 2020-03-23 the put expires (T = 0) with spot 3386.15 x 2237.40/3386.15 = 2237.40:
    #   intrinsic 3000 - 2237.40 = 762.60.  P&L of the short put = -100 x (762.60 - P0).
    sd = 0.1438 * math.sqrt(T0)
    d1 = (math.log(3386.15 / 3000.0) + 0.5 * sd * sd) / sd
    p0 = 3000.0 * _norm_cdf(-(d1 - sd)) - 3386.15 * _norm_cdf(-d1)
    assert 0.05 < p0 < 0.2
    assert pnl[-1] == pytest.approx(-100.0 * (762.60 - p0), rel=1e-9)
    assert int(np.argmin(pnl)) == len(pnl) - 1  # the worst point is the 2020-03-23 low
    assert pnl[0] == 0.0


def test_oct_2008_vix_is_a_realised_vol_proxy_pinned_to_the_published_anchor() -> None:
    cfg = StressScenariosFile.model_validate({"historical": {"builtin": ["oct_2008"]}})
    [path] = replay_paths(MarketHistory(), ExchangeCalendar(), cfg)
    i = path.dates.index(date(2008, 10, 24))
    assert path.vix[i] == 79.13 and path.vix_source[i] == "published"
    assert set(path.vix_source) == {"published", "realised_vol_proxy"}
    assert set(path.spx_source) == {"published"}


def test_stress_config_is_strict(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, cfg_dir)
    path = cfg_dir / "stress_scenarios.yaml"
    data = yaml.safe_load(path.read_text())
    data["grid"]["spot_shock"] = [1]
    data["historical"]["windows"][0]["end"] = "2015-08-01"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_platform_config(cfg_dir)
    text = str(err.value)
    assert "stress_scenarios.yaml: grid.spot_shock: unknown key" in text
    assert "start must be before end" in text


def _seed(db_url: str) -> None:
    spx, ndx = 2762.13, 6847.5
    c_put = option("SPX", 2600.0, "P", date(2018, 3, 16))
    c_call = option("SPX", 2900.0, "C", date(2018, 3, 16), trading_class="SPXW")
    c_ndx = option("NDX", 6500.0, "P", date(2018, 3, 16))
    spy = Contract(underlying="SPY", sec_type="STK")
    positions = [
        position(c_put, -5, mark=12.0, underlying_price=spx),
        position(c_call, -3, mark=6.0, underlying_price=spx),
        position(c_put, 2, mark=12.0, underlying_price=spx, account_id="DEMO-002"),
        position(c_ndx, 1, mark=60.0, underlying_price=ndx),
        position(spy, 100, mark=275.0, underlying_price=None),
    ]

    def q(c: Contract, mark: float, iv: float | None = None, und: float | None = None) -> Quote:
        return Quote(source="demo", contract=c, as_of=T0, bid=mark, ask=mark, mark=mark,
                     underlying_price=und, iv=iv)

    quotes = [
        q(c_put, 12.0, 0.19, spx), q(c_call, 6.0, 0.12, spx), q(c_ndx, 60.0, 0.2, ndx),
        q(spy, 275.0), q(Contract(underlying="SPX", sec_type="IND"), spx),
        q(Contract(underlying="VIX", sec_type="IND"), 17.31),
        q(Contract(underlying="VIX3M", sec_type="IND"), 17.9),
    ]
    db = Database(db_url)
    try:
        with db.begin() as conn:
            replace_partition(conn, positions_snapshot, {"session_date": DAY},
                              [position_row(DAY, p) for p in positions])
            replace_partition(conn, market_snapshot, {"session_date": DAY},
                              [quote_row(DAY, x) for x in quotes])
    finally:
        db.dispose()


def test_stress_assets_materialise_and_rerun_idempotently(db_url: str, tmp_path: Path) -> None:
    _seed(db_url)
    cfg_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, cfg_dir)
    path = cfg_dir / "stress_scenarios.yaml"
    data = yaml.safe_load(path.read_text())
    data["monte_carlo"]["n_scenarios"] = 2000
    data["historical"]["builtin"] = ["feb_2018", "mar_2020"]
    path.write_text(yaml.safe_dump(data))
    parts = session_partitions(ExchangeCalendar(), end=date(2018, 12, 31))
    resources = {"db": DatabaseResource(url=db_url), "platform": PlatformResource(config_dir=str(cfg_dir))}
    counts = []
    for _ in range(2):
        result = dg.materialize(make_stress_assets(parts), resources=resources,
                                partition_key=DAY.isoformat(), instance=dg.DagsterInstance.ephemeral())
        assert result.success
        evals = result.get_asset_check_evaluations()
        assert len(evals) == 4 and all(e.passed for e in evals), [e.description for e in evals]
        db = Database(db_url)
        try:
            with db.connect() as conn:
                counts.append([conn.execute(select(func.count()).select_from(t)).scalar_one()
                               for t in (stress_shock_grid, stress_historical, monte_carlo_var,
                                         correlation_stress)])
                total = conn.execute(select(monte_carlo_var).where(
                    monte_carlo_var.c.account_id == "*", monte_carlo_var.c.horizon_days == 10)
                ).mappings().one()
                zero = conn.execute(select(stress_shock_grid.c.pnl).where(
                    stress_shock_grid.c.account_id == "*", stress_shock_grid.c.spot_shock == 0.0,
                    stress_shock_grid.c.vol_scenario == "+0pt",
                    stress_shock_grid.c.horizon_days == 0)).scalar_one()
        finally:
            db.dispose()
        assert zero == 0.0
        assert 0 < total["var_95"] <= total["var_99"] <= total["cvar_99"]
    assert counts[0] == counts[1] and all(c > 0 for c in counts[0])
    mats = result.asset_materializations_for_node("stress_shock_grid")
    assert "worst_cell" in mats[0].metadata
    mc = result.asset_materializations_for_node("monte_carlo_var")[0].metadata
    assert mc["regime"].value == "normal"

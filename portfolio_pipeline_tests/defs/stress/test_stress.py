"""Stress assets end to end on a seeded book, the March 2020 replay by hand, strict config."""

from __future__ import annotations

import dataclasses
import itertools
import math
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from sqlalchemy import Table, delete, func, select

from portfolio_pipeline.config import ConfigError, load_platform_config
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.stress.assets import make_stress_assets
from portfolio_pipeline.defs.stress.book import (
    MC_FIT_ORIGIN,
    MC_REFIT_SESSIONS,
    McFits,
    StressBook,
    american_kwargs,
    load_book,
    mc_setup,
    replay_paths,
)
from portfolio_pipeline.domain.positions import Contract, Quote
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.quant.monte_carlo import simulate_factors
from portfolio_pipeline.quant.revaluation import revalue
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline.quant.scenario_config import StressScenariosFile
from portfolio_pipeline.quant.scenario_set import ScenarioSet
from portfolio_pipeline.quant.vol import fit_garch
from portfolio_pipeline.storage import (
    Database,
    market_snapshot,
    positions_snapshot,
    replace_partition,
)
from portfolio_pipeline.storage.records import position_row, quote_row
from portfolio_pipeline.storage.tables import (
    correlation_stress,
    monte_carlo_distribution,
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


def _seed(db_url: str, days: tuple[date, ...] = (DAY,)) -> None:
    spx, ndx = 2762.13, 6847.5
    c_put = option("SPX", 2600.0, "P", date(2018, 3, 16))
    c_call = option("SPX", 2900.0, "C", date(2018, 3, 16), trading_class="SPXW")
    c_ndx = option("NDX", 6500.0, "P", date(2018, 3, 16))
    spy = Contract(underlying="SPY", sec_type="STK")
    c_spy = option("SPY", 285.0, "P", date(2018, 3, 16))  # American, in the money
    positions = [
        position(c_put, -5, mark=12.0, underlying_price=spx),
        position(c_call, -3, mark=6.0, underlying_price=spx),
        position(c_put, 2, mark=12.0, underlying_price=spx, account_id="DEMO-002"),
        position(c_ndx, 1, mark=60.0, underlying_price=ndx),
        position(spy, 100, mark=275.0, underlying_price=None),
        position(c_spy, -2, mark=14.0, underlying_price=275.0),
    ]

    def q(c: Contract, mark: float, iv: float | None = None, und: float | None = None) -> Quote:
        return Quote(source="demo", contract=c, as_of=T0, bid=mark, ask=mark, mark=mark,
                     underlying_price=und, iv=iv)

    quotes = [
        q(c_put, 12.0, 0.19, spx), q(c_call, 6.0, 0.12, spx), q(c_ndx, 60.0, 0.2, ndx),
        q(c_spy, 14.0, 0.2, 275.0),
        q(spy, 275.0), q(Contract(underlying="SPX", sec_type="IND"), spx),
        q(Contract(underlying="VIX", sec_type="IND"), 17.31),
        q(Contract(underlying="VIX3M", sec_type="IND"), 17.9),
    ]
    db = Database(db_url)
    try:
        with db.begin() as conn:
            for day in days:
                replace_partition(conn, positions_snapshot, {"session_date": day},
                                  [position_row(day, p) for p in positions])
                replace_partition(conn, market_snapshot, {"session_date": day},
                                  [quote_row(day, x) for x in quotes])
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
        # the stored histogram of the book's P&L holds every scenario, its edges contiguous
        db = Database(db_url)
        try:
            with db.connect() as conn:
                hist = conn.execute(select(monte_carlo_distribution).where(
                    monte_carlo_distribution.c.horizon_days == 10).order_by(monte_carlo_distribution.c.bin)
                ).mappings().all()
        finally:
            db.dispose()
        assert sum(r["scenarios"] for r in hist) == total["n_scenarios"]
        assert all(a["pnl_to"] == b["pnl_from"] for a, b in itertools.pairwise(hist))
        # the empirical 1% quantile lies in or below the bin holding -VaR99 (a histogram bound)
        below = sum(r["scenarios"] for r in hist if r["pnl_to"] <= -total["var_99"])
        assert below <= 0.01 * total["n_scenarios"]
    assert counts[0] == counts[1] and all(c > 0 for c in counts[0])
    mats = result.asset_materializations_for_node("stress_shock_grid")
    assert "worst_cell" in mats[0].metadata
    mc = result.asset_materializations_for_node("monte_carlo_var")[0].metadata
    assert mc["regime"].value == "normal"


def test_load_book_prices_equity_options_american_and_index_options_european(db_url: str) -> None:
    _seed(db_url)
    config = load_platform_config(CONFIG_DIR)
    cfg = config.stress_scenarios
    db = Database(db_url)
    try:
        with db.connect() as conn:
            sb = load_book(conn, DAY, ExchangeCalendar().session_close(DAY), config, cfg)
    finally:
        db.dispose()
    c = sb.book.contracts
    names = np.array(sb.book.factors)[c.factor]
    spy_opt = (names == "SPY") & c.is_option
    assert spy_opt.sum() == 1 and c.american[spy_opt].all()
    assert not c.american[~spy_opt].any()  # SPX/NDX index options and the SPY stock
    # the grid's zero cell is exactly 0 with the American put in the book, and the
    # put is revalued with the tree (not the European formula) under a crash
    kw = {"skew_slope": sb.per_factor("skew_slope"), "skew_rule": cfg.grid.skew_rule,
          "min_vol": cfg.grid.min_vol, **american_kwargs(cfg.grid)}
    assert kw["american_method"] == "lr" and cfg.monte_carlo.american_method == "interp_lr"
    zero = revalue(sb.book, ScenarioSet.zero(sb.book.n_factors), **kw)  # type: ignore[arg-type]
    assert np.all(zero == 0.0)
    i = int(np.flatnonzero(spy_opt)[0])
    crash = np.where(np.array(sb.book.factors) == "SPY", math.log(0.7), 0.0)[None, :]
    sc = ScenarioSet.build(crash, 0.0, 0.0)
    eu_book = Book(dataclasses.replace(c, american=np.zeros_like(c.american)), sb.book.units,
                   sb.book.groups, sb.book.factors)
    g = int(np.flatnonzero(sb.book.units[i])[0])  # the SPY group (the put and the stock)
    am_pnl = revalue(sb.book, sc, **kw)[0, g]  # type: ignore[arg-type]
    eu_pnl = revalue(eu_book, sc, **kw)[0, g]  # type: ignore[arg-type]
    assert am_pnl < eu_pnl  # short put: the early-exercise premium is a further loss


STRESS_TABLES = (stress_shock_grid, stress_historical, monte_carlo_var, correlation_stress)


def _small_config(tmp_path: Path, n_scenarios: int = 500) -> Path:
    cfg_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, cfg_dir)
    path = cfg_dir / "stress_scenarios.yaml"
    data = yaml.safe_load(path.read_text())
    data["monte_carlo"]["n_scenarios"] = n_scenarios
    data["historical"]["builtin"] = ["feb_2018"]
    data["historical"]["windows"] = []
    path.write_text(yaml.safe_dump(data))
    return cfg_dir


def _resources(db_url: str, cfg_dir: Path) -> dict[str, object]:
    return {"db": DatabaseResource(url=db_url), "platform": PlatformResource(config_dir=str(cfg_dir))}


def _count(db_url: str, day: date) -> list[int]:
    db = Database(db_url)
    try:
        with db.connect() as conn:
            return [conn.execute(select(func.count()).select_from(t).where(t.c.session_date == day))
                    .scalar_one() for t in STRESS_TABLES]
    finally:
        db.dispose()


def test_empty_book_session_writes_no_rows_clears_old_ones_and_checks_pass(
    db_url: str, tmp_path: Path
) -> None:
    cfg_dir = _small_config(tmp_path)
    parts = session_partitions(ExchangeCalendar(), end=date(2018, 12, 31))
    resources = _resources(db_url, cfg_dir)

    def run() -> dg.ExecuteInProcessResult:
        result = dg.materialize(make_stress_assets(parts), resources=resources,
                                partition_key=DAY.isoformat(), instance=dg.DagsterInstance.ephemeral())
        assert result.success
        evals = result.get_asset_check_evaluations()
        assert len(evals) == 4 and all(e.passed for e in evals), [e.description for e in evals]
        return result

    # a book with zero positions (nothing stored for the session at all): no crash, no rows
    run()
    assert _count(db_url, DAY) == [0, 0, 0, 0]
    # the session had a book, then its positions went away: the stale stress rows are cleared
    _seed(db_url)
    run()
    assert all(c > 0 for c in _count(db_url, DAY))
    db = Database(db_url)
    try:
        with db.begin() as conn:
            conn.execute(delete(positions_snapshot).where(positions_snapshot.c.session_date == DAY))
    finally:
        db.dispose()
    result = run()
    assert _count(db_url, DAY) == [0, 0, 0, 0]
    assert result.asset_materializations_for_node("monte_carlo_var")


def _rows(db_url: str, table: Table, days: list[date]) -> list[dict[str, object]]:
    db = Database(db_url)
    try:
        with db.connect() as conn:
            rows = conn.execute(select(table).where(table.c.session_date.in_(days))).mappings().all()
    finally:
        db.dispose()
    return sorted((dict(r) for r in rows), key=repr)


def test_backfill_and_single_sessions_give_identical_monte_carlo_numbers(
    db_url: str, tmp_path: Path
) -> None:
    cal = ExchangeCalendar()
    fits = McFits(MarketHistory(), cal, StressScenariosFile())
    sessions = cal.sessions(date(2018, 1, 2), date(2018, 3, 29))
    # the last two sessions of a refit block and the first of the next one
    i = next(k for k in range(1, len(sessions))
             if fits.fit_date(sessions[k]) == sessions[k] and fits.fit_date(sessions[k - 1]) != sessions[k - 1])
    days = sessions[i - 1: i + 2]
    assert [fits.fit_date(d) for d in days] == [fits.fit_date(days[0]), days[1], days[1]]
    _seed(db_url, tuple(days))
    cfg_dir = _small_config(tmp_path)
    parts = session_partitions(cal, end=date(2018, 12, 31))
    assets = make_stress_assets(parts)
    selection = ["monte_carlo_var", "correlation_stress"]
    backfill = dg.materialize(
        assets, selection=selection, resources=_resources(db_url, cfg_dir),
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": days[0].isoformat(),
              "dagster/asset_partition_range_end": days[-1].isoformat()},
    )
    assert backfill.success
    assert all(e.passed for e in backfill.get_asset_check_evaluations())
    in_backfill = {t.name: _rows(db_url, t, days) for t in (monte_carlo_var, correlation_stress)}
    assert all(len(v) > 0 for v in in_backfill.values())
    for day in days:
        single = dg.materialize(assets, selection=selection, resources=_resources(db_url, cfg_dir),
                                partition_key=day.isoformat(), instance=dg.DagsterInstance.ephemeral())
        assert single.success
    alone = {t.name: _rows(db_url, t, days) for t in (monte_carlo_var, correlation_stress)}
    assert alone == in_backfill  # exactly, not approximately
    # without monte_carlo_var rows to reuse, correlation_stress computes the same bits
    db = Database(db_url)
    try:
        with db.begin() as conn:
            conn.execute(delete(monte_carlo_var))
    finally:
        db.dispose()
    assert dg.materialize(assets, selection=["correlation_stress"], resources=_resources(db_url, cfg_dir),
                          partition_key=days[-1].isoformat(), instance=dg.DagsterInstance.ephemeral()).success
    assert _rows(db_url, correlation_stress, days) == in_backfill["correlation_stress"]


def _stress_book(day: date, cfg: StressScenariosFile) -> StressBook:
    cs = ContractSet.build(factor=[0, 1], is_option=False, is_call=False, black76=False,
                           spot=[6800.0, 2700.0], strike=1.0, T=0.0, r=0.0, q=0.0, vol=0.0)
    book = Book(cs, np.eye(2), ("NDX", "SPX"), ("NDX", "SPX"))
    return StressBook(day, book, (("demo", "A", "NDX"), ("demo", "A", "SPX")),
                      (cfg.underlying("NDX"), cfg.underlying("SPX")), 17.0, 18.0, 2)


def test_mc_fits_refit_every_block_reuse_fits_and_match_a_direct_fit_on_block_ends() -> None:
    cfg_dir_config = load_platform_config(CONFIG_DIR)
    shipped = cfg_dir_config.stress_scenarios  # NDX follows the ndx proxy
    cfg = shipped.model_copy(update={"monte_carlo": shipped.monte_carlo.model_copy(update={"n_scenarios": 300})})
    cal = ExchangeCalendar()
    history = MarketHistory()
    fits = McFits(history, cal, cfg)
    from_origin = cal.sessions(MC_FIT_ORIGIN, date(2018, 6, 29))
    days = from_origin[-60:]
    ends = {d for k, d in enumerate(from_origin, 1) if k % MC_REFIT_SESSIONS == 0}
    for d in days:
        f = fits.fit_date(d)
        assert f <= d and f in ends and not any(f < e <= d for e in ends)
    setups = [mc_setup(_stress_book(d, cfg), history, cfg_dir_config, cfg, fits) for d in days]
    blocks = {s.fit_date for s in setups}
    assert setups[0].model.names == ("spx", "ndx", "vix")
    assert fits.garch_fits == 3 * len(blocks) <= 3 * 4  # spx, ndx, vix once per fit date
    for d, s in zip(days, setups, strict=True):
        fresh = mc_setup(_stress_book(d, cfg), history, cfg_dir_config, cfg)  # a run of one session
        assert np.array_equal(fresh.model.sigma0, s.model.sigma0) and np.array_equal(fresh.corr, s.corr)
        assert np.array_equal(fresh.model.nu, s.model.nu) and fresh.fit_date == s.fit_date
    # on a block end the model is the direct fit on the session's own history window
    end = next(d for d in days if d in ends)
    s = setups[days.index(end)]
    assert s.fit_date == end
    r = np.log(history.spx_close()).diff().dropna()
    window = r.loc[pd.Timestamp(end) - pd.DateOffset(days=round(10 * 365.25)): pd.Timestamp(end)]
    direct = fit_garch(window.to_numpy(np.float64), dist="t")
    assert s.model.sigma0[0] == math.sqrt(direct.forecast(1)[0])
    # between refits the state moves with the returns (parameters fixed)
    after = setups[days.index(end) + 1]
    assert after.fit_date == end and after.model.omega[0] == s.model.omega[0]
    assert after.model.sigma0[0] != s.model.sigma0[0]
    # the cached shocks give exactly the plain simulation
    mc = cfg.monte_carlo
    for h in mc.horizons_days:
        plain = simulate_factors(after.model, after.corr, n_paths=mc.n_scenarios, horizon=h,
                                 rng=np.random.default_rng([mc.seed, h]), innovations=mc.innovations,
                                 vol_scale=after.multiplier)
        assert np.array_equal(fits.paths(after, after.corr, h), plain)
        assert np.array_equal(fits.paths(after, after.corr, h), plain)  # second time from cache


def test_monte_carlo_reads_the_stored_session_regime(db_url: str, tmp_path: Path) -> None:
    """Issue 14, item 6: the session's regime is the one stored (by margin_history, with
    hysteresis); Monte Carlo does not re-classify.  VIX 17.31 alone is "normal"; the stored
    "elevated" (hand-set) is what every Monte Carlo row and its multiplier must show."""
    from portfolio_pipeline.storage.tables import session_regime

    cfg_dir = _small_config(tmp_path)
    _seed(db_url)
    db = Database(db_url)
    try:
        with db.begin() as conn:
            replace_partition(conn, session_regime, {"session_date": DAY}, [{
                "session_date": DAY, "regime": "elevated", "vix": 17.31, "vix3m": 17.9,
                "previous_regime": "elevated"}])
    finally:
        db.dispose()
    parts = session_partitions(ExchangeCalendar(), end=date(2018, 12, 31))
    result = dg.materialize(make_stress_assets(parts), selection=["monte_carlo_var"],
                            resources=_resources(db_url, cfg_dir), partition_key=DAY.isoformat(),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    expected = StressScenariosFile.model_validate(
        yaml.safe_load((cfg_dir / "stress_scenarios.yaml").read_text())
    ).monte_carlo.regime_vol_multiplier["elevated"]
    rows = _rows(db_url, monte_carlo_var, [DAY])
    assert rows and {r["regime"] for r in rows} == {"elevated"}
    assert {r["vol_multiplier"] for r in rows} == {expected}


def test_replay_beside_the_actual_pnl_of_a_day_the_book_lived_through(db_url: str, tmp_path: Path) -> None:
    """Issue 14, item 7: the book of 2018-02-02 replayed through the Feb-2018 window's next
    day (2018-02-05: SPX -4.1 %, VIX 17.31 -> 37.32) is published beside the P&L stored
    for 2018-02-05 (hand-set here: -28,551, the demo's).  The seeded book is short SPX puts
    and calls, so the replayed day is a loss."""
    from portfolio_pipeline.storage.tables import portfolio_returns

    cfg_dir = _small_config(tmp_path)
    _seed(db_url)
    db = Database(db_url)
    try:
        with db.begin() as conn:
            replace_partition(conn, portfolio_returns, {"session_date": date(2018, 2, 5)}, [{
                "session_date": date(2018, 2, 5), "broker": "*", "account_id": "*", "nlv": 971_449.0,
                "prev_nlv": 1_000_000.0, "external_flow": 0.0, "income": 0.0, "pnl": -28_551.0,
                "twr": -0.028551, "growth_index": 0.971449, "high_water_mark": 1.0,
                "drawdown": -0.028551, "broker_daily_pnl": None}])
    finally:
        db.dispose()
    parts = session_partitions(ExchangeCalendar(), end=date(2018, 12, 31))
    result = dg.materialize(make_stress_assets(parts), selection=["stress_historical"],
                            resources=_resources(db_url, cfg_dir), partition_key=DAY.isoformat(),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = result.asset_materializations_for_node("stress_historical")[0].metadata
    table = meta["replay_vs_actual"].value
    line = next(x for x in str(table).splitlines() if x.startswith("| feb_2018 | 2018-02-05"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "-28,551"
    replay = float(cells[2].replace(",", ""))
    assert replay < 0
    assert "vol_rule" in meta


def test_fit_date_walking_forward_equals_a_fresh_model_per_session() -> None:
    """McFits extends its session list as a backfill walks forward (only the new sessions
    are listed); the fit date of every session, and of an earlier one asked afterwards, is
    the one a fresh McFits (listing from MC_FIT_ORIGIN) gives, across refit blocks."""
    cal = ExchangeCalendar()
    walking = McFits(MarketHistory(), cal, StressScenariosFile())
    days = cal.sessions(date(2017, 12, 1), date(2018, 4, 30))
    for day in [*days, days[3], days[-40]]:
        fresh = McFits(MarketHistory(), cal, StressScenariosFile())
        assert walking.fit_date(day) == fresh.fit_date(day), day
    assert len({walking.fit_date(d) for d in days}) > 2  # several refit blocks crossed


def test_a_run_reads_each_session_book_once_and_the_next_run_reads_it_again(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shock grid, replay, Monte Carlo and correlation steps of one run share one read of
    a session's book (PlatformResource.run_memo); a later run with the same resource object
    reads the stored session again, so it sees positions rewritten in between."""
    import portfolio_pipeline.defs.stress.book as book_module

    _seed(db_url)
    cfg_dir = _small_config(tmp_path)
    reads: list[int] = []
    real = book_module.load_book

    def counting(*args: Any, **kwargs: Any) -> book_module.StressBook:
        sb = real(*args, **kwargs)
        reads.append(sb.positions)
        return sb

    monkeypatch.setattr(book_module, "load_book", counting)
    parts = session_partitions(ExchangeCalendar(), end=date(2018, 12, 31))
    resources = _resources(db_url, cfg_dir)
    result = dg.materialize(make_stress_assets(parts), resources=resources,
                            partition_key=DAY.isoformat(), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert reads == [6]  # four stress steps, one read
    db = Database(db_url)
    try:  # the session now holds one position less
        with db.begin() as conn:
            conn.execute(positions_snapshot.delete().where(
                positions_snapshot.c.session_date == DAY, positions_snapshot.c.account_id == "DEMO-002"))
    finally:
        db.dispose()
    result = dg.materialize(make_stress_assets(parts), resources=resources,
                            partition_key=DAY.isoformat(), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert reads == [6, 5]
    platform = PlatformResource(config_dir=str(cfg_dir))
    memo = platform.run_memo("run-1")
    db = Database(db_url)
    try:
        with db.connect() as conn:
            args = (conn, DAY, T0, platform.config, platform.config.stress_scenarios, platform.calendar)
            shared = book_module.session_book(memo, *args)
            assert shared is not None and book_module.session_book(memo, *args) is shared
            assert platform.run_memo("run-1") is memo and platform.run_memo("run-2") == {}
            assert book_module.session_book({}, *args) is not shared
    finally:
        db.dispose()
    with pytest.raises(ValueError, match="read-only"):  # one book for every step: nobody writes it
        shared.book.units[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        shared.book.contracts.spot[0] = 1.0

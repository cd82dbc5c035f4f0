"""Market history: storage, checks, the demo and IBKR sources, the asset, no look-ahead."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from portfolio_pipeline.brokers.demo.history_source import DemoHistorySource
from portfolio_pipeline.brokers.ibkr.history_source import IbkrHistorySource, duration_for
from portfolio_pipeline.brokers.ibkr.pacing import RateLimiter
from portfolio_pipeline.defs.marketdata.assets import make_market_history_asset, plan
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.stress.book import McFits
from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata.bars import DailyBar, HistoryAnswer, HistoryUnavailableError
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.marketdata.store import (
    StoredHistory,
    find_gaps,
    find_jumps,
    find_stale,
    store_bars,
    stored_span,
)
from portfolio_pipeline.quant.scenario_config import StressScenariosFile
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import market_history
from portfolio_pipeline_tests.brokers.ibkr.book import SPX_IND, adapter, run
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import ib_index
from portfolio_pipeline_tests.defs.risk.book import dated_broker  # noqa: F401 (fixture)
from portfolio_pipeline_tests.marketdata.fake_ib_history import HistoryGateway
from portfolio_pipeline_tests.stubs import CONFIG_DIR, ephemeral_instance, instruments

FETCHED = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
CAL = ExchangeCalendar()


def _bars(symbol: str, series: pd.Series, source: str = "test") -> list[DailyBar]:
    return [DailyBar(symbol, ts.date(), float(v), source) for ts, v in series.items()]


# --------------------------------------------------------------------------- storage


def test_store_replaces_range_and_reader_never_sees_past_as_of(db: Database) -> None:
    spx = MarketHistory().spx_close().loc["2018-01-02":"2018-02-28"]
    with db.begin() as conn:
        assert store_bars(conn, "SPX", date(2018, 1, 1), date(2018, 2, 28), _bars("SPX", spx), FETCHED) == len(spx)
        # re-storing a sub-range replaces exactly that range
        store_bars(conn, "SPX", date(2018, 2, 1), date(2018, 2, 28),
                   _bars("SPX", spx.loc["2018-02-01":]), FETCHED)
    with db.connect() as conn:
        assert stored_span(conn, "SPX") == (date(2018, 1, 2), date(2018, 2, 28), len(spx))
        view = StoredHistory(conn, date(2018, 2, 2))
    got = view.spx_close()
    assert got.index.max() == pd.Timestamp("2018-02-02")  # no look-ahead
    np.testing.assert_allclose(got.to_numpy(), spx.loc[:"2018-02-02"].to_numpy(), rtol=0, atol=0)
    window = view.window("SPX")
    assert (window.first, window.last, window.sources) == (date(2018, 1, 2), date(2018, 2, 2), ("test",))
    with pytest.raises(InvalidDataError, match="no stored closes of VIX up to 2018-02-02"):
        view.vix()


def test_store_refuses_bars_outside_the_range_and_keeps_what_is_stored(db: Database) -> None:
    bar = DailyBar("SPX", date(2018, 1, 2), 2695.81, "test")
    with db.begin() as conn:
        store_bars(conn, "SPX", date(2018, 1, 2), date(2018, 1, 2), [bar], FETCHED)
    with pytest.raises(InvalidDataError, match="outside the requested"), db.begin() as conn:
        store_bars(conn, "SPX", date(2018, 1, 2), date(2018, 1, 2),
                   [bar, DailyBar("SPX", date(2018, 1, 3), 2713.06, "test")], FETCHED)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(market_history)).scalar() == 1


def test_bar_validation_names_the_field() -> None:
    with pytest.raises(InvalidDataError, match=r"ibkr:TRADES:SPX bar 2018-01-02: close must be positive"):
        DailyBar("SPX", date(2018, 1, 2), float("nan"), "ibkr:TRADES")
    with pytest.raises(InvalidDataError, match=r"high 1\.0 < low 2\.0"):
        DailyBar("SPX", date(2018, 1, 2), 1.5, "x", high=1.0, low=2.0)


# --------------------------------------------------------------------------- checks


def test_checks_flag_gap_split_and_stale_closes() -> None:
    sessions = CAL.sessions(date(2018, 1, 2), date(2018, 1, 12))
    idx = pd.DatetimeIndex([pd.Timestamp(d) for d in sessions if d != date(2018, 1, 8)])
    closes = pd.Series([100.0, 101.0, 102.0, 51.0, 51.5, 51.5, 51.5, 51.5], index=idx)
    gaps = find_gaps(closes, sessions, "AAPL")
    assert gaps == ["AAPL: 1 XNYS session(s) without a bar: 2018-01-08"]
    # 102 -> 51 on 2018-01-05 is a 2:1 split: |ln(0.5)| = 0.69 > 0.25
    [jump] = find_jumps(closes, "AAPL", 0.25)
    assert "AAPL 2018-01-05: close 102 -> 51 (-50.0%)" in jump
    assert find_jumps(closes, "AAPL", 0.75) == []
    stale = find_stale(closes, "AAPL", date(2018, 1, 16), 4)
    assert stale == ["AAPL: last close is 2018-01-12, older than session 2018-01-16",
                     "AAPL: close 51.5 unchanged for the last 4 sessions up to 2018-01-12"]
    assert find_stale(closes, "AAPL", date(2018, 1, 12), 5) == []


def test_fetch_stops_at_the_last_closed_session() -> None:
    from portfolio_pipeline.defs.marketdata.assets import fetch_end

    # an EOD run of today's partition before the close fetches up to yesterday
    assert fetch_end(date(2026, 12, 4), date(2026, 12, 3)) == date(2026, 12, 3)
    assert fetch_end(date(2018, 2, 2), date(2026, 12, 3)) == date(2018, 2, 2)


def test_plan_backfills_once_then_extends() -> None:
    day = date(2026, 12, 4)
    assert plan(None, day, day, 5.0) == [(date(2021, 12, 4), day)]
    assert plan((date(2021, 12, 6), date(2026, 12, 2), 1255), day, day, 5.0) == [(date(2026, 12, 3), day)]
    assert plan((date(2021, 12, 6), day, 1256), day, day, 5.0, lambda a, b: bool(CAL.sessions(a, b))) == []
    # (2021-12-04/05 is a weekend: nothing to ask for; without a calendar it is asked again)
    assert plan((date(2021, 12, 6), day, 1256), day, day, 5.0) == [(date(2021, 12, 4), date(2021, 12, 5))]
    # a range run: the depth is counted before its FIRST session (5 years before 2026-11-02)
    assert plan(None, date(2026, 11, 2), day, 5.0) == [(date(2021, 11, 2), day)]


def test_plan_fetches_the_missing_depth_when_a_run_goes_back_before_the_stored_bars() -> None:
    # a later chunk (2018-02-12..16) ran first and stored 2017-02-12..2018-02-16 (depth 1y);
    # the earlier chunk 2018-02-05..09 needs 2017-02-05..2017-02-11 too, nothing after
    stored = (date(2017, 2, 13), date(2018, 2, 16), 254)
    assert plan(stored, date(2018, 2, 5), date(2018, 2, 9), 1.0) == [(date(2017, 2, 5), date(2017, 2, 12))]
    # the daily run after the stored bars only extends (no prefix request every day)
    assert plan(stored, date(2018, 2, 20), date(2018, 2, 20), 1.0) == [(date(2018, 2, 17), date(2018, 2, 20))]


# --------------------------------------------------------------------------- demo source


def test_demo_source_serves_the_shipped_data_labelled() -> None:
    history = MarketHistory()
    source = DemoHistorySource(history)
    spx = asyncio.run(source.daily_bars("SPX", date(2018, 2, 1), date(2018, 2, 9)))
    assert [b.session for b in spx.bars] == CAL.sessions(date(2018, 2, 1), date(2018, 2, 9))
    assert spx.bars[2].close == float(history.spx_close().loc["2018-02-05"])  # 2648.94 published
    assert spx.bars[2].close == pytest.approx(2648.94, abs=0.01)
    assert {b.source for b in spx.bars} == {"demo:arch.sp500"}
    vix3m = asyncio.run(source.daily_bars("VIX3M", date(2018, 2, 5), date(2018, 2, 5)))
    # model VIX3M = 19 + (37.32 - 19) * 0.6 = 29.992 (module docstring of marketdata.history)
    assert vix3m.bars[0].close == pytest.approx(19 + (37.32 - 19) * 0.6, abs=1e-9)
    assert vix3m.bars[0].source == "demo:model-vix3m"
    with pytest.raises(HistoryUnavailableError, match="demo: no market history for AAPL"):
        asyncio.run(source.daily_bars("AAPL", date(2018, 2, 1), date(2018, 2, 9)))


def test_market_history_asset_backfills_then_extends_with_checks(db_url: str) -> None:
    parts = session_partitions(CAL, end=date(2019, 1, 1))
    asset = make_market_history_asset(parts)
    resources = {"db": DatabaseResource(url=db_url),
                 "platform": PlatformResource(config_dir=str(CONFIG_DIR), demo_only=True)}
    config = {"ops": {"market_history": {"config": {"depth_years": 1.0}}}}
    first = dg.materialize([asset], resources=resources, partition_key="2018-02-02",
                           run_config=config, instance=dg.DagsterInstance.ephemeral())
    assert first.success
    db = Database(db_url)
    try:
        with db.connect() as conn:
            spx = stored_span(conn, "SPX")
            assert spx is not None and spx[1] == date(2018, 2, 2) and spx[0] >= date(2017, 2, 2)
            assert spx[2] == len(CAL.sessions(date(2017, 2, 2), date(2018, 2, 2)))
        evals = {e.check_name: e for e in first.get_asset_check_evaluations()}
        assert evals["market_history_no_gaps"].passed
        assert evals["market_history_fresh"].passed
        second = dg.materialize([asset], resources=resources, partition_key="2018-02-09",
                                run_config=config, instance=dg.DagsterInstance.ephemeral())
        assert second.success
        with db.connect() as conn:
            spx2 = stored_span(conn, "SPX")
            assert spx2 == (spx[0], date(2018, 2, 9), spx[2] + 5)  # extended by 5 sessions only
            sources = set(conn.execute(select(market_history.c.source).distinct()).scalars())
        assert sources == {"demo:arch.sp500", "demo:arch.vix", "demo:model-vix3m"}
        # the VIX rose 115% on 2018-02-05: volatility indices are exempt from the split check
        evals2 = {e.check_name: e for e in second.get_asset_check_evaluations()}
        assert evals2["market_history_no_unexplained_jumps"].passed
    finally:
        db.dispose()


def _history_rows(db: Database) -> list[tuple[object, ...]]:
    t = market_history
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(t.c.symbol, t.c.session_date, t.c.open, t.c.close, t.c.source)
            .order_by(t.c.symbol, t.c.session_date))]


def test_chunked_backfill_stores_the_same_history_in_any_order(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Regression: the first backfill fetched ``depth_years`` before the run's LAST session,
    so a chunked backfill whose first chunk does not start at the first partition (here
    2018-02-05, partitions from 2014) stored another history than the same range in one run
    (and the first sessions of a long single run had less than ``depth_years`` before them).
    Reference: the range in one run on a separate database; the bars are the shipped data."""
    parts = session_partitions(CAL, end=date(2019, 1, 1))
    asset = make_market_history_asset(parts)
    config = {"ops": {"market_history": {"config": {"depth_years": 1.0}}}}

    def run_range(url: str, first: str, last: str) -> None:
        resources = {"db": DatabaseResource(url=url),
                     "platform": PlatformResource(config_dir=str(CONFIG_DIR), demo_only=True)}
        result = dg.materialize([asset], resources=resources, run_config=config,
                                instance=dg.DagsterInstance.ephemeral(),
                                tags={"dagster/asset_partition_range_start": first,
                                      "dagster/asset_partition_range_end": last})
        assert result.success

    reference = Database(f"sqlite:///{tmp_path / 'single.db'}")
    db = Database(db_url)
    try:
        reference.migrate()
        run_range(str(reference.url.render_as_string(hide_password=False)), "2018-02-05", "2018-02-16")
        expected = _history_rows(reference)
        spx = [r for r in expected if r[0] == "SPX"]
        # 1 year before the FIRST session, shipped closes, up to the last session
        assert (spx[0][1], spx[-1][1]) == (CAL.sessions(date(2017, 2, 5), date(2017, 2, 10))[0], date(2018, 2, 16))
        assert spx[-1][3] == float(MarketHistory().spx_close().loc["2018-02-16"])
        for order in (["2018-02-05", "2018-02-12"], ["2018-02-12", "2018-02-05"]):
            with db.begin() as conn:
                conn.execute(market_history.delete())
            for first in order:
                run_range(db_url, first, (date.fromisoformat(first) + pd.Timedelta(days=4)).isoformat())
            assert _history_rows(db) == expected, order
    finally:
        reference.dispose()
        db.dispose()


# --------------------------------------------------------------------------- no look-ahead


def test_monte_carlo_fit_of_a_backfilled_session_ignores_later_history(db: Database) -> None:
    """The GARCH/correlation fit for 2018-02-02 is identical whether the store ends on that
    session or ten months later; with too little history before it the fit refuses
    instead of borrowing later returns (the demo's shipped-data fallback does borrow)."""
    history = MarketHistory()
    source = DemoHistorySource(history)
    with db.begin() as conn:
        for symbol in ("SPX", "VIX"):
            answer = asyncio.run(source.daily_bars(symbol, date(2015, 1, 2), date(2018, 12, 31)))
            store_bars(conn, symbol, answer.start, answer.end, answer.bars, FETCHED)
    cfg = StressScenariosFile()
    day = date(2018, 2, 2)
    with db.connect() as conn:
        later = McFits(StoredHistory(conn, date(2018, 12, 31)), CAL, cfg)
        bounded = McFits(StoredHistory(conn, day), CAL, cfg)
    fit_date = later.fit_date(day)
    a = later._block(("spx", "vix"), fit_date)
    b = bounded._block(("spx", "vix"), fit_date)
    np.testing.assert_array_equal(a.corr, b.corr)
    for fa, fb in zip(a.fits, b.fits, strict=True):
        assert (fa.fit.omega, fa.fit.alpha, fa.fit.beta, fa.fit.nu) == (fb.fit.omega, fb.fit.alpha, fb.fit.beta, fb.fit.nu)
        assert fa.window.index[-1] <= pd.Timestamp(fit_date)
    assert any(n.startswith("spx GARCH window ") for n in a.notes)  # the window is named
    # the session's full setup (GARCH state filtered forward to the session itself)
    from types import SimpleNamespace

    from portfolio_pipeline.quant.scenario_config import UnderlyingStress
    from portfolio_pipeline_tests.stubs import platform_config

    sb = SimpleNamespace(session=day, settings=(UnderlyingStress(proxy="spx"),), vix=17.31, vix3m=17.9)
    sa = later.setup(sb, platform_config())  # type: ignore[arg-type]
    sbnd = bounded.setup(sb, platform_config())  # type: ignore[arg-type]
    np.testing.assert_array_equal(sa.model.sigma0, sbnd.model.sigma0)
    np.testing.assert_array_equal(sa.corr, sbnd.corr)
    assert sa.notes == sbnd.notes
    # ... and it does move when the session's own return is dropped (the test can fail)
    with db.connect() as conn:
        before = McFits(StoredHistory(conn, CAL.previous_session(day)), CAL, cfg)
    sprev = before.setup(SimpleNamespace(**{**vars(sb), "session": CAL.previous_session(day)}),  # type: ignore[arg-type]
                         platform_config())
    assert not np.array_equal(sprev.model.sigma0, sa.model.sigma0)

    with db.connect() as conn:
        early = McFits(StoredHistory(conn, date(2015, 6, 1)), CAL, cfg)
    with pytest.raises(InvalidDataError, match="later returns are never borrowed"):
        early._block(("spx", "vix"), early.fit_date(date(2015, 6, 1)))


# --------------------------------------------------------------------------- IBKR


VIX_IND = ib_index(502, "VIX")


def _gateway() -> HistoryGateway:
    gw = HistoryGateway(accounts=["U1"])
    gw.add_contract(SPX_IND)
    gw.add_contract(VIX_IND)
    spx = MarketHistory().spx_close().loc["2018-01-02":"2018-02-09"]
    gw.bars[501] = [(ts.date(), v - 5, v + 10, v - 10, v, 0.0) for ts, v in spx.items()]
    return gw


class _FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_ibkr_history_requests_daily_trades_and_paces() -> None:
    gw = _gateway()
    t = _FakeTime()

    async def scenario() -> list[int]:
        async with adapter(gw) as broker:
            source = IbkrHistorySource(broker, instruments(),
                                       pacing=RateLimiter(2, 600.0, clock=t.clock, sleep=t.sleep))
            out = []
            for _ in range(3):  # the third waits for the 600 s pacing window
                answer = await source.daily_bars("SPX", date(2018, 1, 2), date(2018, 2, 9))
                out.append(len(answer.bars))
            return out

    assert run(scenario) == [28, 28, 28]
    assert t.slept == [600.0]
    [req, *_] = gw.requests_named("reqHistoricalData")
    _, contract, end, duration, bar, what, rth = req
    assert (contract.secType, contract.symbol, duration, bar, what, rth) == ("IND", "SPX", "39 D", "1 day", "TRADES", True)
    assert end == "20180210 04:59:59 UTC"  # 2018-02-09 23:59:59 New York (EST)
    assert duration_for(date(2021, 12, 4), date(2026, 12, 4)) == "5 Y"


def test_ibkr_partial_answer_is_noted_not_filled() -> None:
    gw = _gateway()

    async def scenario():  # type: ignore[no-untyped-def]
        async with adapter(gw) as broker:
            return await IbkrHistorySource(broker, instruments()).daily_bars(
                "SPX", date(2017, 12, 1), date(2018, 2, 9))

    answer = run(scenario)
    assert answer.bars[0].session == date(2018, 1, 2) and len(answer.bars) == 28
    assert answer.notes == ("ibkr: partial answer for SPX: first bar 2018-01-02 after the requested start 2017-12-01",)
    assert answer.bars[0].source == "ibkr:TRADES"
    assert answer.bars[0].high == answer.bars[0].close + 10


def test_ibkr_missing_subscription_and_pacing_violation() -> None:
    gw = _gateway()
    gw.history_errors[502] = [(354, "Requested market data is not subscribed.")]
    gw.history_errors[501] = [(162, "Historical Market Data Service error message:API historical data query cancelled: pacing violation")]
    t = _FakeTime()

    async def scenario():  # type: ignore[no-untyped-def]
        async with adapter(gw) as broker:
            source = IbkrHistorySource(broker, instruments(), violation_wait=15.0, sleep=t.sleep)
            with pytest.raises(HistoryUnavailableError, match="no market-data subscription for VIX history: IBKR error 354"):
                await source.daily_bars("VIX", date(2018, 1, 2), date(2018, 2, 9))
            answer = await source.daily_bars("SPX", date(2018, 1, 2), date(2018, 2, 9))
            return answer, source.requests

    answer, requests = run(scenario)
    assert len(answer.bars) == 28 and requests == 3  # VIX once; SPX violated then retried
    assert t.slept == [15.0]


# --------------------------------------------------------------------------- model vs market


@pytest.mark.usefixtures("dated_broker")
def test_model_vs_market_check_runs_with_the_eod_assets(db_url: str, portfolio_env: object) -> None:
    """The put's mark is its BSM value at its broker IV (risk/book.py), the call's IV is
    implied from its mark: model and market agree, the quotes are at the close."""
    from portfolio_pipeline.defs.marketdata.checks import make_mark_checks
    from portfolio_pipeline.storage.tables import position_greeks
    from portfolio_pipeline_tests.defs.risk.book import ASSETS, DAY2, PUT2

    with ephemeral_instance() as instance:
        result = dg.materialize(
            [*ASSETS, *make_mark_checks()], partition_key=DAY2.isoformat(), instance=instance,
            resources={"db": DatabaseResource(url=db_url), "platform": PlatformResource(demo_only=True)},
        )
    assert result.success
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "model_vs_market"]
    assert check.passed, check.description
    assert check.metadata["options"].value == 2.0
    # the EOD book values each option at its quote mid (risk/book.py: bid/ask = mark -/+ 0.5
    # for the put, 3.8/4.2 for the call); SPY at its mark
    db = Database(db_url)
    try:
        with db.connect() as conn:
            got = {r["position_key"]: (r["value_source"], r["value_per_share"]) for r in conn.execute(
                select(position_greeks).where(position_greeks.c.session_date == DAY2)).mappings()}
    finally:
        db.dispose()
    put = next(v for k, v in got.items() if k.endswith("2600|P"))
    call = next(v for k, v in got.items() if k.endswith("2800|C"))
    assert put == ("mid", pytest.approx(PUT2, abs=1e-12))
    assert call == ("mid", pytest.approx(4.0, abs=1e-12))
    assert got["SPY|STK"][0] == "mark"
    [mat] = result.asset_materializations_for_node("position_greeks")
    assert mat.metadata["options_valued_at_model"].value == 0
    # the beta window is named: the 252 daily returns of the shipped SPX up to the session,
    # dated by their closing session (the 252nd XNYS session back from 2018-02-05 on)
    first = CAL.sessions(date(2016, 1, 4), DAY2)[-252]
    assert mat.metadata["beta_window"].value == f"{first}..{DAY2} (252 SPX returns)"


def test_market_history_asset_over_ibkr_reports_an_unavailable_symbol(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPX and VIX from the fake Gateway; VIX3M has no security definition there: it is
    reported (metadata, failed gap check naming it), nothing is stored or filled for it."""
    from portfolio_pipeline.defs import resources as resources_module

    gw = _gateway()
    vix = MarketHistory().vix().loc["2018-01-02":"2018-02-09"]
    gw.bars[502] = [(ts.date(), v, v, v, v, 0.0) for ts, v in vix.items()]
    monkeypatch.setattr(resources_module, "adapters_for",
                        lambda accounts, instruments, clock, *a, **k: [(adapter(gw), ["U1"])])
    parts = session_partitions(CAL, end=date(2019, 1, 1))
    result = dg.materialize(
        [make_market_history_asset(parts)], partition_key="2018-02-09",
        resources={"db": DatabaseResource(url=db_url),
                   "platform": PlatformResource(config_dir=str(CONFIG_DIR), demo_only=True)},
        run_config={"ops": {"market_history": {"config": {"depth_years": 0.1}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    [mat] = result.asset_materializations_for_node("market_history")
    assert mat.metadata["unavailable"].value == "VIX3M"
    assert mat.metadata["notes"].value.startswith("ibkr: no security definition for VIX3M|IND")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["market_history_no_gaps"].passed
    assert checks["market_history_no_gaps"].description == "VIX3M: no bars stored"
    [req] = [r for r in gw.requests_named("reqHistoricalData") if r[1].symbol == "SPX"]
    assert req[3] == "38 D"  # 0.1 years = 37 days back from 2018-02-09: 2018-01-03.., one request
    db = Database(db_url)
    try:
        with db.connect() as conn:
            assert stored_span(conn, "SPX") == (date(2018, 1, 3), date(2018, 2, 9), 27)
            assert stored_span(conn, "VIX3M") is None
            assert set(conn.execute(select(market_history.c.source).distinct()).scalars()) == {"ibkr:TRADES"}
    finally:
        db.dispose()


def test_symbols_are_the_book_underlyings_their_proxies_and_the_indices(db_url: str) -> None:
    from portfolio_pipeline.defs.marketdata.assets import book_symbols
    from portfolio_pipeline.storage import positions_snapshot, replace_partition
    from portfolio_pipeline.storage.records import position_row
    from portfolio_pipeline_tests.stubs import option, position

    day = date(2018, 2, 2)
    qqq = position(option("QQQ", 160.0, "P", date(2018, 3, 16)), -1, underlying_price=165.0)
    es = position(option("ES", 2600.0, "P", date(2018, 3, 16), trading_class="ES", sec_type="FOP"), 1)
    db = Database(db_url)
    db.migrate()
    try:
        with db.begin() as conn:
            replace_partition(conn, positions_snapshot, {"session_date": day},
                              [position_row(day, qqq), position_row(day, es)])
    finally:
        db.dispose()
    cfg = StressScenariosFile.model_validate({"underlyings": {"QQQ": {"proxy": "ndx"}}})
    resource = DatabaseResource(url=db_url)
    # QQQ moves with NDX in the Monte Carlo: NDX's history is fetched too; ES (the future
    # behind the futures option) by its root; SPX, VIX, VIX3M always
    assert book_symbols(resource, [day], cfg) == ["ES", "NDX", "QQQ", "SPX", "VIX", "VIX3M"]


# --------------------------------------------------------------------------- replays


def test_replay_of_a_window_after_the_shipped_data_reads_the_stored_closes(db: Database) -> None:
    """Built-in windows keep their published data; a configured 2024 window reads the broker
    closes stored up to the run's session, and is dropped while it has not ended."""
    from portfolio_pipeline.defs.marketdata.reader import ended_windows
    from portfolio_pipeline.defs.stress.book import replay_paths
    from portfolio_pipeline.marketdata.store import PublishedThenStored

    sessions = CAL.sessions(date(2024, 8, 1), date(2024, 8, 9))
    # test closes (not market data): a 1% daily fall of SPX, the VIX up 2 points a day
    spx = pd.Series([5400.0 * 0.99**i for i in range(len(sessions))], index=pd.DatetimeIndex(sessions))
    vix = pd.Series([16.0 + 2 * i for i in range(len(sessions))], index=pd.DatetimeIndex(sessions))
    with db.begin() as conn:
        store_bars(conn, "SPX", sessions[0], sessions[-1], _bars("SPX", spx, "ibkr:TRADES"), FETCHED)
        store_bars(conn, "VIX", sessions[0], sessions[-1], _bars("VIX", vix, "ibkr:TRADES"), FETCHED)
    cfg = StressScenariosFile.model_validate({"historical": {
        "builtin": ["feb_2018"],
        "windows": [{"name": "aug_2024", "start": "2024-08-01", "end": "2024-08-09", "vix_fill": "history"}],
    }})
    with db.connect() as conn:
        history = PublishedThenStored(StoredHistory(conn, date(2024, 8, 9), ["SPX", "VIX"]))
    feb, aug = replay_paths(history, CAL, cfg)
    assert feb.spx[0] == pytest.approx(float(MarketHistory().spx_close().loc["2018-01-26"]))
    assert aug.dates == tuple(sessions)
    np.testing.assert_allclose(aug.spx, spx.to_numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(aug.vix, vix.to_numpy(), rtol=0, atol=0)
    # a run for 2024-08-07 cannot replay a window ending 2024-08-09
    early = ended_windows(cfg, date(2024, 8, 7))
    assert [w.name for w in early.historical.windows] == []
    assert early.historical.builtin == ["feb_2018"]
    with db.connect() as conn:
        bounded = PublishedThenStored(StoredHistory(conn, date(2024, 8, 7), ["SPX", "VIX"]))
    assert bounded.spx_close().index.max() == pd.Timestamp("2024-08-07")
    with pytest.raises(InvalidDataError, match="aug_2024"):
        replay_paths(bounded, CAL, cfg)


# --------------------------------------------------------------------------- models on stored history


def test_monte_carlo_of_a_live_book_reads_the_stored_history_without_look_ahead(
    db_url: str, tmp_path: object
) -> None:
    """Oracle: with the shipped closes stored as the broker's, a live configuration gives
    bit-for-bit the Monte Carlo VaR of the demo path (which reads the shipped data);
    cutting the store at the session leaves it unchanged (no later close is used)."""
    from pathlib import Path

    import yaml
    from sqlalchemy import delete

    from portfolio_pipeline.defs.stress.assets import make_stress_assets
    from portfolio_pipeline.storage.tables import monte_carlo_var
    from portfolio_pipeline_tests.defs.stress.test_stress import DAY, _rows, _seed, _small_config

    _seed(db_url)
    demo_cfg = _small_config(Path(str(tmp_path)) / "demo")
    live_cfg = _small_config(Path(str(tmp_path)) / "live")
    (live_cfg / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [
        {"name": "ib", "broker": "ibkr", "account_id": "U1"}]}))
    db = Database(db_url)
    source = DemoHistorySource()
    with db.begin() as conn:
        for symbol in ("SPX", "NDX", "VIX"):
            answer = asyncio.run(source.daily_bars(symbol, date(2007, 1, 1), date(2018, 12, 31)))
            store_bars(conn, symbol, answer.start, answer.end, answer.bars, FETCHED)
    parts = session_partitions(CAL, end=date(2018, 12, 31))
    assets = make_stress_assets(parts)

    def run_mc(cfg_dir: Path) -> tuple[list[dict[str, object]], str]:
        result = dg.materialize(
            assets, selection=["monte_carlo_var"], partition_key=DAY.isoformat(),
            resources={"db": DatabaseResource(url=db_url), "platform": PlatformResource(config_dir=str(cfg_dir))},
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        [mat] = result.asset_materializations_for_node("monte_carlo_var")
        return _rows(db_url, monte_carlo_var, [DAY]), str(mat.metadata["fit_notes"].value)

    try:
        shipped, _ = run_mc(demo_cfg)
        stored, notes = run_mc(live_cfg)
        assert stored == shipped
        assert "spx GARCH window " in notes and "ndx GARCH window " in notes
        assert "correlation from " in notes
        with db.begin() as conn:
            conn.execute(delete(market_history).where(market_history.c.session_date > DAY))
        cut, _ = run_mc(live_cfg)
        assert cut == shipped
        # the live path does read the store: without NDX closes it refuses, naming them
        with db.begin() as conn:
            conn.execute(delete(market_history).where(market_history.c.symbol == "NDX"))
        with pytest.raises(InvalidDataError, match="no stored closes of NDX up to 2018-02-02"):
            run_mc(live_cfg)
    finally:
        db.dispose()


def test_beta_of_a_live_book_is_estimated_on_stored_closes_up_to_the_session(
    db_url: str, tmp_path: object
) -> None:
    """Hand-made closes: AAPL's daily log return is 1.5 x SPX's until the session, then
    -3 x afterwards; the OLS beta for the session is exactly 1.5 (nothing after it read)."""
    import shutil
    from pathlib import Path

    import yaml

    from portfolio_pipeline.analytics.beta import estimate_betas
    from portfolio_pipeline.config.pricing import BetaSettings
    from portfolio_pipeline.defs.greeks.frames import beta_history

    cfg_dir = Path(str(tmp_path)) / "config"
    shutil.copytree(CONFIG_DIR, cfg_dir)
    (cfg_dir / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [
        {"name": "ib", "broker": "ibkr", "account_id": "U1"}]}))
    sessions = CAL.sessions(date(2017, 6, 1), date(2018, 3, 29))
    day = date(2018, 2, 2)
    rng = np.random.default_rng(5)
    x = rng.normal(0, 0.01, len(sessions))
    y = np.where(np.array(sessions) <= day, 1.5 * x, -3.0 * x)
    spx = pd.Series(2500.0 * np.exp(np.cumsum(x)), index=pd.DatetimeIndex(sessions))
    aapl = pd.Series(150.0 * np.exp(np.cumsum(y)), index=pd.DatetimeIndex(sessions))
    db = Database(db_url)
    db.migrate()
    try:
        with db.begin() as conn:
            store_bars(conn, "SPX", sessions[0], sessions[-1], _bars("SPX", spx), FETCHED)
            store_bars(conn, "AAPL", sessions[0], sessions[-1], _bars("AAPL", aapl), FETCHED)
    finally:
        db.dispose()
    closes = beta_history(DatabaseResource(url=db_url), PlatformResource(config_dir=str(cfg_dir)), day)
    assert closes.index.max() == pd.Timestamp(day)
    betas = estimate_betas(closes, day, ["AAPL"], BetaSettings(window=120))
    assert betas["AAPL"] == pytest.approx(1.5, rel=1e-9)
    from portfolio_pipeline.analytics.beta import beta_window

    first = sessions[sessions.index(day) - 119]
    assert beta_window(closes, day, 120) == f"{first}..{day} (120 SPX returns)"


def test_ibkr_futures_history_is_the_continuous_future_without_an_end_date() -> None:
    from ib_async import Contract as IbContract

    gw = _gateway()
    gw.add_contract(IbContract(conId=601, symbol="ES", secType="CONTFUT", exchange="CME", currency="USD",
                               multiplier="50", lastTradeDateOrContractMonth="20180316", localSymbol="ESH8"))
    spx = MarketHistory().spx_close().loc["2018-01-02":"2018-02-09"]
    gw.bars[601] = [(ts.date(), v, v + 5, v - 5, v + 1.0, 1e6) for ts, v in spx.items()]

    async def scenario() -> HistoryAnswer:
        async with adapter(gw, clock=lambda: datetime(2018, 2, 2, 21, 0, tzinfo=UTC)) as broker:
            return await IbkrHistorySource(broker, instruments()).daily_bars("ES", date(2018, 1, 2), date(2018, 1, 31))

    answer = run(scenario)
    [req] = gw.requests_named("reqHistoricalData")
    # no end date; 2018-01-02 .. "now" (2018-02-02) is 32 days
    assert (req[1].secType, req[1].symbol, req[2], req[3]) == ("CONTFUT", "ES", "", "32 D")
    assert [b.session for b in answer.bars] == CAL.sessions(date(2018, 1, 2), date(2018, 1, 31))  # cut at end
    assert answer.bars[0].close == float(spx.iloc[0]) + 1.0

"""The daily risk pack (analytics/risk_pack.py), the report stylesheet and ``portfolio report``.

Oracle: a hand-built two-session book whose numbers are worked out here by hand (the day's
loss against the prior session's VaR, limits as fractions of NLV times NLV).  The VaR flag is
read from the ``var_exceedances`` rows the var_backtest asset stores (stored here with the
asset's own row function, or by materializing the asset), never recomputed by the pack.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner

from portfolio_pipeline.analytics.report import render_report
from portfolio_pipeline.analytics.risk_pack import (
    index_rows,
    limit_rows,
    load_pack,
    pack_name,
    var_breaches,
    write_packs,
)
from portfolio_pipeline.analytics.var_backtest import exceedance_rows
from portfolio_pipeline.definitions import build_definitions
from portfolio_pipeline.defs.backtest.assets import make_backtest_assets
from portfolio_pipeline.defs.backtest.checks import VAR_BACKTEST
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.reporting.pack import PACK, make_pack_asset
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.storage import Database, replace_partition
from portfolio_pipeline.storage.tables import (
    limit_checks,
    margin_history,
    monte_carlo_distribution,
    monte_carlo_var,
    portfolio_returns,
    risk_metrics,
    stress_shock_grid,
    var_exceedances,
)
from portfolio_pipeline_tests.stubs import ephemeral_instance

D1, D2 = date(2018, 2, 2), date(2018, 2, 5)
NLV1, NLV2 = 601_617.0, 573_876.0
PNL2 = -28_551.0  # the spike day's loss
VAR99_D1, VAR95_D1 = 10_800.0, 30_000.0  # prior-session VaR: 99% exceeded, 95% (made up, large) not
MC95_D1, MC99_D1 = 20_000.0, 30_000.0  # prior-session Monte Carlo 1-day VaR: 95% exceeded, 99% not


def _returns(day: date, nlv: float, pnl: float) -> dict[str, object]:
    return {"session_date": day, "broker": "*", "account_id": "*", "nlv": nlv, "prev_nlv": nlv - pnl,
            "external_flow": 0.0, "income": 0.0, "pnl": pnl, "twr": pnl / (nlv - pnl), "growth_index": 1.0,
            "high_water_mark": NLV1, "drawdown": min(0.0, nlv / NLV1 - 1), "broker_daily_pnl": None}


def _risk(day: date, metric: str, usd: float, nlv: float) -> dict[str, object]:
    return {"session_date": day, "broker": "*", "account_id": "*", "window": "full", "metric": metric,
            "value": usd / nlv, "value_usd": usd, "observations": 200}


def _limit(day: date, metric: str, value: float, limit: float) -> dict[str, object]:
    return {"session_date": day, "broker": "*", "account_id": "*", "metric": metric, "value": value,
            "limit_value": limit, "utilisation": abs(value) / abs(limit), "breached": abs(value) > abs(limit),
            "regime": "crisis", "vix": 37.32, "vix3m": 30.0}


def _margin(day: date, nlv: float, breaches: str) -> dict[str, object]:
    return {"session_date": day, "broker": "*", "account_id": "*", "nlv": nlv, "maint_margin": 0.13 * nlv,
            "init_margin": 0.15 * nlv, "excess_liquidity": 0.8 * nlv, "margin_utilisation": 0.13,
            "regime": "crisis" if breaches else "normal", "vix": 37.32 if breaches else 17.31, "vix3m": 30.0,
            "term_ratio": 1.2, "backwardation": bool(breaches), "breaches": len(breaches.split(",")) if breaches else 0,
            "breached_metrics": breaches}


def _mc(day: date, var95: float, var99: float) -> dict[str, object]:
    return {"session_date": day, "horizon_days": 1, "broker": "*", "account_id": "*", "group_key": "*",
            "strategy_id": None, "var_95": var95, "cvar_95": 12_000.0, "var_99": var99, "cvar_99": 17_500.0,
            "contribution_95": 0.0, "contribution_99": 0.0, "mean_pnl": 100.0, "std_pnl": 5_000.0,
            "n_scenarios": 100, "seed": 1, "regime": "crisis", "vol_multiplier": 1.5}


def _seed(db: Database, *, exceedances: bool = True) -> None:
    """The two sessions; with ``exceedances`` also the var_exceedances rows of D2, built by the
    var_backtest asset's row function from the rows seeded here (as the asset would store them)."""
    returns = [_returns(D1, NLV1, 1_488.0), _returns(D2, NLV2, PNL2)]
    risk = [_risk(D1, "var_99_historical", VAR99_D1, NLV1), _risk(D1, "var_95_historical", VAR95_D1, NLV1),
            _risk(D2, "var_99_historical", 17_000.0, NLV2)]
    mc = [_mc(D1, MC95_D1, MC99_D1), _mc(D2, 9_000.0, 14_000.0)]
    with db.begin() as conn:
        conn.execute(portfolio_returns.insert(), returns)
        conn.execute(risk_metrics.insert(), risk)
        conn.execute(monte_carlo_var.insert(), mc)
        if exceedances:
            frame = pd.DataFrame
            rows = exceedance_rows(D2, D1, frame([r for r in risk if r["session_date"] == D1]),
                                   frame([r for r in mc if r["session_date"] == D1]), frame(returns[1:]))
            replace_partition(conn, var_exceedances, {"session_date": D2}, rows)
        conn.execute(margin_history.insert(), [_margin(D1, NLV1, ""), _margin(D2, NLV2, "beta_weighted_delta")])
        conn.execute(limit_checks.insert(), [
            _limit(D2, "beta_weighted_delta", 0.2870, 0.075), _limit(D2, "vega", -0.0004, 0.001)])
        conn.execute(monte_carlo_distribution.insert(), [
            {"session_date": D2, "horizon_days": 1, "bin": i, "pnl_from": -20_000.0 + 10_000 * i,
             "pnl_to": -10_000.0 + 10_000 * i, "scenarios": n} for i, n in enumerate((5, 45, 50))])
        conn.execute(stress_shock_grid.insert(), [
            {"session_date": D2, "broker": "*", "account_id": "*", "group_key": "*", "spot_shock": s,
             "vol_scenario": v, "horizon_days": 0, "strategy_id": None, "pnl": p, "pnl_greeks": p}
            for s, v, p in ((-0.1, "+0pt", -40_000.0), (0.0, "+0pt", 0.0), (-0.1, "+10pt", -55_000.0),
                            (0.0, "+10pt", -9_000.0))])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_pack_flags_var_breach_and_limits_in_dollars(db: Database, tmp_path: Path) -> None:
    _seed(db)
    with db.connect() as conn:
        pack = load_pack(conn, D2)
        written = write_packs(conn, [D1, D2], tmp_path)
        rows = index_rows(conn)
    # VaR breach: the day's loss (-28,551) against the PRIOR session's VaR, by hand:
    # historical 28,551 > 10,800 (99%) but < 30,000 (95%); Monte Carlo 28,551 > 20,000 (95%), < 30,000 (99%)
    flags = {(v.model, v.level): (v.breached, v.day_pnl, v.prior_var, v.var_session) for v in var_breaches(pack)}
    assert flags == {("historical_full", 0.95): (False, PNL2, VAR95_D1, D1),
                     ("historical_full", 0.99): (True, PNL2, VAR99_D1, D1),
                     ("monte_carlo_1d", 0.95): (True, PNL2, MC95_D1, D1),
                     ("monte_carlo_1d", 0.99): (False, PNL2, MC99_D1, D1)}
    # limits: fractions of NLV times NLV (hand-computed: 0.2870 x 573,876 = 164,702.41)
    [delta, vega] = limit_rows(pack)
    assert (delta["metric"], delta["breached"]) == ("beta-weighted delta", True)
    assert delta["value_usd"] == pytest.approx(164_702.412) and delta["limit_usd"] == pytest.approx(43_040.7)
    assert vega["breached"] is False
    # the page: the breached limit highlighted, the flag, the heat map and the marked histogram
    page = (tmp_path / pack_name(D2)).read_text()
    assert [p.name for p, _ in written] == [pack_name(D1), pack_name(D2)]
    breach_row = re.search(r'<tr class="breach"><td class="l">book</td><td class="l">beta-weighted delta</td>', page)
    assert breach_row is not None
    assert "VaR BREACH 99%: day $-28,551 vs prior VaR $10,800" in page and "within VaR 95%: " in page
    assert "VaR BREACH 95% Monte Carlo 1-day: day $-28,551 vs prior VaR $20,000" in page
    assert "within VaR 99% Monte Carlo 1-day: day $-28,551 vs prior VaR $30,000" in page
    assert "background:rgba(214,39,40,0.88)" in page  # the worst grid cell (-55,000) darkest red
    assert "VaR 99% 14,000" in page and "CVaR 99% 17,500" in page  # marks on the MC histogram
    assert "}}" not in page
    assert f'href="{pack_name(D1)}"' in page  # navigation to the previous session
    # the index: every session, newest first, the VaR 99% breach of the stored exceedance rows
    index = (tmp_path / "index.html").read_text()
    assert index.index(str(D2)) < index.index(str(D1))
    assert [(r["session_date"], r["var_breach"], r["prior_var"]) for r in rows] == [
        (D1, None, None), (D2, True, VAR99_D1)]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_pack_reads_the_stored_exceedances_and_does_not_recompute(db: Database, tmp_path: Path) -> None:
    """Without var_exceedances rows (var_backtest not run) there is no flag, although the
    prior VaR and the day's P&L are stored; a stored row is shown as stored."""
    _seed(db, exceedances=False)
    with db.connect() as conn:
        assert var_breaches(load_pack(conn, D2)) == []
        assert [r["var_breach"] for r in index_rows(conn)] == [None, None]
    with db.begin() as conn:  # the backtest's verdict is the one shown (here: made up, not exceeded)
        conn.execute(var_exceedances.insert(), [{
            "session_date": D2, "model": "historical_full", "level": 0.99, "var_session_date": D1,
            "var_usd": 40_000.0, "pnl_usd": PNL2, "exceeded": False}])
    with db.connect() as conn:
        [vb] = var_breaches(load_pack(conn, D2))
        assert (vb.label, vb.breached, vb.prior_var) == ("99%", False, 40_000.0)
        assert [r["var_breach"] for r in index_rows(conn)] == [None, False]


def test_risk_pack_runs_after_var_backtest_in_the_eod_job() -> None:
    defs = build_definitions()
    assert VAR_BACKTEST in defs.resolve_asset_graph().get(PACK).parent_keys
    eod = defs.resolve_job_def("eod_job")
    graph = eod.asset_layer.asset_graph
    assert {PACK, VAR_BACKTEST} <= {k for k in graph.get_all_asset_keys() if graph.get(k).is_executable}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_materialized_var_backtest_flags_the_pack(db: Database, db_url: str, portfolio_env: Path) -> None:
    """var_backtest and risk_pack in one run: the pack shows what the backtest stored."""
    _seed(db, exceedances=False)
    parts = session_partitions(ExchangeCalendar())
    assets = [*make_backtest_assets(parts), make_pack_asset(parts)]
    with ephemeral_instance() as instance:
        res = dg.materialize(assets, partition_key=D2.isoformat(), instance=instance, resources={
            "db": DatabaseResource(url=db_url), "platform": PlatformResource(demo_only=True)})
    assert res.success
    order = [e.asset_key for e in res.get_asset_materialization_events()]
    assert order.index(VAR_BACKTEST) < order.index(PACK)
    [pack_meta] = [e.materialization.metadata for e in res.get_asset_materialization_events()
                   if e.asset_key == PACK]
    assert pack_meta["VaR 99% breach"].value is True
    page = (portfolio_env / "reports" / pack_name(D2)).read_text()
    assert "VaR BREACH 99%: day $-28,551 vs prior VaR $10,800" in page
    assert "VaR BREACH 95% Monte Carlo 1-day: day $-28,551 vs prior VaR $20,000" in page
    with db.connect() as conn:
        assert {(r["session_date"], r["var_breach"]) for r in index_rows(conn)} == {(D1, None), (D2, True)}


def test_daily_report_stylesheet_keeps_the_table_rule() -> None:
    """Regression: ``margin:auto}}`` ended the body rule twice, so browsers dropped the table rule."""
    empty = pd.DataFrame(columns=["session_date", "nlv", "pnl", "twr", "drawdown", "window", "metric", "value_usd"])
    page = render_report(D2, returns=empty, greeks=pd.DataFrame(), attribution=empty, risk=empty,
                         margin=pd.DataFrame(), limits=pd.DataFrame())
    style = page[page.index("<style>") + 7: page.index("</style>")]
    assert "}}" not in style and style.count("{") == style.count("}")
    assert "margin:auto} table{border-collapse:collapse}" in style


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_report_command_writes_and_serves_on_loopback(db_url: str, portfolio_env: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server

    from portfolio_pipeline.cli import main

    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    db = Database(db_url)
    try:
        _seed(db)
    finally:
        db.dispose()
    runner = CliRunner()
    bad = runner.invoke(main, ["report", "--date", "2019-01-02"])
    assert bad.exit_code == 2 and "error: --date 2019-01-02: no session stored there" in bad.output
    served: list[tuple[str, int]] = []

    class Once(http.server.ThreadingHTTPServer):
        def serve_forever(self, poll_interval: float = 0.5) -> None:
            served.append(self.server_address[:2])  # type: ignore[arg-type]
            thread = threading.Thread(target=self.handle_request)
            thread.start()
            host, port = self.server_address[:2]
            with urllib.request.urlopen(f"http://{host}:{port}/{pack_name(D2)}", timeout=10) as response:
                served.append(("body", len(response.read())))
            thread.join(10)

    monkeypatch.setattr(http.server, "ThreadingHTTPServer", Once)
    result = runner.invoke(main, ["report", "--serve", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert f"risk pack {D2}:" in result.output  # the latest stored session by default
    assert (portfolio_env / "reports" / pack_name(D2)).is_file()
    assert served[0][0] == "127.0.0.1" and served[1][1] > 1000

"""Pre-trade what-if on the seeded stress book: a trade and its exact opposite change
nothing; a trade's Greeks and grid P&L by hand; the CLI prints it and names a bad leg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import Boolean, Date, Integer, String, Table

from portfolio_pipeline.cli import main
from portfolio_pipeline.config import load_platform_config
from portfolio_pipeline.defs.stress.whatif import what_if
from portfolio_pipeline.domain.trade_legs import parse_legs
from portfolio_pipeline.domain.whatif import RiskChange
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import margin_history, portfolio_greeks, portfolio_returns
from portfolio_pipeline_tests.defs.stress.test_stress import DAY, _seed
from portfolio_pipeline_tests.quant._reference import reference_greeks
from portfolio_pipeline_tests.stubs import CONFIG_DIR

NLV = 600_000.0
SPX = 2762.13


def _row(table: Table, **values: Any) -> dict[str, Any]:
    """A row with every column filled (0, '*', False, the session) and ``values`` on top."""
    out: dict[str, Any] = {}
    for c in table.columns:
        if isinstance(c.type, Date):
            out[c.name] = DAY
        elif isinstance(c.type, Boolean):
            out[c.name] = False
        elif isinstance(c.type, String):
            out[c.name] = "*"
        elif isinstance(c.type, Integer):
            out[c.name] = 0
        else:
            out[c.name] = 0.0
    return {**out, **values}


def _seed_book(db_url: str) -> None:
    _seed(db_url)
    db = Database(db_url)
    try:
        with db.begin() as conn:
            conn.execute(
                portfolio_greeks.insert(),
                [
                    _row(
                        portfolio_greeks,
                        beta_weighted_dollar_delta=50_000.0,
                        dollar_gamma_1pct=-20_000.0,
                        vega_per_point=-3_000.0,
                        theta_per_day=400.0,
                    )
                ],
            )
            conn.execute(
                margin_history.insert(),
                [_row(margin_history, nlv=NLV, maint_margin=60_000.0, regime="normal", vix=17.31)],
            )
            conn.execute(
                portfolio_returns.insert(), [_row(portfolio_returns, nlv=NLV, prev_nlv=None)]
            )
    finally:
        db.dispose()


def _what_if(db_url: str, legs: list[str]) -> Any:
    config = load_platform_config(CONFIG_DIR)
    db = Database(db_url)
    try:
        with db.connect() as conn:
            return what_if(
                conn,
                DAY,
                parse_legs(legs, config.instruments),
                config,
                ExchangeCalendar(),
                MarketHistory(),
                var_days=250,
            )
    finally:
        db.dispose()


def test_a_trade_and_its_exact_opposite_cancel(db_url: str) -> None:
    _seed_book(db_url)
    r = _what_if(
        db_url,
        ["sell 2 SPX 2018-03-16 2650P", "buy 3 SPY", "buy 2 SPX 2018-03-16 2650P", "sell 3 SPY"],
    )
    assert r.change == RiskChange()
    assert r.margin_after == r.margin_before
    assert r.var_after == r.var_before
    assert all(b == a for _, _, b, a in r.grid)
    assert all(
        lc.before == lc.after and lc.effect in ("within", "still breached") for lc in r.limits
    )
    np.testing.assert_array_equal(r.profile_after.curves.pnl, r.profile_before.curves.pnl)


def test_a_short_put_by_hand(db_url: str) -> None:
    _seed_book(db_url)
    r = _what_if(db_url, ["sell 2 SPX 2018-03-16 2650P @ 25.40"])
    [p] = r.legs
    c = p.leg.contract
    assert p.vol_source == "implied from @ price 25.4"
    cfg = load_platform_config(CONFIG_DIR).stress_scenarios
    q = cfg.underlying("SPX").dividend_yield
    T = _years(DAY, c)
    ref = reference_greeks(False, SPX, 2650.0, T, cfg.rate, q, p.vol)
    assert float(ref["price"]) == pytest.approx(25.40, abs=1e-6)  # the vol reprices the given price
    # dollar Greeks of -2 x 100 puts (beta 1, no position_greeks row stored; the reference
    # twin is in project units: vega per vol point, theta per calendar day)
    assert r.change.beta_weighted_dollar_delta == pytest.approx(
        float(ref["delta"]) * -200 * SPX, rel=1e-9
    )
    assert r.change.vega_per_point == pytest.approx(float(ref["vega"]) * -200, rel=1e-9)
    assert r.change.theta_per_day == pytest.approx(float(ref["theta"]) * -200, rel=1e-9)
    assert r.trade_value == pytest.approx(-200 * 25.40, abs=1e-4)
    # the grid's -10% cell at 0 days, vol held (sticky strike): the put revalued by hand
    b, a = next((b, a) for s, v, b, a in r.grid if s == -0.1 and v == "+0pt")
    hand = -200 * (
        float(reference_greeks(False, SPX * 0.9, 2650.0, T, cfg.rate, q, p.vol)["price"]) - 25.40
    )
    assert a - b == pytest.approx(hand, rel=1e-9)
    # selling puts adds delta: the limits see the stored Greeks plus the trade's
    bwd = next(lc for lc in r.limits if lc.after.metric == "beta_weighted_delta")
    assert bwd.after.value == pytest.approx((50_000.0 + r.change.beta_weighted_dollar_delta) / NLV)
    assert r.var_after["var_99"] > r.var_before["var_99"]


def _years(day: Any, contract: Any) -> float:
    from portfolio_pipeline.domain.settlement import years_to_settlement

    cal = ExchangeCalendar()
    tc = load_platform_config(CONFIG_DIR).instruments.trading_class("SPX", contract.trading_class)
    return years_to_settlement(cal.session_close(day), contract.expiry, tc.settlement_time, cal)


def test_whatif_command(db_url: str, portfolio_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed_book(db_url)
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(CONFIG_DIR))
    runner = CliRunner()
    ok = runner.invoke(
        main, ["whatif", "sell 1 SPX 2018-03-16 2650P", "buy 1 SPX 2018-03-16 2600P"]
    )
    assert ok.exit_code == 0, ok.output
    for text in (
        "what-if on session 2018-02-02",
        "beta-weighted delta",
        "margin (demo model",
        "VAR 99",
        "stress grid, 0 days",
        "risk profile, book beta-weighted to SPX",
        "the book's own contract",
        "the book's SPX smile",
    ):
        assert text in ok.output
    bad = runner.invoke(
        main, ["whatif", "sell 1 SPX 2018-03-16 2650P", "sell 1 SPX 2018-03-16 2600"]
    )
    assert bad.exit_code == 2
    assert "leg 2 'sell 1 SPX 2018-03-16 2600': the strike must end in C or P" in bad.output


def test_whatif_asks_the_demo_broker_as_of_the_session(
    db_url: str, portfolio_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo broker lives in replayed time: its WhatIf is asked at the session's close
    (asked "now" it refused: outside the demo history)."""
    _seed_book(db_url)
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(CONFIG_DIR))
    out = CliRunner().invoke(
        main,
        ["whatif", "sell 1 SPX 2018-03-16 2650P", "buy 1 SPX 2018-03-16 2600P",
         "--broker-whatif", "demo:DEMO-001"],
    )
    assert out.exit_code == 0, out.output
    assert "demo:DEMO-001 WhatIf: initial margin" in out.output

"""The trading day at the command line: status, strategies list, alerts test, one error style."""

from __future__ import annotations

from datetime import date

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import position_lifecycle, strategy_performance
from portfolio_pipeline_tests.defs.reporting.test_risk_pack import D2, _seed


def _strategy(day: date, sid: str, status: str) -> dict[str, object]:
    return {"session_date": day, "broker": "demo", "account_id": "DEMO-001", "strategy_id": sid,
            "underlying": "SPX", "strategy_type": "iron_condor", "status": status, "opened_on": date(2018, 1, 17),
            "daily_pnl": -27_084.2, "cumulative_pnl": -24_276.4, "realized_pnl": 0.0, "unrealized_pnl": -24_276.5,
            "commissions": 0.0, "max_adverse_excursion": -24_276.5, "market_value": -30_000.0,
            "share_delta": 30.0, "dollar_delta": 80_630.4, "dollar_gamma_1pct": -59_607.0, "theta_per_day": 454.0,
            "vega_per_point": -1_570.0, "greeks_source": "model", "delta_pnl": 0.0, "gamma_pnl": 0.0,
            "theta_pnl": 0.0, "vega_pnl": 0.0, "other_pnl": 0.0, "unexplained_pnl": 0.0, "entry_prices": {}}


def _lifecycle(day: date, sid: str) -> dict[str, object]:
    return {"session_date": day, "broker": "demo", "account_id": "DEMO-001", "strategy_id": sid,
            "strategy_type": "iron_condor", "underlying": "SPX", "days_in_trade": 19, "dte": 39, "credit": 5_000.0,
            "max_profit": 5_000.0, "max_loss": 35_000.0, "defined_risk": True, "pct_max_profit": -4.9,
            "pct_max_loss": 0.69, "loss_credit_multiple": 4.9, "pnl": -24_276.5, "pnl_per_day": -1_277.7,
            "delta_per_lot": 0.3, "status": "red", "rule": "stop_loss", "red_rules": "stop_loss",
            "message": "loss 4.86 x credit >= 2"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_status_and_strategies_list(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    runner = CliRunner()
    empty = runner.invoke(main, ["status"])
    assert empty.exit_code == 2 and empty.output.startswith("error: no session stored yet")
    _seed(db)
    with db.begin() as conn:
        conn.execute(strategy_performance.insert(), [_strategy(D2, "SPX-IC-1", "open"),
                                                     _strategy(D2, "SPX-IC-0", "closed")])
        conn.execute(position_lifecycle.insert(), [_lifecycle(D2, "SPX-IC-1")])
    out = runner.invoke(main, ["status"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "session 2018-02-05 (latest stored)" in text
    assert "NLV $573,876   day P&L $-28,551 (-4.74%)" in text  # -28,551 / 602,427
    assert "VaR 99%: BREACH (day $-28,551 vs prior VaR $10,800)" in text
    assert "VaR 95%: within (day $-28,551 vs prior VaR $30,000)" in text  # the stored var_exceedances rows
    assert "VaR 95% Monte Carlo 1-day: BREACH (day $-28,551 vs prior VaR $20,000)" in text
    assert "beta-weighted delta      $   164,702 of $    43,041 ( 383% used)  BREACH" in text  # 0.287/0.075
    assert "red    SPX-IC-1  loss 4.86 x credit >= 2" in text
    assert "Orders waiting for a person: none" in text

    listed = runner.invoke(main, ["strategies", "list"])
    assert listed.exit_code == 0, listed.output
    assert "open strategies 2018-02-05: 1" in listed.output  # the closed one is not listed
    [line] = [ln for ln in listed.output.splitlines() if "SPX-IC-1" in ln]
    assert line.split()[:5] == ["red", "SPX-IC-1", "iron_condor", "19", "39"]
    assert "-27,084" in line and "-24,276" in line and "80,630" in line and "loss 4.86 x credit" in line
    assert "no manual overrides" in listed.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_one_error_style(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    runner = CliRunner()
    audit = runner.invoke(main, ["orders", "audit", "999"])  # printed nothing and exited 0 before
    assert (audit.exit_code, audit.output) == (2, "error: no order with id '999' (see `portfolio orders list`)\n")
    ack = runner.invoke(main, ["alerts", "ack", "nope"])
    assert (ack.exit_code, ack.output) == (2, "error: no alert with id 'nope'\n")
    tag = runner.invoke(main, ["strategies", "tag", "SPX-IC-1", "--account", "DEMO-01", "--name", "x"])
    assert tag.exit_code == 2
    assert tag.output.startswith("error: --account 'DEMO-01': no such account in ") and "DEMO-001" in tag.output
    good = runner.invoke(main, ["strategies", "tag", "SPX-IC-1", "--account", "DEMO-001", "--name", "x"])
    assert good.exit_code == 0, good.output


def test_run_refuses_a_session_past_the_demo_history_in_one_line(portfolio_env: object) -> None:
    """Regression: `portfolio run` on the demo-only default failed with ~125 lines of traceback."""
    result = CliRunner().invoke(main, ["run", "--date", "2025-07-03"])
    assert result.exit_code == 2
    assert result.output.startswith("error: session 2025-07-03: only the demo broker is configured")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output

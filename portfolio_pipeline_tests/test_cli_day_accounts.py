"""Per-account views: `portfolio status --account NAME|all` and the risk pack's account pages."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.analytics.risk_pack import (
    BOOK,
    PackHistory,
    load_pack,
    pack_name,
    render_pack,
    write_packs,
)
from portfolio_pipeline.cli import main
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import (
    limit_checks,
    margin_history,
    portfolio_greeks,
    portfolio_returns,
)
from portfolio_pipeline_tests.defs.reporting.test_risk_pack import D1, D2, _seed

# The consolidated rows of _seed (NLV 573,876 on D2) split over two accounts (accounts.yaml:
# DEMO-001 "IBKR margin (demo)", DEMO-IRA "IBKR IRA (demo)", an IRA holding a naked short put).
ACCOUNTS = {"DEMO-001": 473_876.0, "DEMO-IRA": 100_000.0}


def _returns(day: date, account: str, nlv: float) -> dict[str, object]:
    return {
        "session_date": day,
        "broker": "demo",
        "account_id": account,
        "nlv": nlv,
        "prev_nlv": nlv,
        "external_flow": 0.0,
        "income": 0.0,
        "pnl": 0.0,
        "twr": 0.0,
        "growth_index": 1.0,
        "high_water_mark": 1.0,
        "drawdown": 0.0,
        "broker_daily_pnl": None,
    }


def _margin(day: date, account: str, nlv: float, breached: str) -> dict[str, object]:
    return {
        "session_date": day,
        "broker": "demo",
        "account_id": account,
        "nlv": nlv,
        "maint_margin": 0.1 * nlv,
        "init_margin": 0.12 * nlv,
        "excess_liquidity": 0.9 * nlv,
        "margin_utilisation": 0.1,
        "regime": "crisis",
        "vix": 37.32,
        "vix3m": 30.0,
        "term_ratio": 1.2,
        "backwardation": True,
        "breaches": len(breached.split(",")) if breached else 0,
        "breached_metrics": breached,
    }


def _check(account: str, metric: str, value: float, limit: float, util: float) -> dict[str, object]:
    return {
        "session_date": D2,
        "broker": "demo",
        "account_id": account,
        "metric": metric,
        "value": value,
        "limit_value": limit,
        "utilisation": util,
        "breached": util > 1,
        "regime": "crisis",
        "vix": 37.32,
        "vix3m": 30.0,
    }


def _greeks(account: str, underlying: str, bwd: float) -> dict[str, object]:
    zero = dict.fromkeys(
        (
            "market_value",
            "share_delta",
            "dollar_delta",
            "gamma_shares",
            "vanna_per_point",
            "volga_per_point",
            "rho_per_pct",
            "beta_weighted_delta",
            "dollar_gamma_1pct",
            "vega_per_point",
            "theta_per_day",
        ),
        0.0,
    )
    return {
        "session_date": D2,
        "broker": "demo",
        "account_id": account,
        "underlying": underlying,
        "positions": 1,
        **zero,
        "beta_weighted_dollar_delta": bwd,
    }


def _seed_accounts(db: Database) -> None:
    _seed(db)
    with db.begin() as conn:
        conn.execute(
            portfolio_returns.insert(),
            [_returns(d, a, n) for d in (D1, D2) for a, n in ACCOUNTS.items()],
        )
        conn.execute(
            margin_history.insert(),
            [
                _margin(D2, "DEMO-001", ACCOUNTS["DEMO-001"], ""),
                _margin(D2, "DEMO-IRA", ACCOUNTS["DEMO-IRA"], "vega,naked_short_put"),
            ],
        )
        conn.execute(
            limit_checks.insert(),
            [
                _check("DEMO-001", "vega", -0.0004, 0.001, 0.4),
                _check("DEMO-IRA", "vega", -0.0030, 0.001, 3.0),
                _check("DEMO-IRA", "naked_short_put", 3.0, 0.0, 1e9),
                _check("DEMO-IRA", "naked_short_call", 0.0, 0.0, 0.0),
            ],
        )
        conn.execute(
            portfolio_greeks.insert(),
            [
                _greeks("DEMO-IRA", "*", 12_345.0),
                _greeks("DEMO-IRA", "SPY", 12_345.0),
                _greeks("DEMO-001", "*", 54_321.0),
            ],
        )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_status_per_account(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    _seed_accounts(db)
    runner = CliRunner()

    ira = runner.invoke(main, ["status", "--account", "demo-ira"])
    assert ira.exit_code == 0, ira.output
    text = ira.output
    assert "== account IBKR IRA (demo) (demo:DEMO-IRA)" in text
    assert "NLV $100,000" in text
    assert (
        "vega                     $      -300 of $       100 ( 300% used)  BREACH" in text
    )  # -0.003 x 100k
    assert "naked short puts (banned)          3 held, 0 allowed  BREACH" in text
    assert "naked short calls (banned)          0 held, 0 allowed  ok" in text
    assert "beta-weighted delta" not in text  # only the IRA's own rows
    assert "12,345" in text and "54,321" not in text

    by_id = runner.invoke(main, ["status", "--account", "DEMO-IRA"])
    assert by_id.exit_code == 0 and by_id.output == ira.output

    both = runner.invoke(main, ["status", "--account", "all"])
    assert both.exit_code == 0, both.output
    blocks = both.output.split("== ")
    assert [b.splitlines()[0] for b in blocks[1:]] == [
        "consolidated book",
        "account IBKR margin (demo) (demo:DEMO-001)",
        "account IBKR IRA (demo) (demo:DEMO-IRA)",
    ]
    assert (
        "IBKR IRA (demo)          demo:DEMO-IRA     NLV $     100,000   2 limit(s) breached: vega,naked_short_put"
        in both.output
    )
    assert (
        "beta-weighted delta      $   164,702 of $    43,041 ( 383% used)  BREACH" in blocks[1]
    )  # the book's

    bad = runner.invoke(main, ["status", "--account", "nope"])
    assert bad.exit_code == 2
    assert bad.output.startswith("error: --account nope: no such account in the stored session")
    assert "IBKR IRA (demo) (DEMO-IRA)" in bad.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_risk_pack_has_a_page_per_account_and_a_selector(db: Database, tmp_path: Path) -> None:
    _seed_accounts(db)
    labels = {"DEMO-001": "IBKR margin (demo)", "DEMO-IRA": "IBKR IRA (demo)"}
    with db.connect() as conn:
        written = write_packs(conn, [D1, D2], tmp_path, labels)
        ira = load_pack(conn, D2, ("demo", "DEMO-IRA"), "IBKR IRA (demo)")
    assert [p.name for p, _ in written] == [
        pack_name(D1),
        pack_name(D2),
    ]  # one consolidated per session
    assert pack_name(D2, "DEMO-IRA") == "risk_pack_2018-02-05__DEMO-IRA.html"
    page = (tmp_path / pack_name(D2, "DEMO-IRA")).read_text()
    assert "<h1>Risk pack 2018-02-05 — IBKR IRA (demo)</h1>" in page
    assert (
        f'<a href="{pack_name(D2)}">consolidated</a>' in page and "<b>IBKR IRA (demo)</b>" in page
    )
    assert (
        f'<a href="{pack_name(D1, "DEMO-IRA")}">&larr; {D1}</a>' in page
    )  # navigation stays in the account
    assert "naked short puts (banned)" in page and "BANNED" in page
    assert "demo:DEMO-001" not in page  # the other account's limits are not on this page
    assert {r["account_id"] for r in ira.limits} == {"DEMO-IRA"} and ira.today is not None
    book_page = (tmp_path / pack_name(D2)).read_text()
    assert f'<a href="{pack_name(D2, "DEMO-IRA")}">IBKR IRA (demo)</a>' in book_page
    assert "demo:DEMO-IRA" in book_page  # the consolidated page lists every scope's limits
    index = (tmp_path / "index.html").read_text()
    assert (
        "<h2>Accounts</h2>" in index
        and f'<a href="{pack_name(D2, "DEMO-001")}">IBKR margin (demo)</a>' in index
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_packs_from_the_run_history_equal_packs_read_one_by_one(db: Database) -> None:
    """write_packs reads the returns and margin history once (PackHistory) for every page of
    the run; each pack must equal the one load_pack reads with its own queries, for the book
    and every account, on every session (also one before the history's last session)."""
    _seed_accounts(db)
    with db.connect() as conn:
        history = PackHistory.load(conn, D2)
        for day in (D1, D2):
            for scope in (BOOK, ("demo", "DEMO-001"), ("demo", "DEMO-IRA")):
                alone = load_pack(conn, day, scope)
                shared = load_pack(conn, day, scope, history=history)
                assert shared == alone
                assert render_pack(shared) == render_pack(alone)
                assert [r["session_date"] for r in shared.returns][-1] == day
        with pytest.raises(ValueError, match="read up to 2018-02-02"):
            load_pack(conn, D2, history=PackHistory.load(conn, D1))

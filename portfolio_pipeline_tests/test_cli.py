"""The `portfolio` command as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline_tests.stubs import REPO_ROOT

FIXTURES = REPO_ROOT / "portfolio_pipeline_tests" / "brokers" / "history" / "fixtures"


def test_help_lists_subcommands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "run", "config", "db", "import", "ui"):
        assert command in result.output


def test_import_is_idempotent_and_relocatable(portfolio_env: Path) -> None:
    flex = next(FIXTURES.glob("ibkr_flex_*.xml"))
    runner = CliRunner()
    first = runner.invoke(main, ["import", "ibkr-flex", str(flex)])
    assert first.exit_code == 0, first.output
    assert "imported: executions 9/9 new, cash flows 4/4 new" in first.output
    second = runner.invoke(main, ["import", "ibkr-flex", str(flex)])
    assert "already imported, nothing changed" in second.output
    assert (portfolio_env / "portfolio.db").is_file()  # state lives under PORTFOLIO_HOME


def test_import_rejects_a_bad_file_without_storing(portfolio_env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "tastytrade_transactions_history_5WX1_180201_to_180228.csv"
    bad.write_text("Date,Kind,Value\n2018-02-01,Deposit,100\n")
    result = CliRunner().invoke(main, ["import", "tastytrade-csv", str(bad)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "column" in result.output
    assert "Traceback" not in result.output
    migrate = CliRunner().invoke(main, ["db", "migrate"])
    assert migrate.exit_code == 0 and "sqlite" in migrate.output


@pytest.mark.slow
def test_demo_command_end_to_end(portfolio_env: Path) -> None:
    """The README's main job on a short window: every daily asset, a summary, the UI hint."""
    result = CliRunner().invoke(main, ["demo", "--start", "2018-02-01", "--end", "2018-02-06"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "sessions stored : 4 (2018-02-01 .. 2018-02-06)" in out
    assert "worst session   : 2018-02-05" in out  # the volatility spike
    assert "crisis regime   : 2018-02-05 VIX 37.32" in out
    assert "Monte Carlo VaR : 1d 99%" in out  # (historical VaR needs a longer history)
    assert "(success)" in out and "portfolio ui" in out
    assert (portfolio_env / "reports" / "daily_2018-02-06.html").is_file()
    # per-session progress with an ETA on stderr (defs/progress.py), the risk pack named
    assert "  broker_snapshots: session 4/4 (2018-02-06)" in out and "ETA" in out
    assert "risk pack       : " in out and (portfolio_env / "reports" / "risk_pack_2018-02-06.html").is_file()
    assert (portfolio_env / "dagster" / "dagster.yaml").is_file()

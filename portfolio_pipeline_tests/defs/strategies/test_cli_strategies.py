"""`portfolio strategies tag/untag/list` write the override table the tagger reads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli_strategies import strategies
from portfolio_pipeline.defs.strategies.book import manual_overrides
from portfolio_pipeline.domain.strategies.settings import StrategiesFile
from portfolio_pipeline.storage import Database


def test_tag_list_untag(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    runner = CliRunner()
    out = runner.invoke(strategies, ["tag", "SPX-20180201-abc", "--account", "DEMO-001", "--name", "Feb IC",
                                     "--type", "iron_condor", "--leg", "SPX|OPT|SPX|2018-03-16|2500|P=2"])
    assert out.exit_code == 0, out.output
    assert "Feb IC" in runner.invoke(strategies, ["list"]).output
    bad = runner.invoke(strategies, ["tag", "x", "--account", "DEMO-001", "--leg", "nokey"])
    assert bad.exit_code != 0 and "POSITION_KEY=QUANTITY" in bad.output
    assert runner.invoke(strategies, ["tag", "x", "--account", "DEMO-001"]).exit_code != 0
    cfg = StrategiesFile.model_validate(
        {"overrides": [{"id": "SPX-20180201-abc", "account_id": "DEMO-001", "name": "from file"}]})
    database = Database(db_url)
    try:
        with database.connect() as conn:
            [from_db] = manual_overrides(conn, None)["DEMO-001"]
            [from_file] = manual_overrides(conn, cfg)["DEMO-001"]
    finally:
        database.dispose()
    assert (from_db.name, from_db.strategy_type, dict(from_db.legs or {})) == (
        "Feb IC", "iron_condor", {"SPX|OPT|SPX|2018-03-16|2500|P": 2.0})
    assert from_file.name == "from file"  # the config file wins
    assert "removed 1" in runner.invoke(strategies, ["untag", "SPX-20180201-abc", "--account", "DEMO-001"]).output
    assert "no manual overrides" in runner.invoke(strategies, ["list"]).output

"""`portfolio orders` end to end on the demo broker: the alert's command sequence works.

Issue 25.2: the alert says ``portfolio orders show ID, then confirm ID TOKEN``; ``show`` of
a PROPOSED order stages it first.  Issue 17.6: bidi controls are escaped in the output.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.cli_orders import safe_text
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.orders import OrderStore
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.orders.fakes import make_order


@pytest.fixture
def cli_env(db: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OrderStore:
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    monkeypatch.setenv("PORTFOLIO_HOME", str(tmp_path))
    return OrderStore(db)


def test_alert_sequence_show_then_confirm_works_on_a_proposed_order(cli_env: OrderStore) -> None:
    cli_env.insert(make_order("H-CLI"), actor="streaming:proposer")
    runner = CliRunner()
    shown = runner.invoke(main, ["orders", "show", "H-CLI"])
    assert shown.exit_code == 0, shown.output
    assert "[shown]" in shown.output
    match = re.search(r"portfolio orders confirm H-CLI ([0-9a-f]+)", shown.output)
    assert match is not None and len(match.group(1)) >= 16  # >= 64 bits
    done = runner.invoke(main, ["orders", "confirm", "H-CLI", match.group(1)])
    assert done.exit_code == 0, done.output
    order = cli_env.get("H-CLI")
    assert order.status in (OrderStatus.TRANSMITTED, OrderStatus.FILLED)
    assert [r["to_status"] for r in cli_env.audit_trail("H-CLI")][:4] == ["proposed", "staged", "shown", "confirmed"]


def test_demo_order_ids_differ_between_processes(cli_env: OrderStore) -> None:
    runner = CliRunner()
    ids = []
    for order_id in ("H-A", "H-B"):  # each CLI invocation builds a new demo broker, as a new process does
        cli_env.insert(make_order(order_id), actor="t")
        token = re.search(rf"confirm {order_id} (\S+)", runner.invoke(main, ["orders", "show", order_id]).output)
        assert token is not None
        assert runner.invoke(main, ["orders", "confirm", order_id, token.group(1)]).exit_code == 0
        ids.append(cli_env.get(order_id).broker_order_id)
    assert len(set(ids)) == 2 and all(ids)


def test_bidi_controls_are_escaped_in_cli_output(cli_env: OrderStore) -> None:
    cli_env.insert(replace(make_order("H-BIDI"), account_id="DEMO-001"), actor="t")
    evil = "ok\u202eevil\u2066x\u2069"
    assert safe_text(evil) == "ok\\u202eevil\\u2066x\\u2069"
    result = CliRunner().invoke(main, ["orders", "reject", "H-BIDI", "--reason", evil])
    assert result.exit_code == 0, result.output
    audit = CliRunner().invoke(main, ["orders", "audit", "H-BIDI"])
    assert "\u202e" not in audit.output and "\\u202e" in audit.output


def test_wrong_token_exits_non_zero_and_is_audited(cli_env: OrderStore) -> None:
    cli_env.insert(make_order("H-BAD"), actor="t")
    runner = CliRunner()
    assert runner.invoke(main, ["orders", "show", "H-BAD"]).exit_code == 0
    bad = runner.invoke(main, ["orders", "confirm", "H-BAD", "0" * 16])
    assert bad.exit_code != 0 and "does not match" in bad.output
    assert any((r["detail"] or {}).get("event") == "confirm_failed" for r in cli_env.audit_trail("H-BAD"))

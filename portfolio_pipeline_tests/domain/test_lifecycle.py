"""Lifecycle metrics (max profit/loss from strikes and credit) and exit rules."""

from __future__ import annotations

import math
from datetime import date

import pytest
import yaml

from portfolio_pipeline.domain.lifecycle import (
    ExitRulesFile,
    evaluate_exit_rules,
    lifecycle_metrics,
    max_profit_loss,
)
from portfolio_pipeline_tests.domain.test_strategies import CONDOR, opt, stock
from portfolio_pipeline_tests.stubs import CONFIG_DIR

OPEN = date(2018, 1, 29)
ENTRY = {CONDOR[0].position_key: 1.0, CONDOR[1].position_key: 3.0,
         CONDOR[2].position_key: 2.5, CONDOR[3].position_key: 0.5}  # credit 4.0/share


def rules() -> ExitRulesFile:
    return ExitRulesFile.model_validate(yaml.safe_load((CONFIG_DIR / "exit_rules.yaml").read_text()))


def test_condor_max_profit_and_loss_from_strikes_and_credit() -> None:
    credit, mp, ml = max_profit_loss(CONDOR, ENTRY)
    assert credit == pytest.approx(2 * 100 * 4.0)  # 800 received
    assert mp == pytest.approx(800.0)
    assert ml == pytest.approx(2 * 100 * 50.0 - 800.0)  # width x lots - credit


def test_undefined_risk_short_call_and_covered_call() -> None:
    call = [opt(2800, "C", -1)]
    credit, mp, ml = max_profit_loss(call, {call[0].position_key: 5.0})
    assert (credit, mp, math.isinf(ml)) == (500.0, 500.0, True)
    cc = [stock(100), opt(280, "C", -1, root="SPY")]
    credit, mp, ml = max_profit_loss(cc, {cc[0].position_key: 270.0, cc[1].position_key: 2.0})
    assert mp == pytest.approx(200.0 + 1000.0) and ml == pytest.approx(27000.0 - 200.0)


def test_calendar_max_loss_is_debit() -> None:
    cal = [opt(2700, "P", -1), opt(2700, "P", 1, date(2018, 4, 20))]
    credit, mp, ml = max_profit_loss(cal, {cal[0].position_key: 20.0, cal[1].position_key: 30.0})
    assert credit == -1000.0 and math.isnan(mp) and ml == 1000.0


@pytest.mark.parametrize(("pnl", "session", "delta", "status", "rule"), [
    (100.0, date(2018, 2, 5), 0.0, "green", None),
    (400.0, date(2018, 2, 5), 0.0, "red", "take_profit"),       # 50% of 800
    (340.0, date(2018, 2, 5), 0.0, "yellow", "take_profit"),    # 42.5% >= 40%
    (0.0, date(2018, 2, 23), 0.0, "red", "dte"),                # 21 DTE
    (-1600.0, date(2018, 2, 5), 0.0, "red", "stop_loss"),       # 2x credit
    (0.0, date(2018, 2, 5), -80.0, "red", "delta"),             # -80/(2x100) = 0.40 per lot
])
def test_exit_rules_fire(pnl: float, session: date, delta: float, status: str, rule: str | None) -> None:
    m = lifecycle_metrics(session, OPEN, CONDOR, ENTRY, pnl, delta)
    verdict = evaluate_exit_rules(m, rules().rules_for("iron_condor"))
    assert (verdict.status, verdict.rule) == (status, rule)


def test_metrics_aging() -> None:
    m = lifecycle_metrics(date(2018, 2, 8), OPEN, CONDOR, ENTRY, 200.0, None)
    assert (m.days_in_trade, m.dte, m.pnl_per_day) == (10, 36, 20.0)
    assert m.pct_max_profit == pytest.approx(0.25) and m.pct_max_loss == pytest.approx(-200 / 9200)


def test_type_override_and_strict_schema() -> None:
    cfg = rules()
    assert cfg.rules_for("calendar").take_profit_pct == 0.25
    assert cfg.rules_for("long_put").close_dte is None
    assert cfg.rules_for("vertical") == cfg.defaults
    with pytest.raises(ValueError, match="extra"):
        ExitRulesFile.model_validate({"defaults": {**cfg.defaults.model_dump(), "bogus": 1}})
    with pytest.raises(ValueError, match="must come before"):
        ExitRulesFile.model_validate({"defaults": {**cfg.defaults.model_dump(), "warn_dte": 10}})

"""A hedge proposal carries what it does (domain.whatif): its Greeks and every limit before/after."""

from __future__ import annotations

from datetime import timedelta

import pytest

from portfolio_pipeline.config.streaming import HedgeSettings, StreamingConfig
from portfolio_pipeline.domain.limits import LimitCheck, RiskSnapshot
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.domain.whatif import RiskChange, apply_change
from portfolio_pipeline_tests.orders.fakes import T0
from portfolio_pipeline_tests.streaming.test_proposer import _breach, _view
from portfolio_pipeline_tests.stubs import platform_config
from streaming_service.breach import BreachSignal
from streaming_service.proposer import propose_hedge
from streaming_service.staging import HedgeDesk, Moment


def test_the_candidate_change_is_its_size_times_its_unit_effect() -> None:
    check, risk = _breach(180_000.0)
    cand = propose_hedge(
        check, risk, _view(), HedgeSettings(wing_otm_pct=0.02, wing_width_pct=0.02)
    )
    assert cand is not None
    assert cand.change.beta_weighted_dollar_delta == pytest.approx(
        cand.quantity * cand.unit_effect, rel=1e-12
    )
    after = apply_change(risk, cand.change)
    assert after.beta_weighted_dollar_delta / risk.nlv == pytest.approx(
        cand.metric_after, rel=1e-12
    )
    assert cand.change.vega_per_point != 0.0 and cand.change.maint_margin == 0.0


def test_desk_effect_names_the_breach_cured_and_the_utilisations() -> None:
    cfg = platform_config()
    settings = StreamingConfig()
    desk = HedgeDesk(
        broker=None,
        account_id="DEMO-001",
        store=None,
        commands=None,  # type: ignore[arg-type]
        instruments=cfg.instruments,
        hedge=settings.hedge,
        staging=settings.staging,
        submit=lambda e: None,
        regimes=RegimeService(cfg.risk_matrix),
    )
    limit = RegimeService(cfg.risk_matrix).limits_for("normal").max_abs_beta_weighted_delta
    nlv = 600_000.0
    risk = RiskSnapshot("DEMO-001", nlv, 2 * limit * nlv, -5_000.0, -100.0, 200.0, 30_000.0)
    check = LimitCheck(
        "DEMO-001", "beta_weighted_delta", 2 * limit, limit, 2.0, "normal", 18.0, 19.0
    )
    moment = Moment(
        signal=BreachSignal("limit_breach", T0 + timedelta(minutes=1), check, "warning"),
        risk=risk,
        root="SPX",
        spot=2700.0,
        vol=0.2,
        rate=0.01,
        dividend_yield=0.02,
        beta=1.0,
    )
    change = RiskChange(beta_weighted_dollar_delta=-1.5 * limit * nlv, maint_margin=2_000.0)
    effect = desk.effect(moment, change)
    bwd = next(x for x in effect["limits"] if x["metric"] == "beta_weighted_delta")  # type: ignore[attr-defined]
    assert bwd["effect"] == "cures breach"
    assert bwd["before"] == pytest.approx(2 * limit) and bwd["after"] == pytest.approx(0.5 * limit)
    assert (bwd["utilisation_before"], bwd["utilisation_after"]) == (
        pytest.approx(2.0),
        pytest.approx(0.5),
    )
    assert effect["summary"] == "cures breach of beta_weighted_delta"
    assert effect["greeks"]["maint_margin"] == 2_000.0  # type: ignore[index]
    # without the regimes the proposal still carries its Greeks
    desk._regimes = None
    assert set(desk.effect(moment, change)) == {"greeks"}

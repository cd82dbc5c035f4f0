"""Hedge proposals: wings at the configured OTM distance, on the real strike grid."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from portfolio_pipeline.config.streaming import HedgeSettings
from portfolio_pipeline.domain.limits import LimitCheck, RiskSnapshot
from portfolio_pipeline_tests.streaming.helpers import T0
from portfolio_pipeline_tests.stubs import instruments
from streaming_service.proposer import MarketView, propose_hedge


def _view(spot: float = 2650.0) -> MarketView:
    expiries = [T0.date() + timedelta(days=d) for d in (11, 25, 39, 46, 74, 109)]
    return MarketView.build(instruments(), "SPX", trading_class="SPX", spot=spot, vol=0.30, rate=0.014,
                            dividend_yield=0.019, beta=1.0, expiries=expiries, as_of=T0)


def _breach(bwd: float, nlv: float = 600_000.0) -> tuple[LimitCheck, RiskSnapshot]:
    risk = RiskSnapshot("DEMO-001", nlv, bwd, -50_000.0, -2_000.0, 300.0, 150_000.0)
    check = LimitCheck("DEMO-001", "beta_weighted_delta", bwd / nlv, 0.2, abs(bwd / nlv) / 0.2, "crisis", 37.0, 30.0)
    return check, risk


@pytest.mark.parametrize("otm", [0.02, 0.05])
def test_delta_hedge_wing_is_a_fraction_of_spot_not_a_hundredth(otm: float) -> None:
    """REGRESSION: a 2% wing is 2% of spot (2650 -> ~2597), not 0.02% (~2649.5)."""
    settings = HedgeSettings(wing_otm_pct=otm, wing_width_pct=0.02, target_dte=45, min_dte=14)
    check, risk = _breach(180_000.0)
    cand = propose_hedge(check, risk, _view(), settings)
    assert cand is not None and cand.structure == "put_vertical"
    long_leg, short_leg = cand.legs
    assert (long_leg.action, short_leg.action) == ("BUY", "SELL")
    spot, inc = 2650.0, 5.0
    assert abs(short_leg.contract.strike - spot * (1 - otm)) <= inc / 2
    assert abs((long_leg.contract.strike - short_leg.contract.strike) - spot * 0.02) <= inc
    for leg in cand.legs:
        assert leg.contract.strike % inc == 0  # the real SPX strike grid
        assert leg.contract.expiry == date(2018, 3, 23)  # listed expiry nearest 45 DTE (Feb 5 + 46)
    assert cand.unit_effect < 0 and cand.metric_after < cand.metric_before
    assert abs(cand.metric_after) <= 0.8 * 0.2 + abs(cand.unit_effect) / 600_000.0


def test_short_delta_gets_a_call_vertical_and_vega_long_options() -> None:
    settings = HedgeSettings(wing_otm_pct=0.03, wing_width_pct=0.02)
    check, risk = _breach(-180_000.0)
    cand = propose_hedge(check, risk, _view(), settings)
    assert cand is not None and cand.structure == "call_vertical"
    assert cand.legs[1].contract.strike == pytest.approx(2730.0)  # 2650 * 1.03 = 2729.5 -> 2730
    vega_check = LimitCheck("DEMO-001", "vega", -0.01, 0.004, 2.5, "crisis", 37.0, 30.0)
    risk = RiskSnapshot("DEMO-001", 600_000.0, 0.0, 0.0, -6_000.0, 0.0, 1.0)
    cand = propose_hedge(vega_check, risk, _view(), settings)
    assert cand is not None and cand.structure == "long_put" and cand.unit_effect > 0

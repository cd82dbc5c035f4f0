from __future__ import annotations

import math

import pytest

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.limits import RiskSnapshot, breaches, evaluate_limits
from portfolio_pipeline.domain.regime import LimitOverrides, RegimeService, RiskMatrix

#: A fixed matrix, so these tests do not move when the shipped config is tuned.
MATRIX = RiskMatrix.model_validate({
    "hysteresis_vix_points": 1.0,
    "term_structure": {"backwardation_ratio": 1.0},
    "base_limits": {"max_abs_beta_weighted_delta": 0.5, "max_short_gamma": 0.6,
                    "max_abs_vega": 0.010, "min_theta": -0.002, "max_margin_utilisation": 0.5},
    "regimes": [
        {"name": "calm", "vix_below": 15, "limit_scale": 1.0},
        {"name": "normal", "vix_below": 20, "limit_scale": 1.0},
        {"name": "elevated", "vix_below": 30, "limit_scale": 0.7},
        {"name": "crisis", "limit_scale": 0.4, "overrides": {"max_margin_utilisation": 0.35}},
    ],
})


@pytest.fixture
def regimes() -> RegimeService:
    return RegimeService(MATRIX)


def test_shipped_matrix_has_the_same_regime_names() -> None:
    from portfolio_pipeline_tests.stubs import platform_config

    shipped = RegimeService(platform_config().risk_matrix)
    assert shipped.regime_names == ("calm", "normal", "elevated", "crisis")


@pytest.mark.parametrize(
    ("vix", "expected"),
    [(9.0, "calm"), (14.99, "calm"), (15.0, "normal"), (19.9, "normal"), (20.0, "elevated"),
     (29.99, "elevated"), (30.0, "crisis"), (82.69, "crisis")],
)
def test_regime_by_vix_level(regimes: RegimeService, vix: float, expected: str) -> None:
    assert regimes.classify(vix).name == expected


def test_backwardation_escalates_one_regime(regimes: RegimeService) -> None:
    # 2018-02-02: VIX 17.31 with a term structure in contango -> normal
    assert regimes.classify(17.31, 18.5).name == "normal"
    # same VIX but VIX/VIX3M >= 1 -> escalated to elevated
    state = regimes.classify(17.31, 17.0)
    assert state.name == "elevated" and state.backwardation
    assert state.term_ratio == pytest.approx(17.31 / 17.0)


def test_hysteresis_needs_a_clear_move(regimes: RegimeService) -> None:
    assert regimes.classify(20.5, previous="normal").name == "normal"
    assert regimes.classify(21.01, previous="normal").name == "elevated"
    assert regimes.classify(19.5, previous="elevated").name == "elevated"
    assert regimes.classify(18.99, previous="elevated").name == "normal"
    # a jump of two regimes is never held back
    assert regimes.classify(30.5, previous="normal").name == "crisis"


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_vix_must_be_live_and_finite(regimes: RegimeService, bad: float) -> None:
    with pytest.raises(InvalidDataError, match="VIX must be a positive finite number"):
        regimes.classify(bad)


def test_limits_scale_with_regime_and_overrides(regimes: RegimeService) -> None:
    normal = regimes.limits_for("normal")
    crisis = regimes.limits_for("crisis")
    assert normal.max_abs_vega == pytest.approx(0.010)
    assert crisis.max_abs_vega == pytest.approx(0.004)
    assert crisis.max_margin_utilisation == pytest.approx(0.35)  # regime override
    assert crisis.min_theta == pytest.approx(-0.0008)  # allowed bleed shrinks in a crisis
    account = regimes.limits_for("normal", LimitOverrides(max_abs_vega=0.008))
    assert account.max_abs_vega == 0.008


def test_limit_breach_carries_the_vix_and_regime(regimes: RegimeService) -> None:
    """2018-02-05 close: VIX 37.32 -> crisis; a book with vega -3,600 $/pt on $400k NLV."""
    risk = RiskSnapshot(scope="DEMO-001", nlv=400_000.0, beta_weighted_dollar_delta=60_000.0,
                        dollar_gamma_1pct=-120_000.0, vega_per_point=-3_600.0, theta_per_day=500.0,
                        maint_margin=120_000.0)
    calm = evaluate_limits(risk, regimes.classify(13.5))
    assert not [c for c in calm if c.breached]
    found = {c.metric: c for c in breaches(risk, regimes.classify(37.32))}
    assert set(found) == {"vega", "short_gamma"}
    vega = found["vega"]
    assert vega.value == pytest.approx(-0.009)
    assert vega.limit == pytest.approx(0.004)
    assert vega.utilisation == pytest.approx(0.009 / 0.004)
    assert (vega.regime, vega.vix) == ("crisis", 37.32)


def test_theta_floor_both_signs(regimes: RegimeService) -> None:
    risk = RiskSnapshot(scope="x", nlv=100_000.0, beta_weighted_dollar_delta=0.0,
                        dollar_gamma_1pct=0.0, vega_per_point=0.0, theta_per_day=-500.0,
                        maint_margin=0.0)
    theta = next(c for c in evaluate_limits(risk, regimes.classify(17.0)) if c.metric == "theta")
    # -0.5% of NLV per day against a floor of -0.2%: 2.5x the allowed bleed
    assert theta.utilisation == pytest.approx(2.5)


def test_risk_snapshot_rejects_bad_numbers() -> None:
    with pytest.raises(InvalidDataError, match="NLV must be > 0"):
        RiskSnapshot("x", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(InvalidDataError, match="vega_per_point is not finite"):
        RiskSnapshot("x", 1.0, 0.0, 0.0, math.nan, 0.0, 0.0)

"""Vol-beta rule of the historical replay (issue 14, item 7).

Oracles: hand-built surface changes with known betas (least squares through the origin
recovers them exactly); the closed-form BSM price (QuantLib-checked pricing.price) of an
option at ``vol + beta * d_atm`` for revalue with ``vol_beta``."""

from __future__ import annotations

import numpy as np
import pytest

from portfolio_pipeline.quant import pricing as P
from portfolio_pipeline.quant.revaluation import greeks_pnl, revalue
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline.quant.scenario_set import ScenarioSet
from portfolio_pipeline.quant.vol_beta import VolBetaRule, fit_vol_beta


def test_fit_recovers_bucket_betas_and_keeps_the_prior_where_thin() -> None:
    rng = np.random.default_rng(1)
    n = 400
    dte = rng.choice([7.0, 30.0, 90.0, 200.0], n)
    m = rng.choice([-0.1, 0.0, 0.1], n)
    x = rng.normal(0.0, 0.02, n)  # beta_u * dVIX / 100
    x[np.abs(x) < 0.006] = 0.02  # every day moves the VIX by >= 0.5 point
    true = VolBetaRule.unit()
    betas = np.array([[1.1, 0.95, 0.8], [0.9, 0.8, 0.7], [0.6, 0.55, 0.5], [0.45, 0.4, 0.35]])
    rule_true = VolBetaRule(true.dte_edges, true.moneyness_edges, betas, true.observations)
    y = rule_true.beta(dte, m) * x
    rule = fit_vol_beta(y, x, dte, m, min_observations=10)
    np.testing.assert_allclose(rule.betas, betas, rtol=1e-12)
    assert rule.observations.sum() == n
    # a bucket with too few days keeps beta 1; quiet days (|dVIX| < 0.5) are ignored
    thin = fit_vol_beta(y[:5], x[:5], dte[:5], m[:5], min_observations=10)
    np.testing.assert_array_equal(thin.betas, np.ones_like(betas))
    quiet = fit_vol_beta([0.5], [0.001], [30.0], [0.0], min_observations=1)
    assert quiet.observations.sum() == 0
    assert "0.80 (" in rule.describe()


def test_revalue_applies_each_contracts_beta() -> None:
    """Two SPX puts on one factor, betas 0.5 and 1.0, ATM vol +10 points: each is repriced
    at vol + beta * 0.10 (closed form)."""
    c = ContractSet.build(factor=[0, 0], is_option=True, is_call=False, black76=False,
                          spot=2700.0, strike=[2600.0, 2500.0], T=[7 / 365, 90 / 365], r=0.015,
                          q=0.019, vol=[0.2, 0.22])
    book = Book(c, np.array([[1.0], [1.0]]), ("g",), ("SPX",))
    sc = ScenarioSet.build([[0.0]], [[0.10]], [0.0])
    beta = np.array([0.5, 1.0])
    got = revalue(book, sc, vol_beta=beta)[0, 0]
    base = P.price("put", 2700.0, [2600.0, 2500.0], [7 / 365, 90 / 365], 0.015, 0.019, [0.2, 0.22])
    new = P.price("put", 2700.0, [2600.0, 2500.0], [7 / 365, 90 / 365], 0.015, 0.019,
                  [0.2 + 0.05, 0.22 + 0.10])
    assert got == pytest.approx(float((new - base).sum()), rel=1e-12)
    full = revalue(book, sc)[0, 0]
    assert full > got  # beta 1 everywhere: the larger (put) gain
    approx = greeks_pnl(book, sc, vol_beta=beta)[0, 0]
    vega = P.greeks("put", 2700.0, [2600.0, 2500.0], [7 / 365, 90 / 365], 0.015, 0.019, [0.2, 0.22]).vega
    assert approx == pytest.approx(float((vega * 100.0 * beta * 0.10).sum()), rel=1e-12)
    with pytest.raises(ValueError, match="vol_beta"):
        revalue(book, sc, vol_beta=[1.0])

"""Greeks P&L attribution: the identity, and a long call against closed-form repricing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_pipeline.quant import pricing
from portfolio_pipeline.quant.attribution import attribute, large_unexplained

S, K, T, R, Q, VOL = 2700.0, 2800.0, 30 / 365, 0.015, 0.019, 0.15


def _reprice(ds: float, dvol_points: float, dt_days: float) -> tuple[float, float]:
    """(actual P&L of one long call per share, explained by the prior-close Greeks)."""
    g = pricing.greeks("C", S, K, T, R, Q, VOL)
    v0 = float(g.price[0]) if np.ndim(g.price) else float(g.price)
    v1 = float(np.asarray(pricing.price("C", S + ds, K, T - dt_days / 365, R, Q, VOL + dvol_points / 100)).ravel()[0])
    a = attribute(ds, dvol_points, dt_days, g.delta, g.gamma, g.theta, g.vega, g.vanna, g.volga, actual=v1 - v0)
    return float(a.actual[0]), float(a.explained[0])


def test_long_call_one_day_matches_repricing_to_second_order() -> None:
    # An OTM SPX call (K = 2800, 30 days): one day with dS = +20 (0.74 %), dsigma = +1 pt.
    ds, dvol, dt = 20.0, 1.0, 1.0
    actual, explained = _reprice(ds=ds, dvol_points=dvol, dt_days=dt)
    assert actual == pytest.approx(6.41, abs=0.01)  # closed-form repricing
    residual = actual - explained
    assert abs(residual) < 0.03 * abs(actual)
    # What is left is the omitted time cross terms (charm * dS * dt and d(vega)/dt *
    # dsigma * dt) plus a third-order remainder two orders of magnitude smaller.
    g0 = pricing.greeks("C", S, K, T, R, Q, VOL)
    g1 = pricing.greeks("C", S, K, T - dt / 365, R, Q, VOL)
    cross = float(np.ravel(g0.charm)[0]) * ds * dt + float(np.ravel(g1.vega - g0.vega)[0]) * dvol
    assert abs(residual - cross) < 0.01
    assert abs(residual - cross) < 0.05 * abs(residual)


def test_residual_is_third_order_in_the_move() -> None:
    # No time passing: halving (dS, dsigma) divides the residual by ~2^3.
    res = []
    for h in (1.0, 0.5, 0.25):
        actual, explained = _reprice(ds=40.0 * h, dvol_points=2.0 * h, dt_days=0.0)
        res.append(actual - explained)
    for big, small in itertools.pairwise(res):
        assert 6.0 < big / small < 16.0  # h^3 (8) plus a 4th-order share (16)
    # without the vanna/volga terms the error is only second order
    g = pricing.greeks("C", S, K, T, R, Q, VOL)
    v1 = float(np.asarray(pricing.price("C", S + 40, K, T, R, Q, VOL + 0.02)).ravel()[0])
    first_order = attribute(40.0, 2.0, 0.0, g.delta, g.gamma, g.theta, g.vega, actual=v1 - float(np.ravel(g.price)[0]))
    assert abs(first_order.unexplained[0]) > 5 * abs(res[0])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=9, max_size=9),
)
def test_identity_components_plus_unexplained_is_actual(x: list[float]) -> None:
    a = attribute(*x[:7], vanna=x[7], volga=x[8], actual=1234.5)
    total = a.delta + a.gamma + a.theta + a.vega + a.vanna + a.volga
    np.testing.assert_allclose(total, a.explained, rtol=0, atol=1e-9 * max(1.0, float(np.abs(total).max())))
    assert float(a.explained[0] + a.unexplained[0]) == pytest.approx(1234.5, abs=1e-6)


def test_components_and_flag() -> None:
    a = attribute(dS=[10.0, -10.0], dsigma_points=[1.0, 0.0], dt_days=3.0, delta=0.5, gamma=0.02,
                  theta=-1.0, vega=2.0, actual=[10.0, -4.0])
    np.testing.assert_allclose(a.delta, [5.0, -5.0])
    np.testing.assert_allclose(a.gamma, [1.0, 1.0])
    np.testing.assert_allclose(a.theta, [-3.0, -3.0])
    np.testing.assert_allclose(a.vega, [2.0, 0.0])
    np.testing.assert_allclose(a.vanna, 0.0)
    np.testing.assert_allclose(a.unexplained, [10.0 - 5.0, -4.0 + 7.0])
    flags = large_unexplained(a.actual, a.unexplained, relative=0.25, absolute=1.0)
    assert flags.tolist() == [True, True]
    assert not large_unexplained([1000.0], [100.0], relative=0.25, absolute=1.0)[0]
    assert not large_unexplained([10.0], [9.0], relative=0.25, absolute=50.0)[0]

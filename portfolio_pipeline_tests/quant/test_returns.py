"""Time-weighted returns: external flows do not change the return series."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_pipeline.quant.returns import (
    daily_pnl,
    drawdown,
    growth_index,
    time_weighted_returns,
)

R = np.array([0.01, -0.02, 0.005, 0.03, -0.01])


def _path(returns: np.ndarray, flows: np.ndarray, start: float = 100_000.0) -> np.ndarray:
    nlv = [start]
    for r, f in zip(returns, flows, strict=True):
        nlv.append(nlv[-1] * (1 + r) + f)  # flows at the close: they earn nothing that day
    return np.array(nlv)


def test_deposit_does_not_change_the_return_series() -> None:
    no_flow = np.zeros(5)
    deposit = np.array([0.0, 50_000.0, 0.0, -20_000.0, 0.0])
    plain = _path(R, no_flow)
    funded = _path(R, deposit)
    assert not np.allclose(plain, funded)  # NLV differs...
    r_plain = time_weighted_returns(plain, np.r_[0.0, no_flow])
    r_funded = time_weighted_returns(funded, np.r_[0.0, deposit])
    np.testing.assert_allclose(r_funded[1:], R, rtol=1e-12)  # ...the returns do not
    np.testing.assert_allclose(r_funded, r_plain, rtol=1e-12, equal_nan=True)
    assert np.isnan(r_funded[0])
    # P&L excludes the deposit
    pnl = daily_pnl(funded, np.r_[0.0, deposit])
    np.testing.assert_allclose(pnl[1:], funded[:-1] * R)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.2, 0.2), st.floats(-1e4, 1e5)), min_size=1, max_size=30))
def test_any_flows_leave_returns_unchanged(steps: list[tuple[float, float]]) -> None:
    r = np.array([s[0] for s in steps])
    f = np.array([s[1] for s in steps])
    nlv = _path(r, f, start=1e6)
    if (nlv <= 0).any():
        return
    np.testing.assert_allclose(time_weighted_returns(nlv[1:], f, prev_nlv=nlv[0]), r, atol=1e-9)


def test_growth_and_drawdown() -> None:
    g = growth_index([0.1, -0.5, 1.0, np.nan])
    np.testing.assert_allclose(g, [1.1, 0.55, 1.1, 1.1])
    np.testing.assert_allclose(drawdown(g), [0.0, -0.5, 0.0, 0.0])
    assert time_weighted_returns([100.0, 0.0, 10.0], [0.0, 0.0, 0.0]).tolist()[1] == -1.0
    assert np.isnan(time_weighted_returns([100.0, 0.0, 10.0], [0.0, 0.0, 0.0])[2])  # prev NLV 0

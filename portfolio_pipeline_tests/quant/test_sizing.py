"""Kelly sizing against hand-computed cases (f* = p - (1 - p) / b)."""

from __future__ import annotations

import math

import pytest

from portfolio_pipeline.quant.sizing import kelly_fraction, kelly_from_trades, trade_stats


@pytest.mark.parametrize(("p", "b", "f"), [
    (0.6, 1.0, 0.2),          # 0.6 - 0.4/1
    (0.5, 2.0, 0.25),         # 0.5 - 0.5/2
    (0.8, 0.5, 0.4),          # 0.8 - 0.2/0.5
    (0.3, 1.0, -0.4),         # negative edge
    (1.0, 0.0, 1.0),
])
def test_kelly_fraction_by_hand(p: float, b: float, f: float) -> None:
    assert kelly_fraction(p, b) == pytest.approx(f)


def test_trade_stats_by_hand() -> None:
    s = trade_stats([300.0, 100.0, -200.0, 0.0])
    assert (s.trades, s.wins, s.losses) == (4, 2, 1)
    assert s.win_rate == 0.5 and s.avg_win == 200.0 and s.avg_loss == 200.0
    assert s.expectancy == 50.0 and s.profit_factor == 2.0


def test_premium_seller_profile_shrunk_fraction_and_capped() -> None:
    # 8 wins of 100, 2 losses of 200: p = 0.8, b = 0.5, f* = 0.8 - 0.2/0.5 = 0.4
    pnls = [100.0] * 8 + [-200.0] * 2
    r = kelly_from_trades(pnls, fraction=0.5, min_trades=5, shrinkage_trades=10, cap=0.5)
    assert r.full_kelly == pytest.approx(0.4)
    assert r.shrinkage == pytest.approx(10 / 20)
    assert r.recommended == pytest.approx(0.5 * 0.5 * 0.4)  # 0.1
    capped = kelly_from_trades(pnls, fraction=1.0, min_trades=5, shrinkage_trades=0, cap=0.25)
    assert capped.recommended == 0.25 and capped.capped


def test_small_sample_and_no_edge_recommend_nothing() -> None:
    small = kelly_from_trades([100.0, 100.0], fraction=0.25, min_trades=10, shrinkage_trades=5, cap=0.1)
    assert small.status == "insufficient_sample" and small.recommended == 0.0
    assert small.full_kelly == 1.0  # reported, not used
    losing = kelly_from_trades([100.0, -300.0] * 6, fraction=0.25, min_trades=10,
                               shrinkage_trades=5, cap=0.1)
    assert losing.status == "no_edge" and losing.recommended == 0.0
    assert kelly_from_trades([], fraction=0.25, min_trades=1, shrinkage_trades=0, cap=0.1).status == "no_trades"
    assert math.isinf(kelly_from_trades([50.0] * 3, fraction=1, min_trades=1, shrinkage_trades=0,
                                        cap=1).payoff_ratio)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="fraction"):
        kelly_from_trades([1.0], fraction=0.0, min_trades=1, shrinkage_trades=0, cap=0.1)
    with pytest.raises(ValueError, match="kelly_fraction"):
        kelly_fraction(1.5, 1.0)

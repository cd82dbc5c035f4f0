"""VaR backtest statistics (issue 14, item 8).

Oracles: hand-computed likelihood ratios with scipy.stats.chi2 for the p-values; the
issue's published demo figure (Monte Carlo VaR95 exceeded on 20 of 249 sessions, Kupiec
p = 0.043); the Basel Committee's 1996 traffic-light table (250 observations at 99 %:
green 0-4, yellow 5-9, red 10 or more) and its cumulative probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from portfolio_pipeline.quant.backtest import (
    backtest,
    basel_zone,
    christoffersen_independence,
    kupiec_pof,
)


def test_kupiec_matches_the_published_demo_figure_and_hand_formula() -> None:
    lr, p = kupiec_pof(249, 20, 0.95)
    assert round(p, 3) == 0.043  # issue 14: "Kupiec p = 0.043"
    ph = 20 / 249
    hand = -2 * (229 * math.log(0.95) + 20 * math.log(0.05) - 229 * math.log(1 - ph) - 20 * math.log(ph))
    assert lr == pytest.approx(hand, rel=1e-12)
    assert p == pytest.approx(stats.chi2.sf(hand, 1), rel=1e-12)


def test_kupiec_edge_cases() -> None:
    """No exceedance: LR = -2 n ln(1-p) (hand); all exceedances: -2 n ln p."""
    lr, _ = kupiec_pof(250, 0, 0.99)
    assert lr == pytest.approx(-2 * 250 * math.log(0.99), rel=1e-12)
    lr, _ = kupiec_pof(4, 4, 0.99)
    assert lr == pytest.approx(-2 * 4 * math.log(0.01), rel=1e-12)
    assert all(math.isnan(v) for v in kupiec_pof(0, 0, 0.99))
    with pytest.raises(ValueError, match="hits"):
        kupiec_pof(3, 4, 0.99)
    with pytest.raises(ValueError, match="level"):
        kupiec_pof(3, 1, 1.0)


def test_christoffersen_matches_hand_transition_counts() -> None:
    """Hits 0 0 1 1 0 0 0 1 0 0: n00 = 4, n01 = 2, n10 = 2, n11 = 1 (9 transitions);
    pi01 = 2/6, pi11 = 1/3, pi = 3/9 -> LR = 0 exactly (pi01 == pi11)."""
    hits = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    lr, p = christoffersen_independence(hits)
    assert lr == pytest.approx(0.0, abs=1e-12) and p == pytest.approx(1.0)
    # clustered: 0 0 0 0 0 0 1 1 1 0 -> n00 = 5, n01 = 1, n10 = 1, n11 = 2
    hits = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    pi01, pi11, pi = 1 / 6, 2 / 3, 3 / 9

    def ll(n0: int, n1: int, q: float) -> float:
        return n0 * math.log(1 - q) + n1 * math.log(q)

    hand = -2 * (ll(6, 3, pi) - ll(5, 1, pi01) - ll(1, 2, pi11))
    lr, p = christoffersen_independence(hits)
    assert lr == pytest.approx(hand, rel=1e-12)
    assert p == pytest.approx(stats.chi2.sf(hand, 1), rel=1e-12)
    assert all(math.isnan(v) for v in christoffersen_independence(np.zeros(5, dtype=bool)))


def test_basel_traffic_light_table() -> None:
    zones = [basel_zone(250, x, 0.99) for x in range(13)]
    assert zones == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 3
    # BCBS (1996) table: cumulative probability 89.22 % at 4, 95.88 % at 5, 99.97 % at 9
    assert stats.binom.cdf(4, 250, 0.01) == pytest.approx(0.8922, abs=5e-5)
    assert stats.binom.cdf(9, 250, 0.01) == pytest.approx(0.9997, abs=5e-5)


def test_backtest_summary() -> None:
    hits = np.zeros(249, dtype=bool)
    hits[::12] = True  # 21 hits
    res = backtest(hits, 0.95)
    assert (res.observations, res.exceedances) == (249, 21)
    assert res.expected == pytest.approx(12.45)
    assert res.kupiec_p == pytest.approx(kupiec_pof(249, 21, 0.95)[1])
    assert res.zone == "yellow"  # P(X <= 21) = 99.26 % < 99.99 %

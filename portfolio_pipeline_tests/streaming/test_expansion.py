"""The interpolating engine (what the service runs) against the full-revaluation twin.

Oracle: ``Engine(incremental=False)``, which reprices every position on every tick with
``quant.pricing.greeks``.  Claims: the breach decisions on the same tick stream are the
same, the utilisations stay within the stated bound (``guard / 2``), and most ticks are
actually interpolated (else the test proves nothing about the expansion).
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from portfolio_pipeline.config.streaming import BreachSettings
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline_tests.streaming.helpers import T0, inputs
from portfolio_pipeline_tests.stubs import platform_config
from streaming_service.breach import BreachDetector
from streaming_service.engine import Engine, Expansion, Tick

HYSTERESIS = 0.05


def _pair(expansion: Expansion) -> tuple[Engine, Engine]:
    cfg = platform_config()
    fast = Engine(inputs(), cfg.instruments, RegimeService(cfg.risk_matrix), expansion=expansion)
    twin = Engine(inputs(), cfg.instruments, RegimeService(cfg.risk_matrix), incremental=False)
    return fast, twin


def _walk(n: int, spot_sigma: float, seed: int, swing: float = 0.0) -> list[Tick]:
    """Random walks of SPX, NDX, VIX and VIX3M, one tick every 200 ms of market time; the
    indexes also swing by +-``swing`` (a sine over 1,000 ticks) so limits are crossed
    both ways."""
    rng = np.random.default_rng(seed)
    level = {"SPX": 2762.0, "NDX": 6900.0, "VIX": 17.3, "VIX3M": 18.1}
    out = []
    for k in range(n):
        sym = ["SPX", "NDX", "SPX", "VIX", "VIX3M"][k % 5]
        index = sym in ("SPX", "NDX")
        level[sym] *= math.exp(rng.normal(0.0, spot_sigma if index else 0.01))
        price = level[sym] * (math.exp(swing * math.sin(2 * math.pi * k / 1000)) if index else 1.0)
        out.append(Tick(sym, T0 + timedelta(milliseconds=200 * k), price))
    return out


@pytest.mark.parametrize("seed", [7, 11])
def test_breach_decisions_match_full_revaluation(seed: int) -> None:
    exp = Expansion(levels=(1.0, 1.0 - HYSTERESIS))
    fast, twin = _pair(exp)
    settings = BreachSettings(debounce_ticks=1, hysteresis=HYSTERESIS, cooldown_seconds=0)
    det_fast = BreachDetector(settings, RegimeService(platform_config().risk_matrix))
    det_twin = BreachDetector(settings, RegimeService(platform_config().risk_matrix))
    got, want = [], []
    worst = 0.0
    for tick in _walk(3000, 0.0005, seed, swing=0.04):
        a, b = fast.on_tick(tick), twin.on_tick(tick)
        got += [(s.kind, s.check.metric, s.ts) for s in det_fast.update(a.ts, a.checks)]
        want += [(s.kind, s.check.metric, s.ts) for s in det_twin.update(b.ts, b.checks)]
        for ca, cb in zip(a.checks, b.checks, strict=True):
            assert ca.metric == cb.metric
            worst = max(worst, abs(ca.utilisation - cb.utilisation))
    stats = fast.expansion_stats
    assert len(want) >= 4  # limits were crossed both ways on this tape
    assert got == want
    assert worst <= exp.guard / 2  # the stated bound
    assert stats["interpolated"] > 0.5 * 3000 and stats["guarded"] > 0
    assert stats["max_error"] <= exp.guard / 2 and stats["narrowed"] == 0


def test_jumps_beyond_the_range_are_repriced_exactly() -> None:
    """Index ticks 2 % apart leave the grid's range: those updates are exact (no grid is
    even built while the market jumps), so a jumpy tape costs what exact repricing costs."""
    exp = Expansion()
    fast, twin = _pair(exp)
    for tick in _walk(150, 0.02, 3):
        a, b = fast.on_tick(tick), twin.on_tick(tick)
        for ca, cb in zip(a.checks, b.checks, strict=True):
            assert abs(ca.utilisation - cb.utilisation) <= exp.guard / 2
    stats = fast.expansion_stats
    assert stats["exact"] > 3 * stats["interpolated"]  # index ticks: exact; some VIX-only moves interpolate


def test_a_group_over_the_bound_gets_a_narrower_range() -> None:
    """A guard far below the real interpolation error: the engine measures it and halves the range."""
    fast, _ = _pair(Expansion(guard=1e-9, max_age_seconds=2.0, levels=(1.0,)))
    for tick in _walk(600, 0.0005, 5):
        fast.on_tick(tick)
    stats = fast.expansion_stats
    assert stats["narrowed"] > 0 and stats["max_error"] > 1e-9 / 2


@pytest.mark.parametrize("field", ["spot_step", "vol_step", "max_age_seconds", "guard"])
def test_bad_expansion_settings_name_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Expansion(**{field: float("nan")})

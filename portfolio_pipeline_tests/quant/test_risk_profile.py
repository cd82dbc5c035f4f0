"""The risk profile kernel against hand-computed payoffs, the textbook BSM twin and the
shock grid it is built from."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from portfolio_pipeline.quant.brent import BRENT_RTOL
from portfolio_pipeline.quant.revaluation import revalue
from portfolio_pipeline.quant.risk_profile import (
    Horizon,
    atm_vol,
    expected_move,
    expiry_decays,
    pair_scenarios,
    pnl_at,
    pnl_at_pairs,
    profile_scenarios,
    risk_profile,
    spot_moves,
    sub_book,
    summarize,
    summarize_curves,
)
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline.quant.scenario_set import shock_grid
from portfolio_pipeline_tests.quant._reference import reference_greeks

S0, R, Q = 2700.0, 0.02, 0.015
T1, T2 = 30 / 365, 58 / 365
MULT = 100.0
# contract: (is_call, strike, T, vol)
LEGS = {
    "P2550": (False, 2550.0, T1, 0.24),
    "P2600": (False, 2600.0, T1, 0.21),
    "C2800": (True, 2800.0, T1, 0.13),
    "C2850": (True, 2850.0, T1, 0.12),
    "C2700": (True, 2700.0, T1, 0.16),
    "P2700": (False, 2700.0, T1, 0.17),
    "C2700b": (True, 2700.0, T2, 0.165),
}
KEYS = tuple(LEGS)
# strategy -> {contract: signed contracts}
STRATEGIES: dict[str, dict[str, float]] = {
    "vertical": {"P2600": -1, "P2550": 1},
    "iron_condor": {"P2600": -1, "P2550": 1, "C2800": -1, "C2850": 1},
    "straddle": {"C2700": 1, "P2700": 1},
    "calendar": {"C2700": -1, "C2700b": 1},
}


def _payoff(key: str, s: np.ndarray) -> np.ndarray:
    is_call, k, _, _ = LEGS[key]
    return np.maximum(s - k, 0.0) if is_call else np.maximum(k - s, 0.0)


def _bsm(key: str, s: np.ndarray | float, t: float) -> np.ndarray:
    is_call, k, _, vol = LEGS[key]
    return np.asarray(reference_greeks(is_call, s, k, t, R, Q, vol)["price"])


def _book() -> Book:
    cols = [LEGS[k] for k in KEYS]
    contracts = ContractSet.build(
        factor=[0] * len(KEYS),
        is_option=True,
        is_call=[c[0] for c in cols],
        black76=False,
        spot=S0,
        strike=[c[1] for c in cols],
        T=[c[2] for c in cols],
        r=R,
        q=Q,
        vol=[c[3] for c in cols],
    )
    units = np.zeros((len(KEYS), len(STRATEGIES)))
    for g, legs in enumerate(STRATEGIES.values()):
        for k, n in legs.items():
            units[KEYS.index(k), g] = n * MULT
    return Book(contracts, units, tuple(STRATEGIES), ("SPX",))


MOVES = spot_moves(-0.10, 0.10, 41)
HORIZONS = (Horizon("T+0", 0.0), Horizon("T+5", 7 / 365), Horizon("expiry", T1))


def test_t0_at_the_current_price_is_todays_value() -> None:
    curves = risk_profile(_book(), MOVES, HORIZONS, spot_beta=[1.0])
    i0 = int(np.flatnonzero(MOVES == 0.0)[0])
    assert np.all(curves.pnl[0, i0] == 0.0)
    # and today's value is the textbook BSM value: a 1% move is priced from it
    i1 = int(np.flatnonzero(np.isclose(MOVES, 0.01))[0])
    for g, legs in enumerate(STRATEGIES.values()):
        want = sum(
            n * MULT * (_bsm(k, S0 * 1.01, LEGS[k][2]) - _bsm(k, S0, LEGS[k][2]))
            for k, n in legs.items()
        )
        assert curves.pnl[0, i1, g] == pytest.approx(float(want), rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_expiry_curve_is_the_hand_computed_payoff(strategy: str) -> None:
    book = _book()
    curves = risk_profile(book, MOVES, HORIZONS, spot_beta=[1.0])
    s = S0 * (1.0 + MOVES)
    want = np.zeros_like(s)
    for k, n in STRATEGIES[strategy].items():
        _, _, t, _ = LEGS[k]
        # at the front expiry: front legs pay their intrinsic value, the back leg of the
        # calendar keeps T2 - T1 with its vol held (sticky strike, no vol shock)
        at_horizon = _payoff(k, s) if t == T1 else _bsm(k, s, t - T1)
        want += n * MULT * (at_horizon - _bsm(k, S0, t))
    got = curves.curve(2, list(STRATEGIES).index(strategy))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)


def test_vertical_breakeven_and_max_loss_by_hand() -> None:
    book = _book()
    g = list(STRATEGIES).index("vertical")
    curves = risk_profile(book, MOVES, HORIZONS, spot_beta=[1.0])
    credit = float(_bsm("P2600", S0, T1) - _bsm("P2550", S0, T1))
    summary = summarize(
        MOVES, curves.curve(2, g), lambda x: float(pnl_at(book, x, HORIZONS[2], spot_beta=[1.0])[g])
    )
    assert len(summary.breakevens) == 1
    assert S0 * (1 + summary.breakevens[0]) == pytest.approx(2600.0 - credit, abs=1e-6)
    assert summary.max_loss == pytest.approx(-(50.0 - credit) * MULT, abs=1e-6)
    assert summary.max_profit == pytest.approx(credit * MULT, abs=1e-6)


def test_linear_breakevens_without_refinement() -> None:
    s = summarize([-2.0, -1.0, 0.0, 1.0, 3.0], [-3.0, -1.0, 0.0, 2.0, -2.0])
    assert s.breakevens == (0.0, 2.0)
    assert (s.max_loss, s.max_loss_move, s.max_profit, s.max_profit_move) == (-3.0, -2.0, 2.0, 1.0)


def _two_factor_book() -> Book:
    """SPX index options (European) and SPY options (American), plus SPY shares."""
    contracts = ContractSet.build(
        factor=[0, 0, 1, 1, 1],
        is_option=[True, True, True, True, False],
        is_call=[False, True, False, True, False],
        black76=False,
        spot=[S0, S0, 270.0, 270.0, 270.0],
        strike=[2600.0, 2800.0, 280.0, 265.0, 0.0],
        T=[T1, T2, T1, T2, 0.0],
        r=R,
        q=[Q, Q, 0.018, 0.018, 0.0],
        vol=[0.2, 0.13, 0.19, 0.15, 0.0],
        american=[False, False, True, True, False],
    )
    units = np.array([[-100.0, 0.0], [100.0, 0.0], [0.0, -300.0], [0.0, 200.0], [0.0, -50.0]])
    return Book(contracts, units, ("SPX", "SPY"), ("SPX", "SPY"))


@pytest.mark.parametrize("skew_rule", ["sticky_strike", "sticky_moneyness"])
def test_equals_the_shock_grid_on_shared_points(skew_rule: str) -> None:
    book = _two_factor_book()
    kw = {
        "skew_slope": [-0.9, -1.1],
        "skew_rule": skew_rule,
        "min_vol": 0.01,
        "american_method": "lr",
        "american_steps": 41,
    }
    beta = np.array([1.0, 1.2])
    shocks = [-0.2, -0.05, 0.0, 0.05]
    grid = shock_grid(shocks, [("+0pt", 0.0, 0.0), ("+5pt", 0.05, 0.0)], [0, 5], spot_beta=beta)
    full = revalue(book, grid.scenarios, **kw).reshape(4, 2, 2, 2)  # spot, vol, horizon, group
    moves = spot_moves(-0.25, 0.25, 11, include=shocks)
    for j, d_atm in enumerate((0.0, 0.05)):
        curves = risk_profile(
            book,
            moves,
            [Horizon("T+0", 0.0), Horizon("5d", 5 / 365)],
            spot_beta=beta,
            d_atm=d_atm,
            **kw,
        )
        for i, s in enumerate(shocks):
            p = int(np.flatnonzero(curves.moves == s)[0])
            np.testing.assert_allclose(curves.pnl[:, p, :], full[i, j], rtol=1e-12, atol=1e-9)


def test_american_t0_is_zero_and_expiry_is_intrinsic() -> None:
    book = _two_factor_book()
    spy = sub_book(book, [2, 3, 4], book.units[2:, 1:], ("SPY",))
    assert spy.factors == ("SPY",)
    moves = spot_moves(-0.2, 0.2, 9)
    curves = risk_profile(
        spy,
        moves,
        [Horizon("T+0", 0.0), Horizon("exp", T2)],
        spot_beta=[1.0],
        american_method="lr",
        american_steps=41,
    )
    assert curves.pnl[0, int(np.flatnonzero(moves == 0.0)[0]), 0] == 0.0
    s = 270.0 * (1 + moves)
    base = revalue(
        spy,
        shock_grid([0.0], [("0", 0.0, 0.0)], [0], spot_beta=[1.0]).scenarios,
        american_method="lr",
        american_steps=41,
    )
    assert base[0, 0] == 0.0
    # at the last expiry everything is intrinsic: -300 short 280P, +200 long 265C, -50 shares
    from portfolio_pipeline.quant.pricing import american_price

    v0 = american_price(
        [False, True],
        270.0,
        [280.0, 265.0],
        [T1, T2],
        R,
        0.018,
        [0.19, 0.15],
        method="lr",
        steps=41,
    )
    want = (
        -300 * (np.maximum(280 - s, 0) - v0[0])
        + 200 * (np.maximum(s - 265, 0) - v0[1])
        - 50 * (s - 270.0)
    )
    np.testing.assert_allclose(curves.pnl[1, :, 0], want, rtol=1e-9, atol=1e-6)


def test_expiries_atm_vol_and_expected_move() -> None:
    book = _two_factor_book()
    assert expiry_decays(book.contracts) == [T1, T2]
    assert expiry_decays(book.contracts, factor=1) == [T1, T2]
    assert atm_vol(book.contracts, 1) == 0.15  # 265 is nearer 270 than 280
    assert atm_vol(book.contracts, 0) == 0.13  # |ln(2800/2700)| < |ln(2600/2700)|
    assert expected_move(2700.0, 0.16, 0.25) == pytest.approx(2700 * 0.16 * 0.5)
    assert expected_move(2700.0, 0.16, 0.0) == 0.0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="low < 0 < high"):
        spot_moves(0.1, 0.2, 5)
    with pytest.raises(ValueError, match="decay"):
        Horizon("bad", -1.0)
    with pytest.raises(ValueError, match="at least one horizon"):
        risk_profile(_book(), MOVES, [], spot_beta=[1.0])
    with pytest.raises(ValueError, match="factors"):
        sub_book(_two_factor_book(), [0, 2], np.zeros((2, 1)), ("x",))


# the two books above, with what moves them: a one-factor book of four strategies (all
# European) and the two-factor book (American SPY through the tree) beta-weighted with a
# vol column (d_atm per factor, an extra log return as a volatility-index column has)
TWO_FACTOR_KW = {
    "spot_beta": [1.0, 1.2],
    "d_atm": [0.03, 0.05],
    "extra_log_ret": [0.0, 0.01],
    "skew_slope": [-0.9, -1.1],
    "skew_rule": "sticky_moneyness",
    "american_method": "lr",
    "american_steps": 41,
}
BOOKS = {
    "strategies": (_book, {"spot_beta": [1.0]}),
    "two factors": (_two_factor_book, TWO_FACTOR_KW),
}
XTOL = 1e-7


@pytest.mark.parametrize("name", list(BOOKS))
def test_pair_scenarios_are_the_grids_bit_for_bit(name: str) -> None:
    make, kw = BOOKS[name]
    scen_kw = {k: kw[k] for k in ("spot_beta", "d_atm", "extra_log_ret") if k in kw}
    grid = profile_scenarios(MOVES, HORIZONS, **scen_kw).scenarios  # C order: move, horizon
    rng = np.random.default_rng(7)
    pick = rng.permutation(grid.size)[:50]
    i, h = np.divmod(pick, len(HORIZONS))
    pairs = pair_scenarios(MOVES[i], [HORIZONS[k] for k in h], **scen_kw)
    for field in ("log_ret", "d_atm", "decay"):
        got, want = getattr(pairs, field), getattr(grid, field)[pick]
        assert got.shape == want.shape and got.tobytes() == want.tobytes(), field
    # and the P&L priced there is the grid's
    book = make()
    curves = risk_profile(book, MOVES, HORIZONS, **kw)
    np.testing.assert_allclose(
        pnl_at_pairs(book, MOVES[i], [HORIZONS[k] for k in h], **kw),
        curves.pnl[h, i],
        rtol=1e-12,
        atol=1e-9,
    )


def _per_root_brentq(book: Book, curves, g: int, h: int, kw: dict) -> list[float]:
    """The straightforward twin: scipy's brentq on one revaluation per point, per root."""
    x, y = curves.moves, curves.curve(h, g)
    out = []
    for i in range(x.size):
        if y[i] == 0.0:
            out.append(float(x[i]))
        elif i + 1 < x.size and y[i] * y[i + 1] < 0.0:
            f = lambda m: float(pnl_at(book, m, curves.horizons[h], **kw)[g])  # noqa: E731
            out.append(float(brentq(f, float(x[i]), float(x[i + 1]), xtol=XTOL)))
    return out


@pytest.mark.parametrize("name", list(BOOKS))
def test_batched_breakevens_equal_per_root_brentq(name: str) -> None:
    make, kw = BOOKS[name]
    book = make()
    curves = risk_profile(book, MOVES, HORIZONS, **kw)
    stored = [(g, h) for g in range(len(book.groups)) for h in range(len(HORIZONS))]
    gs = np.array([g for g, _ in stored])
    calls = []

    def refine(m: np.ndarray, which: np.ndarray) -> np.ndarray:
        calls.append(m.size)
        return pnl_at_pairs(book, m, [HORIZONS[stored[k][1]] for k in which], **kw)[
            np.arange(m.size), gs[which]
        ]

    pnl = np.stack([curves.curve(h, g) for g, h in stored])
    got = summarize_curves(MOVES, pnl, refine, xtol=XTOL)
    n_refined = 0
    for (g, h), s in zip(stored, got, strict=True):
        want = _per_root_brentq(book, curves, g, h, kw)
        assert len(s.breakevens) == len(want), (g, h)
        y = curves.curve(h, g)
        steepest = float(np.max(np.abs(np.diff(y) / np.diff(MOVES))))
        for r, w in zip(s.breakevens, want, strict=True):
            # each is within xtol + rtol |x| of a sign change of (numerically) the same
            # function: so within twice that of each other
            assert abs(r - w) <= 2 * (XTOL + BRENT_RTOL * abs(w)), (g, h, r, w)
            if r in MOVES:
                continue  # an exact zero of the grid, kept as the grid's move
            n_refined += 1
            # the P&L there is ~0: the root is within xtol + rtol |x| of a sign change and
            # the curve's slope is at most twice its steepest grid secant (a margin for
            # the curvature between two points), so |P&L| <= 2 x steepest x that (about
            # 1e-6 of the curve's largest |P&L| on these books)
            at = float(pnl_at_pairs(book, [r], [HORIZONS[h]], **kw)[0, g])
            assert abs(at) <= 2 * steepest * (XTOL + BRENT_RTOL * abs(r)), (g, h, r, at)
        # the single-curve summary is the same computation
        one = summarize(MOVES, y, lambda m, g=g, h=h: float(pnl_at(book, m, HORIZONS[h], **kw)[g]))
        assert len(one.breakevens) == len(s.breakevens)
        np.testing.assert_allclose(one.breakevens, s.breakevens, rtol=0, atol=2 * XTOL)
        assert (one.max_loss, one.max_profit) == (s.max_loss, s.max_profit)
    assert n_refined >= 4
    # one revaluation per Brent iteration for every bracket of every curve together
    assert 0 < len(calls) < 20 and calls[0] == n_refined
    assert calls == sorted(calls, reverse=True)


def test_summarize_curves_shapes_zeros_and_linear_fallback() -> None:
    x = [-2.0, -1.0, 0.0, 1.0, 3.0]
    y = [[-3.0, -1.0, 0.0, 2.0, -2.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0.0, -1.0, 0.0, 0.0, 1.0]]
    out = summarize_curves(x, y)
    assert [s.breakevens for s in out] == [(0.0, 2.0), (), (-2.0, 0.0, 1.0)]
    assert out[0] == summarize(x, y[0])
    with pytest.raises(ValueError, match="curves of the 5 moves"):
        summarize_curves(x, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="moves has 2 values but horizons has 1"):
        pair_scenarios([0.1, 0.2], HORIZONS[:1], spot_beta=[1.0])
    with pytest.raises(ValueError, match="non-positive price"):
        pair_scenarios([-0.9], HORIZONS[:1], spot_beta=[1.5])

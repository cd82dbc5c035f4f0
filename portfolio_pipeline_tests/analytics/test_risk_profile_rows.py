"""Profiles of a book with strategies: which curves are stored, per-strategy payoffs at the
strategy's front expiry by hand, the beta-weighted book, summary rows."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from scipy.optimize import brentq

import portfolio_pipeline.analytics.risk_profile as arp
import portfolio_pipeline.quant.risk_profile as qrp
from portfolio_pipeline.analytics.risk_profile import (
    ProfileInputs,
    StrategyLegs,
    build_profiles,
    default_moves,
    profile_markdown,
    profile_rows,
    summary_rows,
)
from portfolio_pipeline.quant.brent import BRENT_RTOL
from portfolio_pipeline.quant.risk_profile import Horizon, pnl_at
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline_tests.quant._reference import reference_greeks

DAY = date(2018, 2, 2)
S, NDX, R, Q = 2700.0, 6800.0, 0.02, 0.0
T1, T2 = 42 / 365, 70 / 365
KEYS = ("SPX P2600 T1", "SPX P2550 T1", "SPX C2700 T1", "SPX C2700 T2", "NDX P6500 T1")
VOLS = (0.2, 0.22, 0.15, 0.16, 0.21)


def _inputs() -> ProfileInputs:
    c = ContractSet.build(
        factor=[0, 0, 0, 0, 1],
        is_option=True,
        is_call=[False, False, True, True, False],
        black76=False,
        spot=[S, S, S, S, NDX],
        strike=[2600.0, 2550.0, 2700.0, 2700.0, 6500.0],
        T=[T1, T1, T1, T2, T1],
        r=R,
        q=Q,
        vol=VOLS,
    )
    units = np.array([[-100.0], [100.0], [-100.0], [100.0], [-100.0]])
    book = Book(c, units, ("all",), ("SPX", "NDX"))
    strategies = [
        StrategyLegs("demo", "A1", "s-vert", "vertical", "SPX", {KEYS[0]: -100.0, KEYS[1]: 100.0}),
        StrategyLegs("demo", "A1", "s-cal", "calendar", "SPX", {KEYS[2]: -100.0, KEYS[3]: 100.0}),
    ]
    return ProfileInputs(
        book=book,
        contract_keys=KEYS,
        beta=np.array([1.0, 1.3]),
        is_vol_factor=[False, False],
        spx=S,
        vix=17.0,
        session_horizons=[Horizon("T+0", 0.0), Horizon("T+5", 7 / 365)],
        expiry_label=lambda d: f"exp {d * 365:.0f}d",
        moves=default_moves(15, 31, [-30, -10, 0, 10]),
        revalue_kw={"skew_slope": [-1.0, -1.0], "skew_rule": "sticky_strike", "min_vol": 0.01},
        strategies=strategies,
    )


def _bsm(i: int, s: np.ndarray | float, t: float) -> np.ndarray:
    k = [2600.0, 2550.0, 2700.0, 2700.0, 6500.0][i]
    return np.asarray(reference_greeks(i in (2, 3), s, k, t, R, Q, VOLS[i])["price"])


def test_strategy_curves_at_their_front_expiry_by_hand() -> None:
    profiles = build_profiles(_inputs())
    spx = next(p for p in profiles.profiles if p.profile == "SPX")
    assert [h.label for h in spx.curves.horizons] == ["T+0", "T+5", "exp 42d", "exp 70d"]
    ids = [k[2] for k in spx.group_keys]
    assert ids == ["*", "s-vert", "s-cal"]
    stored = {(ids[g], spx.curves.horizons[h].label) for g, h in spx.stored}
    assert {
        ("s-vert", "T+0"),
        ("s-vert", "exp 42d"),
        ("s-cal", "T+0"),
        ("s-cal", "exp 42d"),
    } <= stored
    assert ("s-cal", "exp 70d") not in stored
    s = S * (1 + spx.curves.moves)
    vert = -100 * (np.maximum(2600 - s, 0) - _bsm(0, S, T1)) + 100 * (
        np.maximum(2550 - s, 0) - _bsm(1, S, T1)
    )
    cal = -100 * (np.maximum(s - 2700, 0) - _bsm(2, S, T1)) + 100 * (
        _bsm(3, s, T2 - T1) - _bsm(3, S, T2)
    )
    np.testing.assert_allclose(spx.curves.curve(2, 1), vert, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(spx.curves.curve(2, 2), cal, rtol=1e-9, atol=1e-6)
    # the calendar's hump: its best price at the front expiry is the common strike
    assert spx.summaries[(2, 2)].max_profit_move == pytest.approx(0.0, abs=0.011)
    # the underlying's total is the sum of its strategies here
    np.testing.assert_allclose(
        spx.curves.pnl[:, :, 0],
        spx.curves.pnl[:, :, 1] + spx.curves.pnl[:, :, 2],
        rtol=1e-12,
        atol=1e-9,
    )


def test_book_profile_is_beta_weighted_and_zero_today() -> None:
    profiles = build_profiles(_inputs())
    book = profiles.book()
    assert book is not None and book.driver == "SPX"
    i0 = int(np.flatnonzero(book.curves.moves == 0.0)[0])
    assert book.curves.pnl[0, i0, 0] == 0.0
    # at T+0 an SPX move m moves NDX by 1.3 m: the short NDX put alone, by hand
    i = int(np.flatnonzero(np.isclose(book.curves.moves, -0.1))[0])
    spx = next(p for p in profiles.profiles if p.profile == "SPX")
    ndx_put = -100 * (_bsm(4, NDX * (1 - 0.13), T1) - _bsm(4, NDX, T1))
    assert book.curves.pnl[0, i, 0] == pytest.approx(
        spx.curves.pnl[0, i, 0] + float(ndx_put), rel=1e-9
    )


def test_rows_and_summaries() -> None:
    profiles = build_profiles(_inputs())
    rows = profile_rows(DAY, profiles)
    summaries = summary_rows(DAY, profiles)
    n_points = len(profiles.profiles[0].curves.moves)
    assert len(rows) == n_points * sum(len(p.stored) for p in profiles.profiles)
    keys = {
        (r["profile"], r["broker"], r["account_id"], r["strategy_id"], r["horizon"], r["point"])
        for r in rows
    }
    assert len(keys) == len(rows)  # the table's primary key
    t5 = next(
        r
        for r in summaries
        if r["profile"] == "SPX" and r["strategy_id"] == "*" and r["horizon"] == "T+5"
    )
    assert t5["atm_vol"] == 0.15  # the 2700 call nearest the money, nearest expiry
    assert t5["expected_move"] == pytest.approx(S * 0.15 * np.sqrt(7 / 365))
    vert = next(r for r in summaries if r["strategy_id"] == "s-vert" and r["horizon"] == "exp 42d")
    credit = float(_bsm(0, S, T1) - _bsm(1, S, T1))
    assert vert["breakevens"] == [pytest.approx(2600 - credit, abs=1e-6)]
    assert vert["max_loss"] == pytest.approx(-100 * (50 - credit), abs=1e-6)
    assert vert["strategy_type"] == "vertical"
    md = profile_markdown(summaries)
    assert "book (beta-weighted)" in md and "s-vert" not in md


def test_breakevens_refined_per_profile_equal_per_root_brentq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every profile's breakevens are refined together (one revaluation per Brent iteration
    for all its groups and horizons) and equal scipy's brentq on one revaluation per point
    (the straightforward twin, on the very book and settings the profile used)."""
    seen: dict[tuple[str, ...], tuple[object, dict]] = {}
    refines: dict[tuple[str, ...], int] = {}
    revalues: list[tuple[str, ...]] = []
    real_pairs, real_revalue = arp.pnl_at_pairs, qrp.revalue

    def spy_pairs(book, moves, horizons, **kw):  # type: ignore[no-untyped-def]
        seen[book.factors] = (book, kw)
        refines[book.factors] = refines.get(book.factors, 0) + 1
        return real_pairs(book, moves, horizons, **kw)

    def spy_revalue(book, scenarios, **kw):  # type: ignore[no-untyped-def]
        revalues.append(book.factors)
        return real_revalue(book, scenarios, **kw)

    monkeypatch.setattr(arp, "pnl_at_pairs", spy_pairs)
    monkeypatch.setattr(qrp, "revalue", spy_revalue)
    profiles = build_profiles(_inputs())
    calls = {f: revalues.count(f) for f in set(revalues)}
    xtol, refined = 1e-7, 0
    for p in profiles.profiles:
        factors = ("SPX", "NDX") if p.profile == "*" else (p.profile,)
        most = 0
        for (g, h), s in p.summaries.items():
            x, y = p.curves.moves, p.curves.curve(h, g)
            want: list[float] = []
            for i in range(x.size):
                if y[i] == 0.0:
                    want.append(float(x[i]))
                elif i + 1 < x.size and y[i] * y[i + 1] < 0.0:
                    book, kw = seen[factors]
                    hz = p.curves.horizons[h]
                    root, r = brentq(
                        lambda m, book=book, kw=kw, hz=hz, g=g: float(pnl_at(book, m, hz, **kw)[g]),
                        float(x[i]),
                        float(x[i + 1]),
                        xtol=xtol,
                        full_output=True,
                    )
                    want.append(float(root))
                    most = max(most, r.iterations)
                    refined += 1
            assert len(s.breakevens) == len(want), (p.profile, g, h)
            for got, w in zip(s.breakevens, want, strict=True):
                assert abs(got - w) <= 2 * (xtol + BRENT_RTOL * abs(w)), (p.profile, g, h)
        # the grid, then one revaluation per iteration (the ends are the grid's values)
        # (scipy's count of iterations: the batch needs at most as many for the profile)
        assert calls[factors] == 1 + refines.get(factors, 0), p.profile
        assert refines.get(factors, 0) <= most, p.profile
    assert refined >= 6

"""The risk profile: P&L of a book against the price of its driver, at several dates.

A *profile* is the shock grid's full revaluation (:func:`~portfolio_pipeline.quant.
scenario_set.shock_grid` scenarios priced by :func:`~portfolio_pipeline.quant.revaluation.
revalue`) along one axis: a fine row of simple returns of the driver (the underlying
itself, or the SPX for the beta-weighted book: factor return = beta x move), one vol
column (ATM vol change ``d_atm``, 0 = vol held, sticky strike or sticky moneyness as the
caller's skew rule says) and a few horizons (``decay`` in years: T+0, T+n sessions, each
expiry of the book).  Nothing is priced here that the shock grid would price differently:
on a move and horizon both use, the numbers are the same.

* :func:`risk_profile`: the curves, ``pnl[h, i, g]`` for horizon ``h``, point ``i``, group
  ``g`` (P&L against today's model value, so T+0 at the current price is exactly 0);
* :func:`summarize` (one curve) and :func:`summarize_curves` (many curves of one book):
  breakevens (the sign changes between grid points, refined by Brent's method on the same
  revaluation: :func:`~portfolio_pipeline.quant.brent.brentq_batch` refines every bracket
  of the curves together, one revaluation of all open brackets' points per iteration,
  which :func:`pair_scenarios` / :func:`pnl_at_pairs` price), max profit and max loss on
  the grid;
* :func:`expiry_decays`, :func:`atm_vol`, :func:`expected_move`: the expiry horizons of a
  book, the ATM implied vol of a factor (the held option nearest the money) and the
  one-sigma move ``S sigma sqrt(t)``;
* :func:`sub_book`: the contracts of one factor as a book of their own (a per-underlying
  profile prices only that underlying's contracts).

Pure numpy/scipy, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import Float64Array, IntArray, as_float64
from portfolio_pipeline.quant.brent import brentq_batch
from portfolio_pipeline.quant.revaluation import revalue
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline.quant.scenario_set import (
    DAYS_PER_YEAR,
    GridScenarios,
    ScenarioSet,
    shock_grid,
    spot_log_returns,
)

__all__ = [
    "CurveSummary",
    "Curves",
    "Horizon",
    "atm_vol",
    "expected_move",
    "expiry_decays",
    "pair_scenarios",
    "pnl_at",
    "pnl_at_pairs",
    "profile_scenarios",
    "risk_profile",
    "spot_moves",
    "sub_book",
    "summarize",
    "summarize_curves",
]

EXPIRY_CLUSTER_YEARS = 1.0 / DAYS_PER_YEAR
"""Times to expiry within a day of each other are one expiry (AM and PM classes of a date)."""


@dataclass(frozen=True, slots=True)
class Horizon:
    """A date of the profile: a label ("T+0", "T+5", "2018-03-16") and its decay in years."""

    label: str
    decay: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.decay) or self.decay < 0:
            raise ValueError(
                f"horizon {self.label!r}: decay must be finite and >= 0, got {self.decay!r}"
            )

    @property
    def days(self) -> float:
        """Calendar days of decay (the shock grid's ``horizon_days`` unit)."""
        return self.decay * DAYS_PER_YEAR


@dataclass(frozen=True, slots=True)
class Curves:
    """P&L curves: ``pnl[h, i, g]`` at horizon ``h``, driver move ``moves[i]``, group ``g``."""

    moves: Float64Array
    horizons: tuple[Horizon, ...]
    groups: tuple[str, ...]
    pnl: Float64Array

    def curve(self, horizon: int, group: int) -> Float64Array:
        out: Float64Array = self.pnl[horizon, :, group]
        return out


@dataclass(frozen=True, slots=True)
class CurveSummary:
    """Breakevens (driver moves), max profit and max loss (P&L) on one curve's grid."""

    breakevens: tuple[float, ...]
    max_profit: float
    max_profit_move: float
    max_loss: float
    max_loss_move: float


def spot_moves(low: float, high: float, n: int, include: Sequence[float] = ()) -> Float64Array:
    """``n`` evenly spaced simple returns from ``low`` to ``high``, plus ``include`` (e.g. the
    shock grid's own spot shocks, so the two share points), sorted and without duplicates;
    0 is always a point."""
    if not (-1.0 < low < 0.0 < high) or not math.isfinite(high) or n < 3:
        raise ValueError(f"spot moves need -1 < low < 0 < high and n >= 3, got {low}, {high}, {n}")
    pts = np.concatenate(
        [np.linspace(low, high, n), np.asarray(list(include), dtype=np.float64), [0.0]]
    )
    out: Float64Array = np.unique(np.round(pts, 12))
    if np.any(out <= -1.0):
        raise ValueError("a spot move of -100% or less gives a non-positive price")
    return out


def profile_scenarios(
    moves: npt.ArrayLike,
    horizons: Sequence[Horizon],
    *,
    spot_beta: npt.ArrayLike,
    d_atm: npt.ArrayLike = 0.0,
    extra_log_ret: npt.ArrayLike = 0.0,
) -> GridScenarios:
    """The shock grid (one vol column) of a profile: every move x every horizon.

    ``spot_beta`` per factor: factor simple return = beta x move (a one-hot vector for the
    profile of one underlying, the configured betas for the beta-weighted book);
    ``d_atm`` and ``extra_log_ret``: the vol column, as :func:`shock_grid` takes it.
    """
    beta = as_float64(spot_beta, "spot_beta", 1)
    return shock_grid(
        list(as_float64(moves, "moves", 1)),
        [
            (
                "profile",
                d_atm,
                np.broadcast_to(as_float64(extra_log_ret, "extra_log_ret"), beta.shape),
            )
        ],
        [h.days for h in horizons],
        spot_beta=beta,
    )


def risk_profile(
    book: Book,
    moves: npt.ArrayLike,
    horizons: Sequence[Horizon],
    *,
    spot_beta: npt.ArrayLike,
    d_atm: npt.ArrayLike = 0.0,
    extra_log_ret: npt.ArrayLike = 0.0,
    **revalue_kw: Any,
) -> Curves:
    """Full-revaluation P&L of every group of ``book`` along the driver's moves.

    Parameters
    ----------
    book : Book
        Contracts and units per group (e.g. the underlying's total and its strategies).
    moves : array_like, shape (n_points,)
        Simple returns of the driver (-0.1 = the driver 10 % lower).
    horizons : sequence of Horizon
        Dates of the curves (``decay`` years of time passing).
    spot_beta : array_like, shape (n_factors,)
        Factor simple return per unit of driver move.
    d_atm : array_like, shape (n_factors,) or scalar
        ATM implied vol change (decimal) applied at every point (0: vol held).
    extra_log_ret : array_like, shape (n_factors,) or scalar
        Log return the vol column itself implies per factor (a volatility-index
        underlying moving with the vol shift, as in the shock grid).
    **revalue_kw
        ``skew_slope``, ``skew_rule``, ``min_vol``, ``american_method``,
        ``american_steps``, ``vol_beta`` of :func:`~portfolio_pipeline.quant.revaluation.revalue`
        (pass the shock grid's, so both agree on shared points).

    Returns
    -------
    Curves
        ``pnl[h, i, g]``; at ``decay = 0`` and ``move = 0`` every group's P&L is exactly 0.
    """
    if not horizons:
        raise ValueError("a risk profile needs at least one horizon")
    grid = profile_scenarios(
        moves, horizons, spot_beta=spot_beta, d_atm=d_atm, extra_log_ret=extra_log_ret
    )
    flat = revalue(book, grid.scenarios, **revalue_kw)
    ns, nh = len(grid.spot_shocks), len(horizons)
    cube = np.ascontiguousarray(flat.reshape(ns, nh, len(book.groups)).transpose(1, 0, 2))
    return Curves(grid.spot_shocks.copy(), tuple(horizons), book.groups, cube)


def pnl_at(
    book: Book,
    move: float,
    horizon: Horizon,
    *,
    spot_beta: npt.ArrayLike,
    d_atm: npt.ArrayLike = 0.0,
    extra_log_ret: npt.ArrayLike = 0.0,
    **revalue_kw: Any,
) -> Float64Array:
    """P&L of every group at one move and horizon (the same revaluation as :func:`risk_profile`)."""
    out: Float64Array = risk_profile(
        book,
        [move],
        [horizon],
        spot_beta=spot_beta,
        d_atm=d_atm,
        extra_log_ret=extra_log_ret,
        **revalue_kw,
    ).pnl[0, 0]
    return out


def pair_scenarios(
    moves: npt.ArrayLike,
    horizons: Sequence[Horizon],
    *,
    spot_beta: npt.ArrayLike,
    d_atm: npt.ArrayLike = 0.0,
    extra_log_ret: npt.ArrayLike = 0.0,
) -> ScenarioSet:
    """One scenario per ``(moves[k], horizons[k])`` pair (not every move x every horizon).

    The arithmetic is :func:`profile_scenarios`' (that is :func:`shock_grid`'s), operation
    for operation: ``log(1 + beta x move)`` (:func:`~portfolio_pipeline.quant.scenario_set.
    spot_log_returns`, shared with the grid) ``+ extra_log_ret``, ``d_atm`` broadcast to the
    factors, ``decay = days / DAYS_PER_YEAR`` with ``days = horizon.days``; so a pair that
    is a point of the profile's grid is the grid's scenario bit for bit, and
    :func:`pnl_at_pairs` prices what :func:`risk_profile` prices there.
    """
    beta = as_float64(spot_beta, "spot_beta", 1)
    m = as_float64(moves, "moves", 1)
    if len(horizons) != m.size:
        raise ValueError(f"moves has {m.size} values but horizons has {len(horizons)}")
    nf = beta.shape[0]
    extra = np.broadcast_to(as_float64(extra_log_ret, "extra_log_ret"), (nf,))
    datm = np.broadcast_to(as_float64(d_atm, "d_atm"), (nf,))
    lr = spot_log_returns(m, beta) + extra[None, :]
    days = as_float64([h.days for h in horizons], "horizons_days", 1)
    return ScenarioSet.build(lr, np.broadcast_to(datm[None, :], lr.shape), days / DAYS_PER_YEAR)


def pnl_at_pairs(
    book: Book,
    moves: npt.ArrayLike,
    horizons: Sequence[Horizon],
    *,
    spot_beta: npt.ArrayLike,
    d_atm: npt.ArrayLike = 0.0,
    extra_log_ret: npt.ArrayLike = 0.0,
    **revalue_kw: Any,
) -> Float64Array:
    """P&L of every group at each ``(moves[k], horizons[k])`` pair, shape ``(n_pairs,
    n_groups)``: one :func:`revalue` call for all pairs (:func:`pair_scenarios`)."""
    sc = pair_scenarios(
        moves, horizons, spot_beta=spot_beta, d_atm=d_atm, extra_log_ret=extra_log_ret
    )
    out: Float64Array = revalue(book, sc, **revalue_kw)
    return out


CurvesRefiner = Callable[[Float64Array, IntArray], npt.ArrayLike]
"""``refine(moves, curves)``: the P&L of curve ``curves[k]`` at ``moves[k]``, for every ``k``
(one revaluation of all the points)."""


def summarize_curves(
    moves: npt.ArrayLike,
    pnl: npt.ArrayLike,
    refine: CurvesRefiner | None = None,
    *,
    xtol: float = 1e-7,
) -> list[CurveSummary]:
    """Breakevens, max profit and max loss of each curve ``pnl[k]`` on the axis ``moves``.

    A breakeven is a grid point with P&L exactly 0 or a root between two neighbouring
    points of opposite sign: found by Brent's method on ``refine`` (the curves' own
    revaluation at any move, e.g. :func:`pnl_at_pairs`) when given, else by linear
    interpolation.  With ``refine``, every bracket of every curve is refined together by
    :func:`~portfolio_pipeline.quant.brent.brentq_batch` (scipy's ``brentq``, absolute
    tolerance ``xtol`` in move units, ``rtol`` 4 eps), so ``refine`` is called once per
    Brent iteration with the points of all brackets still open; the grid's own values are
    ``f(a)`` and ``f(b)`` of each bracket.  Max profit and loss are the largest and
    smallest P&L on the grid (within the range).
    """
    x = as_float64(moves, "moves", 1)
    y = as_float64(pnl, "pnl", 2)
    if y.shape[1:] != x.shape or x.size < 2:
        raise ValueError(f"pnl {y.shape} must be curves of the {x.size} moves, at least 2 points")
    # per curve, in axis order: (move, -1) for a grid zero, (nan, j) for bracket j
    entries: list[list[tuple[float, int]]] = [[] for _ in range(y.shape[0])]
    lo: list[int] = []
    owner: list[int] = []
    for k, yk in enumerate(y):
        for i in range(x.size):
            if yk[i] == 0.0:
                entries[k].append((float(x[i]), -1))
            elif i + 1 < x.size and yk[i] * yk[i + 1] < 0.0:
                entries[k].append((math.nan, len(lo)))
                lo.append(i)
                owner.append(k)
    i0 = np.asarray(lo, dtype=np.intp)
    k0 = np.asarray(owner, dtype=np.intp)
    a, b = x[i0], x[i0 + 1]
    fa, fb = y[k0, i0], y[k0, i0 + 1]
    if refine is None:
        found = a + (b - a) * (fa / (fa - fb))
    elif i0.size:
        ref = refine

        def f(pts: Float64Array, which: IntArray) -> npt.ArrayLike:
            return ref(pts, k0[which])

        found = brentq_batch(f, a, b, fa, fb, xtol=xtol).roots
    else:
        found = np.zeros(0)
    out = []
    for k, yk in enumerate(y):
        roots = tuple(v if j < 0 else float(found[j]) for v, j in entries[k])
        hi, lo_i = int(np.argmax(yk)), int(np.argmin(yk))
        out.append(
            CurveSummary(roots, float(yk[hi]), float(x[hi]), float(yk[lo_i]), float(x[lo_i]))
        )
    return out


def summarize(
    moves: npt.ArrayLike,
    pnl: npt.ArrayLike,
    refine: Callable[[float], float] | None = None,
    *,
    xtol: float = 1e-7,
) -> CurveSummary:
    """Breakevens, max profit and max loss of one curve (:func:`summarize_curves`).

    ``refine`` is the curve's own revaluation at one move (e.g. :func:`pnl_at`), called
    once per Brent iteration and bracket; without it the roots are linear interpolations.
    """
    y = as_float64(pnl, "pnl", 1)
    batch: CurvesRefiner | None = None
    if refine is not None:
        one = refine

        def batch(pts: Float64Array, curves: IntArray) -> npt.ArrayLike:
            return [one(float(p)) for p in pts]

    return summarize_curves(moves, y[None, :], batch, xtol=xtol)[0]


def expiry_decays(contracts: ContractSet, factor: int | None = None) -> list[float]:
    """One decay per expiry of the book's options (of ``factor`` only when given): the
    largest time to expiry of each cluster of times within a day (AM and PM classes of
    one date), so every contract of that expiry is expired at its horizon."""
    sel = contracts.is_option & (contracts.T > 0)
    if factor is not None:
        sel &= contracts.factor == factor
    ts = np.sort(contracts.T[sel])
    out: list[float] = []
    start = -math.inf
    for t in ts:
        if t - start > EXPIRY_CLUSTER_YEARS:
            start = float(t)
            out.append(float(t))
        else:
            out[-1] = float(t)
    return out


def atm_vol(contracts: ContractSet, factor: int) -> float | None:
    """Implied vol of the factor's held option nearest the money (smallest ``|ln K/S|``,
    then the nearest expiry); None when it holds no live option."""
    sel = np.flatnonzero(
        contracts.is_option & (contracts.factor == factor) & (contracts.T > 0) & (contracts.vol > 0)
    )
    if sel.size == 0:
        return None
    m = np.abs(np.log(contracts.strike[sel] / contracts.spot[sel]))
    best = sel[np.lexsort((contracts.T[sel], np.round(m, 12)))[0]]
    return float(contracts.vol[best])


def expected_move(spot: float, vol: float, years: float) -> float:
    """One-sigma move of the price over ``years``: :math:`S\\,\\sigma\\sqrt{t}`."""
    if years <= 0 or vol <= 0:
        return 0.0
    return spot * vol * math.sqrt(years)


def sub_book(
    book: Book, contracts: npt.ArrayLike, units: npt.ArrayLike, groups: Sequence[str]
) -> Book:
    """The contracts ``contracts`` (indices into ``book.contracts``, all of one factor) as a
    one-factor book with ``units`` (shape ``(len(contracts), len(groups))``)."""
    idx = np.asarray(contracts, dtype=np.intp)
    c = book.contracts
    if idx.size == 0:
        raise ValueError("sub_book needs at least one contract")
    f = np.unique(c.factor[idx])
    if f.size != 1:
        raise ValueError(f"sub_book contracts span {f.size} factors, expected 1")
    values = {fl.name: getattr(c, fl.name)[idx] for fl in fields(ContractSet)}
    values["factor"] = np.zeros(idx.size, dtype=np.intp)
    u = np.asarray(units, dtype=np.float64).reshape(idx.size, len(groups))
    return Book(
        ContractSet(**values), np.ascontiguousarray(u), tuple(groups), (book.factors[int(f[0])],)
    )

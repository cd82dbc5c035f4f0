"""Full revaluation of a book in scenarios, and its Greeks approximation.

:func:`revalue` prices every unique contract of a
:class:`~portfolio_pipeline.quant.scenario_book.Book` in every scenario of a
:class:`~portfolio_pipeline.quant.scenario_set.ScenarioSet` (``log_ret``, ``d_atm``,
``decay``; see :mod:`portfolio_pipeline.quant.scenario_set`) and returns the P&L of every
group; :func:`greeks_pnl` is its second-order Taylor approximation.  Pure numpy, no I/O.

Implied vol in a scenario
-------------------------
* the skew rule (:data:`SkewRule`) says how a contract's own implied vol moves with
  spot, given the smile slope ``b_u = d sigma / d ln(K/S)``:

  - ``"sticky_strike"``: the smile is fixed in strike, ``sigma_1 = sigma_0 + d_atm``;
  - ``"sticky_moneyness"``: the smile moves with spot, so a fixed strike slides along
    it: ``sigma_1 = sigma_0 + d_atm - b_u x`` (with a put skew ``b_u < 0`` a fixed
    strike's vol *falls* in a sell-off, the ATM vol does not move).

  Then ``sigma_1 = max(sigma_1, min_vol)``.

The Greeks approximation shown beside the full revaluation (:func:`greeks_pnl`) is the
second-order Taylor expansion with the project's Greek units (vega per vol point,
theta per calendar day):

.. math::

    \\Delta V \\approx \\delta\\,\\Delta S + \\tfrac12\\gamma\\,\\Delta S^2
      + \\nu\\,100\\,\\Delta\\sigma + \\theta\\,365\\,\\Delta t .

American-style contracts (``ContractSet.american``: equity/ETF options with
``exercise: american`` in ``config/instruments.yaml``) are revalued with
:func:`portfolio_pipeline.quant.pricing.american_price`, today's value included, so the
early-exercise premium of a deep in-the-money put in a crash is in the P&L.  The method
is a parameter (``american_method``/``american_steps`` of :func:`revalue` and
:func:`greeks_pnl`) because it is the cost of the whole engine:

* ``"lr"``: Leisen-Reimer tree with a European control variate, ~0.05 % from a fine
  finite-difference grid at 201 steps, ~100-200 us per contract and scenario (cost
  grows as ``steps**2``) -- the default, and what the shock grid and historical replay
  use (a few hundred scenarios per session);
* ``"bs2002"``: Bjerksund-Stensland (2002), ~20x faster, a lower bound up to ~0.7 %
  below the true value (it misses part of the premium) -- what Monte Carlo uses
  (10,000 scenarios per horizon per session; see ``MonteCarloConfig.american_method``);
* ``"interp_lr"``: early-exercise-premium interpolation for large scenario sets.  For
  every American contract and every distinct ``decay`` shared by at least
  :data:`~portfolio_pipeline.quant.premium_grid.INTERP_MIN_SCENARIOS` scenarios, the premium ``P = V^{LR tree} - V^{BSM}`` is
  priced with the tree on a regular ``INTERP_SPOT_NODES x INTERP_VOL_NODES`` grid of
  (log spot return, log shocked vol) spanning those scenarios (padded, with today's point
  ``(0, sigma_0)`` as a node; the :data:`~portfolio_pipeline.quant.premium_grid.INTERP_TAIL` outer quantiles of each factor's
  return and vol change are left out of the grid's box); each scenario's value is the
  *exact* European closed form plus the bilinearly interpolated premium (clipped at
  >= 0), floored at intrinsic.  Scenarios outside the box (a crash outlier) and those of
  a smaller ``decay`` group go to the tree directly.  Today's value goes
  through the same route as a ``decay = 0`` scenario (the ``decay = 0`` grid when there
  is one, else the tree), so the zero scenario's P&L stays exactly 0.  The cost per
  contract and horizon is the grid's tree prices plus a closed form per scenario, and
  the error is the interpolation's on top of the tree's (see
  ``portfolio_pipeline_tests/quant/test_scenarios.py``).

Options on futures (Black-76) and cash-settled index options are European and priced
by the closed form exactly as before (an American flag is refused for Black-76).
"""


from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import (
    Float64Array,
    ScenarioAmericanMethod,
    SkewRule,
    as_float64,
)
from portfolio_pipeline.quant.premium_grid import PremiumGrids
from portfolio_pipeline.quant.pricing import _price_grid, _run_blocks
from portfolio_pipeline.quant.pricing import american_greeks as _american_greeks
from portfolio_pipeline.quant.pricing import american_price as _american_price
from portfolio_pipeline.quant.pricing import greeks as _greeks
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline.quant.scenario_set import DAYS_PER_YEAR, ScenarioSet

__all__ = ["AMERICAN_STEPS", "CHUNK_ELEMENTS", "TodayValues", "greeks_pnl", "revalue", "today_values"]

CHUNK_ELEMENTS: Final[int] = 1 << 15
"""Scenario x contract elements priced per block (256 KiB per temporary: the block's
temporaries stay in the CPU cache, which is faster than larger blocks)."""

AMERICAN_STEPS: Final[int] = 201
"""Default Leisen-Reimer tree steps for American contracts (``american_method="lr"``)."""


def _check_american(method: str, steps: int) -> None:
    if method not in ("lr", "bs2002", "interp_lr"):
        raise ValueError(
            f"unknown American method {method!r} (expected 'lr', 'bs2002' or 'interp_lr')"
        )
    if not 1 <= steps <= 5001:
        raise ValueError(f"american_steps must be in [1, 5001], got {steps!r}")


def _values_block(
    c: ContractSet,
    sc: ScenarioSet,
    skew_slope: Float64Array,
    skew_rule: SkewRule,
    min_vol: float,
    american_method: ScenarioAmericanMethod = "lr",
    american_steps: int = AMERICAN_STEPS,
    grids: PremiumGrids | None = None,
    vol_beta: Float64Array | None = None,
) -> Float64Array:
    """Per-unit values (n_scen, n_contracts) of every contract in every scenario."""
    x = sc.log_ret[:, c.factor]
    s1 = np.exp(x)
    s1 *= c.spot
    out = s1.copy()  # linear contracts: V = S
    opt = np.flatnonzero(c.is_option)
    if opt.size == 0:
        return out
    fo = c.factor[opt]
    vol1 = sc.d_atm[:, fo] if vol_beta is None else sc.d_atm[:, fo] * vol_beta[opt]
    vol1 += c.vol[opt]
    if skew_rule == "sticky_moneyness":
        vol1 -= skew_slope[fo] * x[:, opt]
    elif skew_rule != "sticky_strike":
        raise ValueError(f"unknown skew rule {skew_rule!r} (sticky_strike or sticky_moneyness)")
    np.maximum(vol1, min_vol, out=vol1)
    t1 = c.T[opt] - sc.decay[:, None]
    np.maximum(t1, 0.0, out=t1)
    so = s1[:, opt]
    am = c.american[opt]
    sel = np.flatnonzero(~am)
    if sel.size:
        idx = opt[sel]
        # one decay for the whole block (Monte Carlo, a grid column): the time terms are
        # per contract; the values are those of pricing.price bit for bit either way
        te = t1[0, sel] if sc.decay.min() == sc.decay.max() else t1[:, sel]
        with np.errstate(all="ignore"):
            out[:, idx] = _price_grid(
                c.is_call[idx], so[:, sel], c.strike[idx], te, c.r[idx], c.q[idx],
                vol1[:, sel], c.black76[idx],
            )
    sel = np.flatnonzero(am)
    if sel.size and american_method == "interp_lr":
        if grids is None:
            raise ValueError("american_method 'interp_lr' needs the premium grids")
        idx = opt[sel]
        out[:, idx] = grids.values(
            c, sc.decay, x[:, idx], so[:, sel], t1[:, sel], vol1[:, sel]
        )
    elif sel.size:
        idx = opt[sel]
        out[:, idx] = _american_price(
            c.is_call[idx],
            so[:, sel],
            c.strike[idx],
            t1[:, sel],
            c.r[idx],
            c.q[idx],
            vol1[:, sel],
            method="bs2002" if american_method == "bs2002" else "lr",
            steps=american_steps,
        )
    return out


def revalue(
    book: Book,
    scenarios: ScenarioSet,
    *,
    skew_slope: npt.ArrayLike = 0.0,
    skew_rule: SkewRule = "sticky_strike",
    min_vol: float = 0.01,
    chunk_elements: int = CHUNK_ELEMENTS,
    american_method: ScenarioAmericanMethod = "lr",
    american_steps: int = AMERICAN_STEPS,
    vol_beta: npt.ArrayLike | None = None,
    today: TodayValues | None = None,
) -> Float64Array:
    """Full-revaluation P&L of every group in every scenario.

    ``vol_beta`` (shape ``(n_contracts,)``, optional): each option takes ``vol_beta``
    times its factor's ``d_atm`` (:mod:`portfolio_pipeline.quant.vol_beta`; historical
    replay); not with ``american_method="interp_lr"``.

    Parameters
    ----------
    book : Book
        Unique contracts and position units per group.
    scenarios : ScenarioSet
        Factor log returns, ATM vol changes and time decay (see the module docstring).
    skew_slope : array_like, shape (n_factors,) or scalar
        Smile slope ``d sigma / d ln(K/S)`` per factor (used by ``sticky_moneyness``).
    skew_rule : {"sticky_strike", "sticky_moneyness"}
        How a fixed strike's implied vol moves with spot.
    min_vol : float
        Floor of shocked implied vols (decimal).
    chunk_elements : int
        Scenario x contract elements priced at once; memory is
        ``O(chunk_elements + n_scenarios x n_groups)``.
    american_method : {"lr", "bs2002", "interp_lr"}
        Pricer of the American contracts (``contracts.american``), today's value and
        every scenario alike: ``"lr"`` the Leisen-Reimer tree (accurate, ~100-200 us per
        contract and scenario at 201 steps), ``"bs2002"`` Bjerksund-Stensland 2002
        (~20x faster, up to ~0.7 % low), ``"interp_lr"`` the tree's early-exercise
        premium interpolated on a (log spot, vol) grid per contract and ``decay`` and
        added to the exact European value (for large scenario sets; smaller ``decay``
        groups go to the tree).  See the module docstring.  European contracts are
        priced by the closed form whatever this says.
    american_steps : int
        Tree steps for ``"lr"`` and ``"interp_lr"`` (cost grows as ``steps**2``).
    today : TodayValues, optional
        Today's values of ``book`` from :func:`today_values` with these same pricing
        arguments, for a caller that revalues one book in many scenario sets (a Brent
        search, the horizons of a simulation): the same P&L, bit for bit, without pricing
        today again.  Refused (``ValueError``) when made for another book or other
        arguments; ignored when the scenarios have a ``decay = 0`` premium grid (today's
        value then comes from that grid, as without it).

    Returns
    -------
    numpy.ndarray, shape (n_scenarios, n_groups)
        :math:`\\mathrm{PnL}_{s,g} = \\sum_c (V_c(s) - V_c(0))\\,U_{c,g}` in account
        currency, where :math:`V_c(0)` is the same kernel's value in the zero scenario,
        so the zero scenario's P&L is exactly 0.

    Raises
    ------
    ValueError
        If a shocked price is not finite (e.g. a spot shock to a non-positive price)
        -- nothing is returned half-computed.
    """
    c = book.contracts
    args = _PricingArgs.of(book, skew_slope, skew_rule, min_vol, american_method, american_steps,
                           vol_beta)
    if scenarios.log_ret.shape[1] != book.n_factors:
        raise ValueError(
            f"scenarios have {scenarios.log_ret.shape[1]} factors, the book has {book.n_factors}"
        )
    if today is not None and not today.fits(book, args):
        raise ValueError("today's values were priced for another book or other pricing arguments")
    n = scenarios.size
    out = np.zeros((n, len(book.groups)), dtype=np.float64)
    if c.size == 0 or n == 0:
        return out
    slope, vb = args.slope, args.vol_beta
    grids = None
    if american_method == "interp_lr" and c.american.any():
        grids = PremiumGrids.build(c, scenarios, slope, skew_rule, min_vol, american_steps)
    am_args = (american_method, american_steps, grids, vb)
    # today's value: the same route (grid or tree) as a decay-0 scenario
    if today is not None and (grids is None or 0.0 not in grids.index):
        base = today.values
    else:
        base = _today(c, book.n_factors, args, grids)
    step = max(1, chunk_elements // max(c.size, 1))

    def block(a: int, b: int) -> None:
        vals = _values_block(c, scenarios.take(a, b), slope, skew_rule, min_vol, *am_args)
        vals -= base
        if not np.all(np.isfinite(vals)):
            bad = np.argwhere(~np.isfinite(vals))[0]
            raise ValueError(
                f"scenario {a + int(bad[0])}: contract {int(bad[1])} has a non-finite value"
            )
        np.matmul(vals, book.units, out=out[a:b])

    # blocks write disjoint rows of ``out``: on a thread pool when large (bit-identical)
    _run_blocks(n, block, chunk=step, elements=n * c.size)
    return out


@dataclass(frozen=True, slots=True)
class _PricingArgs:
    """The checked pricing arguments of :func:`revalue` (what today's value depends on)."""

    slope: Float64Array
    skew_rule: SkewRule
    min_vol: float
    american_method: ScenarioAmericanMethod
    american_steps: int
    vol_beta: Float64Array | None

    @classmethod
    def of(
        cls,
        book: Book,
        skew_slope: npt.ArrayLike,
        skew_rule: SkewRule,
        min_vol: float,
        american_method: ScenarioAmericanMethod,
        american_steps: int,
        vol_beta: npt.ArrayLike | None,
    ) -> _PricingArgs:
        slope = np.ascontiguousarray(
            np.broadcast_to(np.asarray(skew_slope, dtype=np.float64), (book.n_factors,))
        )
        if not math.isfinite(min_vol) or min_vol < 0:
            raise ValueError(f"min_vol must be finite and >= 0, got {min_vol!r}")
        _check_american(american_method, american_steps)
        vb = _vol_beta(vol_beta, book.contracts, american_method)
        return cls(slope, skew_rule, float(min_vol), american_method, american_steps, vb)

    def same(self, other: _PricingArgs) -> bool:
        vb, ovb = self.vol_beta, other.vol_beta
        return (
            (self.skew_rule, self.min_vol, self.american_method, self.american_steps)
            == (other.skew_rule, other.min_vol, other.american_method, other.american_steps)
            and self.slope.tobytes() == other.slope.tobytes()
            and (ovb is None if vb is None else ovb is not None and vb.tobytes() == ovb.tobytes())
        )


def _today(c: ContractSet, n_factors: int, args: _PricingArgs, grids: PremiumGrids | None
           ) -> Float64Array:
    """Today's per-unit values: the zero scenario through the scenarios' own route."""
    method = args.american_method
    if method == "interp_lr" and grids is None:
        # no premium grid for decay 0: the tree, exactly as PremiumGrids.values prices it
        method = "lr"
    base: Float64Array = _values_block(
        c, ScenarioSet.zero(n_factors), args.slope, args.skew_rule, args.min_vol, method,
        args.american_steps, grids, args.vol_beta,
    )[0]
    if not np.all(np.isfinite(base)):
        raise ValueError(f"today's value of contract {int(np.argmax(~np.isfinite(base)))} is not finite")
    return base


@dataclass(frozen=True, slots=True)
class TodayValues:
    """Today's per-unit value of every contract of one book under one set of pricing
    arguments (:func:`today_values`), for :func:`revalue`'s ``today``."""

    book: Book
    args: _PricingArgs
    values: Float64Array

    def fits(self, book: Book, args: _PricingArgs) -> bool:
        return self.book is book and self.args.same(args)


def today_values(
    book: Book,
    *,
    skew_slope: npt.ArrayLike = 0.0,
    skew_rule: SkewRule = "sticky_strike",
    min_vol: float = 0.01,
    american_method: ScenarioAmericanMethod = "lr",
    american_steps: int = AMERICAN_STEPS,
    vol_beta: npt.ArrayLike | None = None,
) -> TodayValues:
    """Today's values of ``book``'s contracts as :func:`revalue` prices them (same
    arguments; with ``"interp_lr"``, the tree, which is what :func:`revalue` uses unless
    its scenarios have a ``decay = 0`` grid).  Read-only.

    Raises
    ------
    ValueError
        As :func:`revalue` for bad arguments or a non-finite value today.
    """
    args = _PricingArgs.of(book, skew_slope, skew_rule, min_vol, american_method, american_steps,
                           vol_beta)
    values = _today(book.contracts, book.n_factors, args, None)
    values.flags.writeable = False
    return TodayValues(book, args, values)


def _vol_beta(vol_beta: npt.ArrayLike | None, c: ContractSet, american_method: str) -> Float64Array | None:
    if vol_beta is None:
        return None
    vb = as_float64(vol_beta, "vol_beta", 1)
    if vb.shape != (c.size,) or not np.all(np.isfinite(vb)):
        raise ValueError(f"vol_beta must be {c.size} finite values, got shape {vb.shape}")
    if american_method == "interp_lr" and c.american.any():
        raise ValueError("vol_beta is not supported with american_method 'interp_lr'")
    return vb


def greeks_pnl(
    book: Book,
    scenarios: ScenarioSet,
    *,
    skew_slope: npt.ArrayLike = 0.0,
    skew_rule: SkewRule = "sticky_strike",
    min_vol: float = 0.01,
    american_method: ScenarioAmericanMethod = "lr",
    american_steps: int = AMERICAN_STEPS,
    vol_beta: npt.ArrayLike | None = None,
) -> Float64Array:
    """Second-order Greeks approximation of :func:`revalue` (same shapes and inputs).

    Notes
    -----
    Per contract, with the Greeks of :func:`portfolio_pipeline.quant.pricing.greeks`
    at today's inputs, :math:`\\Delta S = S_0(e^x - 1)`, :math:`\\Delta\\sigma` the
    contract's vol change after the skew rule and floor, and :math:`\\Delta t` the decay
    in years:

    .. math::

        \\Delta V \\approx \\delta\\,\\Delta S + \\tfrac12\\gamma\\,\\Delta S^2
          + \\nu\\,(100\\,\\Delta\\sigma) + \\theta\\,(365\\,\\Delta t).

    American contracts use :func:`portfolio_pipeline.quant.pricing.american_greeks`
    (finite differences on the same ``american_method``/``american_steps`` pricer as
    :func:`revalue`; ``"interp_lr"`` takes them from the tree, which its grid
    interpolates), European ones the closed form.
    Linear contracts have :math:`\\Delta V = \\Delta S` exactly.  Where this differs
    from the full revaluation is where the Greeks stop describing the book (large
    moves, expiry inside the horizon, vol-of-vol).
    """
    c = book.contracts
    _check_american(american_method, american_steps)
    slope = np.broadcast_to(np.asarray(skew_slope, dtype=np.float64), (book.n_factors,))
    x = scenarios.log_ret[:, c.factor]
    ds = np.expm1(x) * c.spot
    dv = ds.copy()
    opt = np.flatnonzero(c.is_option)
    vb = _vol_beta(vol_beta, c, american_method)
    if opt.size:
        fo = c.factor[opt]
        vol1 = scenarios.d_atm[:, fo] * (1.0 if vb is None else vb[opt]) + c.vol[opt]
        if skew_rule == "sticky_moneyness":
            vol1 -= slope[fo] * x[:, opt]
        np.maximum(vol1, min_vol, out=vol1)
        dsig = vol1 - np.maximum(c.vol[opt], min_vol)
        g = np.empty((5, opt.size))
        am = c.american[opt]
        for model_b76 in (False, True):
            sel = np.flatnonzero((c.black76[opt] == model_b76) & ~am)
            if sel.size == 0:
                continue
            idx = opt[sel]
            gk = _greeks(
                c.is_call[idx],
                c.spot[idx],
                c.strike[idx],
                c.T[idx],
                c.r[idx],
                c.q[idx],
                np.maximum(c.vol[idx], min_vol),
                model="black76" if model_b76 else "bsm",
            )
            g[:, sel] = np.stack([gk.delta, gk.gamma, gk.vega, gk.theta, gk.price])
        sel = np.flatnonzero(am)
        if sel.size:
            idx = opt[sel]
            gk = _american_greeks(
                c.is_call[idx],
                c.spot[idx],
                c.strike[idx],
                c.T[idx],
                c.r[idx],
                c.q[idx],
                np.maximum(c.vol[idx], min_vol),
                method="bs2002" if american_method == "bs2002" else "lr",
                steps=american_steps,
            )
            g[:, sel] = np.stack([gk.delta, gk.gamma, gk.vega, gk.theta, gk.price])
        days = np.minimum(scenarios.decay[:, None] * DAYS_PER_YEAR, c.T[opt] * DAYS_PER_YEAR)
        dso = ds[:, opt]
        dv[:, opt] = g[0] * dso + 0.5 * g[1] * dso * dso + g[2] * (100.0 * dsig) + g[3] * days
    out: Float64Array = dv @ book.units
    return out

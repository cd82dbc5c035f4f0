"""Tail statistics of a scenario P&L sample: VaR, CVaR and contributions to it.

The tail is a fixed count of scenarios, ``k = ceil((1 - confidence) n)``
(:func:`worst_k`), ties broken by scenario index, so the CVaR equals the sum of the
groups' tail contributions.  Pure numpy, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import Float64Array, IntArray, as_float64

__all__ = [
    "scenario_var_cvar",
    "scenario_var_cvar_levels",
    "tail_contributions",
    "worst_k",
]


def worst_k(n: int, confidence: float) -> int:
    """Number of tail scenarios at ``confidence``: ``ceil((1 - confidence) n)`` (>= 1)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return max(1, math.ceil(round((1.0 - confidence) * n, 9)))


def tail_contributions(
    pnl_groups: npt.ArrayLike, confidence: float
) -> tuple[Float64Array, IntArray]:
    """Euler-style contributions of groups to expected shortfall.

    Parameters
    ----------
    pnl_groups : array_like, shape (n_scenarios, n_groups)
        Scenario P&L per group (columns sum to the portfolio P&L).
    confidence : float
        E.g. 0.99.

    Returns
    -------
    contributions : numpy.ndarray, shape (n_groups,)
        :math:`-\\frac1k\\sum_{s \\in \\mathrm{tail}} \\mathrm{PnL}_{s,g}` (a loss is
        positive), where the tail is the ``k = ceil((1-c) n)`` scenarios with the worst
        portfolio P&L; they add up to that tail's mean loss (the ES on the same ``k``
        scenarios), the Euler allocation of ES for a homogeneous risk measure.
    tail : numpy.ndarray of int
        Indices of the tail scenarios, worst first.
    """
    p = as_float64(pnl_groups, "pnl_groups", 2)
    total = p.sum(axis=1)
    tail = _worst(total, worst_k(p.shape[0], confidence))
    contrib: Float64Array = -p[tail].mean(axis=0)
    return contrib, tail


def _worst(pnl: Float64Array, k: int) -> IntArray:
    """Indices of the ``k`` smallest P&L, worst first; ties broken by scenario index:
    ``np.argsort(pnl, kind="stable")[:k]`` exactly.

    The ``k``-th smallest value ``v`` comes from a partition (linear time); the candidates
    are every scenario below ``v`` and the lowest-indexed ones equal to ``v``, in index
    order, and only those ``k`` are sorted (stable, so ties stay in index order).  A sample
    whose ``k``-th smallest value is NaN (NaN sorts last) takes the full sort.
    """
    n = pnl.size
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    if 4 * k >= n:  # most of the sample: one sort is as cheap
        return np.argsort(pnl, kind="stable")[:k].astype(np.intp)
    v = np.partition(pnl, k - 1)[k - 1]
    if np.isnan(v):
        return np.argsort(pnl, kind="stable")[:k].astype(np.intp)
    below = np.flatnonzero(pnl < v)
    ties = np.flatnonzero(pnl == v)[: k - below.size]
    cand = np.sort(np.concatenate([below, ties]))
    order: IntArray = cand[np.argsort(pnl[cand], kind="stable")].astype(np.intp)
    return order


def scenario_var_cvar(pnl: npt.ArrayLike, confidence: float) -> tuple[float, float]:
    """VaR and CVaR (positive losses) of a simulated P&L sample.

    Parameters
    ----------
    pnl : array_like, shape (n_scenarios,)
        Scenario P&L (a loss is negative).
    confidence : float
        E.g. 0.99.

    Returns
    -------
    var, cvar : float
        ``var`` is minus numpy's linearly interpolated ``(1-c)`` quantile (as
        :func:`portfolio_pipeline.quant.risk_metrics.var`); ``cvar`` is minus the mean of
        exactly the ``k = ceil((1-c) n)`` worst scenarios (:func:`worst_k`), ties at the
        boundary counted once each, so it equals the sum of :func:`tail_contributions`.

    Notes
    -----
    A tail defined as "every scenario at or below the VaR" would take in every scenario
    tied at a capped loss (defined-risk spreads) and understate the CVaR; a fixed count
    does not.
    """
    return scenario_var_cvar_levels(pnl, (confidence,))[0]


def scenario_var_cvar_levels(
    pnl: npt.ArrayLike, confidences: Sequence[float]
) -> list[tuple[float, float]]:
    """:func:`scenario_var_cvar` at several confidence levels of one sample, sorting it once
    (the stable order of the worst scenarios does not depend on the level, so every pair
    is bit-identical to a separate :func:`scenario_var_cvar` call)."""
    x = as_float64(pnl, "pnl", 1)
    ks = [worst_k(x.size, confidence) for confidence in confidences]
    order = _worst(x, max(ks, default=0))  # the stable order's worst scenarios, every level's
    out: list[tuple[float, float]] = []
    for confidence, k in zip(confidences, ks, strict=True):
        var = -float(np.quantile(x, 1.0 - confidence))
        cvar = -float(x[order[:k]].mean())
        out.append((var, cvar))
    return out


# --------------------------------------------------------------------------- configuration

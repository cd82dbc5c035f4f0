"""Greeks P&L attribution: a day's P&L split into Taylor terms of the prior-close Greeks.

Units are those of :mod:`portfolio_pipeline.quant.pricing` (see docs/ARCHITECTURE.md, Units): delta
per $1 of underlying, gamma per $1 squared, theta per calendar day, vega per vol point,
vanna = d(delta)/d(vol point), volga = d(vega)/d(vol point).  Pass per-share Greeks with
per-share P&L, or position Greeks (already scaled by quantity x multiplier in
``domain.greeks.position_greeks``) with position P&L: the expansion is linear in them.

Examples
--------
>>> import numpy as np
>>> a = attribute(dS=10.0, dsigma_points=-1.0, dt_days=1.0, delta=0.5, gamma=0.01,
...               theta=-0.2, vega=1.5, actual=4.0)
>>> float(a.delta[0]), float(a.gamma[0]), float(a.vega[0])
(5.0, 0.5, -1.5)
>>> round(float(a.unexplained[0]), 12)  # 4.0 - (5.0 + 0.5 - 0.2 - 1.5)
0.2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from portfolio_pipeline.quant._typing import BoolArray, Float64Array, FloatLike

__all__ = ["COMPONENTS", "Attribution", "attribute", "large_unexplained"]

COMPONENTS: tuple[str, ...] = ("delta", "gamma", "theta", "vega", "vanna", "volga")
"""The explained components, in the order they are summed."""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Components of a P&L (arrays of the broadcast shape, at least 1-d).

    ``explained`` is the sum of the components in :data:`COMPONENTS` order and
    ``unexplained = actual - explained``, so ``explained + unexplained == actual`` up to
    one floating-point rounding.
    """

    delta: Float64Array
    gamma: Float64Array
    theta: Float64Array
    vega: Float64Array
    vanna: Float64Array
    volga: Float64Array
    explained: Float64Array
    actual: Float64Array
    unexplained: Float64Array


def _arr(x: FloatLike) -> Float64Array:
    return np.atleast_1d(np.asarray(x, dtype=np.float64))


def attribute(
    dS: FloatLike,
    dsigma_points: FloatLike,
    dt_days: FloatLike,
    delta: FloatLike,
    gamma: FloatLike,
    theta: FloatLike,
    vega: FloatLike,
    vanna: FloatLike | None = None,
    volga: FloatLike | None = None,
    actual: FloatLike | None = None,
) -> Attribution:
    r"""Split P&L into delta, gamma, theta, vega, vanna and volga terms.

    Parameters
    ----------
    dS : array_like
        Change of the underlying (the future for futures options) over the day.
    dsigma_points : array_like
        Change of implied volatility in vol points (0.01 in decimal = 1 point).
    dt_days : array_like
        Calendar days elapsed (3 over a weekend).
    delta, gamma, theta, vega : array_like
        Greeks at the PRIOR close (per share, or per position).
    vanna, volga : array_like, optional
        Cross and second-order vol Greeks at the prior close; ``None`` leaves the term 0.
    actual : array_like, optional
        Realised P&L; ``None`` gives ``actual = explained`` (zero unexplained).

    Returns
    -------
    Attribution
        The components, their sum, ``actual`` and ``unexplained``.

    Notes
    -----
    .. math::

        \mathrm{P\&L} \approx \Delta\,dS + \tfrac12\Gamma\,dS^2 + \Theta\,dt
        + \mathcal{V}\,d\sigma + \mathrm{vanna}\,dS\,d\sigma + \tfrac12\,\mathrm{volga}\,d\sigma^2

    The residual of a full repricing against this expansion is third order in
    ``(dS, d\sigma)`` plus the second-order time terms (charm, ``dt^2``) it leaves out.
    NaN inputs propagate to the affected elements.
    """
    ds = _arr(dS)
    dv = _arr(dsigma_points)
    dt = _arr(dt_days)
    d_term = _arr(delta) * ds
    g_term = 0.5 * _arr(gamma) * ds * ds
    t_term = _arr(theta) * dt
    v_term = _arr(vega) * dv
    va_term = (_arr(vanna) if vanna is not None else np.zeros(1)) * ds * dv
    vo_term = 0.5 * (_arr(volga) if volga is not None else np.zeros(1)) * dv * dv
    terms = np.broadcast_arrays(d_term, g_term, t_term, v_term, va_term, vo_term)
    explained = terms[0] + terms[1] + terms[2] + terms[3] + terms[4] + terms[5]
    act = np.broadcast_to(_arr(actual), explained.shape) if actual is not None else explained
    d, g, t, v, va, vo = (np.array(x, dtype=np.float64) for x in terms)
    actual_out = np.array(act, dtype=np.float64)
    return Attribution(
        delta=d,
        gamma=g,
        theta=t,
        vega=v,
        vanna=va,
        volga=vo,
        explained=np.array(explained, dtype=np.float64),
        actual=actual_out,
        unexplained=np.asarray(actual_out - explained, dtype=np.float64),
    )


def large_unexplained(
    actual: FloatLike,
    unexplained: FloatLike,
    *,
    relative: float,
    absolute: float,
) -> BoolArray:
    """Days whose unexplained P&L is large: ``|u| > relative * |actual|`` and ``|u| > absolute``.

    Parameters
    ----------
    actual, unexplained : array_like
        Realised and unexplained P&L (same units).
    relative : float
        Fraction of ``|actual|`` (e.g. 0.25).
    absolute : float
        Floor in P&L units (e.g. $250), so quiet days with small noise are not flagged.

    Returns
    -------
    numpy.ndarray of bool
        ``False`` where either input is NaN.

    Examples
    --------
    >>> large_unexplained([1000.0, 1000.0], [300.0, 100.0], relative=0.25, absolute=50.0)
    array([ True, False])
    """
    a = np.abs(_arr(actual))
    u = np.abs(_arr(unexplained))
    with np.errstate(invalid="ignore"):
        flag = (u > relative * a) & (u > absolute)
    return np.asarray(flag, dtype=np.bool_)

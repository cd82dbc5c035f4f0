r"""Time-weighted daily returns of a portfolio with external cash flows.

Convention
----------
External flows (deposits +, withdrawals -, transfers) ``F_t`` are taken to arrive at
the close of session ``t``: they are in ``NLV_t`` but earned nothing that day.  Then

.. math::

    \mathrm{P\&L}_t = NLV_t - NLV_{t-1} - F_t, \qquad
    r_t = \frac{NLV_t - F_t}{NLV_{t-1}} - 1 = \frac{\mathrm{P\&L}_t}{NLV_{t-1}}

and the growth index is :math:`G_t = \prod_{s \le t} (1 + r_s)`.  A deposit therefore
changes NLV but not the return series.  Dividends, interest, fees and taxes are NOT
external flows: they are performance and stay in ``P&L``.

Examples
--------
>>> import numpy as np
>>> nlv = np.array([100.0, 110.0, 1110.0, 1221.0])   # +10 %, then a 1000 deposit, then +10 %
>>> flows = np.array([0.0, 0.0, 1000.0, 0.0])
>>> np.round(time_weighted_returns(nlv, flows), 12).tolist()
[nan, 0.1, 0.0, 0.1]
"""

from __future__ import annotations

import numpy as np

from portfolio_pipeline.quant._typing import Float64Array, FloatLike

__all__ = ["daily_pnl", "drawdown", "growth_index", "time_weighted_returns"]


def _arr(x: FloatLike) -> Float64Array:
    return np.atleast_1d(np.asarray(x, dtype=np.float64))


def _previous(nlv: Float64Array, prev_nlv: float | None) -> Float64Array:
    prev = np.empty_like(nlv)
    prev[0] = np.nan if prev_nlv is None else prev_nlv
    prev[1:] = nlv[:-1]
    return prev


def daily_pnl(nlv: FloatLike, flows: FloatLike, *, prev_nlv: float | None = None) -> Float64Array:
    """Daily P&L net of external flows: ``NLV_t - NLV_{t-1} - F_t``.

    Parameters
    ----------
    nlv : array_like
        Net liquidation value at each close.
    flows : array_like
        External flows of each session (+ in, - out), same length.
    prev_nlv : float, optional
        NLV at the close before ``nlv[0]``; None makes the first element NaN.

    Returns
    -------
    numpy.ndarray
    """
    v = _arr(nlv)
    f = np.broadcast_to(_arr(flows), v.shape)
    return np.asarray(v - _previous(v, prev_nlv) - f, dtype=np.float64)


def time_weighted_returns(
    nlv: FloatLike, flows: FloatLike, *, prev_nlv: float | None = None
) -> Float64Array:
    """Daily time-weighted returns ``(NLV_t - F_t) / NLV_{t-1} - 1``.

    Parameters
    ----------
    nlv, flows, prev_nlv
        As for :func:`daily_pnl`.

    Returns
    -------
    numpy.ndarray
        NaN where the previous NLV is unknown or not positive.
    """
    v = _arr(nlv)
    prev = _previous(v, prev_nlv)
    pnl = daily_pnl(v, flows, prev_nlv=prev_nlv)
    ok = np.isfinite(prev) & (prev > 0)
    out = np.full(v.shape, np.nan)
    np.divide(pnl, prev, out=out, where=ok)
    return out


def growth_index(returns: FloatLike, *, start: float = 1.0) -> Float64Array:
    """Chain-linked growth ``start * prod(1 + r)``; NaN returns count as 0 (no change).

    Parameters
    ----------
    returns : array_like
        Daily returns.
    start : float, default 1.0
        Index level before the first return.
    """
    r = _arr(returns)
    return np.asarray(start * np.cumprod(1.0 + np.nan_to_num(r, nan=0.0)), dtype=np.float64)


def drawdown(growth: FloatLike) -> Float64Array:
    """Drawdown from the running peak, ``G_t / max_{s<=t} G_s - 1`` (<= 0).

    Parameters
    ----------
    growth : array_like
        A positive growth index or NLV path.
    """
    g = _arr(growth)
    peak = np.maximum.accumulate(g)
    return np.asarray(g / peak - 1.0, dtype=np.float64)

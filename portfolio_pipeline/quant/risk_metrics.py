"""Risk and performance metrics of a return series: VaR/CVaR (historical, Gaussian,
Cornish-Fisher, GARCH-t, filtered historical), Sharpe, Sortino, drawdown, Calmar, Omega.

Conventions
-----------
* ``returns`` is a 1-D array-like of **simple periodic returns** as fractions (0.01 = 1 %),
  oldest first, all finite.  Nothing is resampled, dropped or filled.
* ``level`` is the confidence level in (0, 1); ``alpha = 1 - level`` is the tail probability.
* VaR and CVaR are reported as **positive loss fractions** (a 2 % one-period loss is
  ``0.02``); a negative number means even the tail is a gain.
* Ratios follow QuantStats 0.0.86 (``quantstats/stats.py`` of ranaroussi/quantstats:
  ``sharpe``, ``sortino``, ``omega``, ``cagr``, ``calmar``, ``max_drawdown``) with
  ``periods`` periods a year; ``rf`` and ``threshold`` are *annual* rates, de-annualised as
  :math:`(1 + x)^{1/\\text{periods}} - 1`.  A ratio whose denominator is exactly zero
  (constant series; no loss; no drawdown) is ``nan``, as in QuantStats.
* Sample moments: ``std`` is the sample standard deviation (``ddof=1``); skewness ``S`` and
  excess kurtosis ``K`` are the biased moment ratios of ``scipy.stats.skew`` /
  ``scipy.stats.kurtosis`` defaults, :math:`S = m_3/m_2^{3/2}`, :math:`K = m_4/m_2^2 - 3`
  with :math:`m_k = \\frac1n\\sum (r_i - \\bar r)^k`.
* Every metric except the GARCH ones is computed by a row-wise kernel, so :func:`rolling`
  and the scalar functions give the same numbers.

Pure numpy/scipy; no pandas, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import norm

from portfolio_pipeline.quant._typing import Float64Array
from portfolio_pipeline.quant.vol import (
    MIN_GARCH_OBSERVATIONS,
    GarchDist,
    GarchFit,
    as_returns,
    check_level,
    fit_garch,
    std_innovation_ppf,
    std_innovation_tail_mean,
)

VarMethod: TypeAlias = Literal["historical", "parametric", "cornish_fisher"]
GarchMethod: TypeAlias = Literal["parametric", "filtered_historical"]
RollingMetric: TypeAlias = Literal[
    "var", "cvar", "sharpe", "sortino", "omega", "calmar", "max_drawdown"
]

_VAR_METHODS: tuple[str, ...] = ("historical", "parametric", "cornish_fisher")
_GARCH_METHODS: tuple[str, ...] = ("parametric", "filtered_historical")
_MAX_CHUNK_ELEMENTS = 1 << 22
"""rolling() processes at most this many window elements at a time (32 MiB of float64)."""


# --------------------------------------------------------------------------- helpers


def _check_method(method: str, allowed: tuple[str, ...]) -> str:
    if method not in allowed:
        raise ValueError(f"method must be one of {', '.join(map(repr, allowed))}, got {method!r}")
    return method


def _check_periods(periods: int) -> int:
    if isinstance(periods, bool) or not isinstance(periods, (int, np.integer)) or periods < 1:
        raise ValueError(f"periods must be a positive integer, got {periods!r}")
    return int(periods)


def _deannualise(rate: float, periods: int, name: str) -> float:
    """:math:`(1 + \\text{rate})^{1/\\text{periods}} - 1` (QuantStats' ``deannualize``)."""
    r = float(rate)
    if not math.isfinite(r) or r <= -1.0:
        raise ValueError(f"{name} must be a finite annual rate > -1, got {rate!r}")
    if periods == 1:
        return r
    return float((1.0 + r) ** (1.0 / periods) - 1.0)


def _constant_rows(x: Float64Array) -> npt.NDArray[np.bool_]:
    """Rows whose values are all equal (their moments are exactly zero)."""
    return np.asarray(np.ptp(x, axis=1) == 0.0)


def _mean_std(x: Float64Array) -> tuple[Float64Array, Float64Array]:
    """Row means and sample standard deviations (``ddof=1``), exactly 0 for constant rows."""
    mean = x.mean(axis=1)
    std = np.where(_constant_rows(x), 0.0, x.std(axis=1, ddof=1))
    return mean, std


def _skew_kurt(x: Float64Array) -> tuple[Float64Array, Float64Array]:
    """Biased skewness and excess kurtosis per row (scipy.stats defaults); 0 for constant rows.

    :math:`S = m_3 / m_2^{3/2}`, :math:`K = m_4 / m_2^2 - 3`.
    """
    const = _constant_rows(x)
    d = x - x.mean(axis=1, keepdims=True)
    # S and K are scale free: normalise by max |d| so that m2 >= 1/n cannot underflow
    scale = np.abs(d).max(axis=1, keepdims=True)
    d = d / np.where(scale == 0.0, 1.0, scale)
    d2 = d * d
    m2 = d2.mean(axis=1)
    m3 = (d2 * d).mean(axis=1)
    m4 = (d2 * d2).mean(axis=1)
    const |= m2 == 0.0
    safe_m2 = np.where(const, 1.0, m2)
    skew = np.where(const, 0.0, m3 / safe_m2**1.5)
    kurt = np.where(const, 0.0, m4 / safe_m2**2 - 3.0)
    return skew, kurt


def _cornish_fisher_z(z: float, skew: Float64Array, kurt: Float64Array) -> Float64Array:
    """:math:`z + (z^2-1)S/6 + (z^3-3z)K/24 - (2z^3-5z)S^2/36`."""
    out: Float64Array = (
        z
        + (z * z - 1.0) * skew / 6.0
        + (z**3 - 3.0 * z) * kurt / 24.0
        - (2.0 * z**3 - 5.0 * z) * skew * skew / 36.0
    )
    return out


def _ratio(num: Float64Array, den: Float64Array, undefined: npt.NDArray[np.bool_]) -> Float64Array:
    """``num / den`` with ``nan`` where ``undefined`` (no division warning is raised)."""
    safe = np.where(undefined, 1.0, den)
    return np.where(undefined, np.nan, num / safe)


# --------------------------------------------------------------------------- row kernels
# Each kernel takes a 2-D array (one return series per row, already validated) and the
# metric's keyword arguments, validates the arguments and returns one value per row.


def _var_rows(
    x: Float64Array, level: float = 0.99, method: VarMethod = "historical"
) -> Float64Array:
    alpha = 1.0 - check_level(level)
    _check_method(method, _VAR_METHODS)
    if method == "historical":
        return -np.asarray(np.quantile(x, alpha, axis=1), dtype=np.float64)
    mean, std = _mean_std(x)
    z = float(norm.ppf(alpha))
    if method == "parametric":
        return -(mean + std * z)
    skew, kurt = _skew_kurt(x)
    return -(mean + std * _cornish_fisher_z(z, skew, kurt))


def _cvar_rows(
    x: Float64Array, level: float = 0.99, method: VarMethod = "historical"
) -> Float64Array:
    alpha = 1.0 - check_level(level)
    _check_method(method, _VAR_METHODS)
    if method == "historical":
        q = np.asarray(np.quantile(x, alpha, axis=1), dtype=np.float64)
        q = np.maximum(q, x.min(axis=1))  # the minimum is always in the tail
        tail = x <= q[:, None]
        tail_sum = np.where(tail, x, 0.0).sum(axis=1)
        return np.asarray(-tail_sum / tail.sum(axis=1), dtype=np.float64)
    mean, std = _mean_std(x)
    z = float(norm.ppf(alpha))
    if method == "parametric":
        return -(mean - std * float(norm.pdf(z)) / alpha)
    skew, kurt = _skew_kurt(x)
    g = _cornish_fisher_z(z, skew, kurt)
    tail = _cornish_fisher_tail_mean(z, alpha, skew, kurt)
    return np.asarray(-(mean + std * np.minimum(tail, g)), dtype=np.float64)


def _cornish_fisher_tail_mean(
    z: float, alpha: float, skew: Float64Array, kurt: Float64Array
) -> Float64Array:
    """:math:`\\frac1\\alpha\\int_0^\\alpha z_{cf}(\\Phi^{-1}(u))\\,du` in closed form.

    With the truncated normal moments :math:`M_n = \\int_{-\\infty}^{z} x^n \\varphi(x)dx`,
    :math:`M_1 = -\\varphi(z)`, :math:`M_2 = \\alpha - z\\varphi(z)`,
    :math:`M_3 = -(z^2+2)\\varphi(z)`, the Cornish-Fisher polynomial integrates term by term.
    """
    phi = float(norm.pdf(z))
    m1 = -phi
    m2 = alpha - z * phi
    m3 = -(z * z + 2.0) * phi
    out: Float64Array = (
        m1
        + (m2 - alpha) * skew / 6.0
        + (m3 - 3.0 * m1) * kurt / 24.0
        - (2.0 * m3 - 5.0 * m1) * skew * skew / 36.0
    ) / alpha
    return out


def _sharpe_rows(x: Float64Array, rf: float = 0.0, periods: int = 252) -> Float64Array:
    p = _check_periods(periods)
    ex = x - _deannualise(rf, p, "rf")
    mean, std = _mean_std(ex)
    return _ratio(mean, std, std == 0.0) * math.sqrt(p)


def _sortino_rows(x: Float64Array, rf: float = 0.0, periods: int = 252) -> Float64Array:
    p = _check_periods(periods)
    ex = x - _deannualise(rf, p, "rf")
    neg = np.minimum(ex, 0.0)
    downside = np.sqrt((neg * neg).sum(axis=1) / ex.shape[1])
    return _ratio(ex.mean(axis=1), downside, downside == 0.0) * math.sqrt(p)


def _omega_rows(x: Float64Array, threshold: float = 0.0, periods: int = 252) -> Float64Array:
    p = _check_periods(periods)
    d = x - _deannualise(threshold, p, "threshold")
    gains = np.maximum(d, 0.0).sum(axis=1)
    losses = np.maximum(-d, 0.0).sum(axis=1)
    return _ratio(gains, losses, losses == 0.0)


def _drawdown_curve(x: Float64Array) -> Float64Array:
    """``equity / running_peak - 1`` per row; equity starts at 1 before the first return."""
    equity = np.cumprod(1.0 + x, axis=1)
    peaks = np.maximum.accumulate(np.maximum(equity, 1.0), axis=1)
    dd: Float64Array = equity / peaks - 1.0
    return dd


def _max_drawdown_rows(x: Float64Array) -> Float64Array:
    return np.asarray(np.minimum(_drawdown_curve(x).min(axis=1), 0.0), dtype=np.float64)


def _cagr_rows(x: Float64Array, periods: int) -> Float64Array:
    wealth = np.prod(1.0 + x, axis=1)
    negative = wealth < 0.0
    base = np.where(negative, 0.0, wealth)
    return np.where(negative, np.nan, base ** (periods / x.shape[1]) - 1.0)


def _calmar_rows(x: Float64Array, periods: int = 252) -> Float64Array:
    p = _check_periods(periods)
    mdd = _max_drawdown_rows(x)
    return _ratio(_cagr_rows(x, p), np.abs(mdd), mdd == 0.0)


def _max_drawdown_metric_rows(x: Float64Array) -> Float64Array:
    return _max_drawdown_rows(x)


# --------------------------------------------------------------------------- public API


def var(returns: npt.ArrayLike, level: float = 0.99, method: VarMethod = "historical") -> float:
    """One-period Value at Risk as a positive loss fraction.

    With :math:`\\alpha = 1 - \\text{level}`, :math:`\\bar r` the mean and :math:`s` the
    sample standard deviation (``ddof=1``):

    * ``"historical"``: :math:`-Q_\\alpha(r)`, the empirical quantile with numpy's default
      linear interpolation (``-np.quantile(r, alpha)``; equals empyrical's
      ``value_at_risk(r, cutoff=alpha)`` up to sign).
    * ``"parametric"`` (Gaussian): :math:`-(\\bar r + s\\,z)`, :math:`z = \\Phi^{-1}(\\alpha)`
      (QuantStats' ``value_at_risk`` up to sign).
    * ``"cornish_fisher"`` (modified VaR, Favre & Galeano 2002; Zangari 1996):
      :math:`-(\\bar r + s\\,z_{cf})` with

      .. math::

          z_{cf} = z + \\frac{(z^2-1)S}{6} + \\frac{(z^3-3z)K}{24} - \\frac{(2z^3-5z)S^2}{36},

      ``S``/``K`` the biased skewness / excess kurtosis (scipy defaults).  Note
      PerformanceAnalytics' ``VaR(method="modified")`` scales by :math:`\\sqrt{m_2}`
      (``ddof=0``) instead of ``s``; the two differ by :math:`\\sqrt{n/(n-1)}`.

    A constant series has ``s = 0`` and ``S = K = 0``, so every method gives ``-r[0]``.

    Parameters
    ----------
    returns : array_like
        1-D simple periodic returns, at least 2, all finite.
    level : float
        Confidence level in (0, 1), e.g. 0.99.
    method : {"historical", "parametric", "cornish_fisher"}

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Invalid ``returns``, ``level`` or ``method``.
    """
    x = as_returns(returns, "returns", 2)
    return float(_var_rows(x[None, :], level, method)[0])


def cvar(returns: npt.ArrayLike, level: float = 0.99, method: VarMethod = "historical") -> float:
    """One-period Conditional VaR (expected shortfall) as a positive loss fraction.

    * ``"historical"``: minus the mean of the returns at or below the historical VaR
      threshold, :math:`-\\operatorname{mean}\\{r_i : r_i \\le Q_\\alpha(r)\\}` (QuantStats'
      ``cvar(method="historical")``; empyrical's ``conditional_value_at_risk`` agrees
      except when ties straddle the quantile).
    * ``"parametric"`` (Gaussian): :math:`-(\\bar r - s\\,\\varphi(z)/\\alpha)`,
      :math:`z = \\Phi^{-1}(\\alpha)` (QuantStats' ``cvar(method="parametric")``).
    * ``"cornish_fisher"``: the mean of the Cornish-Fisher quantile over the tail, i.e. the
      Cornish-Fisher VaR of :func:`var` integrated over all levels beyond ``alpha``:

      .. math::

          \\text{CVaR}_{cf} = -\\Big(\\bar r + s\\,\\min\\Big(\\frac1\\alpha\\int_0^\\alpha
              z_{cf}(\\Phi^{-1}(u))\\,du,\\ z_{cf}(\\Phi^{-1}(\\alpha))\\Big)\\Big),

      evaluated in closed form with the truncated normal moments (see
      ``_cornish_fisher_tail_mean``).  The ``min`` keeps CVaR >= VaR where the expansion is
      not monotone in the tail (extreme ``S``/``K``; there the CVaR equals the VaR).  With
      ``S = K = 0`` it is exactly the Gaussian ES.  As for :func:`var`, the scale is ``s``
      (``ddof=1``).  (The Boudt-Peterson-Croux "modified ES" used before collapsed to the
      VaR through its operational floor on most real return series.)

    Parameters and errors are as for :func:`var`.
    """
    x = as_returns(returns, "returns", 2)
    return float(_cvar_rows(x[None, :], level, method)[0])


def _garch_state(
    returns: npt.ArrayLike | None,
    level: float,
    horizon: int,
    dist: GarchDist,
    method: GarchMethod,
    fit: GarchFit | None,
) -> tuple[GarchFit, float, float, float]:
    """(fit, alpha, mean of the h-period return, sigma of the h-period return)."""
    alpha = 1.0 - check_level(level)
    _check_method(method, _GARCH_METHODS)
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
    if fit is None:
        if returns is None:
            raise ValueError("returns is required when no fit is given")
        fit = fit_garch(returns, dist=dist)
    h = int(horizon)
    sigma_h = math.sqrt(float(fit.forecast(h).sum()))
    return fit, alpha, h * fit.mu, sigma_h


def garch_var(
    returns: npt.ArrayLike | None,
    level: float = 0.99,
    horizon: int = 1,
    dist: GarchDist = "t",
    method: GarchMethod = "parametric",
    *,
    fit: GarchFit | None = None,
) -> float:
    """VaR of the next ``horizon`` periods from a GARCH(1,1) fit (positive loss fraction).

    The model is fitted with :func:`portfolio_pipeline.quant.vol.fit_garch` (arch,
    constant mean, Student-t or normal innovations, returns scaled by 100).  The
    ``h``-period return :math:`R_h = \\sum_{k=1}^h r_{T+k}` is given mean :math:`h\\mu` and
    variance :math:`\\sigma_h^2 = \\sum_{k=1}^h \\sigma^2_{T+k}` (the model's analytic
    variance forecasts summed; the GARCH innovations are uncorrelated), so

    .. math::

        \\text{VaR} = -\\big(h\\mu + \\sigma_h\\, q_\\alpha\\big).

    * ``method="parametric"``: :math:`q_\\alpha` is the quantile of the unit-variance
      innovation, :math:`t_\\nu^{-1}(\\alpha)\\sqrt{(\\nu-2)/\\nu}` (standardised t) or
      :math:`\\Phi^{-1}(\\alpha)`.  For ``h > 1`` this treats :math:`R_h/\\sigma_h` as having
      the one-step innovation law, an approximation (a sum of t variables is not t; the
      true ``h``-step law has thinner tails): use :meth:`GarchFit.simulate` for an exact
      Monte Carlo answer.
    * ``method="filtered_historical"`` (Barone-Adesi, Giannopoulos & Vosper 1999; Hull &
      White 1998): :math:`q_\\alpha` is the empirical quantile (numpy linear interpolation)
      of the fitted standardised residuals :math:`\\hat\\varepsilon_t/\\hat\\sigma_t`, times the
      same :math:`\\sigma_h` (square-root-of-summed-variance scaling for ``h > 1``).

    Parameters
    ----------
    returns : array_like or None
        1-D simple periodic returns, >= 250 finite values.  Ignored (may be ``None``) when
        ``fit`` is given.
    level : float
        Confidence level in (0, 1).
    horizon : int
        Number of periods ``h >= 1``.
    dist : {"t", "normal"}
        Innovation distribution of the fit.
    method : {"parametric", "filtered_historical"}
    fit : GarchFit, optional
        A fit to reuse (e.g. for both :func:`garch_var` and :func:`garch_cvar`).

    Raises
    ------
    ValueError
        Invalid arguments or returns; :class:`~portfolio_pipeline.quant.vol.GarchFitError`
        when the fit fails.
    """
    fit, alpha, mean_h, sigma_h = _garch_state(returns, level, horizon, dist, method, fit)
    if method == "filtered_historical":
        q = float(np.quantile(fit.std_resid, alpha))
    else:
        q = std_innovation_ppf(alpha, fit.nu)
    return -(mean_h + sigma_h * q)


def garch_cvar(
    returns: npt.ArrayLike | None,
    level: float = 0.99,
    horizon: int = 1,
    dist: GarchDist = "t",
    method: GarchMethod = "parametric",
    *,
    fit: GarchFit | None = None,
) -> float:
    """Expected shortfall of the next ``horizon`` periods from a GARCH(1,1) fit.

    Same set-up as :func:`garch_var`; :math:`\\text{CVaR} = -(h\\mu + \\sigma_h\\, e_\\alpha)`
    with :math:`e_\\alpha = E[z \\mid z \\le q_\\alpha]`:

    * ``"parametric"``, standardised t (McNeil, Frey & Embrechts 2015, Ex. 2.15), with
      :math:`q = t_\\nu^{-1}(\\alpha)` and :math:`f_\\nu` the t density:

      .. math::

          e_\\alpha = -\\sqrt{\\frac{\\nu-2}{\\nu}}\\;\\frac{\\nu + q^2}{\\nu - 1}\\;
          \\frac{f_\\nu(q)}{\\alpha};

      normal: :math:`e_\\alpha = -\\varphi(\\Phi^{-1}(\\alpha))/\\alpha`.
    * ``"filtered_historical"``: the mean of the standardised residuals at or below their
      empirical :math:`\\alpha`-quantile.

    Parameters and errors are as for :func:`garch_var`.
    """
    fit, alpha, mean_h, sigma_h = _garch_state(returns, level, horizon, dist, method, fit)
    if method == "filtered_historical":
        z = fit.std_resid
        q = max(float(np.quantile(z, alpha)), float(z.min()))
        e = float(z[z <= q].mean())
    else:
        e = std_innovation_tail_mean(alpha, fit.nu)
    return -(mean_h + sigma_h * e)


def sharpe(returns: npt.ArrayLike, rf: float = 0.0, periods: int = 252) -> float:
    """Annualised Sharpe ratio, QuantStats 0.0.86 ``stats.sharpe`` convention.

    .. math::

        r^{ex}_i = r_i - r_f^{(p)},\\quad r_f^{(p)} = (1 + r_f)^{1/\\text{periods}} - 1,
        \\qquad \\text{Sharpe} = \\frac{\\overline{r^{ex}}}{s(r^{ex})}\\sqrt{\\text{periods}},

    :math:`s` with ``ddof=1``.  ``rf`` is an annual rate (QuantStats de-annualises only a
    *positive* ``rf``; here any ``rf > -1`` is).  ``nan`` for a constant series.

    Parameters
    ----------
    returns : array_like
        1-D simple periodic returns, at least 2.
    rf : float
        Annual risk-free rate.
    periods : int
        Periods per year (252 daily, 52 weekly, 12 monthly).
    """
    x = as_returns(returns, "returns", 2)
    return float(_sharpe_rows(x[None, :], rf, periods)[0])


def sortino(returns: npt.ArrayLike, rf: float = 0.0, periods: int = 252) -> float:
    """Annualised Sortino ratio, QuantStats 0.0.86 ``stats.sortino`` convention.

    Red Rock Capital's "Sortino: A Sharper Ratio": the downside deviation averages the
    squared negative excess returns over **all** ``n`` observations,

    .. math::

        DD = \\sqrt{\\frac1n\\sum_{i} \\min(r^{ex}_i, 0)^2}, \\qquad
        \\text{Sortino} = \\frac{\\overline{r^{ex}}}{DD}\\sqrt{\\text{periods}},

    with :math:`r^{ex}` as in :func:`sharpe`.  ``nan`` when no excess return is negative.
    """
    x = as_returns(returns, "returns", 2)
    return float(_sortino_rows(x[None, :], rf, periods)[0])


def omega(returns: npt.ArrayLike, threshold: float = 0.0, periods: int = 252) -> float:
    """Omega ratio (Keating & Shadwick 2002), QuantStats 0.0.86 ``stats.omega`` convention.

    .. math::

        \\tau = (1 + \\text{threshold})^{1/\\text{periods}} - 1
        \\ (\\tau = \\text{threshold if periods} = 1),\\qquad
        \\Omega = \\frac{\\sum_i \\max(r_i - \\tau, 0)}{\\sum_i \\max(\\tau - r_i, 0)}.

    ``threshold`` is an annual required return (> -1); ``nan`` when no return is below
    :math:`\\tau`.
    """
    x = as_returns(returns, "returns", 2)
    return float(_omega_rows(x[None, :], threshold, periods)[0])


@dataclass(frozen=True)
class Drawdown:
    """Maximum drawdown of an equity curve built from returns.

    The equity curve is :math:`E_0 = 1` (before the first return) and
    :math:`E_i = \\prod_{j \\le i}(1 + r_j)`; the drawdown at ``i`` is
    :math:`E_i / \\max_{k \\le i} E_k - 1` with the running maximum including :math:`E_0`,
    so a loss in the very first period counts (QuantStats' phantom baseline).  Indices are
    positions in ``returns``.

    Attributes
    ----------
    max_drawdown : float
        Most negative drawdown, a fraction <= 0 (``0.0`` if the equity never fell).
    start : int or None
        First period of the max-drawdown episode (the first below the prior peak; the
        peak is at the close of ``start - 1``, or the initial capital if ``start == 0``).
    trough : int or None
        Period at whose close the maximum drawdown is reached (first such if tied).
    recovery : int or None
        First period after the trough whose close is back at or above the prior peak;
        ``None`` if not recovered by the end of the series.
    duration : int
        Length in periods of the **max-drawdown** episode: ``recovery - start`` (periods
        spent below the peak), or ``len(returns) - start`` if not recovered.  0 if none.
    longest_duration : int
        Length of the **longest** under-water episode anywhere in the series (counted the
        same way; may belong to a shallower drawdown).
    """

    max_drawdown: float
    start: int | None
    trough: int | None
    recovery: int | None
    duration: int
    longest_duration: int


def max_drawdown(returns: npt.ArrayLike) -> Drawdown:
    """Maximum drawdown, its dates and durations (see :class:`Drawdown`).

    ``max_drawdown`` equals QuantStats 0.0.86 ``stats.max_drawdown(returns)`` and
    empyrical's ``max_drawdown``.
    """
    x = as_returns(returns, "returns", 1)
    dd = _drawdown_curve(x[None, :])[0]
    under = dd < 0.0
    # under-water runs: starts where under turns on, ends where it turns off
    edges = np.diff(np.concatenate(([False], under, [False])).astype(np.int8))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)  # exclusive: first index back at a peak (or n)
    longest = int((run_ends - run_starts).max()) if run_starts.size else 0
    if not under.any():
        return Drawdown(0.0, None, None, None, 0, longest)
    trough = int(np.argmin(dd))
    k = int(np.searchsorted(run_starts, trough, side="right")) - 1
    start, end = int(run_starts[k]), int(run_ends[k])
    recovery = end if end < x.size else None
    return Drawdown(float(dd[trough]), start, trough, recovery, end - start, longest)


def calmar(returns: npt.ArrayLike, periods: int = 252) -> float:
    """Calmar ratio, QuantStats 0.0.86 ``stats.calmar`` convention: CAGR / |max drawdown|.

    .. math::

        \\text{CAGR} = \\Big(\\prod_i (1 + r_i)\\Big)^{\\text{periods}/n} - 1, \\qquad
        \\text{Calmar} = \\frac{\\text{CAGR}}{|\\text{MDD}|},

    with ``n`` observations (``n / periods`` years) and MDD from :func:`max_drawdown`.
    ``nan`` without a drawdown, or when the final wealth is negative (as QuantStats' CAGR).
    """
    x = as_returns(returns, "returns", 1)
    return float(_calmar_rows(x[None, :], periods)[0])


_ROW_KERNELS: dict[str, tuple[Callable[..., Float64Array], int]] = {
    "var": (_var_rows, 2),
    "cvar": (_cvar_rows, 2),
    "sharpe": (_sharpe_rows, 2),
    "sortino": (_sortino_rows, 2),
    "omega": (_omega_rows, 2),
    "calmar": (_calmar_rows, 1),
    "max_drawdown": (_max_drawdown_metric_rows, 1),
}
_PUBLIC_NAMES: dict[Callable[..., Any], str] = {
    var: "var",
    cvar: "cvar",
    sharpe: "sharpe",
    sortino: "sortino",
    omega: "omega",
    calmar: "calmar",
    max_drawdown: "max_drawdown",
}


def rolling(
    metric: RollingMetric | Callable[..., Any],
    returns: npt.ArrayLike,
    window: int = 63,
    **kw: Any,
) -> Float64Array:
    """Apply a metric over trailing windows of ``returns``.

    ``out[i]`` is the metric of ``returns[i - window + 1 : i + 1]``; the first
    ``window - 1`` entries are ``nan`` (all of them if ``len(returns) < window``).

    Parameters
    ----------
    metric : str or callable
        One of this module's :func:`var`, :func:`cvar`, :func:`sharpe`, :func:`sortino`,
        :func:`omega`, :func:`calmar`, :func:`max_drawdown` (the function or its name):
        these run vectorised over :func:`numpy.lib.stride_tricks.sliding_window_view`
        windows and give the same values as the scalar call (``max_drawdown`` gives its
        ``max_drawdown`` field).  Any other callable ``f(window_returns, **kw)`` returning a
        float (e.g. :func:`garch_var`, with ``window >= 250``) is called window by window.
    returns : array_like
        1-D simple periodic returns, all finite.
    window : int
        Window length (>= the metric's minimum: 2, or 1 for calmar / max_drawdown).
    **kw
        Passed to the metric (``level``, ``method``, ``rf``, ``periods``, ...).

    Returns
    -------
    numpy.ndarray
        float64, same length as ``returns``.
    """
    x = as_returns(returns, "returns", 1)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    w = int(window)
    name = metric if isinstance(metric, str) else _PUBLIC_NAMES.get(metric)
    out = np.full(x.size, np.nan)
    if name is not None:
        if name not in _ROW_KERNELS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(_ROW_KERNELS)}")
        kernel, min_obs = _ROW_KERNELS[name]
        if w < min_obs:
            raise ValueError(f"window must be >= {min_obs} for {name}, got {w}")
        if x.size < w:
            kernel(np.zeros((1, 2)), **kw)  # still validate the keyword arguments
            return out
        windows = sliding_window_view(x, w)
        step = max(1, _MAX_CHUNK_ELEMENTS // w)
        for lo in range(0, windows.shape[0], step):
            hi = min(lo + step, windows.shape[0])
            out[w - 1 + lo : w - 1 + hi] = kernel(windows[lo:hi], **kw)
        return out
    if not callable(metric):
        raise ValueError(f"metric must be a metric name or a callable, got {metric!r}")
    for i in range(w - 1, x.size):
        value = metric(x[i - w + 1 : i + 1], **kw)
        out[i] = value.max_drawdown if isinstance(value, Drawdown) else float(value)
    return out


__all__ = [
    "MIN_GARCH_OBSERVATIONS",
    "Drawdown",
    "GarchMethod",
    "RollingMetric",
    "VarMethod",
    "calmar",
    "cvar",
    "garch_cvar",
    "garch_var",
    "max_drawdown",
    "omega",
    "rolling",
    "sharpe",
    "sortino",
    "var",
]

"""GARCH(1,1) volatility model: fitting (via :mod:`arch`), forecasting and path simulation.

Conventions
-----------
* Input is a 1-D array of simple periodic returns as fractions (``0.01`` = 1 %).
* :func:`fit_garch` fits ``100 * returns`` with
  ``arch.arch_model(y, mean="Constant", vol="GARCH", p=1, q=1, dist=...)`` (arch optimises
  badly on returns of order 1e-2 and says so with ``DataScaleWarning``) and converts every
  parameter back to return units: ``mu = mu_arch / 100``, ``omega = omega_arch / 100**2``;
  ``alpha``, ``beta`` and ``nu`` are scale free.
* The model, in return units, is

  .. math::

      r_t = \\mu + \\varepsilon_t, \\qquad \\varepsilon_t = \\sigma_t z_t, \\qquad
      \\sigma_t^2 = \\omega + \\alpha\\,\\varepsilon_{t-1}^2 + \\beta\\,\\sigma_{t-1}^2,

  with :math:`z_t` i.i.d. with mean 0 and variance 1: either standard normal or a
  *standardised* Student t, :math:`z = T\\sqrt{(\\nu-2)/\\nu}` with :math:`T \\sim t_\\nu`
  (this is arch's ``StudentsT``, whose ``nu`` is bounded to :math:`(2, 500]`).
* :meth:`GarchFit.forecast` gives the analytic conditional variances
  :math:`\\sigma^2_{T+1},\\dots,\\sigma^2_{T+h}` (the same numbers as arch's
  ``res.forecast(horizon=h).variance / 100**2``):
  :math:`\\sigma^2_{T+1} = \\omega + \\alpha\\varepsilon_T^2 + \\beta\\sigma_T^2` and
  :math:`\\sigma^2_{T+k} = \\omega + (\\alpha+\\beta)\\,\\sigma^2_{T+k-1}` for :math:`k \\ge 2`.
* :meth:`GarchFit.simulate` draws Monte Carlo paths of the same process (vectorised over
  paths; the time recursion is a Python loop over ``horizon`` steps).

Pure numpy/scipy apart from the fit itself; no I/O.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import Float64Array

GarchDist: TypeAlias = Literal["t", "normal"]
"""Innovation distribution: standardised Student t (default) or standard normal."""

MIN_GARCH_OBSERVATIONS = 250
"""Fewer observations than this (about one trading year) give unreliable GARCH fits."""

SCALE = 100.0
"""Returns are multiplied by this before they reach arch."""


class GarchFitError(RuntimeError):
    """The optimiser did not converge, or returned a non-stationary / invalid fit."""


def as_returns(returns: npt.ArrayLike, name: str = "returns", min_obs: int = 1) -> Float64Array:
    """Validate and convert a 1-D return series to a float64 array.

    Raises
    ------
    ValueError
        Not 1-D, empty, fewer than ``min_obs`` observations, or containing NaN/inf
        (the message names ``name`` and counts the offending values).
    """
    try:
        arr = np.asarray(returns, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        noun = "value" if bad == 1 else "values"
        raise ValueError(f"{name} contains {bad} non-finite {noun}")
    if arr.size < min_obs:
        raise ValueError(f"{name} has {arr.size} observations; at least {min_obs} are required")
    return arr


def check_level(level: float, name: str = "level") -> float:
    """Return ``level`` as a float after checking ``0 < level < 1`` (NaN is rejected)."""
    try:
        lv = float(level)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number in (0, 1), got {level!r}") from exc
    if not 0.0 < lv < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {level!r}")
    return lv


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def std_innovation_ppf(p: float, nu: float) -> float:
    """Quantile of the unit-variance innovation: ``t.ppf(p, nu) * sqrt((nu-2)/nu)``.

    ``nu = inf`` gives the standard normal quantile.
    """
    from scipy import stats  # here, not at import: the config schema imports this module

    if math.isinf(nu):
        return float(stats.norm.ppf(p))
    return float(stats.t.ppf(p, nu) * math.sqrt((nu - 2.0) / nu))


def std_innovation_tail_mean(p: float, nu: float) -> float:
    """``E[z | z <= q_p]`` for the unit-variance innovation ``z`` (a negative number for p < .5).

    For the standardised t with :math:`T \\sim t_\\nu`, :math:`q = t_\\nu^{-1}(p)`:

    .. math::

        E[T \\mid T \\le q] = -\\frac{\\nu + q^2}{\\nu - 1}\\,\\frac{f_\\nu(q)}{p},

    scaled by :math:`\\sqrt{(\\nu-2)/\\nu}` (McNeil, Frey & Embrechts, *Quantitative Risk
    Management*, 2015, Example 2.15).  For the normal it is :math:`-\\varphi(\\Phi^{-1}(p))/p`.
    """
    from scipy import stats

    if math.isinf(nu):
        return float(-stats.norm.pdf(stats.norm.ppf(p)) / p)
    q = float(stats.t.ppf(p, nu))
    tail = -(nu + q * q) / (nu - 1.0) * float(stats.t.pdf(q, nu)) / p
    return tail * math.sqrt((nu - 2.0) / nu)


@dataclass(frozen=True, eq=False)
class GarchFit:
    """A fitted GARCH(1,1), everything in return units (see the module docstring).

    Attributes
    ----------
    mu, omega, alpha, beta :
        Constant mean and GARCH parameters (``omega`` in squared return units).
    nu :
        Student-t degrees of freedom; ``inf`` for ``dist="normal"``.
    dist :
        Innovation distribution used for the fit.
    last_sigma :
        Conditional volatility :math:`\\sigma_T` of the last observation.
    last_resid :
        Last residual :math:`\\varepsilon_T = r_T - \\mu`.
    conditional_vol :
        In-sample :math:`\\sigma_t`, aligned to the input returns.
    std_resid :
        Standardised residuals :math:`\\varepsilon_t / \\sigma_t` (used by filtered historical
        simulation).
    loglikelihood :
        Log-likelihood of the fit on the *scaled* data, as arch reports it.
    nobs :
        Number of observations fitted.
    """

    mu: float
    omega: float
    alpha: float
    beta: float
    nu: float
    dist: GarchDist
    last_sigma: float
    last_resid: float
    conditional_vol: Float64Array = field(repr=False)
    std_resid: Float64Array = field(repr=False)
    loglikelihood: float
    nobs: int

    @property
    def persistence(self) -> float:
        """:math:`\\alpha + \\beta` (< 1 for a covariance-stationary fit)."""
        return self.alpha + self.beta

    @property
    def unconditional_variance(self) -> float:
        """:math:`\\omega / (1 - \\alpha - \\beta)`, or ``inf`` when not stationary."""
        p = self.persistence
        return self.omega / (1.0 - p) if p < 1.0 else math.inf

    def forecast(self, horizon: int = 1) -> Float64Array:
        """Conditional variances :math:`\\sigma^2_{T+1}, \\dots, \\sigma^2_{T+h}`.

        .. math::

            \\sigma^2_{T+1} = \\omega + \\alpha\\varepsilon_T^2 + \\beta\\sigma_T^2, \\qquad
            \\sigma^2_{T+k} = \\omega + (\\alpha + \\beta)\\,\\sigma^2_{T+k-1}.

        Parameters
        ----------
        horizon : int
            Number of steps ``h >= 1``.

        Returns
        -------
        numpy.ndarray
            Shape ``(h,)``, squared return units.  ``forecast(h).sum()`` is the variance of
            the summed ``h``-period return.
        """
        h = _check_positive_int(horizon, "horizon")
        out = np.empty(h, dtype=np.float64)
        s2 = self.omega + self.alpha * self.last_resid**2 + self.beta * self.last_sigma**2
        p = self.persistence
        for k in range(h):
            out[k] = s2
            s2 = self.omega + p * s2
        return out

    def roll_forward(self, newer: npt.ArrayLike) -> GarchFit:
        """The state after filtering ``newer`` returns through the fitted parameters.

        Between refits the parameters stay fixed and only the state moves: for each new
        return :math:`r_t`, :math:`\\varepsilon_t = r_t - \\mu` and
        :math:`\\sigma^2_t = \\omega + \\alpha\\varepsilon_{t-1}^2 + \\beta\\sigma^2_{t-1}`.
        The result has ``last_sigma`` = :math:`\\sigma_T` and ``last_resid`` =
        :math:`\\varepsilon_T` of the last new return, so :meth:`forecast` and
        :meth:`simulate` start after it; the in-sample arrays, ``loglikelihood`` and
        ``nobs`` still describe the fit.  No new returns: the fit itself.
        """
        arr = np.asarray(newer, dtype=np.float64).ravel()
        if arr.size == 0:
            return self
        if not np.all(np.isfinite(arr)):
            raise ValueError("GARCH roll-forward: newer returns contain non-finite values")
        var = float(self.forecast(1)[0])
        resid, sigma2 = self.last_resid, self.last_sigma**2
        for r in arr:
            resid = float(r) - self.mu
            sigma2 = var
            var = self.omega + self.alpha * resid * resid + self.beta * sigma2
        return replace(self, last_sigma=math.sqrt(sigma2), last_resid=resid)

    def innovations(self, rng: np.random.Generator, size: tuple[int, ...]) -> Float64Array:
        """Draw i.i.d. unit-variance innovations ``z`` of the fitted distribution."""
        if math.isinf(self.nu):
            return rng.standard_normal(size)
        draws: Float64Array = rng.standard_t(self.nu, size) * math.sqrt((self.nu - 2.0) / self.nu)
        return draws

    def simulate(self, n_paths: int, horizon: int, rng: np.random.Generator) -> Float64Array:
        """Simulate future returns from the fitted model, starting after the last observation.

        Each path starts from the fitted state: :math:`\\sigma^2_{T+1}` is the (known)
        one-step forecast, then for :math:`k = 1..h`:
        :math:`r_{T+k} = \\mu + \\sigma_{T+k} z_{T+k}` and
        :math:`\\sigma^2_{T+k+1} = \\omega + \\alpha\\varepsilon_{T+k}^2 + \\beta\\sigma^2_{T+k}`.

        Parameters
        ----------
        n_paths, horizon : int
            Number of paths and steps (both >= 1).
        rng : numpy.random.Generator
            Source of randomness (e.g. ``np.random.default_rng(seed)``).

        Returns
        -------
        numpy.ndarray
            Simple periodic returns, shape ``(n_paths, horizon)``.  Nothing is clipped: a
            fat-tailed draw can give a return below -100 %.
        """
        n = _check_positive_int(n_paths, "n_paths")
        h = _check_positive_int(horizon, "horizon")
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy.random.Generator")
        z = self.innovations(rng, (n, h))
        out = np.empty((n, h), dtype=np.float64)
        s2 = np.full(
            n, self.omega + self.alpha * self.last_resid**2 + self.beta * self.last_sigma**2
        )
        for k in range(h):
            eps = np.sqrt(s2) * z[:, k]
            out[:, k] = self.mu + eps
            s2 = self.omega + self.alpha * eps * eps + self.beta * s2
        return out


def fit_garch(returns: npt.ArrayLike, dist: GarchDist = "t") -> GarchFit:
    """Fit a constant-mean GARCH(1,1) by maximum likelihood with :mod:`arch`.

    Parameters
    ----------
    returns : array_like
        1-D simple periodic returns (fractions), at least
        :data:`MIN_GARCH_OBSERVATIONS` finite values, not all equal.
    dist : {"t", "normal"}
        Innovation distribution.

    Returns
    -------
    GarchFit
        Parameters and state in return units.

    Raises
    ------
    ValueError
        Bad input (see :func:`as_returns`), fewer than 250 observations, a constant series
        or an unknown ``dist``.
    GarchFitError
        The optimiser did not converge or returned non-finite parameters.
    """
    from arch import arch_model  # imported lazily: arch is heavy and only needed here
    from arch.utility.exceptions import ConvergenceWarning

    r = as_returns(returns, "returns", MIN_GARCH_OBSERVATIONS)
    if dist not in ("t", "normal"):
        raise ValueError(f"dist must be 't' or 'normal', got {dist!r}")
    if np.ptp(r) == 0.0:
        raise ValueError("returns is constant; a GARCH model cannot be fitted")
    y = SCALE * r
    model = arch_model(y, mean="Constant", vol="GARCH", p=1, q=1, dist=dist)
    with warnings.catch_warnings():
        # Non-convergence is reported through convergence_flag and raised below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = model.fit(disp="off")
    params = {str(k): float(v) for k, v in res.params.items()}
    if res.convergence_flag != 0:
        raise GarchFitError(
            f"GARCH optimiser did not converge (flag {res.convergence_flag}): "
            f"{res.optimization_result.message}"
        )
    vol = np.asarray(res.conditional_volatility, dtype=np.float64)
    resid = np.asarray(res.resid, dtype=np.float64)
    nu = params["nu"] if dist == "t" else math.inf
    values = [params["mu"], params["omega"], params["alpha[1]"], params["beta[1]"]]
    if not (all(math.isfinite(v) for v in values) and np.isfinite(vol).all() and nu > 2.0):
        raise GarchFitError(f"GARCH fit returned invalid parameters: {params}")
    return GarchFit(
        mu=params["mu"] / SCALE,
        omega=params["omega"] / SCALE**2,
        alpha=params["alpha[1]"],
        beta=params["beta[1]"],
        nu=nu,
        dist=dist,
        last_sigma=float(vol[-1]) / SCALE,
        last_resid=float(resid[-1]) / SCALE,
        conditional_vol=vol / SCALE,
        std_resid=resid / vol,
        loglikelihood=float(res.loglikelihood),
        nobs=int(r.size),
    )


__all__ = [
    "MIN_GARCH_OBSERVATIONS",
    "GarchDist",
    "GarchFit",
    "GarchFitError",
    "as_returns",
    "check_level",
    "fit_garch",
    "std_innovation_ppf",
    "std_innovation_tail_mean",
]

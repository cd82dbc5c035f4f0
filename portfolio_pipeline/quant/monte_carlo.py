"""Monte Carlo scenarios: correlated GARCH(1,1) paths of the risk factors.

:class:`FactorModel` holds the GARCH marginals (decimal daily units); the daily shocks
are Student-t marginals joined by a Gaussian copula (or multivariate normal)
(:func:`factor_innovations`), summed along GARCH paths into h-day log returns
(:func:`garch_paths`; both in one call: :func:`simulate_factors`).  The P&L of the
simulated scenarios is :func:`portfolio_pipeline.quant.revaluation.revalue`'s, their
tail statistics :mod:`portfolio_pipeline.quant.scenario_risk`'s.  Pure numpy/scipy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, stdtrit

from portfolio_pipeline.quant._typing import Float64Array, Innovations, as_float64
from portfolio_pipeline.quant.vol import GarchFit

__all__ = [
    "FactorModel",
    "factor_innovations",
    "garch_paths",
    "simulate_factors",
]


@dataclass(frozen=True, slots=True)
class FactorModel:
    """GARCH(1,1) marginals of the risk factors, in *decimal daily* return units.

    ``sigma2_{t+1} = omega + alpha eps_t^2 + beta sigma2_t`` with ``eps_t = sigma_t e_t``
    and ``e_t`` unit-variance (standardised Student-t with ``nu`` d.o.f., or normal
    for ``nu = inf``); ``sigma0`` is the conditional vol of the first simulated day,
    ``mu`` the daily mean.  Fits from :mod:`portfolio_pipeline.quant.vol` (arch) are
    converted to these units by the caller.
    """

    names: tuple[str, ...]
    omega: Float64Array
    alpha: Float64Array
    beta: Float64Array
    nu: Float64Array
    sigma0: Float64Array
    mu: Float64Array

    def __post_init__(self) -> None:
        n = (len(self.names),)
        for name in ("omega", "alpha", "beta", "nu", "sigma0", "mu"):
            arr = getattr(self, name)
            if arr.shape != n:
                raise ValueError(f"FactorModel.{name} has shape {arr.shape}, expected {n}")
        if np.any(self.omega < 0) or np.any(self.alpha < 0) or np.any(self.beta < 0):
            raise ValueError("FactorModel: omega, alpha, beta must be >= 0")
        if np.any(~(self.sigma0 > 0)) or not np.all(np.isfinite(self.sigma0)):
            raise ValueError("FactorModel.sigma0 must be positive and finite")
        if np.any(~(self.nu > 2.0)):
            raise ValueError("FactorModel.nu must be > 2 (inf for normal innovations)")

    @classmethod
    def from_fits(
        cls, names: Sequence[str], fits: Sequence[GarchFit], *, zero_mean: bool = True
    ) -> FactorModel:
        """Factor marginals from :func:`portfolio_pipeline.quant.vol.fit_garch` results.

        ``sigma0`` is the one-step forecast :math:`\\sqrt{\\sigma^2_{T+1}}`
        (``fit.forecast(1)``); ``mu`` is 0 with ``zero_mean`` (the usual choice for
        short-horizon VaR: a fitted drift is noise at 1-10 days).
        """
        if len(names) != len(fits):
            raise ValueError("one fit per factor name is needed")
        return cls(
            names=tuple(names),
            omega=np.array([f.omega for f in fits], dtype=np.float64),
            alpha=np.array([f.alpha for f in fits], dtype=np.float64),
            beta=np.array([f.beta for f in fits], dtype=np.float64),
            nu=np.array([f.nu for f in fits], dtype=np.float64),
            sigma0=np.sqrt(np.array([f.forecast(1)[0] for f in fits], dtype=np.float64)),
            mu=np.zeros(len(fits)) if zero_mean else np.array([f.mu for f in fits], dtype=np.float64),
        )


def _corr_factor(corr: Float64Array) -> Float64Array:
    """Symmetric square root ``L`` with ``L L^T = corr`` (works for singular PSD matrices)."""
    w, v = np.linalg.eigh(corr)
    if w.min() < -1e-8:
        raise ValueError(
            f"correlation matrix is not PSD (min eigenvalue {w.min():.3g}); repair it with "
            "correlation.nearest_correlation"
        )
    out: Float64Array = v * np.sqrt(np.clip(w, 0.0, None))
    return out


def _check_simulation(
    model: FactorModel, corr: npt.ArrayLike, n_paths: int, horizon: int, innovations: str
) -> Float64Array:
    c = as_float64(corr, "corr", 2)
    nf = len(model.names)
    if c.shape != (nf, nf):
        raise ValueError(f"corr has shape {c.shape}, expected ({nf}, {nf})")
    if not np.allclose(np.diag(c), 1.0) or not np.allclose(c, c.T):
        raise ValueError("corr must be symmetric with a unit diagonal")
    if n_paths < 1 or horizon < 1:
        raise ValueError("n_paths and horizon must be >= 1")
    if innovations not in ("t", "normal"):
        raise ValueError(f"unknown innovations {innovations!r} (t or normal)")
    return c


def factor_innovations(
    model: FactorModel,
    corr: npt.ArrayLike,
    *,
    n_paths: int,
    horizon: int,
    rng: np.random.Generator,
    innovations: Innovations = "t",
) -> Float64Array:
    """The unit-variance daily shocks ``e`` of :func:`simulate_factors`, shape
    (horizon, n_paths, n_factors).

    They depend on the model only through ``nu`` (not on ``sigma0``, ``omega``,
    ``alpha``, ``beta`` or ``mu``), so callers that simulate the same ``nu``, ``corr``
    and seed for many starting volatilities (a backfill between two GARCH refits) draw
    them once and pass them to :func:`garch_paths`.  The copula transform (``stdtrit``)
    is the expensive part of a simulation.
    """
    c = _check_simulation(model, corr, n_paths, horizon, innovations)
    nf = len(model.names)
    lt = _corr_factor(c).T
    heavy = np.isfinite(model.nu) & (innovations == "t")
    nu_h = model.nu[heavy]
    t_scale = np.sqrt((nu_h - 2.0) / nu_h)
    out = np.empty((horizon, n_paths, nf))
    for day in range(horizon):
        z = rng.standard_normal((n_paths, nf)) @ lt
        if heavy.any():
            u = ndtr(z[:, heavy])
            np.clip(u, 1e-16, 1.0 - 1e-16, out=u)
            z[:, heavy] = stdtrit(nu_h, u) * t_scale
        out[day] = z
    return out


def garch_paths(
    model: FactorModel, shocks: npt.ArrayLike, *, vol_scale: npt.ArrayLike = 1.0
) -> Float64Array:
    """Summed log returns of GARCH(1,1) paths driven by ``shocks`` (horizon, n_paths,
    n_factors) from :func:`factor_innovations` (see :func:`simulate_factors`)."""
    e = as_float64(shocks, "shocks", 3)
    nf = len(model.names)
    if e.shape[2] != nf:
        raise ValueError(f"shocks have {e.shape[2]} factors, the model has {nf}")
    m = np.broadcast_to(np.asarray(vol_scale, dtype=np.float64), (nf,))
    sig2 = np.broadcast_to(model.sigma0**2, e.shape[1:]).copy()
    total = np.zeros(e.shape[1:])
    for z in e:
        eps = np.sqrt(sig2) * z
        total += model.mu + m * eps
        sig2 = model.omega + model.alpha * eps * eps + model.beta * sig2
    return total


def simulate_factors(
    model: FactorModel,
    corr: npt.ArrayLike,
    *,
    n_paths: int,
    horizon: int,
    rng: np.random.Generator,
    innovations: Innovations = "t",
    vol_scale: npt.ArrayLike = 1.0,
) -> Float64Array:
    """Joint h-day log returns of the factors: correlated GARCH(1,1) paths.

    Parameters
    ----------
    model : FactorModel
        Per-factor GARCH parameters (decimal daily units).
    corr : array_like, shape (n_factors, n_factors)
        Correlation of the daily innovations (PSD, unit diagonal).
    n_paths, horizon : int
        Number of scenarios and days simulated.
    rng : numpy.random.Generator
        Source of randomness (seed it for reproducible results).
    innovations : {"t", "normal"}
        ``"t"``: each factor's standardised Student-t(``nu``) marginal joined by a
        Gaussian copula with correlation ``corr``; ``"normal"``: multivariate normal.
    vol_scale : array_like, shape (n_factors,) or scalar
        Multiplier of each day's shock (the regime overlay): the simulated return is
        ``mu + m sigma_t e_t`` while the variance recursion uses the unscaled shock.

    Returns
    -------
    numpy.ndarray, shape (n_paths, n_factors)
        :math:`\\sum_{t=1}^{h} r_t` for every path and factor.

    Notes
    -----
    Gaussian copula: with ``z = L\\varepsilon``, ``L L^T = C``,
    :math:`e_i = t_{\\nu_i}^{-1}(\\Phi(z_i))\\sqrt{(\\nu_i - 2)/\\nu_i}`.
    Equal to ``garch_paths(model, factor_innovations(model, corr, ...), vol_scale=...)``
    (the same draws in the same order, bit for bit).
    """
    shocks = factor_innovations(
        model, corr, n_paths=n_paths, horizon=horizon, rng=rng, innovations=innovations
    )
    return garch_paths(model, shocks, vol_scale=vol_scale)

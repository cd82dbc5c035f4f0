"""Scenarios of the scenario engine and the deterministic ways to build them.

A scenario (per scenario ``s`` and risk factor / underlying ``u``) is:

* ``log_ret[s, u]``: log return of the underlying, ``S_1 = S_0 e^{x}`` (every contract
  on ``u`` -- the spot or a future -- moves by the same return);
* ``d_atm[s, u]``: change of the underlying's at-the-money implied vol (decimal,
  0.05 = +5 vol points);
* ``decay[s]``: time passed in years, ``T_1 = max(T_0 - decay, 0)`` (a contract that
  expires inside the horizon is worth its intrinsic value).

How a contract's own implied vol follows (the skew rule) is the revaluation's part
(:mod:`portfolio_pipeline.quant.revaluation`).  Here: :class:`ScenarioSet` (the arrays),
the stress grid (:func:`shock_grid`: spot shock x vol column x horizon) and the
geometric fill of historical windows between published closes (:func:`geometric_fill`).
Random scenarios are :mod:`portfolio_pipeline.quant.monte_carlo`'s.  Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import Float64Array, as_float64

__all__ = [
    "DAYS_PER_YEAR",
    "GridScenarios",
    "ScenarioSet",
    "geometric_fill",
    "shock_grid",
    "spot_log_returns",
]

DAYS_PER_YEAR: Final[float] = 365.0
"""Calendar days per year of the scenario engine (``decay = days / DAYS_PER_YEAR``)."""


@dataclass(frozen=True, slots=True)
class ScenarioSet:
    """Scenarios as arrays: ``log_ret`` and ``d_atm`` (n, n_factors), ``decay`` (n,) years."""

    log_ret: Float64Array
    d_atm: Float64Array
    decay: Float64Array

    def __post_init__(self) -> None:
        if self.log_ret.ndim != 2 or self.d_atm.shape != self.log_ret.shape:
            raise ValueError(
                f"log_ret {self.log_ret.shape} and d_atm {self.d_atm.shape} must be equal 2-D shapes"
            )
        if self.decay.shape != (self.log_ret.shape[0],):
            raise ValueError(f"decay has shape {self.decay.shape}, expected ({self.log_ret.shape[0]},)")
        for name in ("log_ret", "d_atm", "decay"):
            arr = getattr(self, name)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"scenario {name} has non-finite values")
        if np.any(self.decay < 0):
            raise ValueError("scenario decay must be >= 0")

    @property
    def size(self) -> int:
        return int(self.log_ret.shape[0])

    @classmethod
    def build(
        cls, log_ret: npt.ArrayLike, d_atm: npt.ArrayLike, decay: npt.ArrayLike
    ) -> ScenarioSet:
        lr = as_float64(log_ret, "log_ret", 2)
        da = np.ascontiguousarray(np.broadcast_to(as_float64(d_atm, "d_atm"), lr.shape))
        de = np.ascontiguousarray(np.broadcast_to(as_float64(decay, "decay"), lr.shape[:1]))
        return cls(np.ascontiguousarray(lr), da, de)

    @classmethod
    def zero(cls, n_factors: int) -> ScenarioSet:
        """The one scenario in which nothing moves and no time passes."""
        z = np.zeros((1, n_factors))
        return cls(z, z.copy(), np.zeros(1))

    def take(self, a: int, b: int) -> ScenarioSet:
        return ScenarioSet(self.log_ret[a:b], self.d_atm[a:b], self.decay[a:b])


@dataclass(frozen=True, slots=True)
class GridScenarios:
    """A spot x vol x horizon grid flattened to scenarios (C order: spot, vol, horizon)."""

    scenarios: ScenarioSet
    spot_shocks: Float64Array
    vol_labels: tuple[str, ...]
    horizons_days: Float64Array
    cells: tuple[tuple[int, int, int], ...] = field(repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.spot_shocks), len(self.vol_labels), len(self.horizons_days))


def spot_log_returns(shocks: Float64Array, beta: Float64Array) -> Float64Array:
    """Factor log returns ``log(1 + beta x shock)``, shape ``(n_shocks, n_factors)``, of
    simple returns ``shocks`` of the reference index (one place for the shock grid and the
    risk profile's scenarios, so a shared point is the same number in both).

    Raises
    ------
    ValueError
        If a shock takes a factor to a non-positive price (``1 + beta x shock <= 0``).
    """
    gross = 1.0 + shocks[:, None] * beta[None, :]
    if np.any(~(gross > 0.0)) or not np.all(np.isfinite(gross)):
        i, j = np.argwhere(~(gross > 0.0) | ~np.isfinite(gross))[0]
        raise ValueError(
            f"spot shock {shocks[i]:+.0%} x beta {beta[j]:g} of factor {j} gives a "
            "non-positive price"
        )
    out: Float64Array = np.log(gross)
    return out


def shock_grid(
    spot_shocks: Sequence[float],
    vol_columns: Sequence[tuple[str, npt.ArrayLike, npt.ArrayLike]],
    horizons_days: Sequence[float],
    *,
    spot_beta: npt.ArrayLike,
    days_per_year: float = DAYS_PER_YEAR,
) -> GridScenarios:
    """Build the stress grid: every spot shock x vol column x horizon.

    Parameters
    ----------
    spot_shocks : sequence of float
        Simple returns of the reference index (-0.30 = -30 %).
    vol_columns : sequence of (label, d_atm, extra_log_ret)
        Per vol column: a label, the ATM vol change per factor (decimal) and an extra
        log return per factor that the column itself implies (e.g. a volatility-index
        underlying moving to the VIX target; zeros for equity factors).
    horizons_days : sequence of float
        Days of decay (calendar days: ``decay = days / days_per_year``).
    spot_beta : array_like, shape (n_factors,)
        Factor beta to the reference index: factor simple return = beta x shock
        (0 for factors the spot axis does not move, e.g. volatility indices).

    Returns
    -------
    GridScenarios

    Raises
    ------
    ValueError
        If a shock takes a factor to a non-positive price (``1 + beta x shock <= 0``).
    """
    beta = as_float64(spot_beta, "spot_beta", 1)
    shocks = as_float64(list(spot_shocks), "spot_shocks", 1)
    lr_spot = spot_log_returns(shocks, beta)
    hz = as_float64(list(horizons_days), "horizons_days", 1)
    if np.any(hz < 0) or not np.all(np.isfinite(hz)):
        raise ValueError("horizons must be finite and >= 0 days")
    nf = beta.shape[0]
    labels: list[str] = []
    datm_cols: list[Float64Array] = []
    lr_cols: list[Float64Array] = []
    for label, d_atm, extra in vol_columns:
        labels.append(label)
        datm_cols.append(np.broadcast_to(as_float64(d_atm, "d_atm"), (nf,)))
        lr_cols.append(np.broadcast_to(as_float64(extra, "extra_log_ret"), (nf,)))
    ns, nv, nh = len(shocks), len(labels), len(hz)
    lr = np.empty((ns, nv, nh, nf))
    da = np.empty((ns, nv, nh, nf))
    dec = np.empty((ns, nv, nh))
    for j in range(nv):
        lr[:, j, :, :] = lr_spot[:, None, :] + lr_cols[j][None, None, :]
        da[:, j, :, :] = datm_cols[j][None, None, :]
    dec[:] = (hz / days_per_year)[None, None, :]
    cells = tuple((i, j, k) for i in range(ns) for j in range(nv) for k in range(nh))
    sc = ScenarioSet.build(lr.reshape(-1, nf), da.reshape(-1, nf), dec.reshape(-1))
    return GridScenarios(sc, shocks, tuple(labels), hz, cells)


# --------------------------------------------------------------------------- history fill


def geometric_fill(anchor_pos: npt.ArrayLike, anchor_values: npt.ArrayLike, n: int) -> Float64Array:
    """Fill a path of ``n`` sessions between anchor closes by geometric interpolation.

    Parameters
    ----------
    anchor_pos : int array
        Session indices (0..n-1, strictly increasing) of the published anchor closes;
        the first must be 0 and the last ``n - 1``.
    anchor_values : float array
        The published closes (positive).
    n : int
        Number of sessions in the window.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Equal to the anchors on anchor sessions; between two anchors ``(i, a)`` and
        ``(j, b)`` session ``k`` gets

        .. math:: v_k = a\\,(b/a)^{(k-i)/(j-i)},

        i.e. a constant daily log return.  Filled values are a rule, not published data.
    """
    pos = np.asarray(anchor_pos, dtype=np.intp)
    vals = as_float64(anchor_values, "anchor_values", 1)
    if pos.shape != vals.shape or pos.size < 2:
        raise ValueError("need at least two anchors with one position each")
    if pos[0] != 0 or pos[-1] != n - 1 or np.any(np.diff(pos) <= 0):
        raise ValueError("anchor positions must increase strictly from 0 to n-1")
    if np.any(~(vals > 0.0)) or not np.all(np.isfinite(vals)):
        raise ValueError("anchor values must be positive and finite")
    out: Float64Array = np.exp(np.interp(np.arange(n), pos, np.log(vals)))
    out[pos] = vals
    return out


# --------------------------------------------------------------------------- Monte Carlo

r"""Vol-beta rule: how much of an index-vol (VIX) change each option's implied vol takes.

An option of days to expiry ``d`` and log-moneyness ``m = ln(K/S)`` moves its implied vol
by :math:`\Delta\sigma = \beta(d, m)\,\beta_u\,\Delta\mathrm{VIX}/100`, where ``beta_u`` is
the underlying's VIX beta (``config/stress_scenarios.yaml``) and ``beta(d, m)`` is
piecewise constant on a grid of expiry buckets x moneyness buckets.

Fit (:func:`fit_vol_beta`): on the stored surface history (each held option's implied
vol at consecutive session closes) the bucket's beta is the least-squares slope through
the origin of :math:`\Delta\sigma` on :math:`\beta_u\Delta\mathrm{VIX}/100`,

.. math:: \hat\beta = \frac{\sum \Delta\sigma_i\,x_i}{\sum x_i^2},

over days with :math:`|\Delta\mathrm{VIX}| \ge` ``min_vix_move`` points (quiet days carry
no signal).  A bucket with fewer than ``min_observations`` such days keeps the prior,
1.0 (the whole VIX change: the rule used before, conservative).

The vols fitted on are the held contracts' own (fixed-strike) implied vols, so a beta also
carries the vol move that comes with the day's spot move along the smile; it goes with
the replay's default ``skew_rule: sticky_strike`` (with ``sticky_moneyness`` the skew
slope would count that part a second time).  Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import Float64Array

__all__ = ["DTE_EDGES", "MONEYNESS_EDGES", "VolBetaRule", "fit_vol_beta"]

DTE_EDGES: tuple[float, ...] = (14.0, 45.0, 120.0)
"""Expiry bucket edges in calendar days: <14, 14-45, 45-120, >=120."""
MONEYNESS_EDGES: tuple[float, ...] = (-0.05, 0.05)
"""ln(K/S) bucket edges: puts' wing, near the money, calls' wing."""


@dataclass(frozen=True, slots=True)
class VolBetaRule:
    """Betas per (expiry bucket, moneyness bucket) and how many days each was fitted on."""

    dte_edges: tuple[float, ...]
    moneyness_edges: tuple[float, ...]
    betas: Float64Array  # (len(dte_edges) + 1, len(moneyness_edges) + 1)
    observations: npt.NDArray[np.int64]

    @classmethod
    def unit(cls, dte_edges: tuple[float, ...] = DTE_EDGES,
             moneyness_edges: tuple[float, ...] = MONEYNESS_EDGES) -> VolBetaRule:
        """Every option takes the whole VIX change (beta 1, no history)."""
        shape = (len(dte_edges) + 1, len(moneyness_edges) + 1)
        return cls(dte_edges, moneyness_edges, np.ones(shape), np.zeros(shape, dtype=np.int64))

    def cells(self, dte: npt.ArrayLike, log_moneyness: npt.ArrayLike) -> tuple[npt.NDArray[np.intp], ...]:
        i = np.searchsorted(np.asarray(self.dte_edges), np.asarray(dte, dtype=np.float64), side="right")
        j = np.searchsorted(np.asarray(self.moneyness_edges), np.asarray(log_moneyness, dtype=np.float64),
                            side="right")
        return i.astype(np.intp), j.astype(np.intp)

    def beta(self, dte: npt.ArrayLike, log_moneyness: npt.ArrayLike) -> Float64Array:
        """beta(d, m) of each option."""
        i, j = self.cells(dte, log_moneyness)
        out: Float64Array = self.betas[i, j]
        return out

    def describe(self) -> str:
        """A markdown table of the rule (rows: expiry buckets; columns: moneyness buckets)."""
        d = [f"<{self.dte_edges[0]:g}", *(f"{a:g}-{b:g}" for a, b in zip(self.dte_edges, self.dte_edges[1:],
                                                                         strict=False)),
             f">={self.dte_edges[-1]:g}"]
        m = [f"<{self.moneyness_edges[0]:g}",
             *(f"{a:g}..{b:g}" for a, b in zip(self.moneyness_edges, self.moneyness_edges[1:], strict=False)),
             f">={self.moneyness_edges[-1]:g}"]
        lines = ["| days \\ ln(K/S) | " + " | ".join(m) + " |", "|---|" + "---:|" * len(m)]
        for i, label in enumerate(d):
            cells = [f"{self.betas[i, j]:.2f} ({self.observations[i, j]})" for j in range(len(m))]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def fit_vol_beta(
    d_vol: npt.ArrayLike,
    d_index: npt.ArrayLike,
    dte: npt.ArrayLike,
    log_moneyness: npt.ArrayLike,
    *,
    min_observations: int = 20,
    min_vix_move: float = 0.5,
    dte_edges: tuple[float, ...] = DTE_EDGES,
    moneyness_edges: tuple[float, ...] = MONEYNESS_EDGES,
) -> VolBetaRule:
    """Fit the rule on one-session changes (see the module docstring).

    Parameters
    ----------
    d_vol : array_like
        Change of each option's implied vol (decimal) between consecutive closes.
    d_index : array_like
        ``beta_u * (VIX_1 - VIX_0) / 100`` of the same day (decimal).
    dte, log_moneyness : array_like
        Days to expiry and ``ln(K/S)`` at the first close.
    """
    y, x, d, m = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (d_vol, d_index, dte, log_moneyness))
    if not (y.shape == x.shape == d.shape == m.shape):
        raise ValueError("d_vol, d_index, dte and log_moneyness must have the same length")
    rule = VolBetaRule.unit(dte_edges, moneyness_edges)
    keep = np.isfinite(y) & np.isfinite(x) & np.isfinite(d) & np.isfinite(m) & (np.abs(x) * 100.0 >= min_vix_move)
    i, j = rule.cells(d[keep], m[keep])
    betas, obs = rule.betas.copy(), rule.observations.copy()
    for a in range(betas.shape[0]):
        for b in range(betas.shape[1]):
            sel = (i == a) & (j == b)
            n = int(sel.sum())
            obs[a, b] = n
            xs = x[keep][sel]
            if n >= min_observations and float(xs @ xs) > 0.0:
                betas[a, b] = float(y[keep][sel] @ xs) / float(xs @ xs)
    return VolBetaRule(dte_edges, moneyness_edges, betas, obs)

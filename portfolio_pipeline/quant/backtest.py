r"""VaR backtests: Kupiec's proportion of failures, Christoffersen's independence test and the
Basel traffic light.

Conventions
-----------
* A *hit* (exceedance) on session ``t+1`` is a loss larger than the VaR forecast made at the
  close of session ``t``: ``-PnL_{t+1} > VaR_t`` (VaR a positive loss; equality is no hit).
* ``level`` is the VaR confidence (0.99); ``p = 1 - level`` is the expected hit rate.
* Kupiec (1995) POF:

  .. math::

      LR_{pof} = -2\ln\frac{(1-p)^{n-x}p^x}{(1-\hat p)^{n-x}\hat p^{x}},\quad \hat p = x/n,

  chi-square with 1 degree of freedom.
* Christoffersen (1998) independence, with :math:`n_{ij}` the transitions ``i -> j`` of the
  hit sequence and :math:`\pi_{01} = n_{01}/(n_{00}+n_{01})`,
  :math:`\pi_{11} = n_{11}/(n_{10}+n_{11})`, :math:`\pi = (n_{01}+n_{11})/\sum n_{ij}`:

  .. math::

      LR_{ind} = -2\ln\frac{(1-\pi)^{n_{00}+n_{10}}\pi^{n_{01}+n_{11}}}
          {(1-\pi_{01})^{n_{00}}\pi_{01}^{n_{01}}(1-\pi_{11})^{n_{10}}\pi_{11}^{n_{11}}},

  chi-square with 1 degree of freedom (``0 ln 0 = 0``).
* Basel traffic light (BCBS 1996, "Supervisory framework for the use of backtesting"): with
  ``X ~ Binomial(n, p)``, *green* while ``P(X <= x) < 95 %``, *yellow* while it is below
  99.99 %, *red* from there (250 observations at 99 %: green 0-4, yellow 5-9, red 10+).
  The same binomial rule is applied to every level and sample size.

Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from scipy.special import xlogy
from scipy.stats import binom, chi2

__all__ = [
    "BacktestResult",
    "Zone",
    "backtest",
    "basel_zone",
    "christoffersen_independence",
    "kupiec_pof",
]

Zone: TypeAlias = Literal["green", "yellow", "red"]


def _check_p(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return 1.0 - level


def kupiec_pof(n: int, hits: int, level: float) -> tuple[float, float]:
    """Kupiec's POF likelihood ratio and its chi-square(1) p-value (NaN for ``n == 0``)."""
    p = _check_p(level)
    if n < 0 or not 0 <= hits <= n:
        raise ValueError(f"need 0 <= hits <= n, got hits={hits!r}, n={n!r}")
    if n == 0:
        return math.nan, math.nan
    ph = hits / n
    null = xlogy(n - hits, 1.0 - p) + xlogy(hits, p)
    alt = xlogy(n - hits, 1.0 - ph) + xlogy(hits, ph)
    lr = max(0.0, float(-2.0 * (null - alt)))
    return lr, float(chi2.sf(lr, 1))


def christoffersen_independence(hits: npt.ArrayLike) -> tuple[float, float]:
    """Christoffersen's independence likelihood ratio and chi-square(1) p-value.

    NaN when the sequence has fewer than two observations or no hit at all (the test
    says nothing there)."""
    h = np.asarray(hits, dtype=bool)
    if h.ndim != 1:
        raise ValueError("hits must be 1-D")
    if h.size < 2 or not h.any():
        return math.nan, math.nan
    prev, nxt = h[:-1], h[1:]
    n00 = int(np.sum(~prev & ~nxt))
    n01 = int(np.sum(~prev & nxt))
    n10 = int(np.sum(prev & ~nxt))
    n11 = int(np.sum(prev & nxt))
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    null = xlogy(n00 + n10, 1.0 - pi) + xlogy(n01 + n11, pi)
    alt = xlogy(n00, 1.0 - pi01) + xlogy(n01, pi01) + xlogy(n10, 1.0 - pi11) + xlogy(n11, pi11)
    lr = max(0.0, float(-2.0 * (null - alt)))
    return lr, float(chi2.sf(lr, 1))


def basel_zone(n: int, hits: int, level: float) -> Zone:
    """Basel traffic-light zone of ``hits`` exceedances in ``n`` observations."""
    p = _check_p(level)
    cdf = float(binom.cdf(hits, n, p))
    if cdf < 0.95:
        return "green"
    if cdf < 0.9999:
        return "yellow"
    return "red"


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Backtest of one VaR series at one level."""

    observations: int
    exceedances: int
    expected: float
    kupiec_lr: float
    kupiec_p: float
    christoffersen_lr: float
    christoffersen_p: float
    zone: Zone


def backtest(hits: npt.ArrayLike, level: float) -> BacktestResult:
    """Every statistic of this module for one hit sequence (oldest first)."""
    h = np.asarray(hits, dtype=bool)
    n, x = int(h.size), int(h.sum())
    k_lr, k_p = kupiec_pof(n, x, level)
    c_lr, c_p = christoffersen_independence(h)
    return BacktestResult(n, x, n * (1.0 - level), k_lr, k_p, c_lr, c_p, basel_zone(n, x, level))

"""Early-exercise premium grids: the ``"interp_lr"`` American pricer of the scenario engine.

For every American contract and every distinct ``decay`` shared by at least
:data:`INTERP_MIN_SCENARIOS` scenarios, the premium ``P = V^{LR tree} - V^{BSM}`` is
priced with the tree on a regular ``INTERP_SPOT_NODES x INTERP_VOL_NODES`` grid of (log
spot return, log shocked vol) spanning those scenarios; a scenario's value is the exact
European closed form plus the bilinearly interpolated premium, floored at intrinsic
(the whole method is described in :mod:`portfolio_pipeline.quant.revaluation`, which
uses :class:`PremiumGrids`).  Pure numpy, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import Float64Array, IntArray, SkewRule
from portfolio_pipeline.quant.pricing import american_price as _american_price
from portfolio_pipeline.quant.pricing import price as _price
from portfolio_pipeline.quant.scenario_book import ContractSet
from portfolio_pipeline.quant.scenario_set import ScenarioSet

__all__ = [
    "INTERP_MIN_SCENARIOS",
    "INTERP_SPOT_NODES",
    "INTERP_TAIL",
    "INTERP_VOL_NODES",
    "PremiumGrids",
]

INTERP_SPOT_NODES: Final[int] = 31
"""Log-spot nodes of the premium grid of ``american_method="interp_lr"``."""

INTERP_VOL_NODES: Final[int] = 33
"""Log-vol nodes of the premium grid of ``american_method="interp_lr"`` (the premium
near the exercise boundary bends more with vol than with spot)."""

INTERP_TAIL: Final[float] = 0.0005
"""Share of scenarios in each tail of each factor's log return and vol change left out of
the ``"interp_lr"`` grid's box (priced by the tree directly, e.g. a crash outlier)."""

INTERP_MIN_SCENARIOS: Final[int] = 2048
"""``"interp_lr"`` builds a premium grid for a ``decay`` value only when at least this many
scenarios share it (below that the tree on the scenarios themselves is about as cheap)."""


def _grid_axis(lo: float, hi: float, n: int, default_step: float) -> tuple[float, float]:
    """``(k_min, h)`` of an axis of ``n`` nodes ``h k`` (``k = k_min .. k_min + n - 1``)
    covering ``[lo, hi]`` (which contains 0, so 0 is a node), at least one cell of padding
    being possible on each side."""
    span = hi - lo
    h = span / (n - 3) if span > 0.0 else default_step
    k_min = math.floor(lo / h)
    return float(k_min), h


@dataclass(frozen=True, slots=True)
class PremiumGrids:
    """Early-exercise premium grids of the American contracts (``"interp_lr"``).

    For each grid ``decay`` value (key of ``index``) and American contract ``j`` (column
    ``j`` of ``am``, the contract indices): ``prem[g, j]`` is the premium on the nodes
    ``x = hx k`` (log spot return), ``sigma = sigma_c e^{hv l}`` (``sigma_c`` today's vol
    after the floor), so today's point is the node ``k = l = 0``; ``lo``/``hi`` bound the
    box of (x, log(sigma / sigma_c)) the grid is used in.  ``steps`` is the tree's.
    """

    am: IntArray
    index: dict[float, int]
    lo: Float64Array  # (n_grids, n_am, 2) box of (x, log(sigma / sigma_c)) covered
    hi: Float64Array
    kx: Float64Array  # (n_grids, n_am) first node index
    hx: Float64Array
    kv: Float64Array
    hv: Float64Array
    vc: Float64Array  # (n_am,)
    prem: Float64Array  # (n_grids, n_am, nx, nv)
    steps: int

    @classmethod
    def build(
        cls,
        c: ContractSet,
        sc: ScenarioSet,
        skew_slope: Float64Array,
        skew_rule: SkewRule,
        min_vol: float,
        steps: int,
    ) -> PremiumGrids:
        nx, nv, min_scenarios = INTERP_SPOT_NODES, INTERP_VOL_NODES, INTERP_MIN_SCENARIOS
        am = np.flatnonzero(c.american)
        decays, counts = np.unique(sc.decay, return_counts=True)
        keys = [float(d) for d, k in zip(decays, counts, strict=True) if k >= min_scenarios]
        fa = c.factor[am]
        vc = np.maximum(c.vol[am], min_vol)
        ng, na = len(keys), am.size
        kx, hx, kv, hv = (np.empty((ng, na)) for _ in range(4))
        box_lo, box_hi = np.empty((ng, na, 2)), np.empty((ng, na, 2))
        qs = (INTERP_TAIL, 1.0 - INTERP_TAIL)
        prem = np.zeros((ng, na, nx, nv))
        for g, d in enumerate(keys):
            rows = sc.decay == d
            x = sc.log_ret[rows]
            w = sc.d_atm[rows]
            if skew_rule == "sticky_moneyness":
                w = w - skew_slope * x
            # box per factor: the scenarios' quantiles (tails go to the tree) and today's
            # point (0, 0); then per contract in (x, log(floored vol / sigma_c))
            xq = np.quantile(x, qs, axis=0, method="inverted_cdf")
            wq = np.quantile(w, qs, axis=0, method="inverted_cdf")
            x_lo = np.minimum(xq[0], 0.0)[fa]
            x_hi = np.maximum(xq[1], 0.0)[fa]
            v_lo = np.log(np.maximum(c.vol[am] + wq[0][fa], min_vol) / vc)
            v_hi = np.log(np.maximum(c.vol[am] + wq[1][fa], min_vol) / vc)
            np.minimum(v_lo, 0.0, out=v_lo)
            np.maximum(v_hi, 0.0, out=v_hi)
            box_lo[g] = np.stack([x_lo, v_lo], axis=1)
            box_hi[g] = np.stack([x_hi, v_hi], axis=1)
            for j in range(na):
                kx[g, j], hx[g, j] = _grid_axis(float(x_lo[j]), float(x_hi[j]), nx, 0.01)
                kv[g, j], hv[g, j] = _grid_axis(float(v_lo[j]), float(v_hi[j]), nv, 0.01)
            xs = (kx[g][:, None] + np.arange(nx)) * hx[g][:, None]  # (na, nx)
            vs = np.exp((kv[g][:, None] + np.arange(nv)) * hv[g][:, None]) * vc[:, None]
            shape = (na, nx, nv)
            s_n = np.broadcast_to((c.spot[am][:, None] * np.exp(xs))[:, :, None], shape)
            v_n = np.broadcast_to(vs[:, None, :], shape)

            def col(a: npt.NDArray[np.generic], shape: tuple[int, ...] = shape) -> npt.NDArray[
                np.generic
            ]:
                return np.broadcast_to(a[:, None, None], shape)

            t1 = np.maximum(c.T[am] - d, 0.0)
            args = (col(c.is_call[am]), s_n, col(c.strike[am]), col(t1), col(c.r[am]),
                    col(c.q[am]), v_n)
            tree = _american_price(*args, method="lr", steps=steps)
            euro = _price(*args, model="bsm")
            prem[g] = np.maximum(tree - euro, 0.0)
        return cls(am, {d: g for g, d in enumerate(keys)}, box_lo, box_hi, kx, hx, kv, hv, vc,
                   prem, steps)

    def values(
        self,
        c: ContractSet,
        decay: Float64Array,
        x: Float64Array,
        s1: Float64Array,
        t1: Float64Array,
        vol1: Float64Array,
    ) -> Float64Array:
        """Values (n, n_am) of the American contracts: interpolated premium where the
        row's ``decay`` has a grid and the element is inside its box, the tree otherwise.  ``x``, ``s1``, ``t1``, ``vol1``
        are the (n, n_am) log returns, spots, maturities and floored vols."""
        am = self.am
        ic, k, r, q = c.is_call[am], c.strike[am], c.r[am], c.q[am]
        out = np.empty_like(s1)
        direct = np.ones(s1.shape, dtype=np.bool_)
        for d in np.unique(decay):
            g = self.index.get(float(d))
            if g is None:
                continue
            rows = np.flatnonzero(decay == d)
            xr = x[rows]
            ur = np.log(vol1[rows] / self.vc)
            lo, hi = self.lo[g], self.hi[g]
            direct[rows] = ~(
                (xr >= lo[:, 0]) & (xr <= hi[:, 0]) & (ur >= lo[:, 1]) & (ur <= hi[:, 1])
            )
            prem = self.prem[g]
            _, nx, nv = prem.shape
            tx = xr / self.hx[g] - self.kx[g]
            tv = ur / self.hv[g] - self.kv[g]
            ix = np.clip(np.floor(tx), 0, nx - 2).astype(np.intp)
            iv = np.clip(np.floor(tv), 0, nv - 2).astype(np.intp)
            fx = tx - ix
            fv = tv - iv
            base = (np.arange(am.size) * (nx * nv))[None, :] + ix * nv + iv
            flat = prem.reshape(-1)
            p = (1.0 - fx) * ((1.0 - fv) * flat[base] + fv * flat[base + 1]) + fx * (
                (1.0 - fv) * flat[base + nv] + fv * flat[base + nv + 1]
            )
            np.maximum(p, 0.0, out=p)
            sr = s1[rows]
            v = _price(ic, sr, k, t1[rows], r, q, vol1[rows], model="bsm") + p
            intrinsic = np.maximum(np.where(ic, sr - k, k - sr), 0.0)
            out[rows] = np.fmax(v, intrinsic)
        ri, ci = np.nonzero(direct)
        if ri.size:
            out[ri, ci] = _american_price(
                ic[ci], s1[ri, ci], k[ci], t1[ri, ci], r[ci], q[ci], vol1[ri, ci],
                method="lr", steps=self.steps,
            )
        return out

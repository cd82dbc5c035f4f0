"""Position Greeks: the ONE place where per-share Greeks meet quantity and multiplier.

Model Greeks (``portfolio_pipeline.quant.pricing``) are per share/unit of underlying:
delta dV/dS, gamma d2V/dS2, vega per 1 vol point, theta per calendar day, rho per 1%
rate.  A position's Greeks multiply by signed quantity x contract multiplier exactly
once, here, for every broker:

* share-equivalent delta = delta * qty * mult; dollar delta = that * S
* dollar gamma per 1% move = gamma * qty * mult * S**2 / 100
* theta $/day = theta * qty * mult; vega $/vol-point = vega * qty * mult
* beta-weighted delta (in reference-index shares) = delta * qty * mult * S * beta / S_ref
* second order, for attribution: gamma in shares (delta change per $1) = gamma * qty * mult;
  vanna $ per (unit of S x vol point) = vanna * qty * mult; volga $ per vol point^2 =
  volga * qty * mult

Stock and futures positions have delta 1 and no other Greeks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


@dataclass(frozen=True, slots=True)
class PositionGreeks:
    """Dollar Greeks of positions (arrays aligned with the inputs)."""

    share_delta: FloatArray
    dollar_delta: FloatArray
    dollar_gamma_1pct: FloatArray
    theta_per_day: FloatArray
    vega_per_point: FloatArray
    rho_per_pct: FloatArray
    beta_weighted_delta: FloatArray
    beta_weighted_dollar_delta: FloatArray
    gamma_shares: FloatArray
    vanna_per_point: FloatArray
    volga_per_point: FloatArray


def position_greeks(
    *,
    delta: ArrayLike,
    gamma: ArrayLike,
    vega: ArrayLike,
    theta: ArrayLike,
    quantity: ArrayLike,
    multiplier: ArrayLike,
    spot: ArrayLike,
    rho: ArrayLike = 0.0,
    vanna: ArrayLike = 0.0,
    volga: ArrayLike = 0.0,
    beta: ArrayLike = 1.0,
    reference_price: ArrayLike | None = None,
) -> PositionGreeks:
    """Scale per-share Greeks to position Greeks (see the module docstring for units).

    Parameters
    ----------
    delta, gamma, vega, theta, rho
        Per-share model Greeks (vega per vol point, theta per calendar day, rho per 1%).
    vanna, volga
        Per-share second-order Greeks (per vol point, per vol point squared); optional.
    quantity
        Signed contracts (or shares/futures).
    multiplier
        Contract multiplier from the instrument table.
    spot
        Price of what delta is taken against (the spot, or the future for futures options).
    beta, reference_price
        Beta of the underlying to the reference index (SPY or SPX) and that index's
        price; ``reference_price`` None gives beta-weighted delta in the underlying's own
        shares (no conversion).
    """
    d = np.asarray(delta, dtype=np.float64)
    g = np.asarray(gamma, dtype=np.float64)
    v = np.asarray(vega, dtype=np.float64)
    t = np.asarray(theta, dtype=np.float64)
    r = np.asarray(rho, dtype=np.float64)
    units = np.asarray(quantity, dtype=np.float64) * np.asarray(multiplier, dtype=np.float64)
    s = np.asarray(spot, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    share_delta = d * units
    dollar_delta = share_delta * s
    bw_dollar = dollar_delta * b
    if reference_price is None:
        bw_delta = share_delta * b
    else:
        bw_delta = bw_dollar / np.asarray(reference_price, dtype=np.float64)
    return PositionGreeks(
        share_delta=np.asarray(share_delta, dtype=np.float64),
        dollar_delta=np.asarray(dollar_delta, dtype=np.float64),
        dollar_gamma_1pct=np.asarray(g * units * s * s / 100.0, dtype=np.float64),
        theta_per_day=np.asarray(t * units, dtype=np.float64),
        vega_per_point=np.asarray(v * units, dtype=np.float64),
        rho_per_pct=np.asarray(r * units, dtype=np.float64),
        beta_weighted_delta=np.asarray(bw_delta, dtype=np.float64),
        beta_weighted_dollar_delta=np.asarray(bw_dollar, dtype=np.float64),
        gamma_shares=np.asarray(g * units, dtype=np.float64),
        vanna_per_point=np.asarray(np.asarray(vanna, dtype=np.float64) * units, dtype=np.float64),
        volga_per_point=np.asarray(np.asarray(volga, dtype=np.float64) * units, dtype=np.float64),
    )

"""Plain "reference twin": textbook BSM/Black-76 with scipy.stats.norm (tests only)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm


def reference_greeks(
    is_call: Any, S: Any, K: Any, T: Any, r: Any, q: Any, vol: Any, black76: bool = False
) -> dict[str, Any]:
    """Straightforward formulas, T > 0 and vol > 0 only, project units."""
    w = np.where(is_call, 1.0, -1.0)
    S, K, T, r, q, vol = (np.asarray(a, dtype=float) for a in (S, K, T, r, q, vol))
    if black76:
        q = r
    b = np.zeros_like(r) if black76 else r - q
    d1 = (np.log(S / K) + (b + 0.5 * vol**2) * T) / (vol * np.sqrt(T))
    d2 = d1 - vol * np.sqrt(T)
    dq, dr = np.exp(-q * T), np.exp(-r * T)
    price = w * (S * dq * norm.cdf(w * d1) - K * dr * norm.cdf(w * d2))
    delta = w * dq * norm.cdf(w * d1)
    gamma = dq * norm.pdf(d1) / (S * vol * np.sqrt(T))
    vega = S * dq * norm.pdf(d1) * np.sqrt(T)
    theta = (
        -S * dq * norm.pdf(d1) * vol / (2 * np.sqrt(T))
        - w * r * K * dr * norm.cdf(w * d2)
        + w * q * S * dq * norm.cdf(w * d1)
    )
    rho = -T * price if black76 else w * K * T * dr * norm.cdf(w * d2)
    vanna = -dq * norm.pdf(d1) * d2 / vol
    volga = vega * d1 * d2 / vol
    charm = w * q * dq * norm.cdf(w * d1) - dq * norm.pdf(d1) * (
        2 * b * T - d2 * vol * np.sqrt(T)
    ) / (2 * T * vol * np.sqrt(T))
    return {
        "price": price,
        "delta": delta,
        "gamma": gamma,
        "vega": vega / 100,
        "theta": theta / 365,
        "rho": rho / 100,
        "vanna": vanna / 100,
        "volga": volga / 1e4,
        "charm": charm / 365,
    }

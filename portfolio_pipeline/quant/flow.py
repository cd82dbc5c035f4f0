"""Options flow and market structure of one option chain snapshot (pure numpy).

Dealer positioning (the assumption every exposure below rests on)
-----------------------------------------------------------------
Open interest says how many contracts exist, not who holds them. The dealer position per
contract (signed contracts, + = dealers long) is therefore an *assumption*, chosen by
``positioning``:

``"customers_sell_calls_buy_puts"`` (default)
    Customers write calls (overwriting) and buy puts (protection); dealers take the
    other side: **dealers long every call's open interest, short every put's**
    (``+OI`` calls, ``-OI`` puts). The usual published "GEX" convention.
``"customers_buy_calls_buy_puts"``
    Customers long both wings: dealers short every call and put (``-OI`` both).
``"net_customer"``
    From trade-side volumes: dealers hold the opposite of the customers' net buying,
    ``-(customer_buy - customer_sell)`` contracts per contract (the session's net flow,
    not its open interest). Needs ``customer_buy`` and ``customer_sell`` in the chain.

Units (as in :mod:`portfolio_pipeline.quant.pricing` and ``domain.greeks``)
---------------------------------------------------------------------------
* GEX: dealer dollar gamma per 1 % move, ``gamma x pos x mult x S^2 / 100``: the change
  of the dealers' dollar delta when spot moves 1 %. Positive = dealers long gamma (their
  hedging sells rallies and buys dips), negative = short gamma (hedging chases the move).
* vanna exposure: ``vanna x pos x mult x S``: dealer dollar-delta change per 1 vol point.
* charm exposure: ``charm x pos x mult x S``: dealer dollar-delta change as one calendar
  day passes.

Greeks are the kernel's European closed form at each contract's own implied vol
(American ETF options: the early-exercise premium's effect on gamma is ignored here).

Zero-gamma level
----------------
The spot ``S*`` where the dealers' total gamma changes sign, found by full revaluation:
every contract's gamma is recomputed by the BSM kernel at each spot of a sweep
(implied vols and times held: sticky strike, same instant), and each sign change of the
sweep is refined with Brent's method on the same full revaluation. The level reported is
the root nearest the current spot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq

from portfolio_pipeline.quant import pricing
from portfolio_pipeline.quant._typing import BoolArray, Float64Array, Model

__all__ = [
    "POSITIONING_MODES",
    "Chain",
    "ExpiryExposure",
    "Exposures",
    "FlowThresholds",
    "Pinning",
    "PutCallRow",
    "StrikeGex",
    "Unusual",
    "ZeroGamma",
    "dealer_gamma_curve",
    "dealer_position",
    "exposure_by_expiry",
    "exposures",
    "gex_by_strike",
    "max_pain",
    "pinning",
    "put_call_ratios",
    "unusual_activity",
    "zero_gamma",
]

Positioning: TypeAlias = Literal[
    "customers_sell_calls_buy_puts", "customers_buy_calls_buy_puts", "net_customer"
]
POSITIONING_MODES: Final[tuple[str, ...]] = (
    "customers_sell_calls_buy_puts",
    "customers_buy_calls_buy_puts",
    "net_customer",
)
DatetimeArray: TypeAlias = npt.NDArray[np.datetime64]

_UNUSUAL_VOL_OI: Final[int] = 1
_UNUSUAL_SIZE: Final[int] = 2
_UNUSUAL_FAR_OTM: Final[int] = 4
UNUSUAL_REASONS: Final[dict[int, str]] = {
    _UNUSUAL_VOL_OI: "volume_over_oi",
    _UNUSUAL_SIZE: "volume_over_average",
    _UNUSUAL_FAR_OTM: "far_otm_size",
}


def _bincount(inv: npt.NDArray[np.intp], weights: Float64Array, n: int) -> Float64Array:
    """Sums of ``weights`` per group index (float64)."""
    return np.asarray(np.bincount(inv, weights, minlength=n), dtype=np.float64)


def _f64(name: str, value: npt.ArrayLike, n: int | None) -> Float64Array:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"chain: {name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"chain: {name} has {arr.size} rows, expected {n}")
    return arr


@dataclass(frozen=True, slots=True)
class Chain:
    """One snapshot of one underlying's option chain, one row per contract.

    Parameters
    ----------
    spot : float
        Underlying price at the snapshot.
    is_call : array of bool
    strike : array of float
    expiry : array of datetime64[D]
        Expiry date (the grouping key of the per-expiry figures).
    T : array of float
        Years to settlement (ACT/365) from the snapshot.
    iv : array of float
        Implied vol (decimal). A NaN vol contributes no Greeks.
    open_interest, volume : array of float
        Contracts.
    multiplier : float
        Contract multiplier (from ``config/instruments.yaml``).
    rate, dividend_yield : float
        Continuously compounded decimals.
    customer_buy, customer_sell : array of float, optional
        Trade-side volumes (contracts bought / sold by customers), for ``net_customer``.
    """

    spot: float
    is_call: BoolArray
    strike: Float64Array
    expiry: DatetimeArray
    T: Float64Array
    iv: Float64Array
    open_interest: Float64Array
    volume: Float64Array
    multiplier: float
    rate: float = 0.0
    dividend_yield: float = 0.0
    model: Model = "bsm"
    customer_buy: Float64Array | None = None
    customer_sell: Float64Array | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spot) and self.spot > 0):
            raise ValueError(f"chain: spot must be a positive number, got {self.spot!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier > 0):
            raise ValueError(f"chain: multiplier must be positive, got {self.multiplier!r}")
        ic = np.asarray(self.is_call, dtype=np.bool_)
        n = ic.size
        object.__setattr__(self, "is_call", ic)
        for name in ("strike", "T", "iv", "open_interest", "volume"):
            object.__setattr__(self, name, _f64(name, getattr(self, name), n))
        for name in ("customer_buy", "customer_sell"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _f64(name, value, n))
        exp = np.asarray(self.expiry, dtype="datetime64[D]")
        if exp.shape != (n,):
            raise ValueError(f"chain: expiry has shape {exp.shape}, expected ({n},)")
        object.__setattr__(self, "expiry", exp)
        for name in ("open_interest", "volume"):
            arr = getattr(self, name)
            if np.any(arr < 0) or not np.all(np.isfinite(arr)):
                raise ValueError(f"chain: {name} must be finite and >= 0")

    @property
    def size(self) -> int:
        return int(self.is_call.size)


def dealer_position(chain: Chain, positioning: Positioning) -> Float64Array:
    """Signed dealer contracts per row under ``positioning`` (module docstring)."""
    if positioning == "customers_sell_calls_buy_puts":
        out: Float64Array = np.where(chain.is_call, chain.open_interest, -chain.open_interest)
        return out
    if positioning == "customers_buy_calls_buy_puts":
        return -chain.open_interest
    if positioning == "net_customer":
        if chain.customer_buy is None or chain.customer_sell is None:
            raise ValueError(
                "positioning 'net_customer' needs trade-side volumes (customer_buy and "
                "customer_sell) in the chain"
            )
        net: Float64Array = -(chain.customer_buy - chain.customer_sell)
        return net
    raise ValueError(f"unknown positioning {positioning!r} (expected one of {POSITIONING_MODES})")


def _greeks(chain: Chain, spot: float | Float64Array) -> pricing.Greeks:
    return pricing.greeks(
        chain.is_call,
        spot,
        chain.strike,
        chain.T,
        chain.rate,
        chain.dividend_yield,
        chain.iv,
        model=chain.model,
    )


@dataclass(frozen=True, slots=True)
class Exposures:
    """Per-contract dealer exposures at the snapshot spot (units: module docstring)."""

    position: Float64Array
    gamma: Float64Array
    delta: Float64Array
    gex: Float64Array
    vanna: Float64Array
    charm: Float64Array
    dollar_delta: Float64Array

    @property
    def total_gex(self) -> float:
        return float(np.sum(self.gex))


def exposures(chain: Chain, positioning: Positioning) -> Exposures:
    """Dealer GEX, vanna and charm exposure per contract (NaN Greeks count as 0)."""
    pos = dealer_position(chain, positioning)
    g = _greeks(chain, chain.spot)
    s = chain.spot
    scale = pos * chain.multiplier
    gamma = np.nan_to_num(np.asarray(g.gamma, dtype=np.float64))
    delta = np.nan_to_num(np.asarray(g.delta, dtype=np.float64))
    return Exposures(
        position=pos,
        gamma=gamma,
        delta=delta,
        gex=gamma * scale * s * s / 100.0,
        vanna=np.nan_to_num(np.asarray(g.vanna, dtype=np.float64)) * scale * s,
        charm=np.nan_to_num(np.asarray(g.charm, dtype=np.float64)) * scale * s,
        dollar_delta=delta * scale * s,
    )


@dataclass(frozen=True, slots=True)
class StrikeGex:
    """Dealer GEX ($ per 1 %) per strike, calls and puts apart, plus open interest."""

    strike: Float64Array
    call_gex: Float64Array
    put_gex: Float64Array
    call_oi: Float64Array
    put_oi: Float64Array

    @property
    def total(self) -> Float64Array:
        out: Float64Array = self.call_gex + self.put_gex
        return out


def gex_by_strike(chain: Chain, exp: Exposures) -> StrikeGex:
    """Sum the per-contract GEX over expiries at each strike."""
    strikes, inv = np.unique(chain.strike, return_inverse=True)
    n = strikes.size
    c = chain.is_call
    return StrikeGex(
        strike=strikes,
        call_gex=_bincount(inv, np.where(c, exp.gex, 0.0), n),
        put_gex=_bincount(inv, np.where(c, 0.0, exp.gex), n),
        call_oi=_bincount(inv, np.where(c, chain.open_interest, 0.0), n),
        put_oi=_bincount(inv, np.where(c, 0.0, chain.open_interest), n),
    )


@dataclass(frozen=True, slots=True)
class ExpiryExposure:
    """Dealer exposures of one expiry (GEX $/1 %, vanna $/vol point, charm $/day, delta $)."""

    expiry: np.datetime64
    gex: float
    vanna: float
    charm: float
    dollar_delta: float
    open_interest: float
    volume: float


def exposure_by_expiry(chain: Chain, exp: Exposures) -> list[ExpiryExposure]:
    """Sum the per-contract exposures by expiry (sorted by expiry)."""
    expiries, inv = np.unique(chain.expiry, return_inverse=True)
    n = expiries.size

    def s(x: Float64Array) -> Float64Array:
        out: Float64Array = _bincount(inv, x, n)
        return out

    gex, vanna, charm, dd = s(exp.gex), s(exp.vanna), s(exp.charm), s(exp.dollar_delta)
    oi, vol = s(chain.open_interest), s(chain.volume)
    return [
        ExpiryExposure(
            expiries[i],
            float(gex[i]),
            float(vanna[i]),
            float(charm[i]),
            float(dd[i]),
            float(oi[i]),
            float(vol[i]),
        )
        for i in range(n)
    ]


# --------------------------------------------------------------------------- zero gamma


def dealer_gamma_curve(
    chain: Chain, positioning: Positioning, spots: npt.ArrayLike
) -> Float64Array:
    """Total dealer GEX ($ per 1 %) at each spot in ``spots``, by full BSM revaluation.

    Every contract is revalued at every spot in one kernel call (implied vols and times
    held fixed: sticky strike at the snapshot instant).
    """
    s = np.asarray(spots, dtype=np.float64).reshape(-1, 1)
    pos = dealer_position(chain, positioning) * chain.multiplier
    held = pos != 0  # contracts nobody holds add no gamma: skip their revaluation
    pos = pos[held]
    g = pricing.greeks(
        chain.is_call[None, held],
        s,
        chain.strike[None, held],
        chain.T[None, held],
        chain.rate,
        chain.dividend_yield,
        chain.iv[None, held],
        model=chain.model,
    )
    gamma = np.nan_to_num(np.asarray(g.gamma, dtype=np.float64))
    out: Float64Array = (gamma @ pos) * s[:, 0] ** 2 / 100.0
    return out


def _share_gamma(chain: Chain, pos: Float64Array, held: BoolArray, spot: float) -> float:
    g = pricing.greeks(
        chain.is_call[held],
        spot,
        chain.strike[held],
        chain.T[held],
        chain.rate,
        chain.dividend_yield,
        chain.iv[held],
        model=chain.model,
    )
    return float(np.nan_to_num(np.asarray(g.gamma, dtype=np.float64)) @ pos[held])


@dataclass(frozen=True, slots=True)
class ZeroGamma:
    """Zero-gamma result: the root nearest spot (None if the sweep never changes sign),
    every root found, and the sweep itself (spots and total GEX $ per 1 %)."""

    level: float | None
    roots: tuple[float, ...]
    spots: Float64Array = field(repr=False)
    gex: Float64Array = field(repr=False)


def zero_gamma(
    chain: Chain,
    positioning: Positioning,
    *,
    lower: float = 0.75,
    upper: float = 1.25,
    points: int = 25,
    xtol: float = 1e-6,
) -> ZeroGamma:
    """Spot levels where the dealers' total gamma is zero, in ``[lower, upper] x spot``.

    The sweep (``points`` spots, geometric spacing) locates sign changes of the full
    revaluation; :func:`scipy.optimize.brentq` refines each one on the same revaluation
    (absolute tolerance ``xtol`` x spot). Exact zeros on the grid count as roots.
    """
    if not (0 < lower < 1 < upper) or points < 3:
        raise ValueError(
            f"zero_gamma: need 0 < lower < 1 < upper and points >= 3, got {lower}, {upper}, {points}"
        )
    spots = chain.spot * np.geomspace(lower, upper, points)
    curve = dealer_gamma_curve(chain, positioning, spots)
    pos = dealer_position(chain, positioning) * chain.multiplier
    held = pos != 0
    sign = np.sign(curve)
    roots: list[float] = [float(spots[i]) for i in np.flatnonzero(sign == 0)]
    for i in np.flatnonzero(sign[:-1] * sign[1:] < 0):
        root = brentq(
            lambda x: _share_gamma(chain, pos, held, x),
            float(spots[i]),
            float(spots[i + 1]),
            xtol=xtol * chain.spot,
        )
        roots.append(float(root))
    roots.sort()
    level = min(roots, key=lambda r: abs(r - chain.spot)) if roots else None
    return ZeroGamma(level, tuple(roots), spots, curve)


# --------------------------------------------------------------------------- put/call


@dataclass(frozen=True, slots=True)
class PutCallRow:
    """Put/call ratios of one expiry bucket (None when there is no call volume/OI)."""

    bucket: str
    put_volume: float
    call_volume: float
    put_oi: float
    call_oi: float

    @property
    def volume_ratio(self) -> float | None:
        return self.put_volume / self.call_volume if self.call_volume > 0 else None

    @property
    def oi_ratio(self) -> float | None:
        return self.put_oi / self.call_oi if self.call_oi > 0 else None


def bucket_labels(edges_days: tuple[int, ...]) -> list[str]:
    """Labels of the buckets ``(0, e1], (e1, e2], ..., (e_last, inf)`` in calendar days."""
    labels: list[str] = []
    prev = 0
    for e in edges_days:
        labels.append(f"{prev}-{e}d")
        prev = e
    labels.append(f">{prev}d")
    return labels


def put_call_ratios(chain: Chain, edges_days: tuple[int, ...] = (7, 30, 90)) -> list[PutCallRow]:
    """Put/call volume and OI ratios per days-to-expiry bucket, then ``"all"``.

    A contract falls in the bucket ``(e_{i-1}, e_i]`` of its calendar days to settlement
    ``T x 365`` (0 days, expiring now, in the first bucket).
    """
    if list(edges_days) != sorted(set(edges_days)) or (edges_days and edges_days[0] <= 0):
        raise ValueError(
            f"put_call_ratios: bucket edges must be positive and increasing, got {edges_days}"
        )
    days = chain.T * 365.0
    idx = np.searchsorted(np.asarray(edges_days, dtype=np.float64), days - 1e-9, side="left")
    rows: list[PutCallRow] = []
    c = chain.is_call
    for b, label in enumerate(bucket_labels(edges_days)):
        m = idx == b
        rows.append(_pc_row(label, m & ~c, m & c, chain))
    rows.append(_pc_row("all", ~c, c, chain))
    return rows


def _pc_row(label: str, puts: BoolArray, calls: BoolArray, chain: Chain) -> PutCallRow:
    return PutCallRow(
        label,
        float(chain.volume[puts].sum()),
        float(chain.volume[calls].sum()),
        float(chain.open_interest[puts].sum()),
        float(chain.open_interest[calls].sum()),
    )


# --------------------------------------------------------------------------- max pain, pinning


def max_pain(
    strike: npt.ArrayLike, is_call: npt.ArrayLike, open_interest: npt.ArrayLike
) -> tuple[float, Float64Array, Float64Array]:
    """Max-pain settlement of one expiry: the listed strike minimising the holders' payout.

    At settlement ``P`` the option holders receive
    ``sum_calls OI max(P - K, 0) + sum_puts OI max(K - P, 0)`` (per unit of multiplier);
    the candidates are the listed strikes, ties go to the lowest strike.

    Returns
    -------
    (float, ndarray, ndarray)
        The max-pain strike, the candidate strikes and the payout at each.
    """
    k = np.asarray(strike, dtype=np.float64)
    c = np.asarray(is_call, dtype=np.bool_)
    oi = np.asarray(open_interest, dtype=np.float64)
    if k.size == 0:
        raise ValueError("max_pain: empty expiry")
    cands = np.unique(k)
    diff = cands[:, None] - k[None, :]
    payout = np.where(c[None, :], np.maximum(diff, 0.0), np.maximum(-diff, 0.0)) @ oi
    return float(cands[int(np.argmin(payout))]), cands, payout


@dataclass(frozen=True, slots=True)
class Pinning:
    """OpEx pinning of the next expiry: its highest-OI strikes (call + put OI) and max pain,
    with their distance from spot (``strike / spot - 1``)."""

    expiry: np.datetime64
    strikes: Float64Array
    open_interest: Float64Array
    distance: Float64Array
    max_pain: float
    max_pain_distance: float


def pinning(chain: Chain, *, top: int = 3) -> Pinning | None:
    """The next expiry's pin candidates (None if the chain has no unexpired contract)."""
    live = chain.T > 0
    if not live.any():
        return None
    nxt = chain.expiry[live].min()
    m = chain.expiry == nxt
    strikes, inv = np.unique(chain.strike[m], return_inverse=True)
    oi = _bincount(inv, chain.open_interest[m], strikes.size)
    order = np.lexsort((strikes, -oi))[:top]
    mp, _, _ = max_pain(chain.strike[m], chain.is_call[m], chain.open_interest[m])
    return Pinning(
        expiry=nxt,
        strikes=strikes[order],
        open_interest=oi[order],
        distance=strikes[order] / chain.spot - 1.0,
        max_pain=mp,
        max_pain_distance=mp / chain.spot - 1.0,
    )


# --------------------------------------------------------------------------- unusual activity


@dataclass(frozen=True, slots=True)
class FlowThresholds:
    """Thresholds of :func:`unusual_activity`.

    Attributes
    ----------
    min_volume : float
        No contract with fewer contracts traded is unusual.
    volume_oi_ratio : float
        Volume / open interest at or above this (volume on zero OI counts).
    size_multiple : float
        Volume at or above this multiple of the contract's average daily volume.
    far_otm : float
        Out of the money by more than this fraction of spot (puts below
        ``spot (1 - far_otm)``, calls above ``spot (1 + far_otm)``).
    """

    min_volume: float = 100.0
    volume_oi_ratio: float = 1.0
    size_multiple: float = 5.0
    far_otm: float = 0.10


@dataclass(frozen=True, slots=True)
class Unusual:
    """Rows of the chain with unusual activity and why (a bit mask of ``UNUSUAL_REASONS``)."""

    index: npt.NDArray[np.intp]
    reasons: npt.NDArray[np.int64]

    def reason_names(self, i: int) -> list[str]:
        """The reasons of the ``i``-th flagged row as names."""
        r = int(self.reasons[i])
        return [name for bit, name in UNUSUAL_REASONS.items() if r & bit]


def unusual_activity(
    chain: Chain, average_volume: npt.ArrayLike | None, thresholds: FlowThresholds
) -> Unusual:
    """Flag unusual volume per contract.

    ``average_volume`` is each contract's average daily volume over earlier snapshots
    (NaN or 0 = no history: that test is skipped for the contract).
    """
    vol, oi = chain.volume, chain.open_interest
    enough = vol >= thresholds.min_volume
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(oi > 0, vol / np.where(oi > 0, oi, 1.0), np.inf)
    reasons = np.where(enough & (ratio >= thresholds.volume_oi_ratio), _UNUSUAL_VOL_OI, 0)
    if average_volume is not None:
        avg = _f64("average_volume", average_volume, chain.size)
        has = np.isfinite(avg) & (avg > 0)
        big = enough & has & (vol >= thresholds.size_multiple * np.where(has, avg, np.inf))
        reasons |= np.where(big, _UNUSUAL_SIZE, 0)
    otm = np.where(
        chain.is_call,
        chain.strike > chain.spot * (1.0 + thresholds.far_otm),
        chain.strike < chain.spot * (1.0 - thresholds.far_otm),
    )
    reasons |= np.where(enough & otm, _UNUSUAL_FAR_OTM, 0)
    idx = np.flatnonzero(reasons)
    return Unusual(idx, reasons[idx].astype(np.int64))

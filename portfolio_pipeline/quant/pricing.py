"""Vectorised European/American option pricing, Greeks and implied volatility.

Models
------
``model="bsm"``
    Black-Scholes-Merton on a spot ``S`` paying a continuous dividend yield ``q``;
    forward ``F = S e^{(r-q)T}``.
``model="black76"``
    Black (1976) on a futures/forward price ``S`` (``F = S``); ``q`` is ignored and
    the premium is discounted at ``r``.  Numerically this is BSM with ``q = r``,
    except for rho (the futures price is held fixed when ``r`` moves).

Units (the one definition for the whole project)
------------------------------------------------
All values are per share / unit of underlying, ``T`` is in years (ACT/365),
``r``, ``q`` and ``vol`` are continuously compounded decimals (0.05 = 5 %).

=========  ==============================================================
price      option value
delta      dV/dS
gamma      d2V/dS2
vega       dV/dsigma / 100                (per 1 vol point)
theta      -dV/dT / 365                   (per calendar day; the change in value
                                           as one day passes; < 0 for a long
                                           option in most cases)
rho        dV/dr / 100                    (per 1 % rate)
vanna      d2V/dS dsigma / 100            (delta change per 1 vol point)
volga      d2V/dsigma2 / 1e4              (vega change per vol point, per vol point)
charm      -d(delta)/dT / 365             (delta change as one calendar day passes)
=========  ==============================================================

Edge cases (element-wise; nothing raises for bad *values*)
----------------------------------------------------------
* ``T == 0``: price = intrinsic ``max(w(S-K), 0)``; delta = ``w`` in the money,
  0 out of the money and ``0.5 w`` exactly at the money (the average of the two
  one-sided limits); every other Greek is 0.
* ``vol == 0`` and ``T > 0``: price = discounted intrinsic on the forward,
  ``max(w(S e^{-qT} - K e^{-rT}), 0)``; delta = ``w e^{-qT}`` when the forward is in
  the money, 0 out of the money, ``0.5 w e^{-qT}`` at the forward money;
  gamma/vega/vanna/volga/charm = 0; theta and rho are the (one-sided)
  derivatives of the discounted intrinsic.
* ``T < 0``, ``S <= 0``, ``K <= 0``, ``vol < 0`` or any non-finite input: every
  output is NaN for that element.  :func:`validate_inputs` returns a bit mask
  saying which argument was invalid.
* A :class:`ValueError` is raised only for structural errors: shapes that do not
  broadcast, an unknown ``model``/``exercise`` or an unknown kind string
  (``"unknown option kind 'X' at index 3"``).

Here ``w = +1`` for calls and ``-1`` for puts.

Speed
-----
Kinds given as ``"call"``/``"put"`` strings are parsed with two vectorised comparisons
(other spellings take the general route, only for the elements that need it).  The
kernels work in blocks of :data:`CHUNK` elements that stay in the CPU cache, with the
shared terms computed once and in-place ufuncs; inputs of :data:`PARALLEL_MIN` elements
or more run their blocks on a short-lived thread pool when CPUs are idle (numpy/scipy
ufuncs release the GIL; the blocks write disjoint slices, so results are bit-identical
to one thread).
``benchmarks/bench_pricing.py`` measures them against a straightforward numpy BSM with
``scipy.special.ndtr`` and against py_vollib_vectorized.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri

from portfolio_pipeline.quant._typing import (
    BoolArray,
    Exercise,
    Float64Array,
    FloatLike,
    Int8Array,
    KindLike,
    Model,
)
from portfolio_pipeline.quant.american import bs2002_call, lr_tree, lr_tree_nodes

AmericanMethod: TypeAlias = Literal["lr", "bs2002"]

__all__ = [
    "CHUNK",
    "Greeks",
    "IVReason",
    "InvalidInput",
    "american_greeks",
    "american_price",
    "greeks",
    "implied_vol",
    "parse_kind",
    "price",
    "validate_inputs",
]

CHUNK: Final[int] = 65_536
"""Elements processed per block (keeps the temporaries in cache)."""

_INV_SQRT_2PI: Final[float] = 0.3989422804014327
_DAYS: Final[float] = 365.0
_IV_STEP_TOL: Final[float] = 1e-6


class InvalidInput(enum.IntFlag):
    """Bit flags returned by :func:`validate_inputs` (0 means valid)."""

    S = 1
    K = 2
    T = 4
    R = 8
    Q = 16
    VOL = 32


class IVReason(enum.IntEnum):
    """Reason codes returned by :func:`implied_vol` with ``return_reason=True``."""

    OK = 0
    BELOW_INTRINSIC = 1
    ABOVE_UPPER_BOUND = 2
    EXPIRED = 3
    INVALID_INPUT = 4
    NO_CONVERGENCE = 5


@dataclass(frozen=True, slots=True)
class Greeks:
    """Price and Greeks, each an array of the broadcast input shape.

    Units are the project units of the module docstring: vega/vanna per vol point,
    volga per vol point squared, theta/charm per calendar day, rho per 1 % rate.
    """

    price: Float64Array
    delta: Float64Array
    gamma: Float64Array
    vega: Float64Array
    theta: Float64Array
    rho: Float64Array
    vanna: Float64Array
    volga: Float64Array
    charm: Float64Array


_FIELDS: Final[tuple[str, ...]] = (
    "price",
    "delta",
    "gamma",
    "vega",
    "theta",
    "rho",
    "vanna",
    "volga",
    "charm",
)


# --------------------------------------------------------------------------- inputs


def parse_kind(kind: KindLike) -> BoolArray:
    """Convert an option-kind specification to a boolean ``is_call`` array.

    Parameters
    ----------
    kind : str, bool or array_like
        ``"call"``/``"put"``/``"C"``/``"P"`` in any case, or an array of them; or a
        bool/integer array interpreted as ``is_call`` (non-zero = call).

    Returns
    -------
    numpy.ndarray of bool
        ``True`` for calls, same shape as ``kind``.

    Raises
    ------
    ValueError
        For a string that is not a known kind, naming the first bad element.
    """
    arr = np.asarray(kind)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind in "iu":
        nz: BoolArray = arr != 0
        return nz
    if arr.dtype.kind in "fc":
        if not np.all(np.isfinite(arr)):
            raise ValueError("option kind array contains non-finite values")
        nzf: BoolArray = arr != 0
        return nzf
    if arr.dtype.kind not in "USO":
        raise ValueError(f"option kind must be str or bool, got dtype {arr.dtype}")
    flat = arr.reshape(-1)
    if arr.dtype == _U4 and arr.ndim > 0:
        # numpy's own np.where(ic, "call", "put"): each element is two 64-bit words
        words = np.ascontiguousarray(flat).view(np.uint64).reshape(-1, 2)
        lo, hi = words[:, 0], words[:, 1]
        is_call4: BoolArray = lo == _CALL_WORDS[0]
        is_call4 &= hi == _CALL_WORDS[1]
        is_put = lo == _PUT_WORDS[0]
        is_put &= hi == _PUT_WORDS[1]
        is_put |= is_call4
        if is_put.all():
            return is_call4.reshape(arr.shape)
    if arr.dtype.kind in "UO" and arr.ndim > 0:
        # Fast path, vectorised: exact "call"/"put" (what feeds and users pass) cost two
        # array comparisons; only the remaining elements take the general route.
        is_call: BoolArray = np.equal(flat, "call", dtype=bool)
        if flat.dtype.kind == "O":  # a masked compare beats gathering Python objects
            other = np.zeros(flat.shape, dtype=bool)
            np.not_equal(flat, "put", out=other, where=~is_call, dtype=bool)
            todo = np.flatnonzero(other)
        else:
            todo = np.flatnonzero(~is_call)
            todo = todo[np.not_equal(flat[todo], "put", dtype=bool)]
        if todo.size:
            calls, ok = _parse_kind_strings(flat[todo])
            is_call[todo] = calls
            if not ok.all():
                bad = int(todo[np.argmin(ok)])
                raise ValueError(f"unknown option kind {str(flat[bad])!r} at index {bad}")
        return is_call.reshape(arr.shape)
    if flat.dtype.kind == "S":
        flat = flat.astype(str)
    calls, ok = _parse_kind_strings(flat)
    if not ok.all():
        bad = int(np.argmin(ok))
        where = "" if arr.ndim == 0 else f" at index {bad}"
        raise ValueError(f"unknown option kind {str(flat[bad])!r}{where}")
    return calls.reshape(arr.shape)


_U4: Final = np.dtype("<U4")
# "call" / "put" as the two little-endian 64-bit words of a <U4 element (UTF-32 code units)
_CALL_WORDS: Final[tuple[int, int]] = (ord("c") | ord("a") << 32, ord("l") | ord("l") << 32)
_PUT_WORDS: Final[tuple[int, int]] = (ord("p") | ord("u") << 32, ord("t"))


def _parse_kind_strings(flat: npt.NDArray[np.generic]) -> tuple[BoolArray, BoolArray]:
    """General route of :func:`parse_kind` (any case, blanks stripped): ``(is_call, known)``."""
    if flat.dtype.kind != "U":
        try:
            flat = flat.astype(str)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"option kind must be str or bool, got {flat.dtype}") from exc
    low = np.strings.lower(np.strings.strip(flat.astype(np.str_, copy=False)))
    is_call = (low == "call") | (low == "c")
    ok = is_call | (low == "put") | (low == "p")
    return is_call, ok


def _check_model(model: str) -> bool:
    if model == "bsm":
        return False
    if model == "black76":
        return True
    raise ValueError(f"unknown model {model!r} (expected 'bsm' or 'black76')")


def _broadcast(
    is_call: BoolArray, names: tuple[str, ...], values: tuple[FloatLike, ...]
) -> tuple[tuple[int, ...], BoolArray, list[Float64Array]]:
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    try:
        shape = np.broadcast_shapes(is_call.shape, *(a.shape for a in arrays))
    except ValueError:
        desc = ", ".join(
            f"{n}{a.shape}" for n, a in zip(("kind", *names), (is_call, *arrays), strict=True)
        )
        raise ValueError(f"arguments could not be broadcast together: {desc}") from None
    flat = [np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1) for a in arrays]
    ic = np.ascontiguousarray(np.broadcast_to(is_call, shape)).reshape(-1)
    return shape, ic, flat


def validate_inputs(
    S: FloatLike,
    K: FloatLike,
    T: FloatLike,
    r: FloatLike,
    q: FloatLike,
    vol: FloatLike,
    model: Model = "bsm",
) -> Int8Array:
    """Per-element validity mask of pricing inputs.

    Parameters
    ----------
    S, K, T, r, q, vol : array_like
        Pricing inputs (broadcast together).
    model : {"bsm", "black76"}
        For ``"black76"`` ``q`` is ignored and never flagged.

    Returns
    -------
    numpy.ndarray of int8
        Bitwise OR of :class:`InvalidInput` flags: ``S`` (non-finite or <= 0),
        ``K`` (non-finite or <= 0), ``T`` (non-finite or < 0), ``R`` / ``Q``
        (non-finite), ``VOL`` (non-finite or < 0).  0 means the element is valid;
        the pricing functions return NaN wherever the mask is non-zero.

    Notes
    -----
    ``T == 0`` and ``vol == 0`` are valid (see the module docstring).
    """
    black76 = _check_model(model)
    names = ("S", "K", "T", "r", "q", "vol")
    shape, _, (s, k, t, rr, qq, v) = _broadcast(
        np.zeros((), dtype=bool), names, (S, K, T, r, q, vol)
    )
    return _invalid_mask(s, k, t, rr, qq, v, black76).reshape(shape)


def _invalid_mask(
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    rr: Float64Array,
    qq: Float64Array,
    v: Float64Array,
    black76: bool,
) -> Int8Array:
    with np.errstate(invalid="ignore"):
        m = np.where(~(s > 0.0) | ~np.isfinite(s), np.int8(InvalidInput.S), np.int8(0))
        m |= np.where(~(k > 0.0) | ~np.isfinite(k), np.int8(InvalidInput.K), np.int8(0))
        m |= np.where(~(t >= 0.0) | ~np.isfinite(t), np.int8(InvalidInput.T), np.int8(0))
        m |= np.where(~np.isfinite(rr), np.int8(InvalidInput.R), np.int8(0))
        if not black76:
            m |= np.where(~np.isfinite(qq), np.int8(InvalidInput.Q), np.int8(0))
        m |= np.where(~(v >= 0.0) | ~np.isfinite(v), np.int8(InvalidInput.VOL), np.int8(0))
    return m.astype(np.int8, copy=False)


def _any_invalid(
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    rr: Float64Array,
    qq: Float64Array,
    v: Float64Array,
    black76: bool,
) -> BoolArray:
    """``_invalid_mask(...) != 0`` without building the bit mask (NaN compares False)."""
    ok = s > 0.0
    ok &= s < np.inf
    ok &= k > 0.0
    ok &= k < np.inf
    ok &= t >= 0.0
    ok &= t < np.inf
    ok &= v >= 0.0
    ok &= v < np.inf
    ok &= np.isfinite(rr)
    if not black76:
        ok &= np.isfinite(qq)
    np.logical_not(ok, out=ok)
    return ok


# --------------------------------------------------------------------------- kernels

PARALLEL_MIN: Final[int] = 4 * CHUNK
"""Below this many elements the blocks run in the calling thread."""


def _spare_workers(n_blocks: int) -> int:
    """Threads worth using: the CPUs not busy with other processes (1-minute load average,
    this thread included), at most 4 and ``n_blocks``.  On a machine whose cores are all
    taken, a pool only adds contention, so the blocks then run in the calling thread."""
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        load = 0.0
    idle = int(cpus - load + 1.5)  # + 1: the calling thread is counted in the load
    return max(1, min(cpus, idle, 4, n_blocks))


def _run_blocks(
    n: int, block: Callable[[int, int], None], chunk: int = CHUNK, elements: int | None = None
) -> None:
    """Call ``block(a, b)`` for the ``chunk``-sized slices of ``range(n)``.

    The blocks write disjoint output slices and spend their time in numpy/scipy ufunc
    loops, which release the GIL; when the work is large (``elements``, default ``n``, at
    least :data:`PARALLEL_MIN`) they run on a short-lived thread pool sized by
    :func:`_spare_workers`; the results are bit-identical to the serial run.  An exception
    of a block is re-raised, the one of the first failing block in order.
    """
    starts = range(0, n, chunk)
    big = (n if elements is None else elements) >= PARALLEL_MIN
    workers = _spare_workers(len(starts)) if big and len(starts) > 1 else 1
    with np.errstate(all="ignore"):
        if workers < 2:
            for a in starts:
                block(a, min(a + chunk, n))
            return

    def run(a: int) -> None:
        with np.errstate(all="ignore"):  # errstate is per thread
            block(a, min(a + chunk, n))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in [pool.submit(run, a) for a in starts]:
            fut.result()



def _price_block(
    ic: BoolArray,
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    rr: Float64Array,
    qq: Float64Array,
    v: Float64Array,
    black76: bool,
    out: Float64Array,
) -> None:
    """Price one block in place (``out``); assumes ``np.errstate(all='ignore')``."""
    w = ic * 2.0 - 1.0
    sqt = np.sqrt(t)
    sd = v * sqt  # total std dev
    rt = rr * t
    np.negative(rt, out=rt)
    kr = np.exp(rt)  # e^{-rT}
    sq = s * kr if black76 else s * np.exp(-(qq * t))  # S e^{-qT}
    kr *= k  # K e^{-rT}
    d1 = sq / kr
    np.log(d1, out=d1)
    d1 /= sd
    sd *= 0.5
    d1 += sd  # d1
    sd *= 2.0
    d2 = d1 - sd
    d1 *= w
    d2 *= w
    ndtr(d1, out=d1)
    ndtr(d2, out=d2)
    np.multiply(sq, d1, out=out)
    d2 *= kr
    out -= d2
    out *= w
    special = ~(sd > 0.0)  # T == 0, vol == 0 or NaN
    if special.any():
        intr = sq - kr
        intr *= w
        np.maximum(intr, 0.0, out=intr)
        out[special] = intr[special]
    bad = _any_invalid(s, k, t, rr, qq, v, black76)
    if bad.any():
        out[bad] = np.nan


def _price_grid(
    ic: BoolArray,
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    rr: Float64Array,
    qq: Float64Array,
    v: Float64Array,
    black76: BoolArray,
) -> Float64Array:
    """European prices on a scenario grid: ``s``, ``v`` of shape ``(m, C)``; ``ic``, ``k``,
    ``rr``, ``qq``, ``black76`` per contract ``(C,)``; ``t`` ``(C,)`` (one time for every
    row) or ``(m, C)``.

    The same operations as :func:`_price_block` in the same order, but the terms that
    depend on the contract and time only (``sqrt(T)``, ``e^{-rT}``, ``e^{-qT}``,
    ``K e^{-rT}``) are computed once per contract when ``t`` is a row, and nothing is
    broadcast into full arrays; so every element equals :func:`price` bit for bit.
    Elements the closed form does not cover (``T == 0``, ``vol == 0``, invalid input)
    are handed to :func:`price` itself.  Assumes ``np.errstate(all='ignore')``.
    """
    w = ic * 2.0 - 1.0
    sqt = np.sqrt(t)
    rt = rr * t
    np.negative(rt, out=rt)
    kr = np.exp(rt)  # e^{-rT}
    qe = np.where(black76, rr, qq)  # Black-76: S e^{-rT} (F discounted)
    dq = np.exp(-(qe * t))
    kr *= k  # K e^{-rT}
    sd = v * sqt
    sq = s * dq
    d1 = sq / kr
    np.log(d1, out=d1)
    d1 /= sd
    sd *= 0.5
    d1 += sd
    sd *= 2.0
    d2 = d1 - sd
    d1 *= w
    d2 *= w
    ndtr(d1, out=d1)
    ndtr(d2, out=d2)
    out = np.multiply(sq, d1, out=d1)
    d2 *= kr
    out -= d2
    out *= w
    special = ~(sd > 0.0)
    special |= ~(s > 0.0)
    special |= ~np.isfinite(out)
    col_ok = (k > 0.0) & (k < np.inf) & np.isfinite(rr) & np.isfinite(qq)
    if not col_ok.all():
        special |= ~col_ok
    if special.any():
        i, j = np.nonzero(special)
        tt = np.broadcast_to(t, s.shape)[i, j]
        for model in (False, True):
            sel = black76[j] == model
            if sel.any():
                jj = j[sel]
                out[i[sel], jj] = price(
                    ic[jj], s[i[sel], jj], k[jj], tt[sel], rr[jj], qq[jj], v[i[sel], jj],
                    model="black76" if model else "bsm",
                )
    return out


def _greeks_block(
    ic: BoolArray,
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    rr: Float64Array,
    qq: Float64Array,
    v: Float64Array,
    black76: bool,
    o: list[Float64Array],
) -> None:
    """All Greeks for one block, written into the 9 arrays ``o`` (errstate ignore)."""
    price_o, delta_o, gamma_o, vega_o, theta_o, rho_o, vanna_o, volga_o, charm_o = o
    # Fewest passes over the block: shared terms once, results written in place into the
    # outputs, every temporary reused (see the formulas in the comments).
    w = ic * 2.0 - 1.0
    sqt = np.sqrt(t)
    sd = v * sqt
    df = rr * t
    np.negative(df, out=df)
    np.exp(df, out=df)  # e^{-rT}
    qe = rr if black76 else qq  # effective dividend yield (q = r for Black-76)
    if black76:
        dq = df
    else:
        dq = qq * t
        np.negative(dq, out=dq)
        np.exp(dq, out=dq)  # e^{-qT}
    sq = s * dq
    kr = k * df
    d1 = sq / kr
    np.log(d1, out=d1)
    d1 /= sd
    tmp = 0.5 * sd
    d1 += tmp
    d2 = d1 - sd
    nd1 = np.multiply(d1, d1, out=tmp)
    nd1 *= -0.5
    np.exp(nd1, out=nd1)
    nd1 *= _INV_SQRT_2PI  # n(d1)
    n1 = w * d1
    ndtr(n1, out=n1)  # N(w d1)
    n2 = w * d2
    ndtr(n2, out=n2)  # N(w d2)

    # vol == 0 or T == 0 (sd == 0): N(w d) -> step function, n(d1) -> 0.
    special = ~(sd > 0.0)
    any_special = bool(special.any())
    if any_special:
        fwd = w * (sq - kr)
        step = np.where(fwd > 0.0, 1.0, np.where(fwd == 0.0, 0.5, 0.0))
        n1[special] = step[special]
        n2[special] = step[special]
        nd1[special] = 0.0

    # delta = w e^{-qT} N(w d1)
    np.multiply(dq, n1, out=delta_o)
    delta_o *= w
    sqn1 = np.multiply(sq, n1, out=n1)  # S e^{-qT} N(w d1)  (n1 not needed any more)
    wkn2 = np.multiply(kr, n2, out=n2)
    wkn2 *= w  # w K e^{-rT} N(w d2)
    # price = w S e^{-qT} N(w d1) - w K e^{-rT} N(w d2)
    px = np.multiply(sqn1, w, out=price_o)
    px -= wkn2
    if any_special:
        np.maximum(px, 0.0, out=px)  # kills -0.0 / rounding for the step case
    # vega per 1.0 vol = S e^{-qT} n(d1) sqrt(T)   (scaled to per point at the end)
    dqn = np.multiply(dq, nd1, out=dq) if not black76 else dq * nd1  # e^{-qT} n(d1)
    vega1 = np.multiply(s, dqn, out=vega_o)
    vega1 *= sqt
    # gamma = e^{-qT} n(d1) / (S sd)
    np.multiply(s, sd, out=gamma_o)
    np.divide(dqn, gamma_o, out=gamma_o)
    # theta (per year, time passing) = -vega1 vol / (2T) - r w K e^{-rT} N(w d2)
    #                                  + q w S e^{-qT} N(w d1)
    th = np.multiply(vega1, v, out=theta_o)
    th /= -2.0 * t
    np.multiply(rr, wkn2, out=tmp)
    th -= tmp
    np.multiply(qe, sqn1, out=tmp)
    tmp *= w
    th += tmp
    th /= _DAYS
    # rho
    if black76:
        np.multiply(t, px, out=rho_o)
        rho_o /= -100.0
    else:
        np.multiply(t, wkn2, out=rho_o)
        rho_o /= 100.0
    # vanna = -e^{-qT} n(d1) d2 / vol ; volga = vega1 d1 d2 / vol
    np.multiply(dqn, d2, out=vanna_o)
    vanna_o /= v
    vanna_o *= -0.01
    np.multiply(vega1, d1, out=volga_o)
    volga_o *= d2
    volga_o /= v
    volga_o *= 1e-4
    # charm = q delta - e^{-qT} n(d1) (2 b T - d2 sd) / (2 T sd)
    num = np.multiply(d2, sd, out=d2)
    if not black76:
        np.negative(num, out=num)
        np.subtract(rr, qq, out=tmp)  # carry b = r - q (0 for Black-76)
        tmp *= t
        tmp *= 2.0
        num += tmp
    else:
        np.negative(num, out=num)
    np.multiply(t, sd, out=tmp)
    tmp *= 2.0
    num /= tmp
    num *= dqn
    np.multiply(qe, delta_o, out=charm_o)
    charm_o -= num
    charm_o /= _DAYS
    vega1 /= 100.0

    if any_special:
        for arr in (gamma_o, vega_o, vanna_o, volga_o, charm_o):
            arr[special] = 0.0
        expired = special & (t == 0.0)
        if expired.any():
            theta_o[expired] = 0.0
            rho_o[expired] = 0.0
        else:  # vol == 0, T > 0: theta formula had 0 * inf terms removed by nd1 = 0
            pass
        theta_fix = special & ~expired
        if theta_fix.any():
            # -dV/dT of the discounted intrinsic (n(d1) = 0 terms dropped).
            alt = (qe * w) * sqn1 - rr * wkn2
            theta_o[theta_fix] = alt[theta_fix] / _DAYS
    bad = _any_invalid(s, k, t, rr, qq, v, black76)
    if bad.any():
        for arr in o:
            arr[bad] = np.nan


# --------------------------------------------------------------------------- public


def price(
    kind: KindLike,
    S: FloatLike,
    K: FloatLike,
    T: FloatLike,
    r: FloatLike,
    q: FloatLike,
    vol: FloatLike,
    model: Model = "bsm",
) -> Float64Array:
    """European option price (the cheap Monte Carlo path).

    Parameters
    ----------
    kind : str, bool or array_like
        ``"call"``/``"put"``/``"C"``/``"P"`` (any case) or bool ``is_call``.
    S : array_like
        Spot (``bsm``) or futures price (``black76``).
    K : array_like
        Strike.
    T : array_like
        Time to expiry in years (ACT/365).
    r : array_like
        Continuously compounded risk-free rate.
    q : array_like
        Continuous dividend yield (ignored for ``black76``).
    vol : array_like
        Black volatility (decimal).
    model : {"bsm", "black76"}
        Pricing model.

    Returns
    -------
    numpy.ndarray
        Prices with the broadcast shape of the inputs (NaN for invalid elements).

    Notes
    -----
    With ``w = +1`` (call) / ``-1`` (put), ``F = S e^{(r-q)T}`` (``F = S`` for
    Black-76) and ``s = vol sqrt(T)``:

    .. math::

        V = w\\,e^{-rT}\\left[F N(w d_1) - K N(w d_2)\\right],\\quad
        d_{1,2} = \\frac{\\ln(F/K)}{s} \\pm \\frac{s}{2}.

    Computed block-wise (:data:`CHUNK` elements) with one ``ndtr`` per ``d``.
    """
    black76 = _check_model(model)
    shape, ic, (s, k, t, rr, qq, v) = _broadcast(
        parse_kind(kind), ("S", "K", "T", "r", "q", "vol"), (S, K, T, r, q, vol)
    )
    n = ic.size
    out = np.empty(n, dtype=np.float64)

    def block(a: int, b: int) -> None:
        _price_block(
            ic[a:b], s[a:b], k[a:b], t[a:b], rr[a:b], qq[a:b], v[a:b], black76, out[a:b]
        )

    _run_blocks(n, block)
    return out.reshape(shape)


def _european_greeks(
    kind: KindLike,
    S: FloatLike,
    K: FloatLike,
    T: FloatLike,
    r: FloatLike,
    q: FloatLike,
    vol: FloatLike,
    model: Model,
) -> Greeks:
    black76 = _check_model(model)
    shape, ic, (s, k, t, rr, qq, v) = _broadcast(
        parse_kind(kind), ("S", "K", "T", "r", "q", "vol"), (S, K, T, r, q, vol)
    )
    n = ic.size
    # one allocation for the 9 outputs (rows): far fewer page faults than 9 arrays
    outs = list(np.empty((len(_FIELDS), n), dtype=np.float64))

    def block(a: int, b: int) -> None:
        _greeks_block(
            ic[a:b],
            s[a:b],
            k[a:b],
            t[a:b],
            rr[a:b],
            qq[a:b],
            v[a:b],
            black76,
            [x[a:b] for x in outs],
        )

    _run_blocks(n, block)
    return Greeks(*(x.reshape(shape) for x in outs))


def greeks(
    kind: KindLike,
    S: FloatLike,
    K: FloatLike,
    T: FloatLike,
    r: FloatLike,
    q: FloatLike,
    vol: FloatLike,
    model: Model = "bsm",
    *,
    exercise: Exercise = "european",
) -> Greeks:
    """Price and all Greeks (European closed form, or American via :func:`american_greeks`).

    Parameters
    ----------
    kind, S, K, T, r, q, vol, model
        As for :func:`price`.
    exercise : {"european", "american"}
        ``"american"`` dispatches to :func:`american_greeks` (``model`` must be
        ``"bsm"``).

    Returns
    -------
    Greeks
        Arrays of the broadcast shape, in project units (see module docstring).

    Notes
    -----
    With ``D_q = e^{-qT}`` (``e^{-rT}`` for Black-76), ``D_r = e^{-rT}``,
    ``s = vol sqrt(T)``, ``n``/``N`` the standard normal pdf/cdf, ``b = r - q``
    (0 for Black-76) and ``q_e = q`` (``r`` for Black-76), per 1.0 of each input:

    .. math::

        \\Delta &= w D_q N(w d_1),\\qquad
        \\Gamma = \\frac{D_q n(d_1)}{S s},\\qquad
        \\mathcal{V} = S D_q n(d_1)\\sqrt{T},\\\\
        \\Theta &= -\\frac{S D_q n(d_1)\\,vol}{2\\sqrt{T}} - w r K D_r N(w d_2)
                  + w q_e S D_q N(w d_1),\\\\
        \\rho &= w K T D_r N(w d_2)\\ \\text{(BSM)},\\qquad \\rho = -T V\\ \\text{(Black-76)},\\\\
        \\text{vanna} &= -\\frac{D_q n(d_1) d_2}{vol},\\qquad
        \\text{volga} = \\mathcal{V}\\frac{d_1 d_2}{vol},\\\\
        \\text{charm} &= w q_e D_q N(w d_1) - D_q n(d_1)\\frac{2bT - d_2 s}{2 T s},

    then vega, vanna and rho are divided by 100, volga by 1e4, theta and charm
    by 365.
    """
    if exercise == "european":
        return _european_greeks(kind, S, K, T, r, q, vol, model)
    if exercise == "american":
        if model != "bsm":
            raise ValueError("exercise='american' is only supported with model='bsm'")
        return american_greeks(kind, S, K, T, r, q, vol)
    raise ValueError(f"unknown exercise {exercise!r} (expected 'european' or 'american')")


# --------------------------------------------------------------------------- American


def american_price(
    kind: KindLike,
    S: FloatLike,
    K: FloatLike,
    T: FloatLike,
    r: FloatLike,
    q: FloatLike,
    vol: FloatLike,
    *,
    method: AmericanMethod = "lr",
    steps: int = 201,
) -> Float64Array:
    """American option price (equity/ETF options, spot with continuous yield ``q``).

    Parameters
    ----------
    kind, S, K, T, r, q, vol
        As for :func:`price` (``model="bsm"``).
    method : {"lr", "bs2002"}, default "lr"
        ``"lr"``: Leisen-Reimer binomial tree with ``steps`` steps and the
        European value as control variate (201 steps, against QuantLib's
        fine-grid FD engine: up to 7.5e-4 relative on the demo book, 8.2e-4 on
        the 1-day to 2-year grid of ``test_american_greeks.py``);
        ``"bs2002"``: Bjerksund-Stensland (2002) closed-form approximation (about
        100x faster, a lower bound: measured -0.01 % to -1.77 % against the tree
        on the demo book).
    steps : int, default 201
        Tree steps for ``method="lr"`` (rounded up to odd).

    Returns
    -------
    numpy.ndarray
        ``max(estimate, European, intrinsic)``; NaN for invalid elements.

    Notes
    -----
    Control variate: ``V_A = V_E^{BSM} + (V_A^{tree} - V_E^{tree})``.  BS2002 puts
    use the put-call transformation ``P(S, K, T, r, b) = C(K, S, T, r - b, -b)``
    with ``b = r - q``.  Where early exercise is never optimal (call with
    ``q <= 0``, put with ``r <= 0``), and for ``T == 0`` or ``vol == 0``, the
    European price (see :func:`price`) is returned exactly; hence an American
    call with ``q = 0`` equals the European call.  The early-exercise premium is
    never negative by construction.
    """
    shape, ic, (s, k, t, rr, qq, v) = _broadcast(
        parse_kind(kind), ("S", "K", "T", "r", "q", "vol"), (S, K, T, r, q, vol)
    )
    if method not in ("lr", "bs2002"):
        raise ValueError(f"unknown American method {method!r} (expected 'lr' or 'bs2002')")
    out = _american_flat(ic, s, k, t, rr, qq, v, method, steps)
    return out.reshape(shape)


_TREE_BLOCK: Final[int] = 256
"""Contracts per block of :func:`lr_tree` (values; the American tree only): 256 contracts x
(steps + 1) nodes keep the induction's arrays in L2 cache (measured at 101 steps: 9.6 us per
contract against 11.9 at 128, whose per-step overhead is shared by fewer contracts; at 201
steps the two are even); rows are independent, so the block size never changes a value."""

_NODES_BLOCK: Final[int] = 128
"""Contracts per block of :func:`lr_tree_nodes` (Greeks; American and European trees side by
side, so twice :data:`_TREE_BLOCK`'s columns per contract): 128 keeps them in L2 cache
(measured ~10 % less CPU per contract than 512 at 201 steps)."""


def _american_flat(
    ic: BoolArray,
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    rr: Float64Array,
    qq: Float64Array,
    v: Float64Array,
    method: str,
    steps: int,
) -> Float64Array:
    n = ic.size
    euro = np.empty(n, dtype=np.float64)
    with np.errstate(all="ignore"):
        for a in range(0, n, CHUNK):
            b = min(a + CHUNK, n)
            _price_block(
                ic[a:b], s[a:b], k[a:b], t[a:b], rr[a:b], qq[a:b], v[a:b], False, euro[a:b]
            )
        no_early = np.where(ic, qq <= 0.0, rr <= 0.0) | ~(t > 0.0) | ~(v > 0.0)
        no_early |= np.isnan(euro)
        out = euro.copy()
        idx = np.flatnonzero(~no_early)
        if idx.size == 0:
            return out
        ici = ic[idx]
        si, ki, ti, ri, qi, vi = (x[idx] for x in (s, k, t, rr, qq, v))
        intrinsic = np.maximum(np.where(ici, si - ki, ki - si), 0.0)
        if method == "bs2002":
            est = bs2002_call(
                np.where(ici, si, ki),
                np.where(ici, ki, si),
                ti,
                np.where(ici, ri, qi),
                np.where(ici, ri - qi, qi - ri),
                vi,
            )
        else:
            est = np.empty(idx.size, dtype=np.float64)
            for a in range(0, idx.size, _TREE_BLOCK):
                b = min(a + _TREE_BLOCK, idx.size)
                am, eu = lr_tree(
                    ici[a:b], si[a:b], ki[a:b], ti[a:b], ri[a:b], qi[a:b], vi[a:b], steps
                )
                # exercise optimal at the root (up to the tree's rounding of S): intrinsic
                at_root = (intrinsic[a:b] > 0.0) & (am <= intrinsic[a:b] + 1e-12 * ki[a:b])
                est[a:b] = np.where(at_root, intrinsic[a:b], euro[idx[a:b]] + (am - eu))
        out[idx] = np.fmax(np.fmax(est, euro[idx]), intrinsic)
    return out


def american_greeks(
    kind: KindLike,
    S: FloatLike,
    K: FloatLike,
    T: FloatLike,
    r: FloatLike,
    q: FloatLike,
    vol: FloatLike,
    *,
    method: AmericanMethod = "lr",
    steps: int = 201,
) -> Greeks:
    """Price and Greeks of American options: European closed form plus the premium's Greeks.

    Parameters
    ----------
    kind, S, K, T, r, q, vol, method, steps
        As for :func:`american_price`.

    Returns
    -------
    Greeks
        Same units as the European Greeks.  Where early exercise is never optimal
        (call with ``q <= 0``, put with ``r <= 0``), for ``T == 0`` and for
        ``vol <= 2e-3`` the exact European Greeks are returned.  In the exercise
        region (price equal to intrinsic) delta is ``+-1`` and every other Greek 0.

    Notes
    -----
    Control variate: every Greek is the analytic European Greek plus the Greek
    of the early-exercise premium ``V_A - V_E``, so the part that dominates near
    expiry is exact.  Delta and gamma of the premium (``method="lr"``) come from
    the first nodes of the American and European trees
    (:func:`~portfolio_pipeline.quant.american.lr_tree_nodes`), whose spacing is
    the option's own standard deviation per step; with ``method="bs2002"`` and for
    vanna/charm they are central differences with a spot bump scaled to the
    option's standard deviation, ``h = S min(10^{-2}, max(10^{-4}, 0.1 sigma sqrt(T)))``.
    The other Greeks are central differences of the premium with vol bump
    ``h_v = 1e-3``, rate bump ``1e-4`` and time bump ``h_t = min(1/365, T/2)`` years
    (theta ``= -dV/dT``, charm ``= -d\\Delta/dT``), then scaled to project units.

    Accuracy, measured against QuantLib's ``FdBlackScholesVanillaEngine`` on a
    2000 x 2000 grid for calls and puts 1 day to 2 years, strikes 90-110 % of spot,
    vol 15 % and 60 % (``portfolio_pipeline_tests/quant/test_american_greeks.py``):
    ``|delta error| <= 1e-3``, gamma within 2 % (or ``1e-6`` absolute where the
    exercise region makes it 0), price within 0.1 % (or ``1e-4`` absolute).
    """
    shape, ic, (s, k, t, rr, qq, v) = _broadcast(
        parse_kind(kind), ("S", "K", "T", "r", "q", "vol"), (S, K, T, r, q, vol)
    )
    if method not in ("lr", "bs2002"):
        raise ValueError(f"unknown American method {method!r} (expected 'lr' or 'bs2002')")
    euro = _european_greeks(ic, s, k, t, rr, qq, v, "bsm")
    n = ic.size
    hv = 1e-3
    hr = 1e-4
    with np.errstate(all="ignore"):
        hs = s * np.minimum(1e-2, np.maximum(1e-4, 0.1 * v * np.sqrt(t)))
        ht = np.minimum(1.0 / _DAYS, 0.5 * t)
        # scenario table: (dS, dT, dr, dvol) multipliers of the bumps
        table = (
            (0, 0, 0, 0),
            (1, 0, 0, 0),
            (-1, 0, 0, 0),
            (0, 0, 0, 1),
            (0, 0, 0, -1),
            (1, 0, 0, 1),
            (-1, 0, 0, 1),
            (1, 0, 0, -1),
            (-1, 0, 0, -1),
            (0, 1, 0, 0),
            (0, -1, 0, 0),
            (1, 1, 0, 0),
            (-1, 1, 0, 0),
            (1, -1, 0, 0),
            (-1, -1, 0, 0),
            (0, 0, 1, 0),
            (0, 0, -1, 0),
        )
        m = len(table)
        big_ic = np.tile(ic, m)
        big_s = np.concatenate([s + i * hs for i, _, _, _ in table])
        big_k = np.tile(k, m)
        big_t = np.concatenate([t + j * ht for _, j, _, _ in table])
        big_r = np.concatenate([rr + kk * hr for _, _, kk, _ in table])
        big_q = np.tile(qq, m)
        big_v = np.concatenate([v + ll * hv for _, _, _, ll in table])
        amer = _american_flat(big_ic, big_s, big_k, big_t, big_r, big_q, big_v, method, steps)
        big_e = np.empty(amer.size, dtype=np.float64)
        for a in range(0, amer.size, CHUNK):
            b = min(a + CHUNK, amer.size)
            _price_block(big_ic[a:b], big_s[a:b], big_k[a:b], big_t[a:b], big_r[a:b],
                         big_q[a:b], big_v[a:b], False, big_e[a:b])
        p0 = amer[:n]
        (e0, pu, pd, vu, vd, suvu, sdvu, suvd, sdvd, tu, td, sutu, sdtu, sutd, sdtd, ru, rd) = (
            (amer - big_e).reshape(m, n)
        )
        fd = {
            "price": p0,
            "delta": (pu - pd) / (2.0 * hs),
            "gamma": (pu - 2.0 * e0 + pd) / (hs * hs),
            "vega": (vu - vd) / (2.0 * hv) / 100.0,
            "theta": -(tu - td) / (2.0 * ht) / _DAYS,
            "rho": (ru - rd) / (2.0 * hr) / 100.0,
            "vanna": ((suvu - sdvu) - (suvd - sdvd)) / (4.0 * hs * hv) / 100.0,
            "volga": (vu - 2.0 * e0 + vd) / (hv * hv) / 1e4,
            "charm": -((sutu - sdtu) - (sutd - sdtd)) / (4.0 * hs * ht) / _DAYS,
        }
        for name in _FIELDS[1:]:
            fd[name] = fd[name] + getattr(euro, name).reshape(-1)
        use_euro = np.where(ic, qq <= 0.0, rr <= 0.0) | ~(t > 0.0) | ~(v > 2.0 * hv)
        use_euro |= np.isnan(euro.price.reshape(-1))
        if method == "lr":
            idx = np.flatnonzero(~use_euro)
            d_prem = np.zeros(n)
            g_prem = np.zeros(n)
            for a in range(0, idx.size, _NODES_BLOCK):
                sel = idx[a : a + _NODES_BLOCK]
                nodes = lr_tree_nodes(ic[sel], s[sel], k[sel], t[sel], rr[sel], qq[sel], v[sel],
                                      steps)
                d_prem[sel] = nodes.american_delta - nodes.european_delta
                g_prem[sel] = nodes.american_gamma - nodes.european_gamma
            fd["delta"] = euro.delta.reshape(-1) + d_prem
            fd["gamma"] = euro.gamma.reshape(-1) + g_prem
        w = np.where(ic, 1.0, -1.0)
        intrinsic = np.maximum(w * (s - k), 0.0)
        exercised = (intrinsic > 0.0) & (p0 <= intrinsic)
        fd["delta"] = np.where(exercised, w, np.clip(fd["delta"], np.minimum(w, 0.0),
                                                     np.maximum(w, 0.0)))
        fd["gamma"] = np.maximum(fd["gamma"], 0.0)
        for name in _FIELDS[2:]:  # the price is intrinsic there: only delta is non-zero
            fd[name] = np.where(exercised, 0.0, fd[name])
    fields: dict[str, Float64Array] = {}
    for name in _FIELDS:
        e = getattr(euro, name).reshape(-1)
        fields[name] = np.where(use_euro, e, fd[name]).reshape(shape)
    return Greeks(**fields)


# --------------------------------------------------------------------------- implied vol


def _norm_otm(x: Float64Array, s: Float64Array) -> Float64Array:
    """Normalised OTM call value ``b(x, s) = e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2)``."""
    h = 0.5 * x
    d1 = x / s
    d1 += 0.5 * s
    d2 = d1 - s
    out: Float64Array = ndtr(d1)
    out *= np.exp(h)
    out -= np.exp(-h) * ndtr(d2)
    return out


def _iv_block(
    px: Float64Array,
    ic: BoolArray,
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    rr: Float64Array,
    qq: Float64Array,
    black76: bool,
    vol_o: Float64Array,
    reason_o: Int8Array,
) -> None:
    n = px.size
    vol_o[:] = np.nan
    with np.errstate(invalid="ignore"):
        invalid = (
            ~np.isfinite(px)
            | ~np.isfinite(s)
            | ~np.isfinite(k)
            | ~np.isfinite(t)
            | ~np.isfinite(rr)
            | ~(s > 0.0)
            | ~(k > 0.0)
            | ~(px >= 0.0)
        )
        if not black76:
            invalid |= ~np.isfinite(qq)
    reason = np.zeros(n, dtype=np.int8)
    reason[invalid] = IVReason.INVALID_INPUT
    expired = ~invalid & ~(t > 0.0)
    reason[expired] = IVReason.EXPIRED
    ok = reason == 0
    df = np.exp(-(rr * t))
    fwd = s if black76 else s * np.exp((rr - qq) * t)
    c = px / df  # undiscounted premium
    w = ic * 2.0 - 1.0
    intrinsic = np.maximum(w * (fwd - k), 0.0)
    otm = c - intrinsic
    upper = np.where(ic, fwd, k)
    below = ok & (otm < 0.0)
    reason[below] = IVReason.BELOW_INTRINSIC
    above = ok & ~below & (c >= upper)
    reason[above] = IVReason.ABOVE_UPPER_BOUND
    ok &= ~below & ~above
    zero = ok & (otm == 0.0)
    vol_o[zero] = 0.0
    todo = np.flatnonzero(ok & ~zero)
    if todo.size:
        xs = -np.abs(np.log(fwd[todo] / k[todo]))
        beta = otm[todo] / np.sqrt(fwd[todo] * k[todo])
        sq_t = np.sqrt(t[todo])
        sol, conv = _solve_normalised(xs, beta)
        # beta at/above the normalised bound (rounding) -> reason 2
        vol_o[todo] = np.where(conv == 0, sol / sq_t, np.nan)
        reason[todo] = conv
    reason_o[:] = reason


def _solve_normalised(x: Float64Array, beta: Float64Array) -> tuple[Float64Array, Int8Array]:
    """Solve ``b(x, s) = beta`` for ``s > 0`` (``x <= 0``), Halley on ``ln b``.

    Returns the solution and a reason code array (0 ok, 2 above bound, 5 no
    convergence).
    """
    n = x.size
    code = np.zeros(n, dtype=np.int8)
    res = np.full(n, np.nan)
    bmax = np.exp(0.5 * x)
    over = ~(beta < bmax)
    code[over] = IVReason.ABOVE_UPPER_BOUND
    ax = -x
    s_c = np.sqrt(2.0 * ax)
    with np.errstate(all="ignore"):
        b_c = np.where(s_c > 0.0, _norm_otm(x, s_c), 0.0)
        lower = beta < b_c
        # lower region: leading-order ln b ~ -x^2/(2 s^2), anchored at s_c
        s_lo_guess = ax / np.sqrt(0.5 * ax + 2.0 * np.log(b_c / beta))
        # upper region: b ~ e^{x/2} - 2 cosh(x/2) N(-s/2)
        p = (bmax - beta) / (bmax + 1.0 / bmax)
        s_up_guess = np.maximum(-2.0 * ndtri(p), s_c)
        s = np.where(lower, s_lo_guess, s_up_guess)
        lo = np.where(lower, 0.0, s_c)
        hi = np.where(lower, s_c, s_c + 100.0)
        s = np.where((s > lo) & (s < hi), s, np.where(lower, 0.5 * (lo + hi), lo + 1.0))
    idx = np.flatnonzero(~over)
    # state of the active elements, one row each (compacted with one take per iteration)
    state = np.empty((6, idx.size))
    state[0] = x[idx]
    np.multiply(state[0], state[0], out=state[1])
    np.log(beta[idx], out=state[2])
    state[3] = s[idx]
    state[4] = lo[idx]
    state[5] = hi[idx]
    for _ in range(100):
        if idx.size == 0:
            break
        xa, x2, lnb, sa, loa, hia = state
        with np.errstate(all="ignore"):
            b = _norm_otm(xa, sa)
            g = np.log(b)
            g -= lnb
            s2 = sa * sa
            bp = x2 / s2
            bp += 0.25 * s2
            bp *= -0.5
            np.exp(bp, out=bp)
            bp *= _INV_SQRT_2PI
            nu = np.divide(bp, b, out=bp)
            hh = x2 / (s2 * sa)
            hh -= 0.25 * sa
            hh -= nu
            newton = g / nu
            hh *= newton
            den = np.subtract(1.0, 0.5 * hh, out=hh)
            step = np.divide(newton, den, out=newton, where=den > 0.5)
            # bracket update (blends: cheaper than masked copies; all terms finite)
            d = sa - hia
            d *= g > 0.0
            hia += d
            np.subtract(sa, loa, out=d)
            d *= g < 0.0
            loa += d
            s_new = sa - step
            inside = (s_new > loa) & (s_new < hia) & (b > 0.0) & np.isfinite(s_new)
            mid = loa + hia
            mid *= 0.5
            np.copyto(s_new, mid, where=~inside)
            # Halley converges cubically: after a relative step below 1e-6 the error is
            # of order 1e-18 (relative), far inside the 1e-10 vol target.
            np.abs(step, out=step)
            done = inside & (step <= _IV_STEP_TOL * s_new)
            g0 = g == 0.0
            done |= g0
            done |= (hia - loa) <= 4e-16 * hia
        np.copyto(s_new, sa, where=g0)
        state[3] = s_new
        if done.any():
            res[idx[done]] = s_new[done]
            keep = np.flatnonzero(~done)
            idx = idx[keep]
            state = state.take(keep, axis=1)
    code[idx] = IVReason.NO_CONVERGENCE
    res[idx] = np.nan
    return res, code


def implied_vol(
    price: FloatLike,
    kind: KindLike,
    S: FloatLike,
    K: FloatLike,
    T: FloatLike,
    r: FloatLike,
    q: FloatLike,
    model: Model = "bsm",
    *,
    return_reason: bool = False,
) -> Float64Array | tuple[Float64Array, Int8Array]:
    """Black-Scholes-Merton / Black-76 implied volatility, vectorised.

    Parameters
    ----------
    price : array_like
        Option premium (present value).
    kind, S, K, T, r, q, model
        As for :func:`price`.
    return_reason : bool, default False
        Also return an int8 array of :class:`IVReason` codes.

    Returns
    -------
    vol : numpy.ndarray
        Implied vol; NaN wherever no volatility reproduces the price.
    reason : numpy.ndarray of int8, optional
        0 ok; 1 price below the discounted intrinsic on the forward; 2 price at or
        above the upper bound (``S e^{-qT}`` for calls, ``K e^{-rT}`` for puts);
        3 ``T <= 0``; 4 invalid input (non-finite, ``S <= 0``, ``K <= 0``,
        ``price < 0``); 5 no convergence.

    Notes
    -----
    The premium is normalised to the out-of-the-money option (parity removes the
    intrinsic ``max(w(F-K), 0)``) and scaled by ``sqrt(F K)``; with
    ``x = -|ln(F/K)|`` and ``s = vol sqrt(T)`` the equation is

    .. math::

        b(x, s) = e^{x/2} N\\left(\\frac{x}{s} + \\frac{s}{2}\\right)
                - e^{-x/2} N\\left(\\frac{x}{s} - \\frac{s}{2}\\right) = \\beta.

    ``b`` has its inflection at ``s_c = sqrt(2|x|)``, which brackets the root.
    Start values: ``s_0 = |x| / sqrt(|x|/2 + 2 ln(b(s_c)/beta))`` below ``s_c``
    (leading-order asymptotics), ``s_0 = -2 N^{-1}((e^{x/2}-beta)/(2cosh(x/2)))``
    above it (exact at ``x = 0``).  Halley iterations on ``ln b(s) - ln beta``
    (with ``b' = e^{-x^2/(2s^2) - s^2/8}/sqrt(2 pi)`` and
    ``b''/b' = x^2/s^3 - s/4``) are safeguarded by bisection on the bracket and
    stop when the relative step is below 1e-9 (error then ~1e-27 by cubic
    convergence).  An exactly intrinsic price returns vol 0.
    """
    black76 = _check_model(model)
    shape, ic, (px, s, k, t, rr, qq) = _broadcast(
        parse_kind(kind), ("price", "S", "K", "T", "r", "q"), (price, S, K, T, r, q)
    )
    n = ic.size
    vol = np.empty(n, dtype=np.float64)
    reason = np.empty(n, dtype=np.int8)

    def block(a: int, b: int) -> None:
        _iv_block(
            px[a:b],
            ic[a:b],
            s[a:b],
            k[a:b],
            t[a:b],
            rr[a:b],
            qq[a:b],
            black76,
            vol[a:b],
            reason[a:b],
        )

    _run_blocks(n, block)
    if return_reason:
        return vol.reshape(shape), reason.reshape(shape)
    return vol.reshape(shape)

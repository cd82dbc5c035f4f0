"""Brent's root finder on many brackets at once, one function call per iteration.

:func:`brentq_batch` is :func:`scipy.optimize.brentq` (Brent 1973 as in scipy's
``Zeros/brentq.c``: bisection, secant and inverse quadratic interpolation, the tolerance
``xtol + rtol |x|`` and the same acceptance tests) with its state held per bracket in
numpy arrays.  Every iteration evaluates the next point of every bracket still open in
*one* call of the function, so a costly vectorised function (a full revaluation of a
book, where a call has a fixed cost on top of its per-point cost) is called about ten
times for all brackets together instead of about ten times per bracket.

The arithmetic per bracket is that of the C code, operation for operation, so when the
function's values are the same numbers the roots are the same numbers as ``brentq``'s
(``portfolio_pipeline_tests/quant/test_brent.py`` checks this).  Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import Float64Array, IntArray, as_float64

__all__ = ["BRENT_MAXITER", "BRENT_RTOL", "BRENT_XTOL", "BatchRoots", "brentq_batch"]

BRENT_XTOL: Final[float] = 2e-12
"""Default absolute tolerance (scipy's)."""
BRENT_RTOL: Final[float] = 4 * float(np.finfo(np.float64).eps)
"""Default and smallest relative tolerance (scipy's: below it the step may not move ``x``)."""
BRENT_MAXITER: Final[int] = 100
"""Default iteration limit (scipy's)."""

BatchFunction = Callable[[Float64Array, IntArray], npt.ArrayLike]
"""``f(x, which)``: the value of bracket ``which[k]``'s function at ``x[k]``, for every ``k``."""


@dataclass(frozen=True, slots=True)
class BatchRoots:
    """Roots of :func:`brentq_batch` and what they cost.

    ``iterations`` and ``evaluations`` are per bracket (``evaluations`` counts the points
    this call evaluated, so not ``fa``/``fb`` when they were given); ``calls`` is the
    number of calls of the function.
    """

    roots: Float64Array
    iterations: IntArray
    evaluations: IntArray
    calls: int


def _evaluate(f: BatchFunction, x: Float64Array, which: IntArray) -> Float64Array:
    out = np.asarray(f(x, which), dtype=np.float64)
    if out.shape != x.shape:
        raise ValueError(f"the function returned shape {out.shape} for {x.size} points")
    nan = np.flatnonzero(np.isnan(out))
    if nan.size:
        k = int(nan[0])
        raise ValueError(
            f"bracket {int(which[k])}: the function value at x={float(x[k])!r} is NaN; "
            "the solver cannot continue"
        )
    return out


def brentq_batch(
    f: BatchFunction,
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    fa: npt.ArrayLike | None = None,
    fb: npt.ArrayLike | None = None,
    *,
    xtol: float = BRENT_XTOL,
    rtol: float = BRENT_RTOL,
    maxiter: int = BRENT_MAXITER,
) -> BatchRoots:
    """A root of each bracket's function in ``[a[k], b[k]]`` by Brent's method, all at once.

    Parameters
    ----------
    f : callable
        ``f(x, which) -> values``: ``x`` float array of shape ``(m,)``, ``which`` the
        bracket index (into ``a``) of each point; returns the ``m`` function values.  It
        is called once per iteration with every bracket still open (and once at the start
        for the ends when ``fa``/``fb`` are not given), never with an empty ``x``.
    a, b : array_like, shape (n,)
        Bracket ends; each function must have opposite signs (or a zero) at its ends.
    fa, fb : array_like, shape (n,), optional
        The function values at ``a`` and ``b`` when already known (e.g. the grid the
        brackets come from), used as scipy would use ``f(a)`` and ``f(b)``.
    xtol, rtol : float
        Each root ``x0`` is returned when the bracket around it is narrower than
        ``xtol + rtol |x0|`` (so it is within that of a sign change of its function);
        ``xtol > 0`` and ``rtol >= 4 eps`` as in scipy.
    maxiter : int
        Iterations per bracket before giving up (RuntimeError).

    Returns
    -------
    BatchRoots
        ``roots[k]`` in ``[min(a[k], b[k]), max(a[k], b[k])]``; equal, value for value,
        to ``scipy.optimize.brentq(f_k, a[k], b[k], xtol=xtol, rtol=rtol,
        maxiter=maxiter)`` when ``f`` returns for each point what ``f_k`` returns there.

    Raises
    ------
    ValueError
        On bad tolerances or shapes, a bracket whose ends have the same sign, or a NaN
        function value (naming the bracket).
    RuntimeError
        If a bracket has not converged after ``maxiter`` iterations (naming it).

    Notes
    -----
    The state of scipy's C loop (``xpre``, ``xcur``, ``xblk``, their function values,
    the previous and current steps ``spre``, ``scur``) is one array entry per bracket;
    each branch of the loop (new bracket side, swap so that ``|f(xcur)|`` is the
    smallest, convergence test, interpolation or extrapolation accepted or bisection,
    the minimum step ``delta``) is a mask over the open brackets.  A converged bracket
    leaves the arrays, so an iteration costs only the brackets still open.
    """
    if not xtol > 0:
        raise ValueError(f"xtol must be > 0, got {xtol!r}")
    if not rtol >= BRENT_RTOL:
        raise ValueError(f"rtol too small ({rtol!r} < {BRENT_RTOL!r})")
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter!r}")
    xa = as_float64(a, "a", 1).copy()
    xb = as_float64(b, "b", 1).copy()
    if xa.shape != xb.shape:
        raise ValueError(f"a {xa.shape} and b {xb.shape} must have the same shape")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(xb))):
        raise ValueError("bracket ends a and b must be finite")
    n = xa.size
    idx = np.arange(n, dtype=np.intp)
    calls = 0
    evaluations = np.zeros(n, dtype=np.intp)
    known = [None if v is None else as_float64(v, name, 1) for v, name in ((fa, "fa"), (fb, "fb"))]
    for v, name in zip(known, ("fa", "fb"), strict=True):
        if v is not None and v.shape != xa.shape:
            raise ValueError(f"{name} has shape {v.shape}, expected {xa.shape}")
        if v is not None and np.any(np.isnan(v)):
            raise ValueError(f"{name} has NaN values")
    missing = [i for i, v in enumerate(known) if v is None]
    if missing and n:
        xs = np.concatenate([(xa, xb)[i] for i in missing])
        vals = _evaluate(f, xs, np.tile(idx, len(missing)))
        calls += 1
        evaluations += len(missing)
        for j, i in enumerate(missing):
            known[i] = vals[j * n : (j + 1) * n]
    fpre = np.array(known[0], dtype=np.float64) if n else np.zeros(0)
    fcur = np.array(known[1], dtype=np.float64) if n else np.zeros(0)
    bad = np.flatnonzero(fpre * fcur > 0)
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"bracket {k}: f(a) and f(b) must have different signs "
            f"(f({xa[k]!r}) = {fpre[k]!r}, f({xb[k]!r}) = {fcur[k]!r})"
        )
    roots = np.full(n, np.nan)
    at_a = fpre == 0
    at_b = ~at_a & (fcur == 0)
    roots[at_a] = xa[at_a]
    roots[at_b] = xb[at_b]
    live = ~(at_a | at_b)
    ids = idx[live]
    xpre, xcur, fpre, fcur = xa[live], xb[live], fpre[live], fcur[live]
    m = ids.size
    xblk, fblk, spre, scur = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
    iterations = np.zeros(n, dtype=np.intp)
    for _ in range(maxiter):
        if ids.size == 0:
            break
        iterations[ids] += 1
        # a new bracket side: the last step crossed the root
        new = (fpre != 0) & (fcur != 0) & (np.signbit(fpre) != np.signbit(fcur))
        xblk = np.where(new, xpre, xblk)
        fblk = np.where(new, fpre, fblk)
        step = xcur - xpre
        spre = np.where(new, step, spre)
        scur = np.where(new, step, scur)
        # xcur is the end with the smaller |f|
        sw = np.abs(fblk) < np.abs(fcur)
        xpre, xcur, xblk = (
            np.where(sw, xcur, xpre),
            np.where(sw, xblk, xcur),
            np.where(sw, xcur, xblk),
        )
        fpre, fcur, fblk = (
            np.where(sw, fcur, fpre),
            np.where(sw, fblk, fcur),
            np.where(sw, fcur, fblk),
        )
        delta = (xtol + rtol * np.abs(xcur)) / 2
        sbis = (xblk - xcur) / 2
        done = (fcur == 0) | (np.abs(sbis) < delta)
        if done.any():
            roots[ids[done]] = xcur[done]
            keep = ~done
            ids = ids[keep]
            xpre, xcur, xblk = xpre[keep], xcur[keep], xblk[keep]
            fpre, fcur, fblk = fpre[keep], fcur[keep], fblk[keep]
            spre, scur, delta, sbis = spre[keep], scur[keep], delta[keep], sbis[keep]
            if ids.size == 0:
                break
        # interpolation (secant when xpre is the other end, else inverse quadratic) where
        # the steps shrink and |f| decreases; the lanes that do not take it may divide by 0
        trial = (np.abs(spre) > delta) & (np.abs(fcur) < np.abs(fpre))
        with np.errstate(all="ignore"):
            secant = -fcur * (xcur - xpre) / (fcur - fpre)
            dpre = (fpre - fcur) / (xpre - xcur)
            dblk = (fblk - fcur) / (xblk - xcur)
            quad = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            stry = np.where(xpre == xblk, secant, quad)
            lim_a, lim_b = np.abs(spre), 3 * np.abs(sbis) - delta
            good = trial & (2 * np.abs(stry) < np.where(lim_a < lim_b, lim_a, lim_b))
        spre = np.where(good, scur, sbis)
        scur = np.where(good, stry, sbis)
        xpre, fpre = xcur, fcur
        xcur = xcur + np.where(np.abs(scur) > delta, scur, np.where(sbis > 0, delta, -delta))
        fcur = _evaluate(f, xcur, ids)
        calls += 1
        evaluations[ids] += 1
    if ids.size:
        raise RuntimeError(
            f"bracket {int(ids[0])} (and {ids.size - 1} more) failed to converge after "
            f"{maxiter} iterations"
        )
    return BatchRoots(roots, iterations, evaluations, calls)

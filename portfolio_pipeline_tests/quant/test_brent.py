"""The batched Brent root finder against scipy.optimize.brentq, bracket by bracket.

The functions here use only + - * / and comparisons, which give the same float64 numbers
on a Python float and on a numpy array, so the batch sees the very values scipy sees and
its roots must be *equal* to scipy's (same arithmetic, same branches), with the same
iteration and evaluation counts.  On top of that, where the root is known: a returned
root ``x`` is within ``xtol + rtol |x|`` of it (the convergence test is that the bracket
around ``x`` is narrower than that), plus 1e-12 for the rounding of the computed function
next to its root (the functions' slopes there are >= 1e-3 and their rounding ~1e-16).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from portfolio_pipeline.quant.brent import BRENT_RTOL, brentq_batch

Fn = Callable[[np.ndarray], np.ndarray]
ROUNDING = 1e-12


def _cubic(r1: float, r2: float, r3: float, scale: float = 1.0) -> Fn:
    def f(x: np.ndarray) -> np.ndarray:
        return scale * ((x - r1) * (x - r2) * (x - r3))

    return f


def _kinked(x: np.ndarray) -> np.ndarray:
    # slope 3 left of 0.2, slope 0.25 right of it: the root 0.2 + 0.1 / 0.25 = 0.6
    return np.where(x < 0.2, 3.0 * (x - 0.2) - 0.1, 0.25 * (x - 0.2) - 0.1)


def _flat_then_steep(x: np.ndarray) -> np.ndarray:
    # -1e-3 up to 0.7, then a cubic wall: the root 0.71 (m**3 = 1e-6)
    m = np.maximum(x - 0.7, 0.0)
    return 1e3 * (m * m * m) - 1e-3


def _line(r: float, slope: float = 1.0) -> Fn:
    def f(x: np.ndarray) -> np.ndarray:
        return slope * (x - r)

    return f


# (function, a, b, true root or None)
CASES: list[tuple[str, Fn, float, float, float | None]] = [
    ("cubic", _cubic(-0.5, 0.1, 0.8), -0.2, 0.5, 0.1),
    ("cubic reversed bracket", _cubic(-0.5, 0.1, 0.8), 0.5, -0.2, 0.1),
    ("kinked", _kinked, -1.0, 1.0, 0.6),
    ("flat then steep", _flat_then_steep, 0.0, 1.0, 0.71),
    ("root at a", _line(0.25), 0.25, 1.0, 0.25),
    ("root at b", _line(0.25), -1.0, 0.25, 0.25),
    ("secant hits the root exactly", _line(0.5), 0.0, 1.0, 0.5),
    ("steep line", _line(1 / 3, 1e12), 0.0, 1.0, 1 / 3),
    ("tiny values", _line(0.3, 1e-300), 0.0, 1.0, 0.3),
    ("wide bracket", _cubic(-3.0, 2.5, 40.0, 1e-3), -1.0, 30.0, 2.5),
]


def _dispatch(fns: list[Fn], calls: list[np.ndarray] | None = None) -> Callable:
    def f(x: np.ndarray, which: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(which.copy())
        out = np.empty_like(x)
        for k in np.unique(which):
            sel = which == k
            out[sel] = fns[int(k)](x[sel])
        return out

    return f


def _scipy(fn: Fn, a: float, b: float, xtol: float) -> tuple[float, int, int]:
    root, r = brentq(lambda v: float(fn(np.float64(v))), a, b, xtol=xtol, full_output=True)
    return float(root), r.iterations, r.function_calls


@pytest.mark.parametrize("xtol", [1e-7, 2e-12, 1e-3])
def test_every_case_at_once_equals_scipy(xtol: float) -> None:
    fns = [c[1] for c in CASES]
    a = np.array([c[2] for c in CASES])
    b = np.array([c[3] for c in CASES])
    calls: list[np.ndarray] = []
    res = brentq_batch(_dispatch(fns, calls), a, b, xtol=xtol)
    for k, (name, fn, ak, bk, true) in enumerate(CASES):
        want, iters, fcalls = _scipy(fn, ak, bk, xtol)
        assert res.roots[k] == want, name
        assert res.evaluations[k] == fcalls, name  # f(a), f(b) evaluated here too
        if res.evaluations[k] > 2:  # scipy does not count iterations for a zero at an end
            assert res.iterations[k] == iters, name
        assert min(ak, bk) <= res.roots[k] <= max(ak, bk), name
        if true is not None:
            assert abs(res.roots[k] - true) <= xtol + BRENT_RTOL * abs(true) + ROUNDING, name
    # one call for both ends of every bracket, then one per iteration with the brackets
    # still open after it (the last iteration of a bracket converges without evaluating)
    assert res.calls == len(calls) == int(res.iterations.max())
    assert calls[0].tolist() == list(range(len(CASES))) * 2
    for i, which in enumerate(calls[1:], start=1):
        assert which.tolist() == [k for k in range(len(CASES)) if res.iterations[k] > i]


# coarse tolerances where an interpolation step is refused only by the ``- delta`` of the
# step test ``2 |stry| < min(|spre|, 3 |sbis| - delta)`` (found by search; several roots
# in the bracket, so no true-root bound)
COARSE = [
    (
        (-0.309171475783548, -0.04817343847347, 0.9824120262399687),
        -0.07919989441181818,
        0.11545215652383228,
    ),
    (
        (-0.5040227389667031, -0.26443527881921325, 0.2195554986658832),
        0.7881198772772584,
        0.0487005313581365,
    ),
    (
        (-0.7351152305421658, 0.2573650207820264, 0.47697475012658463),
        0.6828082774542215,
        0.0028410758679820575,
    ),
    (
        (-0.6651871480641762, -0.29941619694335864, 0.36694751270975035),
        0.8065716701320325,
        0.149603650994166,
    ),
]


@pytest.mark.parametrize(("roots", "b", "xtol"), COARSE)
def test_coarse_tolerance_steps_equal_scipy(
    roots: tuple[float, float, float], b: float, xtol: float
) -> None:
    fn = _cubic(*roots)
    res = brentq_batch(_dispatch([fn]), [-1.0], [b], xtol=xtol)
    assert res.roots[0] == _scipy(fn, -1.0, b, xtol)[0]
    assert -1.0 <= res.roots[0] <= b


def test_known_end_values_are_used_not_recomputed() -> None:
    fns = [c[1] for c in CASES]
    a = np.array([c[2] for c in CASES])
    b = np.array([c[3] for c in CASES])
    fa = np.array([float(fn(np.float64(x))) for fn, x in zip(fns, a, strict=True)])
    fb = np.array([float(fn(np.float64(x))) for fn, x in zip(fns, b, strict=True)])
    calls: list[np.ndarray] = []
    res = brentq_batch(_dispatch(fns, calls), a, b, fa, fb, xtol=1e-7)
    full = brentq_batch(_dispatch(fns), a, b, xtol=1e-7)
    assert np.array_equal(res.roots, full.roots)
    assert np.array_equal(res.evaluations + 2, full.evaluations)
    assert res.calls == len(calls) == int(res.iterations.max()) - 1
    # an exact zero at an end is that end, without evaluating anything
    assert res.roots[4] == 0.25 and res.roots[5] == 0.25 and res.evaluations[4] == 0


def _cubic_brackets(seed: int, n_curves: int, points: int) -> tuple[list[Fn], list, list]:
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1.0, 1.0, points)
    fns, brackets, roots = [], [], []
    for _ in range(n_curves):
        r = np.sort(rng.uniform(-1.2, 1.2, 3))
        fn = _cubic(*r, scale=float(rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(-3, 6)))
        y = fn(grid)
        for i in np.flatnonzero(y[:-1] * y[1:] < 0):
            inside = r[(r > grid[i]) & (r < grid[i + 1])]
            brackets.append((len(fns), grid[i], grid[i + 1], y[i], y[i + 1]))
            roots.append(float(inside[0]) if inside.size == 1 else None)
        fns.append(fn)
    return fns, brackets, roots


@pytest.mark.parametrize("xtol", [1e-7, 3e-3])
@pytest.mark.parametrize("seed", range(12))
def test_random_cubic_curves_equal_scipy(seed: int, xtol: float) -> None:
    fns, brackets, roots = _cubic_brackets(seed, n_curves=25, points=21)
    assert len(brackets) > 10
    curve = np.array([br[0] for br in brackets])
    a, b, fa, fb = (np.array([br[j] for br in brackets]) for j in range(1, 5))

    def f(x: np.ndarray, which: np.ndarray) -> np.ndarray:
        return _dispatch(fns)(x, curve[which])

    res = brentq_batch(f, a, b, fa, fb, xtol=xtol)
    assert res.roots.shape == (len(brackets),)
    for k, (c, ak, bk, _, _) in enumerate(brackets):
        want, iters, fcalls = _scipy(fns[c], ak, bk, xtol)
        assert res.roots[k] == want
        assert (res.iterations[k], res.evaluations[k] + 2) == (iters, fcalls)
        assert ak <= res.roots[k] <= bk
        if roots[k] is not None:
            assert abs(res.roots[k] - roots[k]) <= xtol + BRENT_RTOL * abs(roots[k]) + ROUNDING


@settings(max_examples=60, deadline=None)
@given(
    roots=st.lists(st.floats(-0.9, 0.9), min_size=3, max_size=3, unique=True).filter(
        lambda r: min(abs(x - y) for i, x in enumerate(r) for y in r[i + 1 :]) > 0.05
    ),
    scale=st.floats(1e-4, 1e6),
    xtol=st.sampled_from([1e-12, 1e-9, 1e-7, 1e-4]),
)
def test_cubics_property(roots: list[float], scale: float, xtol: float) -> None:
    fn = _cubic(*roots, scale=scale)
    edges = np.concatenate([[-1.0], np.sort(roots), [1.0]])
    a = (edges[:-2] + edges[1:-1]) / 2  # one root in each [a, b]
    b = (edges[1:-1] + edges[2:]) / 2
    res = brentq_batch(_dispatch([fn] * 3), a, b, xtol=xtol)
    for k, r in enumerate(np.sort(roots)):
        assert res.roots[k] == _scipy(fn, a[k], b[k], xtol)[0]
        assert a[k] <= res.roots[k] <= b[k]
        assert abs(res.roots[k] - r) <= xtol + BRENT_RTOL * abs(r) + ROUNDING


def test_bad_brackets_and_tolerances_are_refused() -> None:
    f = _dispatch([_line(0.5), _line(2.0)])
    with pytest.raises(ValueError, match=r"bracket 1: f\(a\) and f\(b\) must have different signs"):
        brentq_batch(f, [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="xtol"):
        brentq_batch(f, [0.0], [1.0], xtol=0.0)
    with pytest.raises(ValueError, match="rtol too small"):
        brentq_batch(f, [0.0], [1.0], rtol=1e-17)
    with pytest.raises(ValueError, match="same shape"):
        brentq_batch(f, [0.0, 0.1], [1.0])
    with pytest.raises(ValueError, match="fb has shape"):
        brentq_batch(f, [0.0], [1.0], [-0.5], [0.5, 1.0])

    def nan_inside(x: np.ndarray, which: np.ndarray) -> np.ndarray:
        return np.where((x > 0.0) & (x < 1.0), np.nan, x - 0.5)

    with pytest.raises(ValueError, match=r"bracket 0: the function value at x=.* is NaN"):
        brentq_batch(nan_inside, [0.0], [1.0])
    with pytest.raises(RuntimeError, match="failed to converge after 3 iterations"):
        brentq_batch(_dispatch([_flat_then_steep]), [0.0], [1.0], xtol=1e-12, maxiter=3)


def test_no_brackets_calls_nothing() -> None:
    def f(x: np.ndarray, which: np.ndarray) -> np.ndarray:
        raise AssertionError("called")

    res = brentq_batch(f, [], [])
    assert res.roots.shape == (0,) and res.calls == 0

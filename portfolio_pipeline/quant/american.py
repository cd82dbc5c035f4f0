"""Bjerksund-Stensland (2002) American call approximation and a vectorised bivariate normal.

The public entry points are :func:`portfolio_pipeline.quant.pricing.american_price`
and :func:`portfolio_pipeline.quant.pricing.american_greeks`; this module holds the
array kernels only (no input validation, callers wrap them in ``np.errstate``).
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln, ndtr, xlog1py, xlogy

from portfolio_pipeline.quant._typing import Float64Array

__all__ = ["TreeNodes", "bivariate_normal_cdf", "bs2002_call", "lr_tree", "lr_tree_nodes"]


def _gauss_legendre(n: int) -> tuple[Float64Array, Float64Array]:
    x, w = np.polynomial.legendre.leggauss(n)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


_GL_X, _GL_W = _gauss_legendre(20)
_RHO: Final[float] = float(np.sqrt(0.5 * (np.sqrt(5.0) - 1.0)))


def bivariate_normal_cdf(a: Float64Array, b: Float64Array, rho: float) -> Float64Array:
    """Standard bivariate normal CDF ``M(a, b; rho) = P(X <= a, Y <= b)``.

    Parameters
    ----------
    a, b : numpy.ndarray
        Upper limits (broadcast together).
    rho : float
        Correlation, ``|rho| <= 0.925`` (BS2002 uses ``+-sqrt((sqrt(5)-1)/2)``).

    Returns
    -------
    numpy.ndarray
        ``M(a, b; rho)``.

    Notes
    -----
    Plackett's identity with ``r = sin(theta)`` (Genz 2004, |rho| < 0.925 branch):

    .. math::

        M(a,b;\\rho) = N(a)N(b) + \\frac{1}{2\\pi}\\int_0^{\\arcsin\\rho}
            \\exp\\left(-\\frac{a^2+b^2-2ab\\sin\\theta}{2\\cos^2\\theta}\\right)d\\theta,

    integrated with 20-point Gauss-Legendre (about 1e-15 absolute accuracy).
    """
    if abs(rho) > 0.925:
        raise ValueError("bivariate_normal_cdf supports |rho| <= 0.925 only")
    asr = float(np.arcsin(rho))
    hs = 0.5 * (a * a + b * b)
    ab = a * b
    acc = np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b)))
    for xi, wi in zip(_GL_X, _GL_W, strict=True):
        sn = np.sin(0.5 * asr * (xi + 1.0))
        acc += wi * np.exp((sn * ab - hs) / (1.0 - sn * sn))
    res: Float64Array = ndtr(a) * ndtr(b) + acc * (asr / (4.0 * np.pi))
    return res


def _phi(
    s: Float64Array,
    t: Float64Array,
    gamma: Float64Array | float,
    h: Float64Array,
    i: Float64Array,
    r: Float64Array,
    b: Float64Array,
    v2: Float64Array,
) -> Float64Array:
    sd = np.sqrt(v2 * t)
    lam = (-r + gamma * b + 0.5 * gamma * (gamma - 1.0) * v2) * t
    d = -(np.log(s / h) + (b + (gamma - 0.5) * v2) * t) / sd
    kappa = 2.0 * b / v2 + (2.0 * gamma - 1.0)
    res: Float64Array = (
        np.exp(lam) * s**gamma * (ndtr(d) - (i / s) ** kappa * ndtr(d - 2.0 * np.log(i / s) / sd))
    )
    return res


def _psi(
    s: Float64Array,
    t2: Float64Array,
    gamma: Float64Array | float,
    h: Float64Array,
    i2: Float64Array,
    i1: Float64Array,
    t1: Float64Array,
    r: Float64Array,
    b: Float64Array,
    v2: Float64Array,
) -> Float64Array:
    mu = b + (gamma - 0.5) * v2
    sd1 = np.sqrt(v2 * t1)
    sd2 = np.sqrt(v2 * t2)
    l_si1 = np.log(s / i1)
    l_e2 = np.log(i2 * i2 / (s * i1))
    e1 = (l_si1 + mu * t1) / sd1
    e2 = (l_e2 + mu * t1) / sd1
    e3 = (l_si1 - mu * t1) / sd1
    e4 = (l_e2 - mu * t1) / sd1
    f1 = (np.log(s / h) + mu * t2) / sd2
    f2 = (np.log(i2 * i2 / (s * h)) + mu * t2) / sd2
    f3 = (np.log(i1 * i1 / (s * h)) + mu * t2) / sd2
    f4 = (np.log(s * i1 * i1 / (h * i2 * i2)) + mu * t2) / sd2
    lam = -r + gamma * b + 0.5 * gamma * (gamma - 1.0) * v2
    kappa = 2.0 * b / v2 + (2.0 * gamma - 1.0)
    res: Float64Array = (
        np.exp(lam * t2)
        * s**gamma
        * (
            bivariate_normal_cdf(-e1, -f1, _RHO)
            - (i2 / s) ** kappa * bivariate_normal_cdf(-e2, -f2, _RHO)
            - (i1 / s) ** kappa * bivariate_normal_cdf(-e3, -f3, -_RHO)
            + (i1 / i2) ** kappa * bivariate_normal_cdf(-e4, -f4, -_RHO)
        )
    )
    return res


def bs2002_call(
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    r: Float64Array,
    b: Float64Array,
    vol: Float64Array,
) -> Float64Array:
    """Bjerksund-Stensland (2002) American call with cost of carry ``b``.

    Parameters
    ----------
    s, k, t, r, b, vol : numpy.ndarray
        Spot, strike, years to expiry, rate, cost of carry ``r - q``, volatility
        (1-D, same length).  Elements with ``b >= r`` (no early exercise) or
        degenerate inputs may return NaN/garbage: the caller replaces them.

    Returns
    -------
    numpy.ndarray
        Approximate American call value.

    Notes
    -----
    With ``t_1 = (sqrt(5)-1)/2 T``,
    ``beta = (1/2 - b/v^2) + sqrt((b/v^2 - 1/2)^2 + 2r/v^2)``,
    ``B_inf = beta/(beta-1) K``, ``B_0 = max(K, r/(r-b) K)``,
    ``h(tau) = -(b tau + 2 v sqrt(tau)) K^2 / ((B_inf - B_0) B_0)``, triggers
    ``I_1 = B_0 + (B_inf - B_0)(1 - e^{h(t_1)})``, ``I_2`` likewise with ``T``,
    ``alpha_i = (I_i - K) I_i^{-beta}``:

    .. math::

        C = \\alpha_2 S^\\beta - \\alpha_2\\phi(S,t_1,\\beta,I_2,I_2)
          + \\phi(S,t_1,1,I_2,I_2) - \\phi(S,t_1,1,I_1,I_2)
          - K\\phi(S,t_1,0,I_2,I_2) + K\\phi(S,t_1,0,I_1,I_2)
          + \\alpha_1\\phi(S,t_1,\\beta,I_1,I_2) - \\alpha_1\\psi(S,T,\\beta,I_1,I_2,I_1,t_1)
          + \\psi(S,T,1,I_1,I_2,I_1,t_1) - \\psi(S,T,1,K,I_2,I_1,t_1)
          - K\\psi(S,T,0,I_1,I_2,I_1,t_1) + K\\psi(S,T,0,K,I_2,I_1,t_1)

    for ``S < I_2`` and ``C = S - K`` otherwise (Haug 2007, sec. 3.1.3).
    """
    v2 = vol * vol
    t1 = 0.5 * (np.sqrt(5.0) - 1.0) * t
    beta = (0.5 - b / v2) + np.sqrt((b / v2 - 0.5) ** 2 + 2.0 * r / v2)
    b_inf = beta / (beta - 1.0) * k
    b0 = np.maximum(k, r / (r - b) * k)
    scale = k * k / ((b_inf - b0) * b0)
    i1 = b0 + (b_inf - b0) * (1.0 - np.exp(-(b * t1 + 2.0 * vol * np.sqrt(t1)) * scale))
    i2 = b0 + (b_inf - b0) * (1.0 - np.exp(-(b * t + 2.0 * vol * np.sqrt(t)) * scale))
    a1 = (i1 - k) * i1 ** (-beta)
    a2 = (i2 - k) * i2 ** (-beta)
    val = (
        a2 * s**beta
        - a2 * _phi(s, t1, beta, i2, i2, r, b, v2)
        + _phi(s, t1, 1.0, i2, i2, r, b, v2)
        - _phi(s, t1, 1.0, i1, i2, r, b, v2)
        - k * _phi(s, t1, 0.0, i2, i2, r, b, v2)
        + k * _phi(s, t1, 0.0, i1, i2, r, b, v2)
        + a1 * _phi(s, t1, beta, i1, i2, r, b, v2)
        - a1 * _psi(s, t, beta, i1, i2, i1, t1, r, b, v2)
        + _psi(s, t, 1.0, i1, i2, i1, t1, r, b, v2)
        - _psi(s, t, 1.0, k, i2, i1, t1, r, b, v2)
        - k * _psi(s, t, 0.0, i1, i2, i1, t1, r, b, v2)
        + k * _psi(s, t, 0.0, k, i2, i1, t1, r, b, v2)
    )
    out: Float64Array = np.where(s >= i2, s - k, val)
    return out


def _peizer_pratt(z: Float64Array, n: int) -> Float64Array:
    """Peizer-Pratt method-2 inversion used by Leisen-Reimer."""
    a = z / (n + 1.0 / 3.0 + 0.1 / (n + 1.0))
    res: Float64Array = 0.5 + np.copysign(0.5, z) * np.sqrt(-np.expm1(-(a * a) * (n + 1.0 / 6.0)))
    return res


def lr_tree(
    is_call: npt.NDArray[np.bool_],
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    r: Float64Array,
    q: Float64Array,
    vol: Float64Array,
    steps: int = 201,
) -> tuple[Float64Array, Float64Array]:
    """American and European values on one Leisen-Reimer binomial tree.

    Parameters
    ----------
    is_call : numpy.ndarray of bool
        Call flags (1-D).
    s, k, t, r, q, vol : numpy.ndarray
        1-D inputs with ``t > 0`` and ``vol > 0`` (not checked).
    steps : int
        Number of time steps (made odd).

    Returns
    -------
    american, european : numpy.ndarray
        Tree values; ``american - european`` is the early-exercise premium used
        as a control variate by the caller.

    Notes
    -----
    Leisen & Reimer (1996): ``p = h(d_2)``, ``p' = h(d_1)``,
    ``u = e^{(r-q)dt} p'/p``, ``d = (e^{(r-q)dt} - p u)/(1-p)`` with the
    Peizer-Pratt inversion
    ``h(z) = 1/2 + sign(z)/2 sqrt(1 - exp(-(z/(n+1/3+0.1/(n+1)))^2 (n+1/6)))``;
    backward induction ``V_i = max(payoff, e^{-r dt}(p V_{i+1}^{up} + (1-p) V_{i+1}^{down}))``.

    Only the American tree is inducted backwards; the European tree's root is its
    closed form, the binomial expectation of the terminal payoffs
    ``e^{-r t} sum_j C(n, j) p^j (1-p)^(n-j) payoff_j`` (:func:`_european_root`): the
    induction's value up to rounding (within 1e-12 relative, measured ~2e-13, tested against
    :func:`lr_tree_nodes`), at O(n) instead of O(n^2) work.  The American values are
    :func:`lr_tree_nodes`' bit for bit.
    """
    lat = _lattice(is_call, s, k, t, r, q, vol, steps)
    vals = lat.payoff.copy()
    _induct(vals, lat, (lat.disc * lat.pu)[None, :], (lat.disc * (1.0 - lat.pu))[None, :])
    return vals[0].copy(), _european_root(lat)


class _Lattice(NamedTuple):
    """A Leisen-Reimer tree of ``c`` contracts: node-major arrays (row ``j`` holds node
    ``j`` of every contract), the row vectors shaped ``(1, c)``."""

    n: int
    pu: Float64Array  # (c,) up probability
    disc: Float64Array  # (c,) one step's discount factor
    w: Float64Array  # (1, c) +1 call, -1 put
    k: Float64Array  # (1, c) strike
    inv_dn: Float64Array  # (1, c) 1 / down factor
    spot: Float64Array  # (n + 1, c) terminal spots
    payoff: Float64Array  # (n + 1, c) terminal payoffs


def _lattice(
    is_call: npt.NDArray[np.bool_],
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    r: Float64Array,
    q: Float64Array,
    vol: Float64Array,
    steps: int,
) -> _Lattice:
    n = steps | 1
    dt = t / n
    sd = vol * np.sqrt(t)
    d1 = (np.log(s / k) + (r - q) * t) / sd + 0.5 * sd
    d2 = d1 - sd
    pu = _peizer_pratt(d2, n)
    pbar = _peizer_pratt(d1, n)
    growth = np.exp((r - q) * dt)
    up = growth * pbar / pu
    dn = (growth - pu * up) / (1.0 - pu)
    disc = np.exp(-r * dt)
    w = np.where(is_call, 1.0, -1.0)[None, :]
    j = np.arange(n + 1, dtype=np.float64)[:, None]
    # terminal spots S u^j d^(n-j) in log space
    ls = np.log(s)[None, :] + j * np.log(up)[None, :] + (n - j) * np.log(dn)[None, :]
    spot = np.exp(ls)
    kk = k[None, :]
    payoff = np.maximum(w * (spot - kk), 0.0)
    return _Lattice(n, pu, disc, w, kk, (1.0 / dn)[None, :], spot, payoff)


def _european_root(lat: _Lattice) -> Float64Array:
    """Root value of the European tree: ``disc^n sum_j C(n, j) p^j (1-p)^(n-j) payoff_j``,
    the weights in log space (no underflow of ``p^n`` far from the money; ``xlogy`` keeps
    ``0 log 0 = 0`` at the lattice's ends).  Contract-major, so each contract's sum runs
    along one contiguous row (numpy's pairwise sum of ``n + 1`` terms): a contract's value
    does not depend on the other contracts of its block."""
    n = lat.n
    j = np.arange(n + 1, dtype=np.float64)[None, :]
    pu = lat.pu[:, None]
    log_w = xlogy(j, pu) + xlog1py(n - j, -pu)
    log_w += gammaln(n + 1.0) - gammaln(j + 1.0) - gammaln(n + 1.0 - j)
    log_w += n * np.log(lat.disc)[:, None]
    np.exp(log_w, out=log_w)
    log_w *= lat.payoff.T
    out: Float64Array = np.sum(log_w, axis=1)
    return out


def _induct(
    vals: Float64Array,
    lat: _Lattice,
    a_up: Float64Array,
    a_dn: Float64Array,
    keep: tuple[int, ...] = (),
) -> dict[int, tuple[Float64Array, Float64Array, Float64Array]]:
    """Backward induction of ``lat`` in place in ``vals`` (node-major, shape
    ``(n + 1, columns)``): the first ``c`` columns are the American trees (the exercise value
    floors them at every node), any further ``c`` the European ones; ``a_up``/``a_dn`` are the
    discounted branch weights per column.  Returns the (American, European, spot) nodes of
    the steps in ``keep``, contract-major.

    Step i keeps its i + 1 nodes in the first rows of ``vals`` and of the signed spots; one
    scratch array takes the up-moves, another the exercise values.  The same operations on
    the same operands as the textbook loop, without allocating ~10 arrays per step, so the
    values are bit-identical (twin test in portfolio_pipeline_tests/quant/test_american_tree.py):
    a_dn V_dn + a_up V_up equals a_up V_up + a_dn V_dn exactly, and with w = +-1 the spots
    are carried signed, w S (w S / d = w (S / d) and w S - w K = w (S - K) exactly: IEEE
    rounding is symmetric in sign), which saves two operations per step.
    """
    c = lat.spot.shape[1]
    wspot = lat.w * lat.spot
    wk = lat.w * lat.k
    scratch = np.empty_like(vals)
    ex_scratch = np.empty_like(wspot)
    first: dict[int, tuple[Float64Array, Float64Array, Float64Array]] = {}
    for i in range(lat.n - 1, -1, -1):
        m = i + 1
        tmp = scratch[:m]
        np.multiply(a_up, vals[1 : m + 1], out=tmp)
        head = vals[:m]
        np.multiply(a_dn, head, out=head)
        np.add(head, tmp, out=head)
        node = wspot[:m]
        np.multiply(node, lat.inv_dn, out=node)
        ex = ex_scratch[:m]
        np.subtract(node, wk, out=ex)
        am = head[:, :c]
        np.maximum(am, ex, out=am)
        if i in keep:
            first[i] = (am.T.copy(), head[:, c:].T.copy(), (lat.w * node).T.copy())
    return first


class TreeNodes(NamedTuple):
    """Root value and first-node delta/gamma of the American and European trees."""

    american: Float64Array
    european: Float64Array
    american_delta: Float64Array
    european_delta: Float64Array
    american_gamma: Float64Array
    european_gamma: Float64Array


def _node_delta(v: Float64Array, sp: Float64Array) -> Float64Array:
    res: Float64Array = (v[:, 1] - v[:, 0]) / (sp[:, 1] - sp[:, 0])
    return res


def _node_gamma(v: Float64Array, sp: Float64Array) -> Float64Array:
    d_up = (v[:, 2] - v[:, 1]) / (sp[:, 2] - sp[:, 1])
    d_dn = (v[:, 1] - v[:, 0]) / (sp[:, 1] - sp[:, 0])
    res: Float64Array = (d_up - d_dn) / (0.5 * (sp[:, 2] - sp[:, 0]))
    return res


def lr_tree_nodes(
    is_call: npt.NDArray[np.bool_],
    s: Float64Array,
    k: Float64Array,
    t: Float64Array,
    r: Float64Array,
    q: Float64Array,
    vol: Float64Array,
    steps: int = 201,
) -> TreeNodes:
    """Leisen-Reimer tree values plus delta and gamma read off the tree's first nodes.

    Parameters
    ----------
    is_call, s, k, t, r, q, vol, steps
        As for :func:`lr_tree`.

    Returns
    -------
    TreeNodes
        Root values, delta from the two nodes of step 1 and gamma from the three
        nodes of step 2, for the American and the European tree.

    Notes
    -----
    With nodes ``S_{i,j}`` and values ``V_{i,j}`` at step ``i``:

    .. math::

        \\Delta = \\frac{V_{1,1}-V_{1,0}}{S_{1,1}-S_{1,0}},\\quad
        \\Gamma = \\frac{\\frac{V_{2,2}-V_{2,1}}{S_{2,2}-S_{2,1}}
              - \\frac{V_{2,1}-V_{2,0}}{S_{2,1}-S_{2,0}}}{(S_{2,2}-S_{2,0})/2}.

    The node spacing is ``S sigma sqrt(dt)``, i.e. scaled to the option's own
    standard deviation, so these stay accurate to expiry (a fixed 1 % spot bump
    does not once ``sigma sqrt(T)`` is of that order).  The caller uses
    ``american - european`` of each as a control variate on the analytic
    European Greeks.
    """
    lat = _lattice(is_call, s, k, t, r, q, vol, steps)
    # the American trees in the first ``c`` columns of ``vals``, the European ones in the last
    c = s.size
    a_up = np.tile(lat.disc * lat.pu, 2)[None, :]
    a_dn = np.tile(lat.disc * (1.0 - lat.pu), 2)[None, :]
    vals = np.concatenate([lat.payoff, lat.payoff], axis=1)
    first = _induct(vals, lat, a_up, a_dn, keep=(1, 2))
    a1, e1, s1 = first[1]
    a2, e2, s2 = first[2]
    return TreeNodes(
        vals[0, :c].copy(),
        vals[0, c:].copy(),
        _node_delta(a1, s1),
        _node_delta(e1, s1),
        _node_gamma(a2, s2),
        _node_gamma(e2, s2),
    )

"""Correlation matrices: nearest valid correlation matrix and crisis stressing.

Pure numpy.  A *valid* correlation matrix is symmetric positive semi-definite with a
unit diagonal; estimated or stressed matrices (pairwise estimates, hand-set crisis
correlations) often are not, and :func:`nearest_correlation` repairs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import Float64Array

__all__ = ["NearestCorrelation", "crisis_correlation", "is_correlation", "nearest_correlation"]


@dataclass(frozen=True, slots=True)
class NearestCorrelation:
    """Result of :func:`nearest_correlation`."""

    matrix: Float64Array
    iterations: int
    converged: bool
    distance: float
    """Frobenius distance from the input."""
    min_eigenvalue: float


def _sym(a: Float64Array) -> Float64Array:
    out: Float64Array = 0.5 * (a + a.T)
    return out


def _proj_psd(a: Float64Array, floor: float = 0.0) -> Float64Array:
    w, v = np.linalg.eigh(_sym(a))
    out: Float64Array = (v * np.maximum(w, floor)) @ v.T
    return _sym(out)


def is_correlation(a: npt.ArrayLike, *, tol: float = 1e-10) -> bool:
    """True if ``a`` is symmetric, unit-diagonal and PSD (eigenvalues >= -tol)."""
    m = np.asarray(a, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or not np.all(np.isfinite(m)):
        return False
    if not np.allclose(m, m.T, atol=tol, rtol=0) or not np.allclose(np.diag(m), 1.0, atol=tol):
        return False
    return bool(np.linalg.eigvalsh(_sym(m)).min() >= -tol)


def nearest_correlation(
    a: npt.ArrayLike,
    *,
    tol: float = 1e-10,
    max_iter: int = 500,
    min_eigenvalue: float = 1e-10,
) -> NearestCorrelation:
    """Nearest correlation matrix in the Frobenius norm (Higham 2002).

    Parameters
    ----------
    a : array_like, shape (n, n)
        Symmetric matrix with finite entries (e.g. a pairwise or stressed correlation).
    tol : float
        Stop when successive iterates change by less than ``tol`` (relative, Frobenius).
    max_iter : int
        Iteration cap; ``converged`` says whether ``tol`` was reached.
    min_eigenvalue : float
        After the iteration the eigenvalues are floored at this value and the matrix is
        rescaled to a unit diagonal, so the result is strictly PSD (Cholesky-able) and
        exactly unit-diagonal.

    Returns
    -------
    NearestCorrelation

    Notes
    -----
    Alternating projections with Dykstra's correction (Higham, "Computing the nearest
    correlation matrix -- a problem from finance", IMA J. Numer. Anal. 22, 2002,
    Algorithm 3.3) between :math:`S = \\{X \\succeq 0\\}` and
    :math:`U = \\{X = X^T, \\operatorname{diag} X = 1\\}`:

    .. math::

        R_k = Y_{k-1} - \\Delta S_{k-1},\\quad X_k = P_S(R_k),\\quad
        \\Delta S_k = X_k - R_k,\\quad Y_k = P_U(X_k),

    where :math:`P_S` clips negative eigenvalues to 0 and :math:`P_U` sets the
    diagonal to 1.  The final step :math:`D^{-1/2} P_{\\lambda \\ge \\epsilon}(Y) D^{-1/2}`
    moves the result by :math:`O(\\epsilon)`.

    Examples
    --------
    >>> import numpy as np
    >>> r = nearest_correlation(np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1.0]]))
    >>> bool(np.allclose(np.diag(r.matrix), 1.0)) and r.min_eigenvalue >= 0
    True
    """
    a0 = np.asarray(a, dtype=np.float64)
    if a0.ndim != 2 or a0.shape[0] != a0.shape[1]:
        raise ValueError(f"need a square matrix, got shape {a0.shape}")
    if not np.all(np.isfinite(a0)):
        raise ValueError("matrix has non-finite entries")
    if not np.allclose(a0, a0.T, atol=1e-12):
        raise ValueError("matrix is not symmetric")
    a0 = _sym(a0)
    y = a0.copy()
    ds = np.zeros_like(a0)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - it is reported
        r = y - ds
        x = _proj_psd(r)
        ds = x - r
        y_new = x.copy()
        np.fill_diagonal(y_new, 1.0)
        change = float(np.linalg.norm(y_new - y)) / max(float(np.linalg.norm(y_new)), 1e-300)
        y = y_new
        if change < tol:
            converged = True
            break
    z = _proj_psd(y, floor=min_eigenvalue)
    d = 1.0 / np.sqrt(np.diag(z))
    z = _sym(z * d[:, None] * d[None, :])
    np.fill_diagonal(z, 1.0)
    return NearestCorrelation(
        matrix=z,
        iterations=it,
        converged=converged,
        distance=float(np.linalg.norm(z - a0)),
        min_eigenvalue=float(np.linalg.eigvalsh(z).min()),
    )


def crisis_correlation(corr: npt.ArrayLike, weight: float) -> Float64Array:
    """Push every correlation's magnitude toward 1, keeping its sign.

    .. math:: \\rho' = \\operatorname{sign}(\\rho)\\,\\bigl(|\\rho| + w(1 - |\\rho|)\\bigr)

    (``w = 0`` unchanged, ``w = 1`` all +-1).  The result is generally not a valid
    correlation matrix; pass it through :func:`nearest_correlation`.
    """
    c = np.asarray(corr, dtype=np.float64)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"crisis weight must be in [0, 1], got {weight!r}")
    sign = np.where(c < 0, -1.0, 1.0)
    out: Float64Array = sign * (np.abs(c) + weight * (1.0 - np.abs(c)))
    np.fill_diagonal(out, 1.0)
    return out

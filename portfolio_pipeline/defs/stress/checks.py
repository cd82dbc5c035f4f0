"""Asset checks of the stress assets: finite results and the invariants of the engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg
import numpy as np

from portfolio_pipeline.defs.quality import problems_check_result
from portfolio_pipeline.domain.symbols import AGGREGATE as ALL
from portfolio_pipeline.quant.correlation import is_correlation

GRID = dg.AssetKey("stress_shock_grid")
HISTORICAL = dg.AssetKey("stress_historical")
MONTE_CARLO = dg.AssetKey("monte_carlo_var")
CORRELATION = dg.AssetKey("correlation_stress")

GRID_CHECK = dg.AssetCheckSpec(
    "stress_grid_sane", asset=GRID,
    description="Every P&L finite; today's cell (0% spot, 0 vol, 0 days) is exactly 0.",
)
HISTORICAL_CHECK = dg.AssetCheckSpec(
    "stress_historical_sane", asset=HISTORICAL,
    description="Every path P&L finite and 0 at the window start.",
)
MC_CHECK = dg.AssetCheckSpec(
    "monte_carlo_var_sane", asset=MONTE_CARLO,
    description="Every session of the run: VaR/CVaR finite, CVaR >= VaR, group tail "
    "contributions add up to the portfolio CVaR (the mean of exactly the worst ceil((1-a)N) "
    "scenarios).",
)
CORRELATION_CHECK = dg.AssetCheckSpec(
    "correlation_matrices_valid", asset=CORRELATION,
    description="Both matrices are valid correlation matrices (PSD, unit diagonal).",
)


_result = problems_check_result


def grid_check(pnl: np.ndarray, zero_cell_pnl: float) -> dg.AssetCheckResult:
    problems = []
    if not np.all(np.isfinite(pnl)):
        problems.append("non-finite grid P&L")
    if zero_cell_pnl != 0.0:
        problems.append(f"today's cell has P&L {zero_cell_pnl!r}, not 0")
    return _result(GRID_CHECK, problems, zero_cell_pnl=zero_cell_pnl)


def historical_check(paths: Sequence[np.ndarray]) -> dg.AssetCheckResult:
    problems = []
    for i, p in enumerate(paths):
        if not np.all(np.isfinite(p)):
            problems.append(f"path {i} has non-finite P&L")
        elif p.size and abs(float(p[0])) > 1e-6:
            problems.append(f"path {i} starts at {float(p[0])!r}, not 0")
    return _result(HISTORICAL_CHECK, problems)


def mc_check(rows: Sequence[dict[str, object]]) -> dg.AssetCheckResult:
    """Every session's rows: finite, CVaR >= VaR, and the groups' tail contributions add up
    to the stored portfolio CVaR of their session and horizon (both levels)."""
    problems = []
    sums: dict[tuple[object, object], list[float]] = {}
    portfolio: dict[tuple[object, object], list[float]] = {}
    for r in rows:
        values = [float(r[k]) for k in ("var_95", "cvar_95", "var_99", "cvar_99")]  # type: ignore[arg-type]
        if not all(np.isfinite(values)):
            problems.append(f"{r['session_date']}: non-finite VaR for {r['account_id']}/{r['group_key']}")
        elif values[1] < values[0] - 1e-9 or values[3] < values[2] - 1e-9:
            problems.append(f"{r['session_date']}: CVaR < VaR for {r['account_id']}/{r['group_key']}")
        key = (r["session_date"], r["horizon_days"])
        if r["broker"] == ALL:
            portfolio[key] = [values[1], values[3]]
        elif r["group_key"] != ALL:
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += float(r["contribution_95"])  # type: ignore[arg-type]
            acc[1] += float(r["contribution_99"])  # type: ignore[arg-type]
    tail_gap = 0.0
    for key, (c95, c99) in portfolio.items():
        s95, s99 = sums.get(key, [0.0, 0.0])
        gap = max(abs(s95 - c95), abs(s99 - c99)) / max(1.0, abs(c99))
        tail_gap = max(tail_gap, gap)
        if gap > 1e-9:
            problems.append(f"{key[0]} {key[1]}d: tail contributions miss the portfolio CVaR "
                            f"by {gap:.3g} (relative)")
    return _result(MC_CHECK, problems[:10], tail_gap=tail_gap, sessions=len({k[0] for k in portfolio}))


def correlation_check(matrices: dict[str, np.ndarray]) -> dg.AssetCheckResult:
    problems = [f"{name} is not a valid correlation matrix" for name, m in matrices.items()
                if not is_correlation(m)]
    eigen: dict[str, Any] = {
        f"{k}_min_eigenvalue": float(np.linalg.eigvalsh(m).min()) for k, m in matrices.items()
    }
    return _result(CORRELATION_CHECK, problems, **eigen)

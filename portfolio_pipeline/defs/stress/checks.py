"""Asset checks of the stress assets: finite results and the invariants of the engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg
import numpy as np

from portfolio_pipeline.defs.quality import problems_check_result
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
    description="VaR/CVaR finite, CVaR >= VaR, tail contributions add up to the portfolio CVaR.",
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


def mc_check(rows: Sequence[dict[str, object]], tail_gap: float) -> dg.AssetCheckResult:
    problems = []
    for r in rows:
        values = [float(r[k]) for k in ("var_95", "cvar_95", "var_99", "cvar_99")]  # type: ignore[arg-type]
        if not all(np.isfinite(values)):
            problems.append(f"non-finite VaR for {r['account_id']}/{r['group_key']}")
        elif values[1] < values[0] - 1e-9 or values[3] < values[2] - 1e-9:
            problems.append(f"CVaR < VaR for {r['account_id']}/{r['group_key']}")
    if tail_gap > 1e-6:
        problems.append(f"tail contributions miss the portfolio tail loss by {tail_gap:.3g}")
    return _result(MC_CHECK, problems[:10], tail_gap=tail_gap)


def correlation_check(matrices: dict[str, np.ndarray]) -> dg.AssetCheckResult:
    problems = [f"{name} is not a valid correlation matrix" for name, m in matrices.items()
                if not is_correlation(m)]
    eigen: dict[str, Any] = {
        f"{k}_min_eigenvalue": float(np.linalg.eigvalsh(m).min()) for k, m in matrices.items()
    }
    return _result(CORRELATION_CHECK, problems, **eigen)

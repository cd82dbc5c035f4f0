"""Rows of the stress tables from revalued P&L matrices (pure; ``defs/stress`` stores them).

The P&L matrices come from :func:`portfolio_pipeline.quant.revaluation.revalue` (full
revaluation) and ``greeks_pnl`` (the Greeks approximation), already summed into the
reporting entities: ``pnl[s, e]`` is scenario ``s`` of entity ``e``, where an entity is
(broker, account_id, group_key) and the last one is the portfolio ('*', '*', '*').
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Protocol

import numpy as np

from portfolio_pipeline.analytics.performance import ALL
from portfolio_pipeline.quant._typing import Float64Array
from portfolio_pipeline.quant.correlation import (
    NearestCorrelation,
    crisis_correlation,
    nearest_correlation,
)
from portfolio_pipeline.quant.scenario_risk import scenario_var_cvar_levels
from portfolio_pipeline.quant.scenario_set import GridScenarios

__all__ = [
    "Entity",
    "crisis_matrix",
    "entity_matrix",
    "grid_rows",
    "grid_zero_cell",
    "historical_rows",
    "monte_carlo_rows",
    "var_cvar",
]

Entity = tuple[str, str, str]
"""(broker, account_id, group_key); '*' for "all"."""


class _Path(Protocol):
    """A replayed window (``defs.stress.book.ReplayPath``): the fields the rows need."""

    @property
    def name(self) -> str: ...
    @property
    def dates(self) -> Sequence[date]: ...
    @property
    def spx(self) -> Float64Array: ...
    @property
    def vix(self) -> Float64Array: ...
    @property
    def spx_source(self) -> Sequence[str]: ...
    @property
    def vix_source(self) -> Sequence[str]: ...


class _Override(Protocol):
    @property
    def a(self) -> str: ...
    @property
    def b(self) -> str: ...
    @property
    def rho(self) -> float: ...


def entity_matrix(
    group_keys: Sequence[Entity], accounts: Sequence[tuple[str, str]]
) -> tuple[list[Entity], Float64Array]:
    """Reporting entities -- every group, every account ('*' group), the portfolio -- and
    the (n_groups, n_entities) 0/1 matrix that sums group P&L into them."""
    ents = [*group_keys, *((b, a, ALL) for b, a in accounts), (ALL, ALL, ALL)]
    agg = np.zeros((len(group_keys), len(ents)))
    n = len(group_keys)
    for g, (b, a, _) in enumerate(group_keys):
        agg[g, g] = 1.0
        agg[g, n + list(accounts).index((b, a))] = 1.0
        agg[g, -1] = 1.0
    return ents, agg


def var_cvar(pnl: Float64Array) -> dict[str, float]:
    """VaR and CVaR at 95 % and 99 % (``quant.scenario_risk.scenario_var_cvar`` conventions)."""
    out: dict[str, float] = {}
    pairs = scenario_var_cvar_levels(pnl, (0.95, 0.99))  # one sort for both levels
    for pct, (var, cvar) in zip(("95", "99"), pairs, strict=True):
        out[f"var_{pct}"], out[f"cvar_{pct}"] = var, cvar
    return out


def grid_rows(day: date, grid: GridScenarios, ents: Sequence[Entity], full: Float64Array,
              approx: Float64Array) -> list[dict[str, Any]]:
    """``stress_shock_grid`` rows: one per grid cell and entity."""
    rows = []
    for s, (i, j, k) in enumerate(grid.cells):
        for e, (b, a, g) in enumerate(ents):
            rows.append({
                "session_date": day, "broker": b, "account_id": a, "group_key": g,
                "spot_shock": float(grid.spot_shocks[i]), "vol_scenario": grid.vol_labels[j],
                "horizon_days": int(grid.horizons_days[k]), "strategy_id": None,
                "pnl": float(full[s, e]), "pnl_greeks": float(approx[s, e]),
            })
    return rows


def grid_zero_cell(grid: GridScenarios) -> int:
    """Index of the no-move cell (spot 0 %, '+0pt' vol, 0 days) in ``grid.cells``."""
    return grid.cells.index((
        int(np.flatnonzero(grid.spot_shocks == 0.0)[0]),
        grid.vol_labels.index("+0pt"),
        int(np.flatnonzero(grid.horizons_days == 0.0)[0]),
    ))


def historical_rows(day: date, path: _Path, ents: Sequence[Entity], full: Float64Array,
                    approx: Float64Array) -> list[dict[str, Any]]:
    """``stress_historical`` rows of one replayed window: each step for each account
    entity (group '*') and the portfolio."""
    accounts = [e for e in range(len(ents)) if ents[e][2] == ALL]
    rows = []
    for t, d in enumerate(path.dates):
        for e in accounts:
            b, a, _ = ents[e]
            rows.append({
                "session_date": day, "scenario": path.name, "step": t, "broker": b,
                "account_id": a, "step_date": d, "spx": float(path.spx[t]),
                "vix": float(path.vix[t]), "spx_source": path.spx_source[t],
                "vix_source": path.vix_source[t], "pnl": float(full[t, e]),
                "pnl_greeks": float(approx[t, e]),
            })
    return rows


def monte_carlo_rows(day: date, horizon: int, ents: Sequence[Entity], pnl: Float64Array,
                     contributions: Mapping[float, Float64Array],
                     run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``monte_carlo_var`` rows of one horizon: VaR/CVaR, tail contributions (per level,
    per entity), mean and standard deviation of each entity's simulated P&L column.

    ``run`` holds the run's n_scenarios, seed, regime and vol_multiplier."""
    rows = []
    for e, (b, a, g) in enumerate(ents):
        col = pnl[:, e]
        rows.append({
            "session_date": day, "horizon_days": horizon, "broker": b, "account_id": a,
            "group_key": g, "strategy_id": None, **var_cvar(col),
            "contribution_95": float(contributions[0.95][e]),
            "contribution_99": float(contributions[0.99][e]),
            "mean_pnl": float(col.mean()), "std_pnl": float(col.std(ddof=1)), **run,
        })
    return rows


def crisis_matrix(corr: Float64Array, names: Sequence[str], weight: float,
                  overrides: Sequence[_Override]) -> NearestCorrelation:
    """The crisis correlation: |rho| pushed toward 1 by ``weight``, pairwise overrides
    of known factors set, repaired to the nearest correlation matrix (Higham)."""
    stressed = crisis_correlation(corr, weight)
    for o in overrides:
        if o.a in names and o.b in names and o.a != o.b:
            i, j = names.index(o.a), names.index(o.b)
            stressed[i, j] = stressed[j, i] = o.rho
    return nearest_correlation(stressed)

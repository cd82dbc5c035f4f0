"""Row builders of the stress tables on small hand-checked matrices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pytest

from portfolio_pipeline.analytics.stress import (
    crisis_matrix,
    entity_matrix,
    grid_zero_cell,
    historical_rows,
    monte_carlo_rows,
    var_cvar,
)
from portfolio_pipeline.quant.scenario_set import GridScenarios

DAY = date(2018, 2, 5)
GROUPS = [("demo", "A", "g1"), ("demo", "A", "g2"), ("demo", "B", "g3")]
ACCOUNTS = [("demo", "A"), ("demo", "B")]


def test_entity_matrix_sums_groups_into_accounts_and_portfolio() -> None:
    ents, agg = entity_matrix(GROUPS, ACCOUNTS)
    assert ents == [*GROUPS, ("demo", "A", "*"), ("demo", "B", "*"), ("*", "*", "*")]
    pnl = np.array([[1.0, 2.0, 4.0]]) @ agg  # one scenario, three groups
    np.testing.assert_array_equal(pnl, [[1.0, 2.0, 4.0, 3.0, 4.0, 7.0]])


def test_var_cvar_of_a_hundred_equally_likely_losses() -> None:
    pnl = -np.arange(100, dtype=float)  # losses 0..99
    out = var_cvar(pnl)
    # VaR: minus the linear-interpolated 5 % quantile of -99..0 = -(-99 + 0.05 * 99) = 94.05;
    # CVaR: minus the mean of the ceil(0.05 * 100) = 5 worst, (99 + 98 + 97 + 96 + 95) / 5 = 97
    assert out == pytest.approx({"var_95": 94.05, "cvar_95": 97.0, "var_99": 98.01, "cvar_99": 99.0})


def test_monte_carlo_rows_mean_std_and_contributions() -> None:
    ents, _ = entity_matrix(GROUPS[:1], ACCOUNTS[:1])
    pnl = np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])  # two scenarios, three entities
    contributions = {0.95: np.array([5.0, 5.0, 5.0]), 0.99: np.array([6.0, 6.0, 6.0])}
    run = {"n_scenarios": 2, "seed": 7, "regime": "calm", "vol_multiplier": 1.0}
    rows = monte_carlo_rows(DAY, 10, ents, pnl, contributions, run)
    assert [(r["broker"], r["account_id"], r["group_key"]) for r in rows] == ents
    assert rows[-1]["mean_pnl"] == 2.0
    assert rows[-1]["std_pnl"] == pytest.approx(np.sqrt(2.0))  # sample std of (1, 3)
    assert rows[0]["contribution_99"] == 6.0 and rows[0]["horizon_days"] == 10 and rows[0]["seed"] == 7


def test_grid_zero_cell() -> None:
    grid = GridScenarios(scenarios=None,  # type: ignore[arg-type]
                         spot_shocks=np.array([-0.1, 0.0]), vol_labels=("-5pt", "+0pt"),
                         horizons_days=np.array([0.0, 5.0]),
                         cells=tuple((i, j, k) for i in range(2) for j in range(2) for k in range(2)))
    assert grid.cells[grid_zero_cell(grid)] == (1, 1, 0)


@dataclass(frozen=True)
class _Path:
    name: str
    dates: tuple[date, ...]
    spx: np.ndarray
    vix: np.ndarray
    spx_source: tuple[str, ...]
    vix_source: tuple[str, ...]


def test_historical_rows_keep_account_and_portfolio_columns_only() -> None:
    ents, _ = entity_matrix(GROUPS, ACCOUNTS)
    path = _Path("feb2018", (date(2018, 2, 2), date(2018, 2, 5)), np.array([2762.0, 2649.0]),
                 np.array([17.3, 37.3]), ("published", "published"), ("published", "interpolated"))
    full = np.arange(12, dtype=float).reshape(2, 6)
    rows = historical_rows(DAY, path, ents, full, -full)
    assert [(r["step"], r["account_id"]) for r in rows] == [(0, "A"), (0, "B"), (0, "*"), (1, "A"), (1, "B"), (1, "*")]
    assert rows[-1]["pnl"] == 11.0 and rows[-1]["pnl_greeks"] == -11.0
    assert rows[-1]["vix_source"] == "interpolated" and rows[-1]["step_date"] == date(2018, 2, 5)


@dataclass(frozen=True)
class _Override:
    a: str
    b: str
    rho: float


def test_crisis_matrix_applies_overrides_and_stays_a_correlation() -> None:
    corr = np.array([[1.0, 0.2, 0.0], [0.2, 1.0, 0.1], [0.0, 0.1, 1.0]])
    names = ["SPX", "NDX", "VIX"]
    out = crisis_matrix(corr, names, 0.0, [_Override("SPX", "VIX", -0.5), _Override("SPX", "XYZ", 0.9)])
    m = out.matrix
    np.testing.assert_allclose(np.diag(m), 1.0)
    np.testing.assert_allclose(m, m.T)
    assert np.linalg.eigvalsh(m).min() >= -1e-10
    assert m[0, 2] == pytest.approx(-0.5, abs=1e-6)  # already PSD: the override survives the repair
    assert m[0, 1] == pytest.approx(0.2, abs=1e-6)  # weight 0: the other pairs unchanged

"""The Monte Carlo asset check covers every session of a backfill (issue 14, items 5-6).

Oracle: hand-built rows whose contributions are known sums."""

from __future__ import annotations

from datetime import date

from portfolio_pipeline.defs.stress import checks


def _rows(day: date, contrib_99: tuple[float, float], cvar_99: float) -> list[dict[str, object]]:
    base = {"session_date": day, "horizon_days": 1, "var_95": 5.0, "cvar_95": 7.0,
            "var_99": 8.0, "contribution_95": 3.5}
    groups = [{**base, "broker": "demo", "account_id": "A", "group_key": g, "cvar_99": 9.0,
               "contribution_99": c} for g, c in zip(("g1", "g2"), contrib_99, strict=True)]
    account = {**base, "broker": "demo", "account_id": "A", "group_key": "*", "cvar_99": cvar_99,
               "contribution_95": 7.0, "contribution_99": cvar_99}
    total = {**base, "broker": "*", "account_id": "*", "group_key": "*", "cvar_99": cvar_99,
             "contribution_95": 7.0, "contribution_99": cvar_99}
    return [*groups, account, total]


def test_mc_check_passes_when_every_session_adds_up() -> None:
    rows = _rows(date(2018, 2, 5), (4.0, 6.0), 10.0) + _rows(date(2018, 2, 6), (1.0, 8.0), 9.0)
    res = checks.mc_check(rows)
    assert res.passed
    assert res.metadata["sessions"].value == 2.0


def test_mc_check_fails_on_an_earlier_session_of_the_backfill() -> None:
    """The first session's group contributions (4 + 5 = 9) miss its CVaR99 of 10; the last
    session is fine.  Before, only the last session's rows reached the check."""
    rows = _rows(date(2018, 2, 5), (4.0, 5.0), 10.0) + _rows(date(2018, 2, 6), (1.0, 8.0), 9.0)
    res = checks.mc_check(rows)
    assert not res.passed
    assert res.description is not None and res.description.startswith("2018-02-05 1d")

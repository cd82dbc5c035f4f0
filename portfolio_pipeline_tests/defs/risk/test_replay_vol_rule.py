"""The replay's vol rule fitted on the stored surface history, and one replayed day
(issue 14, item 7).

Oracle: hand computation on the two-session analytics book (the SPX 2600 put held on
2018-02-02 at IV 17 % and on 2018-02-05 at IV 31 %, VIX 17.31 -> 37.32, SPX 2762.13):
one surface change of +0.14 vol against a VIX move of +0.2001 (vix_beta 1) ->
beta = 0.14 / 0.2001 = 0.6997 in the put's bucket (expiry and ln(2600/2762.13))."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from portfolio_pipeline.defs.stress.vol_rule import SurfaceHistory, fit_rule, surface_changes
from portfolio_pipeline.quant.scenario_config import StressScenariosFile
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.defs.risk.book import DAY1, DAY2, PUT, materialize


def _two_stored_sessions(db_url: str, instance: dg.DagsterInstance) -> StressScenariosFile:
    """DAY1 and DAY2 of the analytics book stored; the rule's settings fitting on one change."""
    assert materialize(db_url, instance, DAY1).success
    assert materialize(db_url, instance, DAY2).success
    return StressScenariosFile.model_validate({"historical": {"vol_beta_min_observations": 1}})


@pytest.mark.usefixtures("dated_broker")
def test_rule_fitted_on_the_stored_surface_history(db_url: str, instance: dg.DagsterInstance,
                                                   portfolio_env: Path) -> None:
    cfg = _two_stored_sessions(db_url, instance)
    db = Database(db_url)
    try:
        with db.connect() as conn:
            ch = surface_changes(conn, DAY2, cfg)
            rule = fit_rule(conn, DAY2, cfg)
            before = fit_rule(conn, DAY1, cfg)  # no look-ahead: nothing to fit on yet
            full = fit_rule(conn, DAY2, StressScenariosFile.model_validate(
                {"historical": {"vol_rule": "full_vix"}}))
    finally:
        db.dispose()
    assert len(ch) == 1
    row = ch.iloc[0]
    assert row["d_vol"] == pytest.approx(0.31 - 0.17, abs=1e-12)
    assert row["d_index"] == pytest.approx((37.32 - 17.31) / 100.0, abs=1e-12)
    assert row["log_moneyness"] == pytest.approx(math.log(2600.0 / 2762.13), rel=1e-12)
    dte = float(row["dte"])
    assert abs(dte - (PUT.expiry - DAY1).days) <= 1.0  # type: ignore[operator]
    beta = float(rule.beta([dte], [row["log_moneyness"]])[0])
    assert beta == pytest.approx(0.14 / 0.2001, rel=1e-9)
    assert np.count_nonzero(rule.betas != 1.0) == 1
    assert np.all(before.betas == 1.0) and np.all(full.betas == 1.0)


@pytest.mark.usefixtures("dated_broker")
def test_surface_history_read_once_gives_each_session_its_own_changes(
        db_url: str, instance: dg.DagsterInstance, portfolio_env: Path) -> None:
    """stress_historical reads the surface history once per run (SurfaceHistory up to the run's
    last session) and takes each session's pairs from it: the same changes and the same fitted
    rule as reading the history up to that session alone (no look-ahead)."""
    cfg = _two_stored_sessions(db_url, instance)
    db = Database(db_url)
    try:
        with db.connect() as conn:
            history = SurfaceHistory(conn, DAY2, cfg)
            for day in (DAY1, DAY2):
                alone = surface_changes(conn, day, cfg)
                shared = history.changes(day)
                assert list(shared.columns) == ["d_vol", "d_index", "dte", "log_moneyness"]
                assert shared.to_dict("records") == alone.to_dict("records")
                assert np.array_equal(fit_rule(conn, day, cfg, history).betas, fit_rule(conn, day, cfg).betas)
            assert len(history.changes(DAY1)) == 0 and len(history.changes(DAY2)) == 1
            with pytest.raises(ValueError, match="read up to 2018-02-02"):
                SurfaceHistory(conn, DAY1, cfg).changes(DAY2)
    finally:
        db.dispose()

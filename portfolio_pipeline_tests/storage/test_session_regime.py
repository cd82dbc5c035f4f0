"""One regime per session (issue 14, item 6): classified once with hysteresis, stored,
and the same for the limits (margin_history) and Monte Carlo.

Oracle: hand classification with config/risk_matrix.yaml (calm < 15 <= normal < 20 <=
elevated < 30 <= crisis, hysteresis 1 VIX point): with crisis in force the session before,
VIX 29.5 stays crisis (29.5 > 30 - 1); without hysteresis it is elevated -- the 2018-02-15
disagreement of the demo (limits crisis, Monte Carlo elevated)."""

from __future__ import annotations

from datetime import date

from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.regimes import read_session_regime, session_regime_state
from portfolio_pipeline_tests.stubs import platform_config

D13, D14, D15 = date(2018, 2, 13), date(2018, 2, 14), date(2018, 2, 15)


def test_hysteresis_chain_is_stored_once_and_read_back(db: Database) -> None:
    service = RegimeService(platform_config().risk_matrix)
    assert service.classify(29.5, 31.0).name == "elevated"  # no memory: what Monte Carlo did
    with db.begin() as conn:
        assert session_regime_state(conn, service, D13, None, 37.3, 30.0, recompute=True).name == "crisis"
        limits14 = session_regime_state(conn, service, D14, D13, 29.5, 31.0, recompute=True)
    assert limits14.name == "crisis"  # hysteresis: still within 1 point of the crisis floor
    with db.begin() as conn:
        # Monte Carlo reads the stored regime (its own VIX argument is not re-classified)
        mc14 = session_regime_state(conn, service, D14, D13, 29.5, 31.0)
        assert mc14.name == "crisis" and mc14.limits == limits14.limits
        stored = read_session_regime(conn, D14)
        # a session nobody classified yet: Monte Carlo classifies it with the stored chain
        mc15 = session_regime_state(conn, service, D15, D14, 28.5, 31.0)
    assert stored == {"session_date": D14, "regime": "crisis", "vix": 29.5, "vix3m": 31.0,
                      "previous_regime": "crisis"}
    assert mc15.name == "elevated"  # 28.5 < 30 - 1: steps down
    with db.connect() as conn:
        assert read_session_regime(conn, D15)["regime"] == "elevated"  # type: ignore[index]

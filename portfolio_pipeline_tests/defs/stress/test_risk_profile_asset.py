"""The risk_profile asset on the seeded stress book: rows, summaries, and its check against
the stored shock grid (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select, update

from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.stress.assets import make_stress_assets
from portfolio_pipeline.defs.stress.profile import make_profile_asset
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import risk_profile, risk_profile_summary, stress_shock_grid
from portfolio_pipeline_tests.defs.stress.test_stress import DAY, _resources, _seed, _small_config


def test_risk_profile_asset_stores_curves_and_matches_the_grid(db_url: str, tmp_path: Path) -> None:
    _seed(db_url)
    parts = session_partitions(ExchangeCalendar(), end=DAY.replace(year=2018, month=12, day=31))
    grid_asset = next(a for a in make_stress_assets(parts) if a.key == stress_shock_grid_key())
    resources = _resources(db_url, _small_config(tmp_path))

    def run(assets: list[dg.AssetsDefinition]) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets,
            resources=resources,
            partition_key=DAY.isoformat(),
            instance=dg.DagsterInstance.ephemeral(),
        )

    result = run([grid_asset, make_profile_asset(parts)])
    assert result.success
    check = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "risk_profile_matches_grid"
    )
    assert check.passed, check.description
    assert check.metadata["points_compared"].value >= 10  # every grid spot shock of the axis
    db = Database(db_url)
    try:
        with db.connect() as conn:
            t, s = risk_profile, risk_profile_summary
            profiles = {r[0] for r in conn.execute(select(t.c.profile).distinct())}
            assert profiles == {"*", "SPX", "NDX", "SPY"}
            zero = conn.execute(
                select(t.c.pnl).where(
                    t.c.profile == "*", t.c.horizon == "T+0", t.c.spot_move == 0.0
                )
            ).scalar_one()
            assert zero == 0.0
            horizons = {
                r[0]
                for r in conn.execute(select(t.c.horizon).where(t.c.profile == "SPX").distinct())
            }
            assert horizons == {"T+0", "T+5", "exp 2018-03-16"}
            spx = (
                conn.execute(select(s).where(s.c.profile == "SPX", s.c.horizon == "exp 2018-03-16"))
                .mappings()
                .one()
            )
            # short 3 SPX 2600P (net of the other account's +2) and short 3 2900C at expiry:
            # the loss grows without bound on both sides of the range
            assert spx["max_loss_price"] in (min_price(conn, "SPX"), max_price(conn, "SPX"))
            assert len(spx["breakevens"]) == 2
            assert 2600 > spx["breakevens"][0] > 2400 and 2900 < spx["breakevens"][1] < 3100
            n_rows = conn.execute(select(func.count()).select_from(t)).scalar_one()
        # a grid that disagrees with the profile fails the check
        with db.begin() as conn:
            conn.execute(
                update(stress_shock_grid)
                .where(stress_shock_grid.c.spot_shock == -0.1)
                .values(pnl=stress_shock_grid.c.pnl + 1.0)
            )
    finally:
        db.dispose()
    again = run([make_profile_asset(parts)])
    check = next(
        e
        for e in again.get_asset_check_evaluations()
        if e.check_name == "risk_profile_matches_grid"
    )
    assert not check.passed and "-10%" in (check.description or "")
    db = Database(db_url)
    try:
        with db.connect() as conn:  # the re-run replaced the session's rows
            assert (
                conn.execute(select(func.count()).select_from(risk_profile)).scalar_one() == n_rows
            )
    finally:
        db.dispose()


def stress_shock_grid_key() -> dg.AssetKey:
    return dg.AssetKey("stress_shock_grid")


def min_price(conn, profile: str) -> float:  # type: ignore[no-untyped-def]
    return float(
        conn.execute(
            select(func.min(risk_profile.c.price)).where(risk_profile.c.profile == profile)
        ).scalar_one()
    )


def max_price(conn, profile: str) -> float:  # type: ignore[no-untyped-def]
    return float(
        conn.execute(
            select(func.max(risk_profile.c.price)).where(risk_profile.c.profile == profile)
        ).scalar_one()
    )


def test_load_book_implies_the_vol_from_the_mark_when_the_quote_has_none(db_url: str) -> None:
    """REGRESSION: the fallback passed (is_call, mark) as (price, kind) to implied_vol, so a
    quote without an IV (and no position_greeks row) made the session's book fail to load."""
    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.defs.stress.book import load_book
    from portfolio_pipeline.domain.settlement import years_to_settlement
    from portfolio_pipeline.storage.tables import market_snapshot
    from portfolio_pipeline_tests.quant._reference import reference_greeks
    from portfolio_pipeline_tests.stubs import CONFIG_DIR

    _seed(db_url)
    db = Database(db_url)
    try:
        with db.begin() as conn:
            conn.execute(
                update(market_snapshot)
                .where(market_snapshot.c.instrument_key.like("SPX|OPT|%2600|P"))
                .values(iv=None)
            )
        config = load_platform_config(CONFIG_DIR)
        cal = ExchangeCalendar()
        with db.connect() as conn:
            sb = load_book(conn, DAY, cal.session_close(DAY), config, config.stress_scenarios, cal)
    finally:
        db.dispose()
    i = sb.contract_keys.index(
        next(k for k in sb.contract_keys if k.startswith("SPX|OPT|") and k.endswith("2600|P"))
    )
    c = sb.book.contracts
    tc = config.instruments.trading_class("SPX", None)
    T = years_to_settlement(
        cal.session_close(DAY), DAY.replace(month=3, day=16), tc.settlement_time, cal
    )
    assert float(c.T[i]) == pytest.approx(T)
    price = reference_greeks(
        False, 2762.13, 2600.0, T, float(c.r[i]), float(c.q[i]), float(c.vol[i])
    )["price"]
    assert float(price) == pytest.approx(12.0, abs=1e-6)  # the vol reprices the seeded mark

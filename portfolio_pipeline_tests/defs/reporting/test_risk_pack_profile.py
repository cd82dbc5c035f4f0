"""The risk pack's risk profile section: stored curves drawn with their marks."""

from __future__ import annotations

from datetime import date

import pytest

from portfolio_pipeline.analytics.risk_pack import load_pack, profile_svg, render_pack
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import risk_profile, risk_profile_summary

DAY = date(2018, 2, 5)


def _curve(horizon: str, days: float, pnl: list[float]) -> list[dict[str, object]]:
    moves = [-0.1, 0.0, 0.1]
    return [
        {
            "session_date": DAY,
            "profile": "*",
            "broker": "*",
            "account_id": "*",
            "strategy_id": "*",
            "horizon": horizon,
            "point": i,
            "horizon_days": days,
            "spot_move": m,
            "price": 2700 * (1 + m),
            "pnl": p,
        }
        for i, (m, p) in enumerate(zip(moves, pnl, strict=True))
    ]


def _summary(
    horizon: str, days: float, breakevens: list[float], em: float | None, **kw: object
) -> dict[str, object]:
    return {
        "session_date": DAY,
        "profile": "*",
        "broker": "*",
        "account_id": "*",
        "strategy_id": "*",
        "horizon": horizon,
        "strategy_type": None,
        "driver": "SPX",
        "spot": 2700.0,
        "horizon_days": days,
        "vol_shift_points": 0.0,
        "atm_vol": 0.17,
        "expected_move": em,
        "max_profit": 1_000.0,
        "max_profit_price": 2700.0,
        "max_loss": -40_000.0,
        "max_loss_price": 2430.0,
        "breakevens": breakevens,
        **kw,
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_pack_draws_the_stored_profile_with_breakevens_and_expected_move(db: Database) -> None:
    with db.begin() as conn:
        conn.execute(
            risk_profile.insert(),
            _curve("T+0", 0.0, [-30_000.0, 0.0, 500.0])
            + _curve("exp 2018-03-16", 39.0, [-40_000.0, 1_000.0, 1_000.0]),
        )
        conn.execute(
            risk_profile_summary.insert(),
            [
                _summary("T+0", 0.0, [2700.0], None),
                _summary("exp 2018-03-16", 39.0, [2612.34], 148.21),
            ],
        )
    with db.connect() as conn:
        pack = load_pack(conn, DAY)
    assert [r["horizon"] for r in pack.profile_summary] == ["T+0", "exp 2018-03-16"]
    page = render_pack(pack)
    section = page[page.index("Risk profile: P&amp;L vs price") :]
    assert "book, beta-weighted to SPX" in section
    assert section.count("<polyline") >= 2  # one line per horizon
    assert "breakeven 2,612.34" in section and "expected move ±148.21" in section
    assert "<td>2,612.34</td>" in section and "<td>±148.21</td>" in section
    assert "<td>-40,000</td>" in section


def test_profile_svg_scales_prices_and_marks_today() -> None:
    svg = profile_svg(
        {"T+0": [(2430.0, -10.0), (2970.0, 10.0)]}, spot=2700.0, title="t", breakevens=[2700.0]
    )
    # 2700 is the middle of 2430..2970: x = 46 + 0.5 x (720 - 92) = 360
    assert 'x1="360.0"' in svg and "today 2,700.00" in svg
    assert "no curve stored" in profile_svg({}, spot=1.0, title="t")

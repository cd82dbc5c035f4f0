"""analytics.flow: table rows, data-quality counts, the rolling average volume and the
risk pack's options-flow section, on a small hand-built chain."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from portfolio_pipeline.analytics.flow import VolumeHistory, analyse, chain_quality, chain_rows
from portfolio_pipeline.analytics.risk_pack import PackData, flow_html
from portfolio_pipeline.brokers.chain import ChainSnapshot
from portfolio_pipeline.config.flow import FlowConfig

DAY = date(2024, 1, 2)
AS_OF = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)


def _snapshot(**over: object) -> ChainSnapshot:
    n = 4
    base: dict[str, object] = dict(
        underlying="SPX",
        as_of=AS_OF,
        spot=100.0,
        multiplier=100.0,
        rate=0.0,
        dividend_yield=0.0,
        source="test",
        simulated=False,
        trading_class=np.array(["SPXW"] * n),
        expiry=np.full(n, np.datetime64("2024-01-19")),
        is_call=np.array([False, False, True, True]),
        strike=np.array([90.0, 95.0, 105.0, 110.0]),
        T=np.full(n, 17 / 365),
        bid=np.array([1.0, 2.0, 2.0, 1.0]),
        ask=np.array([1.1, 2.2, 2.2, 1.1]),
        last=np.array([1.05, np.nan, 2.1, 1.05]),
        volume=np.array([600.0, 50.0, 100.0, 0.0]),
        open_interest=np.array([400.0, 1000.0, 800.0, 300.0]),
        iv=np.full(n, 0.2),
        delta=np.full(n, np.nan),
        gamma=np.full(n, np.nan),
        vega=np.full(n, np.nan),
        theta=np.full(n, np.nan),
        quote_epoch=np.full(n, AS_OF.timestamp()),
    )
    base.update(over)
    return ChainSnapshot(**base)  # type: ignore[arg-type]


def test_rows_carry_the_chain_and_the_figures() -> None:
    snap = _snapshot()
    result = analyse(DAY, snap, FlowConfig(unusual={"min_volume": 100}))
    assert len(result.chain) == 4
    assert result.chain[1]["last"] is None and result.chain[0]["right"] == "P"
    assert result.chain[0]["quote_time"] == AS_OF
    m = {(r["metric"], r["scope"]): r["value"] for r in result.metrics}
    # hand: put OI 1400 / call OI 1100; put volume 650 / call volume 100
    assert m[("put_call_oi", "all")] == pytest.approx(1400 / 1100)
    assert m[("put_call_volume", "all")] == pytest.approx(6.5)
    assert m[("put_call_oi", "7-30d")] == pytest.approx(1400 / 1100)
    assert m[("put_call_oi", "0-7d")] is None
    # max pain by hand: P=90: put 95 pays 1000x5 = 5000; P=95: 0; P=105: 0 (no option in
    # the money); P=110: call 105 pays 800x5 = 4000 -> a tie at 0, the lowest strike wins: 95
    assert m[("max_pain", "2024-01-19")] == 95.0
    assert m[("pin_1", "2024-01-19")] == 95.0 and m[("pin_1_oi", "2024-01-19")] == 1000.0
    assert m[("total_gex", "all")] == pytest.approx(m[("gex", "2024-01-19")])
    assert [r["strike"] for r in result.strikes] == [90.0, 95.0, 105.0, 110.0]
    # 600 on 400 OI is over the volume/OI threshold
    assert [(r["strike"], r["reasons"]) for r in result.unusual] == [(90.0, "volume_over_oi")]


def test_quality_counts_crossed_zero_oi_and_stale() -> None:
    snap = _snapshot(
        bid=np.array([1.2, 2.0, 2.0, 1.0]),  # first crossed
        open_interest=np.array(
            [400.0, 0.0, 0.0, 300.0]
        ),  # 95 put traded 50 on zero OI; 105 call 100
        quote_epoch=np.array(
            [AS_OF.timestamp(), AS_OF.timestamp() - 3600, np.nan, AS_OF.timestamp() - 60]
        ),
    )
    q = chain_quality(snap, stale_minutes=30)
    assert (q.contracts, q.crossed, q.zero_oi_traded, q.stale) == (4, 1, 2, 1)
    rows = chain_rows(DAY, snap)
    assert rows[2]["quote_time"] is None


def test_volume_history_rolls_its_window() -> None:
    h = VolumeHistory(2)
    k1 = ("SPX", "SPXW", date(2024, 1, 19), 90.0, "P")
    k2 = ("SPX", "SPXW", date(2024, 1, 19), 95.0, "P")
    h.push({k1: 10.0})
    h.push({k1: 30.0, k2: 5.0})
    np.testing.assert_allclose(h.average([k1, k2]), [20.0, 5.0])
    h.push({k2: 7.0})  # the first session leaves the window
    out = h.average([k1, k2, ("X", "X", date(2024, 1, 19), 1.0, "C")])
    np.testing.assert_allclose(out[:2], [30.0, 6.0])
    assert np.isnan(out[2])


def test_size_test_uses_the_average_of_earlier_sessions() -> None:
    cfg = FlowConfig(unusual={"min_volume": 100, "volume_oi_ratio": 10, "size_multiple": 5})
    h = VolumeHistory(5)
    analyse(DAY, _snapshot(volume=np.array([100.0, 50.0, 10.0, 0.0])), cfg, h)
    result = analyse(DAY, _snapshot(volume=np.array([600.0, 50.0, 10.0, 0.0])), cfg, h)
    assert [(r["strike"], r["reasons"], r["average_volume"]) for r in result.unusual] == [
        (90.0, "volume_over_average", 100.0)
    ]


def test_risk_pack_section_names_positioning_and_simulation() -> None:
    result = analyse(DAY, _snapshot(simulated=True), FlowConfig())
    empty: dict[str, object] = {
        f: []
        for f in (
            "returns",
            "exceedances",
            "limits",
            "margin",
            "positions",
            "by_underlying",
            "strategies",
            "grid",
            "replays",
            "mc",
        )
    }
    pack = PackData(session=DAY, risk={}, lifecycle={}, flow=result.metrics, **empty)  # type: ignore[arg-type]
    page = flow_html(pack)
    assert "SPX (simulated chain)" in page
    assert "customers_sell_calls_buy_puts" in page
    assert "2024-01-19" in page and "zero-gamma level" in page
    assert "no options flow" in flow_html(PackData(session=DAY, risk={}, lifecycle={}, **empty))  # type: ignore[arg-type]

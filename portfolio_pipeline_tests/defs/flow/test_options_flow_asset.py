"""The options_flow asset on the demo broker: a single-run backfill of three sessions stores
the simulated chain and its flow figures per session (SQLite and PostgreSQL), re-runs
replace them, the checks run, and each partition carries its own numbers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import numpy as np
import pytest
from sqlalchemy import func, select

from portfolio_pipeline.brokers.base import BrokerDataError, ConnectionLifecycle
from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainWindow
from portfolio_pipeline.clock import system_clock
from portfolio_pipeline.defs import resources as resources_module
from portfolio_pipeline.defs.flow.assets import make_options_flow_asset
from portfolio_pipeline.defs.flow.checks import OPTIONS_FLOW
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import (
    option_chain_snapshots,
    option_flow_metrics,
    option_flow_strikes,
    option_flow_unusual,
)
from portfolio_pipeline_tests.stubs import ephemeral_instance

SESSIONS = [date(2018, 2, 1), date(2018, 2, 2), date(2018, 2, 5)]
FLOW = make_options_flow_asset(session_partitions(ExchangeCalendar()))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with ephemeral_instance() as inst:
        yield inst


def _run(db_url: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [FLOW],
        instance=instance,
        resources={
            "db": DatabaseResource(url=db_url),
            "platform": PlatformResource(demo_only=True),
        },
        tags={
            "dagster/asset_partition_range_start": SESSIONS[0].isoformat(),
            "dagster/asset_partition_range_end": SESSIONS[-1].isoformat(),
        },
    )


def _counts(db_url: str) -> dict[str, dict[date, int]]:
    db = Database(db_url)
    try:
        with db.connect() as conn:
            return {
                t.name: dict(
                    conn.execute(
                        select(t.c.session_date, func.count()).group_by(t.c.session_date)
                    ).all()
                )
                for t in (
                    option_chain_snapshots,
                    option_flow_metrics,
                    option_flow_strikes,
                    option_flow_unusual,
                )
            }
    finally:
        db.dispose()


def _metrics(db_url: str, day: date) -> dict[tuple[str, str], Any]:
    db = Database(db_url)
    try:
        with db.connect() as conn:
            t = option_flow_metrics
            return {
                (r.metric, r.scope): r
                for r in conn.execute(select(t).where(t.c.session_date == day))
            }
    finally:
        db.dispose()


def test_backfill_stores_simulated_chain_and_flow_per_session(
    db_url: str, instance: dg.DagsterInstance
) -> None:
    result = _run(db_url, instance)
    assert result.success
    counts = _counts(db_url)
    assert set(counts["option_chain_snapshots"]) == set(SESSIONS)
    assert set(counts["option_flow_metrics"]) == set(SESSIONS)
    assert all(n > 200 for n in counts["option_chain_snapshots"].values())
    m = _metrics(db_url, date(2018, 2, 5))
    assert m[("total_gex", "all")].unit == "$ per 1% move"
    assert m[("total_gex", "all")].positioning == "customers_sell_calls_buy_puts"
    assert all(r.simulated for r in m.values())
    spot = m[("spot", "all")].value
    assert spot == pytest.approx(2648.94, abs=0.01)  # S&P 500 close 2018-02-05
    zg = m[("zero_gamma", "all")].value
    assert zg is None or 0.75 * spot <= zg <= 1.25 * spot
    assert ("put_call_oi", "all") in m and ("put_call_oi", "0-7d") in m
    assert any(metric == "max_pain" for metric, _ in m)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "option_chain_no_crossed_quotes": True,
        "option_chain_oi_where_traded": True,
        "option_chain_fresh_quotes": True,
    }
    # each partition carries its own session's numbers
    per_day = {}
    for day in SESSIONS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=OPTIONS_FLOW, asset_partitions=[day.isoformat()]),
            limit=1,
        ).records
        mat = records[0].asset_materialization
        assert mat is not None
        per_day[day] = mat.metadata
    spots = {d: md.get("SPX GEX ($ per 1%)") for d, md in per_day.items()}
    assert len({v.value for v in spots.values() if v is not None}) == 3  # type: ignore[attr-defined]
    assert "simulated" in per_day[SESSIONS[-1]]["flow"].value  # type: ignore[attr-defined]
    # a re-run replaces each session exactly
    assert _run(db_url, instance).success
    assert _counts(db_url) == counts


class _LiveChainBroker(ConnectionLifecycle):
    """A live broker's chain (no rate or dividend yield from the source)."""

    name = "stubchain"

    def __init__(self, snapshot: ChainSnapshot) -> None:
        self.snapshot = snapshot
        self.asked: list[str] = []

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def option_chain_snapshot(self, underlying: str, window: ChainWindow) -> ChainSnapshot:
        self.asked.append(underlying)
        if underlying != "SPX":
            raise BrokerDataError(f"stubchain: no chain for {underlying}")
        return self.snapshot


def test_live_chain_takes_rates_from_pricing_and_only_the_current_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one = np.ones(1)
    snap = ChainSnapshot(
        underlying="SPX",
        as_of=datetime.now(UTC),
        spot=100.0,
        multiplier=100.0,
        rate=math.nan,
        dividend_yield=math.nan,
        source="stubchain",
        simulated=False,
        trading_class=np.array(["SPXW"]),
        expiry=np.array(["2030-01-18"], dtype="datetime64[D]"),
        is_call=np.array([True]),
        strike=one * 100,
        T=one * 0.1,
        bid=one,
        ask=one * 1.1,
        last=one,
        volume=one,
        open_interest=one,
        iv=one * 0.2,
        delta=one,
        gamma=one,
        vega=one,
        theta=one,
        quote_epoch=one * 0,
    )
    broker = _LiveChainBroker(snap)
    monkeypatch.setattr(resources_module, "adapters_for", lambda *a, **k: [(broker, ["A1"])])
    platform = PlatformResource(demo_only=True)
    latest = platform.calendar.last_completed_session(system_clock())
    got, notes = platform.chain_snapshots(latest, ["SPX", "NDX"], ChainWindow())
    assert [s.rate for s in got] == [platform.config.pricing.rate_on(latest)]
    assert got[0].dividend_yield == platform.config.pricing.dividend_yield("SPX")
    assert notes == ["NDX: stubchain: no chain for NDX"]
    past, notes = platform.chain_snapshots(date(2018, 2, 5), ["SPX"], ChainWindow())
    assert past == [] and "only the current chain" in notes[0]

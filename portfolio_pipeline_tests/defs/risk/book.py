"""A two-session stub book for the analytics assets (built once, reused by every test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import numpy as np
import pytest
from sqlalchemy import select

from portfolio_pipeline.defs import resources as resources_module
from portfolio_pipeline.defs.greeks.assets import make_greeks_assets
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.positions.assets import make_snapshot_assets
from portfolio_pipeline.defs.reporting.assets import make_report_asset
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.risk.assets import make_risk_assets
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.quant import pricing
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import (
    limit_checks,
    margin_history,
    pnl_attribution,
    portfolio_greeks,
    portfolio_returns,
    position_greeks,
    risk_metrics,
)
from portfolio_pipeline_tests.stubs import StubBroker, ephemeral_instance, option, position

DAY1, DAY2 = date(2018, 2, 2), date(2018, 2, 5)
CLOSE1 = datetime(2018, 2, 2, 21, 1, tzinfo=UTC)
CLOSE2 = datetime(2018, 2, 5, 21, 1, tzinfo=UTC)
PUT = option(strike=2600.0)
CALL = option(strike=2800.0, right="C")
SPX = Contract("SPX", "IND")
VIX = Contract("VIX", "IND")
VIX3M = Contract("VIX3M", "IND")
DEPOSIT = 10_000.0

PARTITIONS = session_partitions(ExchangeCalendar())
ASSETS = [make_snapshot_assets(PARTITIONS), *make_greeks_assets(PARTITIONS),
          *make_risk_assets(PARTITIONS), make_report_asset(PARTITIONS)]
TABLES = (position_greeks, portfolio_greeks, portfolio_returns, pnl_attribution, risk_metrics,
          margin_history, limit_checks)


def _day(as_of: datetime, *, spx: float, put_mark: float, put_iv: float | None, vix: float,
         vix3m: float, nlv: float, broker_pnl: float | None, call: bool) -> tuple[list[Any], list[Any], list[Any]]:
    put = position(PUT, -2, mark=put_mark, avg_price=12.0, account_id="A1", as_of=as_of, underlying_price=spx)
    spy = Position("demo", "A1", Contract("SPY", "STK"), 100.0, 1.0, 276.0, spx / 10, as_of)
    positions = [put, spy]
    quotes = [
        Quote("demo", PUT, as_of, bid=put_mark - 0.5, ask=put_mark + 0.5, mark=put_mark,
              underlying_price=spx, iv=put_iv, delta=-0.2, gamma=0.001, vega=2.5, theta=-1.5),
        Quote("demo", SPX, as_of, bid=spx, ask=spx, mark=spx),
        Quote("demo", Contract("SPY", "STK"), as_of, bid=spx / 10, ask=spx / 10, mark=spx / 10),
        Quote("demo", VIX, as_of, bid=vix, ask=vix, mark=vix),
        Quote("demo", VIX3M, as_of, bid=vix3m, ask=vix3m, mark=vix3m),
    ]
    if call:  # opened on day 2; no broker IV: implied from the mark
        positions.append(position(CALL, 1, mark=4.0, avg_price=5.0, account_id="A1", as_of=as_of,
                                  underlying_price=spx))
        quotes.append(Quote("demo", CALL, as_of, bid=3.8, ask=4.2, mark=4.0, underlying_price=spx))
    acct = AccountSnapshot("demo", "A1", as_of, nlv=nlv, cash=nlv, init_margin=60_000.0, maint_margin=48_000.0,
                           excess_liquidity=nlv - 48_000.0, buying_power=2 * nlv, broker_daily_pnl=broker_pnl)
    return positions, [acct], quotes


def _mark(spot: float, iv: float, day: date) -> float:
    """Put mark consistent with its IV (so attribution tests measure the expansion only)."""
    t = (PUT.expiry - day).days / 365  # type: ignore[operator]
    return round(float(np.ravel(pricing.price("P", spot, 2600.0, t, 0.0142, 0.019, iv))[0]), 2)


PUT1, PUT2 = _mark(2762.13, 0.17, DAY1), _mark(2648.94, 0.31, DAY2)
NLV1 = 250_000.0
PNL2 = -9_350.0
BOOKS = {
    DAY1: _day(CLOSE1, spx=2762.13, put_mark=PUT1, put_iv=0.17, vix=17.31, vix3m=17.9, nlv=NLV1,
               broker_pnl=None, call=False),
    DAY2: _day(CLOSE2, spx=2648.94, put_mark=PUT2, put_iv=0.31, vix=37.32, vix3m=30.0,
               nlv=NLV1 + PNL2 + DEPOSIT, broker_pnl=PNL2 + 12.0, call=True),
}


class DatedBroker(StubBroker):
    """Serves the book of the session the platform's clock is in, plus a deposit on day 2."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__([], [], [])
        self._clock = clock

    def _book(self) -> tuple[list[Any], list[Any], list[Any]]:
        return BOOKS[DAY2] if self._clock() >= CLOSE2 else BOOKS[DAY1]

    async def account_ids(self) -> list[str]:
        return ["A1"]

    async def account_snapshot(self, account_id: str) -> Any:
        return self._book()[1][0]

    async def positions(self, account_id: str) -> list[Position]:
        return list(self._book()[0])

    async def quotes(self, contracts: Any) -> list[Any]:
        keys = {c.key for c in contracts}
        return [q for q in self._book()[2] if q.contract.key in keys]

    async def cash_flows(self, account_id: str, since: date) -> list[CashFlow]:
        flows = [CashFlow("demo", "A1", "dep-1", datetime(2018, 2, 3, 15, 0, tzinfo=UTC), "deposit", DEPOSIT),
                 CashFlow("demo", "A1", "div-1", datetime(2018, 2, 5, 15, 0, tzinfo=UTC), "dividend", 12.0)]
        return [f for f in flows if f.ts <= self._clock() and f.ts.date() >= since]

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        fill = Execution("demo", "A1", "x-1", CALL, datetime(2018, 2, 5, 15, 0, tzinfo=UTC), 1.0, 5.0, 100.0,
                         commission=1.5)
        return [fill] if fill.ts <= self._clock() else []


@pytest.fixture
def dated_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources_module, "adapters_for",
                        lambda accounts, instruments, clock, *a, **k: [(DatedBroker(clock), ["A1"])])


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with ephemeral_instance() as inst:
        yield inst


def materialize(db_url: str, instance: dg.DagsterInstance, day: date, assets: list[Any] | None = None
                ) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets or ASSETS,
        partition_key=day.isoformat(),
        instance=instance,
        resources={"db": DatabaseResource(url=db_url), "platform": PlatformResource(demo_only=True)},
    )


def rows(db_url: str) -> dict[str, list[dict[str, Any]]]:
    database = Database(db_url)
    try:
        with database.connect() as conn:
            return {
                t.name: [dict(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()]
                for t in TABLES
            }
    finally:
        database.dispose()

"""Strategy assets on a hand-built three-session book: tagging, roll link, P&L that sums
to the portfolio's (NLV change), exit signals, Kelly, liquidity and theta/vega."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from portfolio_pipeline.defs import resources as resources_module
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.positions.assets import make_snapshot_assets
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.risk.assets import make_risk_assets
from portfolio_pipeline.defs.strategies.assets import make_strategy_assets
from portfolio_pipeline.domain.activity import Execution
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Quote
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.storage import Database, events
from portfolio_pipeline.storage.tables import (
    account_snapshot,
    kelly_sizing,
    liquidity_flags,
    position_lifecycle,
    strategy_groups,
    strategy_performance,
    strategy_stats,
    theta_vega_history,
)
from portfolio_pipeline_tests.stubs import StubBroker, ephemeral_instance, option, position

PARTS = session_partitions(ExchangeCalendar())
ASSETS = [make_snapshot_assets(PARTS), make_risk_assets(PARTS)[0], *make_strategy_assets(PARTS)]
D0, D1, D2, D3 = date(2018, 1, 31), date(2018, 2, 1), date(2018, 2, 2), date(2018, 2, 5)
APR = date(2018, 4, 20)
P2500, P2550 = option(strike=2500), option(strike=2550)
C2850, C2900 = option(strike=2850, right="C"), option(strike=2900, right="C")
A2450, A2500 = option(strike=2450, expiry=APR), option(strike=2500, expiry=APR)
SPYC = option("SPY", 280.0, "C")
MULT = {SPYC.key: 100.0}

# session -> contract -> (quantity, avg price, mark)
BOOK: dict[date, dict[Contract, tuple[float, float, float]]] = {
    D0: {},  # the deposit only: the account exists before the book's first trades
    D1: {P2500: (2, 1.0, 1.1), P2550: (-2, 3.0, 3.2), C2850: (-2, 2.5, 2.4), C2900: (2, 0.5, 0.5),
         SPYC: (-1, 2.0, 2.1)},
    D2: {P2500: (2, 1.0, 2.0), P2550: (-2, 3.0, 5.0), C2850: (-2, 2.5, 1.5), C2900: (2, 0.5, 0.3),
         SPYC: (-1, 2.0, 0.9)},
    D3: {C2850: (-2, 2.5, 1.0), C2900: (2, 0.5, 0.2), A2450: (2, 2.0, 2.1), A2500: (-2, 4.5, 4.4)},
}
FILLS: list[tuple[date, Contract, float, float, str]] = [
    (D1, P2500, 2, 1.0, "OPEN-1"), (D1, P2550, -2, 3.0, "OPEN-1"), (D1, C2850, -2, 2.5, "OPEN-1"),
    (D1, C2900, 2, 0.5, "OPEN-1"), (D1, SPYC, -1, 2.0, "OPEN-2"),
    (D3, P2550, 2, 4.0, "ROLL-1"), (D3, P2500, -2, 1.5, "ROLL-1"), (D3, A2450, 2, 2.0, "ROLL-1"),
    (D3, A2500, -2, 4.5, "ROLL-1"), (D3, SPYC, 1, 0.8, "TP-1"),
]
DEPOSIT = 100_000.0


def _ts(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 20, 55, tzinfo=UTC)


def _executions() -> list[Execution]:
    return [Execution("demo", "A1", f"X{i}", c, _ts(d), q, p, 100.0, commission=1.0, order_ref=ref)
            for i, (d, c, q, p, ref) in enumerate(FILLS)]


def nlv(day: date) -> float:
    cash = DEPOSIT + sum(e.cash_effect for e in _executions() if e.ts.date() <= day)
    return cash + sum(q * 100.0 * mark for q, _, mark in BOOK[day].values())


def _broker(day: date) -> StubBroker:
    as_of = _ts(day).replace(hour=21, minute=1)
    positions = [position(c, q, mark=m, avg_price=a, account_id="A1", as_of=as_of)
                 for c, (q, a, m) in BOOK[day].items()]
    cash = nlv(day) - sum(p.market_value for p in positions)
    acct = AccountSnapshot("demo", "A1", as_of, nlv=nlv(day), cash=cash, init_margin=10_000.0,
                           maint_margin=8_000.0, excess_liquidity=50_000.0, buying_power=90_000.0)
    quotes = []
    for c, (_, _, m) in BOOK[day].items():
        spread = 0.6 if c == C2900 else 0.05  # the 2900 call quotes wide (illiquid)
        under = 270.0 if c.underlying == "SPY" else 2700.0
        quotes.append(Quote("demo", c, as_of, bid=max(m - spread / 2, 0.0), ask=m + spread / 2, mark=m,
                            underlying_price=under, iv=0.2, delta=-0.1 if c.right == "P" else 0.1,
                            gamma=0.001, vega=1.0, theta=-0.5))
    for root, level in (("VIX", 15.0), ("VIX3M", 16.0), ("SPX", 2700.0), ("SPY", 270.0)):
        sec = "STK" if root == "SPY" else "IND"
        quotes.append(Quote("demo", Contract(root, sec), as_of, bid=level, ask=level, mark=level))  # type: ignore[arg-type]

    class Broker(StubBroker):
        async def executions(self, account_id: str, since: date) -> list[Any]:
            return _executions()

    return Broker(positions, [acct], quotes)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with ephemeral_instance() as inst:
        yield inst


@pytest.fixture
def run(db_url: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
        ) -> Callable[[date], dg.ExecuteInProcessResult]:
    def materialize(day: date) -> dg.ExecuteInProcessResult:
        broker = _broker(day)
        monkeypatch.setattr(resources_module, "adapters_for", lambda *a, **k: [(broker, ["A1"])])
        result = dg.materialize(ASSETS, partition_key=day.isoformat(), instance=instance, resources={
            "db": DatabaseResource(url=db_url), "platform": PlatformResource(demo_only=True)})
        assert result.success
        return result

    return materialize


def _rows(db_url: str, table: Any, day: date) -> list[dict[str, Any]]:
    database = Database(db_url)
    try:
        with database.connect() as conn:
            return [dict(r) for r in conn.execute(select(table).where(table.c.session_date == day))
                    .mappings()]
    finally:
        database.dispose()


def test_demo_like_book_end_to_end(db_url: str, run: Callable[[date], dg.ExecuteInProcessResult]) -> None:
    results = [run(d) for d in (D0, D1, D2, D3)]
    checks = {(e.check_name, e.passed) for r in results for e in r.get_asset_check_evaluations()}
    assert all(passed for _, passed in checks), checks
    assert {"strategy_pnl_sums_to_portfolio", "strategy_legs_cover_positions"} <= {c for c, _ in checks}

    # types, identity and the roll link
    g1 = {r["strategy_id"]: r for r in _rows(db_url, strategy_groups, D1)}
    assert sorted(r["strategy_type"] for r in g1.values()) == ["iron_condor", "short_call"]
    condor = next(s for s, r in g1.items() if r["strategy_type"] == "iron_condor")
    g3 = {r["strategy_id"]: r for r in _rows(db_url, strategy_groups, D3)}
    assert (g3[condor]["strategy_type"], g3[condor]["detail"], g3[condor]["opened_on"]) == (
        "vertical", "call credit", D1)
    child = next(r for r in g3.values() if r["parent_id"] == condor)
    assert (child["strategy_type"], child["detail"], child["opened_on"]) == ("vertical", "put credit", D3)
    assert child["open_refs"] == ["ROLL-1"]
    assert [r["status"] for r in g3.values() if r["underlying"] == "SPY"] == ["closed"]

    # strategy P&L sums to the portfolio P&L (NLV change; no external flows after D0), from
    # the book's first session on (issue 14: D1 showed 0 while the account lost its opening
    # commissions and the fill-to-close move)
    perf1 = _rows(db_url, strategy_performance, D1)
    assert sum(r["commissions"] for r in perf1) == pytest.approx(5.0)  # five opening fills
    assert nlv(D1) - nlv(D0) != 0.0
    for prev, day in ((D0, D1), (D1, D2), (D2, D3)):
        perf = _rows(db_url, strategy_performance, day)
        assert sum(r["daily_pnl"] for r in perf) == pytest.approx(nlv(day) - nlv(prev), abs=1e-6)
    perf3 = {r["strategy_id"]: r for r in _rows(db_url, strategy_performance, D3)}
    spy = next(r for r in perf3.values() if r["underlying"] == "SPY")
    assert spy["status"] == "closed"
    assert spy["cumulative_pnl"] == pytest.approx(100 * (2.0 - 0.8) - 2.0)  # both fees: open and close
    assert spy["realized_pnl"] == spy["cumulative_pnl"]
    assert perf3[condor]["commissions"] == pytest.approx(6.0)  # four opening fills, two closing
    assert perf3[condor]["theta_per_day"] == pytest.approx(-0.5 * 100 * 0)  # -2 + 2 calls cancel
    stats = {(r["dimension"], r["group_key"]): r for r in _rows(db_url, strategy_stats, D3)}
    assert stats[("strategy_type", "short_call")]["trades"] == 1
    assert stats[("strategy_type", "short_call")]["win_rate"] == 1.0

    # exit signal: the short call reached 50% of max profit on D2 (credit 200, mark 0.9)
    life2 = {r["strategy_id"]: r for r in _rows(db_url, position_lifecycle, D2)}
    spy_id = spy["strategy_id"]
    assert (life2[spy_id]["status"], life2[spy_id]["rule"]) == ("red", "take_profit")
    database = Database(db_url)
    try:
        with database.connect() as conn:
            stored = [dict(r) for r in conn.execute(select(events)).mappings()]
    finally:
        database.dispose()
    keys = [e["event_key"] for e in stored if e["kind"] == "exit_signal"]
    assert f"exit:{spy_id}:take_profit:2018-02-02" in keys
    assert len(keys) == len(set(keys))
    payload = next(e["payload"] for e in stored if e["event_key"].startswith(f"exit:{spy_id}:"))
    assert payload["position"] and payload["reason"]

    # Kelly, liquidity, theta/vega
    kelly = {r["strategy_type"]: r for r in _rows(db_url, kelly_sizing, D3)}
    assert kelly["short_call"]["status"] == "insufficient_sample"
    assert kelly["short_call"]["recommended_fraction"] == 0.0
    flags = {r["position_key"]: r for r in _rows(db_url, liquidity_flags, D1)}
    assert flags[C2900.key]["illiquid"] and not flags[C2850.key]["illiquid"]
    assert flags[C2900.key]["days_to_exit"] is None
    tv = {r["account_id"]: r for r in _rows(db_url, theta_vega_history, D3)}
    assert set(tv) == {"A1", "*"} and tv["*"]["theta_per_day"] == pytest.approx(0.0)
    assert _rows(db_url, account_snapshot, D3)[0]["nlv"] == pytest.approx(nlv(D3))


def test_rerun_is_idempotent_and_signals_once(db_url: str, run: Callable[[date], dg.ExecuteInProcessResult]
                                             ) -> None:
    for d in (D1, D2):
        run(d)
    before = {t.name: _rows(db_url, t, D2) for t in (strategy_groups, strategy_performance, position_lifecycle)}
    run(D2)
    after = {t.name: _rows(db_url, t, D2) for t in (strategy_groups, strategy_performance, position_lifecycle)}
    assert after == before
    database = Database(db_url)
    try:
        with database.connect() as conn:
            n = len(conn.execute(select(events.c.id).where(events.c.kind == "exit_signal")).all())
    finally:
        database.dispose()
    assert n == 1

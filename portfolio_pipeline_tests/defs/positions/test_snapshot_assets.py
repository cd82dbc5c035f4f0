"""Broker snapshot assets: materialized with Dagster's own APIs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from portfolio_pipeline.brokers.base import BrokerDataError
from portfolio_pipeline.defs import resources as resources_module
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.positions.assets import make_snapshot_assets
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.storage import (
    Database,
    account_snapshot,
    market_snapshot,
    positions_snapshot,
)
from portfolio_pipeline_tests.stubs import StubBroker, ephemeral_instance, option, position

SESSION = "2018-02-05"
AS_OF = datetime(2018, 2, 5, 21, 1, tzinfo=UTC)
VIX = Contract("VIX", "IND")
VIX3M = Contract("VIX3M", "IND")
SNAPSHOTS = make_snapshot_assets(session_partitions(ExchangeCalendar()))


def _book(mark: float = 25.0, multiplier: float | None = None) -> StubBroker:
    put = option(strike=2600.0)
    p = position(put, -1, mark=mark, avg_price=12.0, account_id="A1", as_of=AS_OF)
    if multiplier is not None:
        p = Position(p.broker, p.account_id, p.contract, p.quantity, multiplier, p.avg_price, p.mark, p.as_of)
    spy = Position("demo", "A1", Contract("SPY", "STK"), -100.0, 1.0, 276.0, 263.9, AS_OF)
    acct = AccountSnapshot("demo", "A1", AS_OF, nlv=250_000.0, cash=260_000.0, init_margin=60_000.0,
                           maint_margin=48_000.0, excess_liquidity=202_000.0, buying_power=380_000.0)
    quotes = [
        Quote("demo", put, AS_OF, bid=mark - 0.5, ask=mark + 0.5, mark=mark, underlying_price=2648.94,
              iv=0.31, delta=-0.27, gamma=0.0016, vega=2.9, theta=-1.7),
        Quote("demo", VIX, AS_OF, bid=37.32, ask=37.32, mark=37.32),
        Quote("demo", VIX3M, AS_OF, bid=28.0, ask=28.0, mark=28.0),
    ]
    return StubBroker([p, spy], [acct], quotes)


@pytest.fixture
def use_broker(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    def install(broker: Any) -> None:
        monkeypatch.setattr(resources_module, "adapters_for", lambda *a, **k: [(broker, ["A1"])])

    return install


def _materialize(db_url: str, instance: dg.DagsterInstance, partition: str = SESSION) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [SNAPSHOTS],
        partition_key=partition,
        instance=instance,
        resources={"db": DatabaseResource(url=db_url), "platform": PlatformResource(demo_only=True)},
        raise_on_error=False,
    )


def _rows(db_url: str) -> dict[str, list[dict[str, Any]]]:
    database = Database(db_url)
    try:
        with database.connect() as conn:
            return {
                t.name: [dict(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()]
                for t in (positions_snapshot, account_snapshot, market_snapshot)
            }
    finally:
        database.dispose()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with ephemeral_instance() as inst:
        yield inst


def test_snapshot_stored_checked_and_idempotent(db_url: str, instance: dg.DagsterInstance,
                                                use_broker: Callable[[Any], None]) -> None:
    use_broker(_book())
    first = _materialize(db_url, instance)
    assert first.success
    stored = _rows(db_url)
    assert [r["position_key"] for r in stored["positions_snapshot"]] == [
        "SPX|OPT|SPX|2018-03-16|2600|P", "SPY|STK",
    ]
    put = stored["positions_snapshot"][0]
    assert (put["quantity"], put["multiplier"], put["market_value"]) == (-1.0, 100.0, -2500.0)
    assert put["session_date"] == date(2018, 2, 5)
    assert put["as_of"] == AS_OF and put["as_of"].tzinfo is not None
    assert stored["account_snapshot"][0]["nlv"] == 250_000.0
    assert {r["instrument_key"] for r in stored["market_snapshot"]} >= {"VIX|IND", "VIX3M|IND"}
    evaluations = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert evaluations == {"positions_quality": True, "account_quality": True, "market_quality": True}
    mats = first.asset_materializations_for_node("broker_snapshots")
    nlv = next(m for m in mats if m.asset_key == dg.AssetKey("account_snapshot"))
    assert nlv.metadata["NLV ($)"].value == 250_000

    second = _materialize(db_url, instance)
    assert second.success
    assert _rows(db_url) == stored  # a re-run leaves identical rows


def test_unknown_multiplier_fails_the_blocking_check(db_url: str, instance: dg.DagsterInstance,
                                                     use_broker: Callable[[Any], None]) -> None:
    use_broker(_book(multiplier=7.0))
    result = _materialize(db_url, instance)
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["positions_quality"]
    assert "multiplier" in (failed[0].description or "")


class _FailingBroker(StubBroker):
    async def positions(self, account_id: str) -> list[Position]:
        raise BrokerDataError("stub:A1: position 'SPX   180316P02600000': mark is not finite: nan")


def test_broker_error_leaves_stored_partition_untouched(db_url: str, instance: dg.DagsterInstance,
                                                         use_broker: Callable[[Any], None]) -> None:
    use_broker(_book())
    assert _materialize(db_url, instance).success
    before = _rows(db_url)
    good = _book()
    use_broker(_FailingBroker(good._positions, good._accounts, good._quotes))
    result = _materialize(db_url, instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "mark is not finite" in str(failure.event_specific_data)
    assert _rows(db_url) == before


def test_live_broker_cannot_backfill_the_past(db_url: str, instance: dg.DagsterInstance,
                                              tmp_path: Any) -> None:
    cfg = tmp_path / "cfg"
    import shutil

    from portfolio_pipeline_tests.stubs import CONFIG_DIR

    cfg.mkdir()
    for name in ("instruments.yaml", "risk_matrix.yaml"):
        shutil.copy(CONFIG_DIR / name, cfg / name)
    (cfg / "accounts.yaml").write_text(
        "accounts:\n  - name: ib\n    broker: ibkr\n    account_id: U1\n    ibkr: {port: 4002}\n"
    )
    result = dg.materialize(
        [SNAPSHOTS],
        partition_key=SESSION,
        instance=instance,
        resources={"db": DatabaseResource(url=db_url), "platform": PlatformResource(config_dir=str(cfg))},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "report only the current book: cannot snapshot session 2018-02-05" in str(failure.event_specific_data)

"""One activity source (issue 14, item 2): imported history reaches portfolio_returns and
attribution, merged with the live adapters' activity and deduplicated by broker id.

Oracle: hand sums of the flows (live deposit 10,000 on 2018-02-03 and dividend 12 on
2018-02-05; imported: the same deposit again under its id ``dep-1`` -- counted once -- and
a wire of 5,000 on 2018-02-05 that the live adapter does not report, as an IBKR deposit
without the Flex Web Service)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from portfolio_pipeline.brokers.history.merge import merge_activity
from portfolio_pipeline.brokers.history.model import ImportBatch
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.history import SqlHistoryStore
from portfolio_pipeline_tests.defs.risk.book import (
    CALL,
    DAY1,
    DAY2,
    DEPOSIT,
    NLV1,
    PNL2,
    materialize,
    rows,
)

WIRE = 5_000.0


def _imported() -> ImportBatch:
    flows = (CashFlow("demo", "A1", "dep-1", datetime(2018, 2, 3, 15, 0, tzinfo=UTC), "deposit", DEPOSIT),
             CashFlow("demo", "A1", "wire-9", datetime(2018, 2, 5, 14, 0, tzinfo=UTC), "deposit", WIRE),
             CashFlow("demo", "A1", "late-1", datetime(2018, 2, 7, 14, 0, tzinfo=UTC), "deposit", 1.0))
    fills = (Execution("demo", "A1", "x-1", CALL, datetime(2018, 2, 5, 15, 0, tzinfo=UTC), 1.0, 5.0, 100.0,
                       commission=1.5),)
    return ImportBatch("demo", "history.csv", "ab" * 32, fills, flows)


@pytest.mark.usefixtures("dated_broker")
def test_imported_flows_reach_returns_once(db_url: str, instance: dg.DagsterInstance,
                                           portfolio_env: Path) -> None:
    database = Database(db_url)
    try:
        SqlHistoryStore(database).import_history(_imported())
    finally:
        database.dispose()
    assert materialize(db_url, instance, DAY1).success
    assert materialize(db_url, instance, DAY2).success
    ret = next(r for r in rows(db_url)["portfolio_returns"]
               if r["session_date"] == DAY2 and r["account_id"] == "A1")
    # flows of 2018-02-05's session: live deposit (Saturday the 3rd) + imported wire; the
    # imported copy of dep-1 is not counted twice; the 2018-02-07 row is in the future
    assert ret["external_flow"] == pytest.approx(DEPOSIT + WIRE)
    assert ret["income"] == pytest.approx(12.0)
    assert ret["pnl"] == pytest.approx((NLV1 + PNL2 + DEPOSIT) - NLV1 - DEPOSIT - WIRE)


def test_merge_keeps_live_and_drops_duplicates_and_future_rows() -> None:
    live = [CashFlow("ibkr", "U1", "7001", datetime(2018, 1, 29, 21, 0, tzinfo=UTC), "deposit", 50_000.0)]
    imported = [CashFlow("ibkr", "U1", "7001", datetime(2018, 1, 29, 21, 0, tzinfo=UTC), "deposit", 49_999.0),
                CashFlow("ibkr", "U1", "7003", datetime(2018, 2, 5, 21, 0, tzinfo=UTC), "interest", 3.21),
                CashFlow("ibkr", "U1", "7004", datetime(2018, 2, 20, 17, 0, tzinfo=UTC), "withdrawal", -2500.0),
                CashFlow("ibkr", "U1", "6999", datetime(2017, 12, 1, 21, 0, tzinfo=UTC), "deposit", 1.0)]
    flows, fills = merge_activity(live, [], imported, [], start=date(2018, 1, 1),
                                  until=datetime(2018, 2, 5, 21, 1, tzinfo=UTC))
    assert [(f.flow_id, f.amount) for f in flows] == [("7001", 50_000.0), ("7003", 3.21)]
    assert fills == []


def test_merge_of_executions_keeps_live_and_orders_by_time_then_id() -> None:
    def fill(exec_id: str, ts: datetime, price: float) -> Execution:
        return Execution("ibkr", "U1", exec_id, CALL, ts, 1.0, price, 100.0)

    live = [fill("e2", datetime(2018, 2, 5, 15, 0, tzinfo=UTC), 5.0)]
    imported = [fill("e2", datetime(2018, 2, 5, 15, 0, tzinfo=UTC), 4.0),   # live kept
                fill("e1", datetime(2018, 2, 5, 15, 0, tzinfo=UTC), 6.0),   # same time: id order
                fill("e0", datetime(2018, 2, 6, 15, 0, tzinfo=UTC), 7.0),   # after ``until``
                fill("e9", datetime(2017, 12, 29, 15, 0, tzinfo=UTC), 8.0)]  # before ``start``
    flows, fills = merge_activity([], live, [], imported, start=date(2018, 1, 1),
                                  until=datetime(2018, 2, 5, 21, 0, tzinfo=UTC))
    assert flows == []
    assert [(e.exec_id, e.price) for e in fills] == [("e1", 6.0), ("e2", 5.0)]

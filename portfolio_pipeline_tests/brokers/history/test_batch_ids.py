"""An import batch refuses a file that repeats an execution or cash flow id."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portfolio_pipeline.brokers.history.errors import ImportFormatError
from portfolio_pipeline.brokers.history.model import ImportBatch
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.positions import Contract

TS = datetime(2026, 3, 10, 15, tzinfo=UTC)


def _fill(exec_id: str, account: str = "U1") -> Execution:
    return Execution("ibkr", account, exec_id, Contract("SPY", "STK"), TS, 10.0, 500.0, 1.0)


def _flow(flow_id: str, account: str = "U1") -> CashFlow:
    return CashFlow("ibkr", account, flow_id, TS, "deposit", 1000.0)


def test_repeated_ids_are_named() -> None:
    with pytest.raises(ImportFormatError, match=r"flex.xml: execution id 'e1' of account U1 appears twice"):
        ImportBatch("ibkr", "flex.xml", "0" * 64, (_fill("e1"), _fill("e2"), _fill("e1")), ())
    with pytest.raises(ImportFormatError, match=r"flex.xml: cash flow id 'c1' of account U2 appears twice"):
        ImportBatch("ibkr", "flex.xml", "0" * 64, (), (_flow("c1", "U2"), _flow("c1", "U2")))


def test_same_id_in_another_account_or_kind_is_fine() -> None:
    batch = ImportBatch("ibkr", "flex.xml", "0" * 64, (_fill("x"), _fill("x", "U2")), (_flow("x"),))
    assert len(batch.executions) == 2 and len(batch.cash_flows) == 1

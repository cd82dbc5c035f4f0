"""import_history against SQLite and PostgreSQL (the shared ``db`` fixture)."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import func, select

from portfolio_pipeline.brokers.history import (
    ImportFormatError,
    parse_ibkr_flex,
    parse_tastytrade_csv,
    positions_from_executions,
)
from portfolio_pipeline.domain.errors import MultiplierMismatchError
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.history import SqlHistoryStore
from portfolio_pipeline.storage.tables import cash_flows, executions, import_batches
from portfolio_pipeline_tests.stubs import instruments

FIXTURES = Path(__file__).parent / "fixtures"
IBKR_FILE = FIXTURES / "ibkr_flex_2018-02.xml"
TT_FILE = FIXTURES / "tastytrade_transactions_history_5WX12345_180201_to_180228.csv"


def _counts(db: Database) -> tuple[int, int, int]:
    with db.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (executions, cash_flows, import_batches)
        )


def test_import_both_files_and_end_positions(db: Database) -> None:
    ibkr = SqlHistoryStore(db).import_history(parse_ibkr_flex(IBKR_FILE, instruments()))
    tasty = SqlHistoryStore(db).import_history(parse_tastytrade_csv(TT_FILE, instruments()))
    assert (ibkr.executions_new, ibkr.cash_flows_new, ibkr.already_imported) == (9, 4, False)
    assert (tasty.executions_new, tasty.cash_flows_new) == (9, 1)
    assert ibkr.batch_id is not None and tasty.batch_id is not None
    assert _counts(db) == (18, 5, 2)

    stored = SqlHistoryStore(db).load_executions(broker="ibkr")
    assert positions_from_executions(stored) == {"SPY|STK": 100.0}
    assert positions_from_executions(SqlHistoryStore(db).load_executions(broker="tastytrade")) == {"IWM|STK": 100.0}
    assert {ex.ts.tzinfo for ex in stored} == {UTC}
    parsed = {ex.exec_id: ex for ex in parse_ibkr_flex(IBKR_FILE, instruments()).executions}
    assert {ex.exec_id: ex for ex in stored} == parsed  # round trip is exact
    flows = {cf.flow_id: cf for cf in SqlHistoryStore(db).load_cash_flows(broker="ibkr")}
    assert flows["7004"].amount == -2500 and flows["7004"].kind == "withdrawal"
    assert sum(ex.commission for ex in stored) == pytest.approx(7.76)


def test_reimport_changes_nothing(db: Database) -> None:
    first = SqlHistoryStore(db).import_history(parse_ibkr_flex(IBKR_FILE, instruments()))
    before = _counts(db)
    again = SqlHistoryStore(db).import_history(parse_ibkr_flex(IBKR_FILE, instruments()))
    assert again.already_imported and again.new_rows == 0
    assert _counts(db) == before
    # same ids, different bytes (e.g. re-downloaded with another header): 0 new, no batch row
    content = IBKR_FILE.read_bytes().replace(b'queryName="history"', b'queryName="history2"')
    other = SqlHistoryStore(db).import_history(parse_ibkr_flex(content, instruments(), source_name="copy.xml"))
    assert (other.already_imported, other.new_rows, other.batch_id) == (False, 0, None)
    assert _counts(db) == before
    with db.connect() as conn:
        batch = conn.execute(select(import_batches)).mappings().one()
    assert batch["id"] == first.batch_id and batch["source_name"] == IBKR_FILE.name
    assert (batch["executions_new"], batch["cash_flows_new"]) == (9, 4)
    assert batch["imported_at"].tzinfo is UTC


def test_overlapping_tastytrade_export_adds_only_new_rows(db: Database) -> None:
    header, *rows = TT_FILE.read_text().splitlines()
    older = "\n".join([header, *rows[3:]]).encode()  # without the last 3 rows
    first = SqlHistoryStore(db).import_history(parse_tastytrade_csv(older, instruments(), account_id="5WX12345"))
    full = SqlHistoryStore(db).import_history(parse_tastytrade_csv(TT_FILE, instruments()))
    assert first.executions_new == 6 and full.executions_new == 3
    assert positions_from_executions(SqlHistoryStore(db).load_executions()) == {"IWM|STK": 100.0}


def test_bad_layout_leaves_db_unchanged(db: Database) -> None:
    SqlHistoryStore(db).import_history(parse_ibkr_flex(IBKR_FILE, instruments()))
    before = _counts(db)
    content = TT_FILE.read_text().replace("Call or Put", "Put/Call", 1).encode()
    with pytest.raises(ImportFormatError, match="unknown column 'Put/Call'"):
        SqlHistoryStore(db).import_history(parse_tastytrade_csv(content, instruments(), account_id="A"))
    assert _counts(db) == before


def test_multiplier_mismatch_leaves_db_unchanged(db: Database) -> None:
    before = _counts(db)
    content = IBKR_FILE.read_bytes().replace(
        b'multiplier="50" strike="2500" expiry="20180316" putCall="P" tradeID="1006"',
        b'multiplier="5" strike="2500" expiry="20180316" putCall="P" tradeID="1006"',
    )
    with pytest.raises(MultiplierMismatchError, match=r"ibkr-flex:bad\.xml:1006"):
        SqlHistoryStore(db).import_history(parse_ibkr_flex(content, instruments(), source_name="bad.xml"))
    assert _counts(db) == before


def test_failed_insert_rolls_back_everything(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database error after some rows went in leaves nothing half-imported."""
    from portfolio_pipeline.storage import history as store

    real = store._insert_new
    calls: list[str] = []

    def failing(conn, table, rows):  # type: ignore[no-untyped-def]
        calls.append(table.name)
        if table.name == "cash_flows":
            raise RuntimeError("disk full")
        return real(conn, table, rows)

    monkeypatch.setattr(store, "_insert_new", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        SqlHistoryStore(db).import_history(parse_ibkr_flex(IBKR_FILE, instruments()))
    assert calls == ["executions", "cash_flows"]
    assert _counts(db) == (0, 0, 0)

"""Trade history parsers: IBKR Flex XML and Tastytrade CSV (no database)."""

from __future__ import annotations

import math
import typing
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from portfolio_pipeline.brokers.history import (
    CashFlowType,
    ExecutionType,
    ImportFormatError,
    UnknownTransactionTypeError,
    classify_tastytrade_transaction,
    parse_flex_datetime,
    parse_ibkr_flex,
    parse_tastytrade_csv,
    positions_from_executions,
    stock_basis_with_premium,
)
from portfolio_pipeline.domain.activity import CashFlowKind, ExecutionKind
from portfolio_pipeline.domain.errors import MultiplierMismatchError
from portfolio_pipeline.storage.tables import CASH_FLOW_KINDS, EXECUTION_KINDS
from portfolio_pipeline_tests.stubs import instruments

FIXTURES = Path(__file__).parent / "fixtures"
IBKR_FILE = FIXTURES / "ibkr_flex_2018-02.xml"
TT_FILE = FIXTURES / "tastytrade_transactions_history_5WX12345_180201_to_180228.csv"

SPY_PUT = "SPY|OPT|SPY|2018-02-09|265|P"
SPX_SHORT = "SPX|OPT|SPXW|2018-02-16|2600|P"
SPX_LONG = "SPX|OPT|SPXW|2018-02-16|2550|P"
ES_PUT = "ES|FOP|ES|2018-03-16|2500|P"


# --------------------------------------------------------------------------- IBKR Flex


def test_ibkr_counts_signs_and_kinds() -> None:
    batch = parse_ibkr_flex(IBKR_FILE, instruments())
    assert batch.broker == "ibkr" and batch.source_name == IBKR_FILE.name
    assert len(batch.executions) == 9  # 10 trades - 1 FX; the OptionEAE rows duplicate them
    by_id = {ex.exec_id: ex for ex in batch.executions}
    assert by_id["1001"].quantity == -1 and by_id["1001"].price == 0.45
    assert by_id["1002"].quantity == -1 and by_id["1003"].quantity == 1
    assert (by_id["1007"].kind, by_id["1007"].quantity, by_id["1007"].price) == ("assignment", 1, 0)
    stock = by_id["1008"]
    assert (stock.kind, stock.quantity, stock.price) == ("trade", 100, 265)
    assert stock.contract.key == "SPY|STK" and stock.multiplier == 1
    assert [by_id[i].kind for i in ("1009", "1010")] == ["expiry", "expiry"]
    assert (by_id["1009"].quantity, by_id["1010"].quantity) == (1, -1)
    es = by_id["1005"]
    assert es.contract.key == ES_PUT and es.multiplier == 50 and es.quantity == -1
    assert by_id["1002"].order_ref == "5551002"
    assert len(batch.skipped) == 1 and "1004" in batch.skipped[0]


def test_ibkr_cash_flows_signed() -> None:
    batch = parse_ibkr_flex(IBKR_FILE, instruments())
    flows = {cf.flow_id: cf for cf in batch.cash_flows}
    assert set(flows) == {"7001", "7002", "7003", "7004"}  # SUMMARY row skipped
    assert (flows["7001"].kind, flows["7001"].amount) == ("deposit", 50000)
    assert (flows["7004"].kind, flows["7004"].amount) == ("withdrawal", -2500)
    assert (flows["7002"].kind, flows["7002"].amount) == ("dividend", 135.1)
    assert flows["7003"].kind == "interest"
    # a date-only value is the end of the NY session: 16:00 EST = 21:00 UTC
    assert flows["7001"].ts == datetime(2018, 1, 29, 21, 0, tzinfo=UTC)


def test_ibkr_costs_equal_the_file() -> None:
    batch = parse_ibkr_flex(IBKR_FILE, instruments())
    trades = ET.parse(IBKR_FILE).getroot().iter("Trade")
    position_rows = [t for t in trades if t.get("assetCategory") != "CASH"]
    expected_commission = -math.fsum(float(t.get("ibCommission") or 0) for t in position_rows)
    expected_taxes = -math.fsum(float(t.get("taxes") or 0) for t in position_rows)
    assert batch.total_commission == pytest.approx(expected_commission)
    assert batch.total_commission == pytest.approx(7.76)
    assert batch.total_fees == pytest.approx(expected_taxes)


def test_ibkr_end_positions() -> None:
    batch = parse_ibkr_flex(IBKR_FILE, instruments())
    assert positions_from_executions(batch.executions) == {"SPY|STK": 100.0}


def test_ibkr_timestamps_aware_utc() -> None:
    batch = parse_ibkr_flex(IBKR_FILE, instruments())
    for record in (*batch.executions, *batch.cash_flows):
        assert record.ts.tzinfo is UTC
    by_id = {ex.exec_id: ex for ex in batch.executions}
    assert by_id["1002"].ts == datetime(2018, 2, 5, 15, 15, tzinfo=UTC)  # 10:15 EST


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20180205;153000", datetime(2018, 2, 5, 20, 30, tzinfo=UTC)),
        ("2018-02-05;15:30:00", datetime(2018, 2, 5, 20, 30, tzinfo=UTC)),
        ("2018-02-05, 15:30:00", datetime(2018, 2, 5, 20, 30, tzinfo=UTC)),
        ("20180705;153000", datetime(2018, 7, 5, 19, 30, tzinfo=UTC)),  # EDT
        ("20180205;153000 EST", datetime(2018, 2, 5, 20, 30, tzinfo=UTC)),
        ("20180205;153000 +0100", datetime(2018, 2, 5, 14, 30, tzinfo=UTC)),
        ("20180205", datetime(2018, 2, 5, 21, 0, tzinfo=UTC)),
    ],
)
def test_flex_datetime_formats(raw: str, expected: datetime) -> None:
    assert parse_flex_datetime(raw) == expected


def test_flex_datetime_statement_zone_and_bad_value() -> None:
    assert parse_flex_datetime("20180205;153000", tz="Europe/Zurich") == datetime(
        2018, 2, 5, 14, 30, tzinfo=UTC
    )
    with pytest.raises(ImportFormatError, match="02/05/2018"):
        parse_flex_datetime("02/05/2018 15:30", where="f.xml:1")


def _flex(rows: str, eae: str = "") -> bytes:
    return (
        '<FlexQueryResponse queryName="q" type="AF"><FlexStatements count="1">'
        f'<FlexStatement accountId="U1"><Trades>{rows}</Trades>'
        f"<OptionEAE>{eae}</OptionEAE></FlexStatement></FlexStatements></FlexQueryResponse>"
    ).encode()


_SPY_OPEN = (
    '<Trade assetCategory="OPT" symbol="SPY   180209P00265000" underlyingSymbol="SPY" '
    'multiplier="{mult}" strike="265" expiry="20180209" putCall="P" tradeID="{tid}" '
    'dateTime="20180201;103512" quantity="-1" tradePrice="0.45" ibCommission="-0.7" '
    'buySell="SELL" currency="USD"/>'
)


def test_ibkr_multiplier_mismatch_names_the_trade() -> None:
    content = _flex(_SPY_OPEN.format(mult=100, tid="1") + _SPY_OPEN.format(mult=10, tid="T-42"))
    with pytest.raises(MultiplierMismatchError, match=r"ibkr-flex:bad\.xml:T-42.*multiplier 10"):
        parse_ibkr_flex(content, instruments(), source_name="bad.xml")


def test_ibkr_week_numbered_es_weekly_keys_like_the_live_adapters() -> None:
    """Regression: an imported ES weekly reported as class EW4 kept key 'EW4' while the IBKR
    and Tastytrade adapters give 'EW', so imported and live positions never matched."""
    row = (
        '<Trade assetCategory="FOP" symbol="ESH8 P2650" underlyingSymbol="ES" tradingClass="EW4" '
        'multiplier="50" strike="2650" expiry="20180223" putCall="P" tradeID="W4" '
        'dateTime="20180201;103512" quantity="2" tradePrice="10.5" ibCommission="-2.47" '
        'buySell="BUY" currency="USD"/>'
    )
    [execution] = parse_ibkr_flex(_flex(row), instruments(), source_name="w.xml").executions
    assert execution.contract.key == "ES|FOP|EW|2018-02-23|2650|P"
    assert execution.multiplier == 50.0
    assert instruments().table_class_name("ES", "EW4") == "EW"
    assert instruments().table_class_name("ES", "ZZ9") is None


def test_ibkr_option_eae_only_statement() -> None:
    """A statement with OptionEAE rows but no coded Trade rows imports the events."""
    eae = (
        '<OptionEAE assetCategory="OPT" symbol="SPY   180209P00265000" underlyingSymbol="SPY" '
        'multiplier="100" strike="265" expiry="20180209" putCall="P" date="20180209" '
        'transactionType="Expiration" quantity="1" tradePrice="0" transactionID="E1"/>'
    )
    batch = parse_ibkr_flex(_flex(_SPY_OPEN.format(mult=100, tid="1"), eae), instruments())
    expiry = next(ex for ex in batch.executions if ex.kind == "expiry")
    assert expiry.exec_id == "eae:E1" and expiry.quantity == 1 and expiry.price == 0
    assert positions_from_executions(batch.executions) == {}


def test_ibkr_refuses_entities_and_other_documents() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><FlexQueryResponse/>'
    with pytest.raises(ImportFormatError, match="DOCTYPE"):
        parse_ibkr_flex(bomb, instruments(), source_name="bomb.xml")
    with pytest.raises(ImportFormatError, match="not an IBKR Flex Query response"):
        parse_ibkr_flex(b"<FlexStatementResponse/>", instruments(), source_name="x.xml")
    with pytest.raises(ImportFormatError, match="not well-formed"):
        parse_ibkr_flex(b"<FlexQueryResponse>", instruments(), source_name="x.xml")


def test_ibkr_unknown_instrument_names_the_trade() -> None:
    row = (
        '<Trade assetCategory="STK" symbol="ZZZZ" multiplier="1" tradeID="77" '
        'dateTime="20180201;103512" quantity="5" tradePrice="10" buySell="BUY"/>'
    )
    with pytest.raises(ImportFormatError, match=r"ibkr-flex:f\.xml:77.*unknown instrument"):
        parse_ibkr_flex(_flex(row), instruments(), source_name="f.xml")


# --------------------------------------------------------------------------- Tastytrade


def test_tastytrade_counts_signs_and_kinds() -> None:
    batch = parse_tastytrade_csv(TT_FILE, instruments())
    assert batch.broker == "tastytrade"
    assert len(batch.executions) == 9 and len(batch.cash_flows) == 1
    assert {ex.account_id for ex in batch.executions} == {"5WX12345"}
    kinds = [(ex.contract.key, ex.kind, ex.quantity) for ex in batch.executions]
    assert ("IWM|OPT|IWM|2018-02-09|150|P", "assignment", 1.0) in kinds
    assert ("IWM|STK", "trade", 100.0) in kinds
    assert ("QQQ|OPT|QQQ|2018-02-16|175|C", "expiry", 1.0) in kinds
    by_key = {(ex.contract.key, ex.quantity): ex for ex in batch.executions}
    put_open = by_key[("SPY|OPT|SPY|2018-03-16|250|P", -1.0)]
    assert (put_open.price, put_open.multiplier, put_open.order_ref) == (3.4, 100, "101")
    assert by_key[("IWM|STK", 100.0)].price == 150.0
    deposit = batch.cash_flows[0]
    assert (deposit.kind, deposit.amount, deposit.account_id) == ("deposit", 10000.0, "5WX12345")


def test_tastytrade_costs_equal_the_file() -> None:
    batch = parse_tastytrade_csv(TT_FILE, instruments())
    assert batch.total_commission == pytest.approx(4.00)
    assert batch.total_fees == pytest.approx(5.82)  # includes the $5 assignment fee
    assert {ex.fees for ex in batch.executions if ex.contract.key == "IWM|STK"} == {5.0}


def test_tastytrade_end_positions_and_times() -> None:
    batch = parse_tastytrade_csv(TT_FILE, instruments())
    assert positions_from_executions(batch.executions) == {"IWM|STK": 100.0}
    first = min(batch.executions, key=lambda ex: ex.ts)
    assert first.ts == datetime(2018, 2, 2, 20, 45, 30, tzinfo=UTC)
    assert all(r.ts.tzinfo is UTC for r in (*batch.executions, *batch.cash_flows))


def test_tastytrade_ids_stable_across_overlapping_exports() -> None:
    full = TT_FILE.read_bytes()
    header, *rows = full.decode().splitlines()
    part = "\n".join([header, *rows[3:]]).encode()  # an export ending earlier
    ids_full = {
        ex.exec_id for ex in parse_tastytrade_csv(full, instruments(), account_id="A").executions
    }
    ids_part = {
        ex.exec_id for ex in parse_tastytrade_csv(part, instruments(), account_id="A").executions
    }
    assert ids_part < ids_full


@pytest.mark.parametrize("column", ["Sub Type", "Commissions"])
def test_tastytrade_missing_column(column: str) -> None:
    header, *rows = TT_FILE.read_text().splitlines()
    names = header.split(",")
    index = names.index(column)
    cut = [",".join(c for i, c in enumerate(line.split(",")) if i != index) for line in [header]]
    content = "\n".join(cut + rows).encode()
    with pytest.raises(ImportFormatError, match=rf"tt\.csv: required column '{column}'"):
        parse_tastytrade_csv(content, instruments(), account_id="A", source_name="tt.csv")


def test_tastytrade_unknown_column_names_it() -> None:
    content = TT_FILE.read_text().replace("Order #", "Order Number", 1).encode()
    with pytest.raises(ImportFormatError, match=r"tt\.csv: unknown column 'Order Number'"):
        parse_tastytrade_csv(content, instruments(), account_id="A", source_name="tt.csv")


def test_tastytrade_multiplier_mismatch_names_the_row() -> None:
    lines = TT_FILE.read_text().splitlines()
    bad = lines[6].replace(",100,QQQ,", ",10,QQQ,")  # the QQQ sale
    content = "\n".join([*lines[:6], bad, *lines[7:]]).encode()
    with pytest.raises(MultiplierMismatchError, match=r"tastytrade-csv:tt\.csv:7: multiplier 10"):
        parse_tastytrade_csv(content, instruments(), account_id="A", source_name="tt.csv")


def test_tastytrade_expiry_without_opening_trade() -> None:
    header, *rows = TT_FILE.read_text().splitlines()
    expiry_only = "\n".join([header, rows[0]]).encode()
    with pytest.raises(ImportFormatError, match="long or short"):
        parse_tastytrade_csv(expiry_only, instruments(), account_id="A")
    batch = parse_tastytrade_csv(
        expiry_only,
        instruments(),
        account_id="A",
        opening_positions={"QQQ|OPT|QQQ|2018-02-16|175|C": -1.0},
    )
    assert batch.executions[0].quantity == 1.0


def test_tastytrade_account_required() -> None:
    with pytest.raises(ImportFormatError, match="account_id="):
        parse_tastytrade_csv(TT_FILE.read_bytes(), instruments(), source_name="export.csv")


# --------------------------------------------------------------------------- shared


def test_tastytrade_type_mapping() -> None:
    assert classify_tastytrade_transaction("Trade", "Sell to Open") == ExecutionType("trade")
    assert classify_tastytrade_transaction("RECEIVE_DELIVER", "ASSIGNMENT") == ExecutionType(
        "assignment"
    )
    assert classify_tastytrade_transaction("Receive Deliver", "Expiration") == ExecutionType(
        "expiry"
    )
    assert classify_tastytrade_transaction(
        "Receive Deliver", "Cash Settled Exercise"
    ) == ExecutionType("exercise")
    assert classify_tastytrade_transaction("Money Movement", "Withdrawal") == CashFlowType(
        "withdrawal"
    )
    assert classify_tastytrade_transaction("Money Movement", "Credit Interest") == CashFlowType(
        "interest"
    )
    with pytest.raises(UnknownTransactionTypeError, match="'Forward Split'"):
        classify_tastytrade_transaction("Receive Deliver", "Forward Split", source="row 9")


def test_stored_kinds_mirror_the_domain() -> None:
    assert typing.get_args(ExecutionKind) == EXECUTION_KINDS
    assert typing.get_args(CashFlowKind) == CASH_FLOW_KINDS


def test_stock_basis_with_premium_view() -> None:
    batch = parse_tastytrade_csv(TT_FILE, instruments())
    stock = next(ex for ex in batch.executions if ex.contract.key == "IWM|STK")
    put_open = [
        ex
        for ex in batch.executions
        if ex.contract.key == "IWM|OPT|IWM|2018-02-09|150|P" and ex.kind == "trade"
    ]
    assert stock_basis_with_premium(stock, put_open) == pytest.approx(150.0 - 0.85)
    assert stock.price == 150.0  # stored execution stays broker-faithful

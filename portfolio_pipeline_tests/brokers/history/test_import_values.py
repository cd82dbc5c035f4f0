"""Issue 17 item 5: history imports validate values and skip identical files.

Oracle: the importer contract (all or nothing; an error names file, row and field),
checked on SQLite and PostgreSQL through the shared ``db`` fixture where storage is
involved.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.brokers.history import (
    ImportFormatError,
    parse_ibkr_flex,
    parse_tastytrade_csv,
)
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.history import SqlHistoryStore
from portfolio_pipeline_tests.stubs import instruments

FIXTURES = Path(__file__).parent / "fixtures"
IBKR_FILE = FIXTURES / "ibkr_flex_2018-02.xml"
TT_FILE = FIXTURES / "tastytrade_transactions_history_5WX12345_180201_to_180228.csv"
FIRST_TRADE = 'quantity="-1" tradePrice="0.45"'


def _flex(old: str, new: str) -> bytes:
    raw = IBKR_FILE.read_text(encoding="utf-8")
    assert old in raw
    return raw.replace(old, new, 1).encode("utf-8")


@pytest.mark.parametrize(("old", "new", "message"), [
    (FIRST_TRADE, 'quantity="-1e308" tradePrice="0.45"', "ibkr-flex:x.xml:1001: quantity -1e+308 is outside"),
    (FIRST_TRADE, 'quantity="-1" tradePrice="-0.45"', "ibkr-flex:x.xml:1001: tradePrice -0.45 is negative"),
    ('<Trade accountId="U1234567"', '<Trade accountId=" "', "ibkr-flex:x.xml:1001: accountId is empty"),
    ('dateTime="20180201;103512"', 'dateTime="00010101;000000 +9999"', "ibkr-flex:x.xml:1001: date/time"),
    ('dateTime="20180201;103512"', 'dateTime="20180201;103512 +0060"', "UTC offset '+0060' is not valid"),
    ('dateTime="20180201;103512"', 'dateTime="99991231;235959 EST"', "outside 1950-01-01 .. 2200-12-31"),
    ('encoding="UTF-8"', 'encoding="x-unknown"', "x.xml: cannot read the XML (unknown encoding"),
])
def test_flex_values_are_validated(old: str, new: str, message: str) -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_ibkr_flex(_flex(old, new), instruments(), source_name="x.xml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def _tasty(old: str, new: str) -> bytes:
    raw = TT_FILE.read_text(encoding="utf-8")
    assert old in raw
    return raw.replace(old, new, 1).encode("utf-8")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("Call 285.00 @ 0.55,-55.00,1,", "Call 285.00 @ 0.55,-55.00,1e308,", ":3: Quantity 1e+308 is outside"),
    ("Call 285.00 @ 0.55,", "Call 285.00 @ -0.55,", ":3: price -0.55 is negative"),
    ("Call 285.00 @ 0.55,", "Call 285.00 \x00@ 0.55,", ":3: contains a NUL character"),
    ("2018-02-12T10:02:11-0500,Trade,Buy to Close,BUY_TO_CLOSE,SPY   180316C",
     "0001-01-01T00:00:00+1400,Trade,Buy to Close,BUY_TO_CLOSE,SPY   180316C", ":3: Date"),
])
def test_tastytrade_values_are_validated(old: str, new: str, message: str) -> None:
    with pytest.raises(ImportFormatError) as info:
        parse_tastytrade_csv(_tasty(old, new), instruments(), source_name=TT_FILE.name)
    assert message in str(info.value), str(info.value)


def test_tastytrade_128k_field_is_one_line_error() -> None:
    content = _tasty("Call 285.00 @ 0.55,", "Call 285.00 " + "x" * 131_072 + " @ 0.55,")
    with pytest.raises(ImportFormatError) as info:
        parse_tastytrade_csv(content, instruments(), source_name=TT_FILE.name)
    assert str(info.value).startswith(TT_FILE.name)
    assert "malformed CSV (field larger than field limit" in str(info.value)


def test_empty_tastytrade_account_is_refused() -> None:
    with pytest.raises(ImportFormatError, match="account id is empty"):
        parse_tastytrade_csv(TT_FILE, instruments(), account_id=" ")


def test_identical_file_is_skipped_before_parsing(db: Database) -> None:
    batch = parse_tastytrade_csv(TT_FILE, instruments())
    assert SqlHistoryStore(db).imported_batch_id(batch.sha256) is None
    summary = SqlHistoryStore(db).import_history(batch)
    assert SqlHistoryStore(db).imported_batch_id(batch.sha256) == summary.batch_id is not None


def test_cli_does_not_parse_a_known_file(portfolio_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from portfolio_pipeline import brokers
    from portfolio_pipeline.cli import main

    first = CliRunner().invoke(main, ["import", "tastytrade-csv", str(TT_FILE)])
    assert first.exit_code == 0, first.output

    def must_not_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed a file already imported")

    monkeypatch.setattr(brokers.history, "parse_tastytrade_csv", must_not_parse)
    again = CliRunner().invoke(main, ["import", "tastytrade-csv", str(TT_FILE)])
    assert again.exit_code == 0, again.output
    assert "already imported, nothing changed (identical file, batch 1)" in again.output


def test_edited_description_is_not_a_new_row(db: Database) -> None:
    """REGRESSION: a deposit (and a fill) whose free-text description changed between two
    exports is the same row: identified by Order # and structured fields, not the text."""
    first = SqlHistoryStore(db).import_history(parse_tastytrade_csv(TT_FILE, instruments()))
    raw = TT_FILE.read_text(encoding="utf-8")
    edited = raw.replace("Bought 1 SPY 03/16/18 Call 285.00 @ 0.55", "Bought 1 SPY 03/16/18 Call 285 @ 0.55")
    deposit_line = next(line for line in raw.splitlines() if "Deposit" in line)
    fields = deposit_line.split(",")
    fields[6] = fields[6] + " (edited)"
    edited = edited.replace(deposit_line, ",".join(fields))
    assert edited != raw
    again = SqlHistoryStore(db).import_history(parse_tastytrade_csv(edited.encode(), instruments(), source_name=TT_FILE.name))
    assert first.new_rows > 0 and again.new_rows == 0 and not again.already_imported


def test_rows_stored_under_the_old_ids_are_not_stored_twice(db: Database) -> None:
    """Rows imported by the previous parser (id = hash of every column, prefix tt:) are
    recognised through ImportBatch.aliases when an overlapping export comes in."""
    from dataclasses import replace

    batch = parse_tastytrade_csv(TT_FILE, instruments())
    assert batch.aliases and all(k.startswith("tt2:") and v.startswith("tt:") for k, v in batch.aliases.items())
    old_style = replace(
        batch,
        executions=tuple(replace(ex, exec_id=batch.aliases[ex.exec_id]) for ex in batch.executions),
        cash_flows=tuple(replace(cf, flow_id=batch.aliases[cf.flow_id]) for cf in batch.cash_flows),
        aliases={},
    )
    stored = SqlHistoryStore(db).import_history(old_style)
    assert stored.new_rows == len(batch.executions) + len(batch.cash_flows)
    overlapping = replace(batch, sha256="0" * 64)  # a different file holding the same rows
    assert SqlHistoryStore(db).import_history(overlapping).new_rows == 0

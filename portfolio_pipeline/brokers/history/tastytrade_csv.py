"""Tastytrade transaction history CSV (History -> Transactions -> CSV) -> :class:`ImportBatch`.

Supported layout (the tastytrade web/desktop export, newest row first)::

    Date,Type,Sub Type,Action,Symbol,Instrument Type,Description,Value,Quantity,
    Average Price,Commissions,Fees,Multiplier,Root Symbol,Underlying Symbol,
    Expiration Date,Strike Price,Call or Put,Order #[,Total][,Currency]

``Total`` and ``Currency`` are optional (newer exports have them).  Any other column,
or a missing one, fails the whole file with :class:`ImportFormatError` naming the
column and the file: the column meanings are what the parser relies on, so a changed
layout is refused rather than guessed.  The legacy tastyworks layout (``Date/Time,
Transaction Code,...``) is not supported.

Values: ``Date`` is ISO 8601 with an offset (``2024-08-16T15:57:13+0200``; a value
without an offset is taken as America/New_York); ``Value`` is signed from the
account's point of view and excludes costs; ``Commissions`` and ``Fees`` are signed
costs (negative), kept apart (``Fees`` = regulatory/clearing/exchange fees); ``--``
and blanks are missing; thousands separators are accepted.  The per-unit price is the
``@ price`` of the description (else ``|Value| / (Quantity * Multiplier)``), and the
multiplier is checked against ``config/instruments.yaml``.

Types are classified by :func:`~portfolio_pipeline.brokers.history.tastytrade_types.
classify_tastytrade_transaction` (shared with the API adapter).  Assignment, exercise
and expiration rows (``Receive Deliver``) carry no ``Action``: an assignment closes a
short (+), an exercise a long (-), and an expiration the opposite of the position the
file's earlier rows (plus ``opening_positions``) leave; an expiration whose position
is unknown fails naming the row.  A negative ``Dividend`` (withholding) is a ``tax``.

Ids: the export carries no transaction id, so each row's id is a hash of the broker's
``Order #`` (where present) and the row's structured fields, not its free-text
description (plus an occurrence number for identical rows), stable across overlapping
exports and edited descriptions; ``Order #`` is also kept as ``order_ref``.  The account is ``account_id`` or, by default,
taken from the export's file name (``tastytrade_transactions_history_<account>_...``).
The API path (the Tastytrade adapter) uses Tastytrade's transaction ids instead, so do
not import the same period through both paths into one database.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final
from zoneinfo import ZoneInfo

from portfolio_pipeline.brokers.history._common import (
    check_account,
    check_range,
    checked_day,
    checked_utc,
    parse_number,
    resolve_root,
    stable_id,
    table_trading_class,
)
from portfolio_pipeline.brokers.history.errors import ImportFormatError
from portfolio_pipeline.brokers.history.model import ImportBatch, RawSource, read_source, sha256_hex
from portfolio_pipeline.brokers.history.tastytrade_types import (
    CashFlowType,
    ExecutionType,
    classify_tastytrade_transaction,
)
from portfolio_pipeline.domain.activity import CashFlow, CashFlowKind, Execution, ExecutionKind
from portfolio_pipeline.domain.errors import DomainError, MultiplierMismatchError
from portfolio_pipeline.domain.instruments import InstrumentTable, SecType
from portfolio_pipeline.domain.positions import Contract, Right

__all__ = ["BROKER", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "parse_tastytrade_csv"]

logger = logging.getLogger(__name__)

BROKER: Final = "tastytrade"
REQUIRED_COLUMNS: Final = (
    "Date",
    "Type",
    "Sub Type",
    "Action",
    "Symbol",
    "Instrument Type",
    "Description",
    "Value",
    "Quantity",
    "Average Price",
    "Commissions",
    "Fees",
    "Multiplier",
    "Root Symbol",
    "Underlying Symbol",
    "Expiration Date",
    "Strike Price",
    "Call or Put",
    "Order #",
)
OPTIONAL_COLUMNS: Final = ("Total", "Currency")
NAIVE_TZ: Final = "America/New_York"

_INSTRUMENT_TYPES: Final[Mapping[str, SecType]] = {
    "equity": "STK",
    "equity option": "OPT",
    "index option": "OPT",
    "future": "FUT",
    "future option": "FOP",
}
_ACCOUNT_IN_NAME: Final = re.compile(
    r"(?:tastytrade_transactions_history|tastyworks_transactions)_(?P<account>[A-Za-z0-9]+)_",
    re.IGNORECASE,
)
_AT_PRICE: Final = re.compile(r"@\s*(?P<price>-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*$")


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    values: dict[str, str]
    ts: datetime

    def get(self, column: str) -> str:
        return (self.values.get(column) or "").strip()


def _header(reader: csv.DictReader[str], name: str) -> list[str]:
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if not fields:
        raise ImportFormatError(f"{name}: empty file (no header row)")
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    for column in fields:
        if column not in known:
            raise ImportFormatError(
                f"{name}: unknown column {column!r}; expected the Tastytrade transaction "
                f"history layout ({', '.join(REQUIRED_COLUMNS)}[, Total][, Currency])"
            )
    for column in REQUIRED_COLUMNS:
        if column not in fields:
            raise ImportFormatError(f"{name}: required column {column!r} is missing")
    duplicates = [c for c, n in Counter(fields).items() if n > 1]
    if duplicates:
        raise ImportFormatError(f"{name}: column {duplicates[0]!r} appears twice")
    return fields


def _parse_ts(raw: str, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ImportFormatError(
            f"{where}: Date {raw!r} is not an ISO 8601 timestamp (e.g. 2024-08-16T15:57:13+0200)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(NAIVE_TZ))
    return checked_utc(value, raw, "Date", where)


def _parse_expiry(raw: str, where: str) -> date:
    for fmt in ("%m/%d/%y", "%m/%d/%Y", "%Y-%m-%d"):
        try:
            day = datetime.strptime(raw.strip(), fmt).date()  # noqa: DTZ007 - a date only
        except ValueError:
            continue
        return checked_day(day, raw, "Expiration Date", where)
    raise ImportFormatError(f"{where}: Expiration Date {raw!r} is not a date (M/D/YY)")


def _account(name: str, account_id: str | None) -> str:
    if account_id is not None and account_id != "":
        return check_account(account_id, "account id", name)
    match = _ACCOUNT_IN_NAME.search(name)
    if match is None:
        raise ImportFormatError(
            f"{name}: cannot tell the account: the Tastytrade export has no account column "
            "and the file name is not tastytrade_transactions_history_<account>_...; "
            "pass account_id="
        )
    return match["account"]


IDENTITY_COLUMNS: Final = tuple(c for c in REQUIRED_COLUMNS if c not in ("Description", "Average Price"))
"""What identifies a row: the broker's own ``Order #`` (where present) with the row's
structured fields.  The free-text description and the derived average price are not
part of it, so an edited description does not make a deposit or a fill new."""
ID_PREFIX: Final = "tt2:"
LEGACY_ID_PREFIX: Final = "tt:"
"""Ids before ``tt2:`` hashed every column, description included; an import maps them
(:attr:`ImportBatch.aliases`) so rows stored under them are not stored twice."""


def _row_ids(rows: list[_Row], prefix: str, columns: tuple[str, ...]) -> dict[int, str]:
    """Hash of ``columns`` per row line; identical rows get #2, #3... in file order."""
    seen: Counter[str] = Counter()
    ids: dict[int, str] = {}
    for row in rows:
        parts = [row.values.get(c, "").strip() for c in columns]
        base = stable_id(prefix, *parts)
        seen[base] += 1
        ids[row.line] = base if seen[base] == 1 else f"{base}#{seen[base]}"
    return ids


class _Parser:
    def __init__(
        self,
        instruments: InstrumentTable,
        name: str,
        account: str,
        opening_positions: Mapping[str, float],
    ) -> None:
        self.instruments = instruments
        self.name = name
        self.account = account
        self.inventory: defaultdict[str, float] = defaultdict(float, opening_positions)

    def where(self, row: _Row) -> str:
        return f"tastytrade-csv:{self.name}:{row.line}"

    def contract(self, row: _Row, sec_type: SecType, where: str) -> tuple[Contract, float]:
        currency = (row.get("Currency") or "USD").upper()
        symbol = row.get("Symbol")
        root_symbol = row.get("Root Symbol")
        underlying = row.get("Underlying Symbol")
        broker_mult = parse_number(row.get("Multiplier"), "Multiplier", where)
        tc: str | None = None
        if sec_type == "STK":
            root = resolve_root(self.instruments, [symbol, underlying], None, source=where)
            contract = Contract(underlying=root, sec_type="STK", currency=currency)
        elif sec_type == "FUT":
            root = resolve_root(
                self.instruments, [root_symbol, underlying, symbol], None, source=where
            )
            expiry = _parse_expiry(row.get("Expiration Date"), where)
            contract = Contract(underlying=root, sec_type="FUT", expiry=expiry, currency=currency)
        else:
            if sec_type == "FOP":
                # ./ESZ4 EW4X4 241129P5800: the second token is the option product + month
                tokens = symbol.lstrip("./").split()
                raw_tc = tokens[1][:-2].upper() if len(tokens) > 1 and len(tokens[1]) > 2 else None
                root = resolve_root(
                    self.instruments, [root_symbol, underlying], raw_tc, source=where
                )
            else:
                raw_tc = root_symbol.upper() or None
                root = resolve_root(
                    self.instruments, [underlying, root_symbol], raw_tc, source=where
                )
            right_text = row.get("Call or Put").upper()[:1]
            if right_text not in ("C", "P"):
                raise ImportFormatError(
                    f"{where}: Call or Put {row.get('Call or Put')!r} is not CALL or PUT"
                )
            right: Right = "C" if right_text == "C" else "P"
            tc = table_trading_class(self.instruments, root, raw_tc)
            contract = Contract(
                underlying=root,
                sec_type=sec_type,
                expiry=_parse_expiry(row.get("Expiration Date"), where),
                strike=parse_number(row.get("Strike Price"), "Strike Price", where, required=True),
                right=right,
                trading_class=tc or raw_tc or root,
                currency=currency,
            )
        multiplier = self.instruments.checked_multiplier(
            contract.underlying, sec_type, broker_mult, trading_class=tc, source=where
        )
        return contract, multiplier

    def execution(self, row: _Row, kind: ExecutionKind, exec_id: str) -> Execution:
        where = self.where(row)
        itype = row.get("Instrument Type")
        sec_type = _INSTRUMENT_TYPES.get(itype.lower())
        if sec_type is None:
            raise ImportFormatError(f"{where}: Instrument Type {itype!r} is not supported")
        contract, multiplier = self.contract(row, sec_type, where)
        qty = parse_number(row.get("Quantity"), "Quantity", where, required=True)
        assert qty is not None
        if qty == 0:
            raise ImportFormatError(f"{where}: Quantity is 0")
        action = row.get("Action").upper()
        held = self.inventory[contract.key]
        if action.startswith("BUY"):
            quantity = abs(qty)
        elif action.startswith("SELL"):
            quantity = -abs(qty)
        elif action:
            raise ImportFormatError(f"{where}: Action {action!r} is not BUY_* or SELL_*")
        elif kind == "assignment":
            quantity = abs(qty)
        elif kind == "exercise":
            quantity = -abs(qty)
        elif kind == "expiry":
            if held == 0:
                raise ImportFormatError(
                    f"{where}: cannot tell whether the expired {contract.key} was long or short: "
                    "its opening trade is not in this file (export a longer history or pass "
                    "opening_positions)"
                )
            quantity = -math.copysign(abs(qty), held)
        else:
            raise ImportFormatError(f"{where}: Action is empty on a trade row")
        value = parse_number(row.get("Value"), "Value", where) or 0.0
        if (
            kind == "trade"
            and value != 0
            and math.copysign(1.0, value) == math.copysign(1.0, quantity)
        ):
            raise ImportFormatError(
                f"{where}: Value {value} has the sign of a {'sale' if value > 0 else 'purchase'} "
                f"but Action is {action}"
            )
        if kind == "expiry":
            price = 0.0
        else:
            match = _AT_PRICE.search(row.get("Description"))
            if match is not None:
                price = check_range(float(match["price"].replace(",", "")), "price", where)
            else:
                price = abs(value) / (abs(qty) * multiplier)
        self.inventory[contract.key] = held + quantity
        commissions = parse_number(row.get("Commissions"), "Commissions", where) or 0.0
        fees = parse_number(row.get("Fees"), "Fees", where) or 0.0
        return Execution(
            broker=BROKER,
            account_id=self.account,
            exec_id=exec_id,
            contract=contract,
            ts=row.ts,
            quantity=quantity,
            price=price,
            multiplier=multiplier,
            commission=-commissions,
            fees=-fees,
            kind=kind,
            order_ref=row.get("Order #") or None,
        )

    def cash_flow(self, row: _Row, kind: CashFlowKind, flow_id: str) -> CashFlow:
        where = self.where(row)
        value = parse_number(row.get("Value"), "Value", where, required=True)
        assert value is not None
        costs = (parse_number(row.get("Commissions"), "Commissions", where) or 0.0) + (
            parse_number(row.get("Fees"), "Fees", where) or 0.0
        )
        amount = value + costs
        if kind == "dividend" and amount < 0:
            kind = "tax"  # Tastytrade books withholding as a negative dividend
        symbol = row.get("Symbol")
        description = row.get("Description") + (f" ({symbol})" if symbol else "")
        return CashFlow(
            broker=BROKER,
            account_id=self.account,
            flow_id=flow_id,
            ts=row.ts,
            kind=kind,
            amount=amount,
            currency=(row.get("Currency") or "USD").upper(),
            description=description,
        )


def _read_rows(content: bytes, name: str) -> list[_Row]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{name}: not UTF-8 text ({exc.reason})") from None
    if "\x00" in text:  # PostgreSQL cannot store it in text; a CSV export never has one
        line = text[: text.index("\x00")].count("\n") + 1
        raise ImportFormatError(f"tastytrade-csv:{name}:{line}: contains a NUL character")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = _header(reader, name)
    rows: list[_Row] = []
    try:
        for values in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in values.values() if isinstance(v, str)):
                continue
            if None in values:
                raise ImportFormatError(
                    f"tastytrade-csv:{name}:{line}: more fields than the {len(fields)} columns"
                )
            clean = {k.strip(): (v or "") for k, v in values.items() if k is not None}
            raw_date = clean.get("Date", "")
            rows.append(_Row(line, clean, _parse_ts(raw_date, f"tastytrade-csv:{name}:{line}")))
    except csv.Error as exc:
        raise ImportFormatError(f"{name}:{reader.line_num}: malformed CSV ({exc})") from None
    return rows


def parse_tastytrade_csv(
    source: RawSource,
    instruments: InstrumentTable,
    *,
    account_id: str | None = None,
    opening_positions: Mapping[str, float] | None = None,
    source_name: str | None = None,
) -> ImportBatch:
    """Parse a Tastytrade transaction history CSV (path or bytes) into an :class:`ImportBatch`.

    ``opening_positions`` (contract key -> signed quantity held before the file's first
    row) resolves expirations of positions opened before the export's period.

    Raises
    ------
    ImportFormatError
        For an unknown/missing column (naming it and the file) or a row that cannot be
        normalised (naming ``tastytrade-csv:<file>:<line>``).
    MultiplierMismatchError
        When a row's ``Multiplier`` disagrees with ``config/instruments.yaml``.
    """
    content, name = read_source(source, source_name)
    rows = _read_rows(content, name)
    account = _account(name, account_id)
    ids = _row_ids(rows, ID_PREFIX, IDENTITY_COLUMNS)
    legacy = _row_ids(rows, LEGACY_ID_PREFIX, REQUIRED_COLUMNS)
    parser = _Parser(instruments, name, account, opening_positions or {})
    executions: list[Execution] = []
    flows: list[CashFlow] = []
    # chronological; the export is newest first, so ties keep the later line first
    for row in sorted(rows, key=lambda r: (r.ts, -r.line)):
        where = parser.where(row)
        try:
            kind = classify_tastytrade_transaction(
                row.get("Type"), row.get("Sub Type"), source=where
            )
            if isinstance(kind, ExecutionType):
                executions.append(parser.execution(row, kind.kind, ids[row.line]))
            elif isinstance(kind, CashFlowType):
                flows.append(parser.cash_flow(row, kind.kind, ids[row.line]))
        except (ImportFormatError, MultiplierMismatchError):
            raise
        except DomainError as exc:
            raise ImportFormatError(f"{where}: {exc}") from exc
    batch = ImportBatch(
        broker=BROKER,
        source_name=name,
        sha256=sha256_hex(content),
        executions=tuple(executions),
        cash_flows=tuple(flows),
        aliases={ids[line]: legacy[line] for line in ids},
    )
    logger.info(
        "parsed tastytrade csv file=%s account=%s executions=%s cash_flows=%s",
        name,
        account,
        len(batch.executions),
        len(batch.cash_flows),
    )
    return batch

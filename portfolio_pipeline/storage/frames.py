"""The typed read boundary: stored rows -> validated, typed column frames.

:func:`read_frame` is THE reader of session-partitioned tables.  Given a table it
returns the rows as a :class:`pandas.DataFrame` that was checked against the table's
schema; given a :class:`TableFrame` subclass (``PositionsFrame``, ``ReturnsFrame``, ...)
it returns that typed wrapper, whose columns are numpy arrays of the declared dtype::

    returns = read_frame(db, ReturnsFrame, days)
    returns.nlv            # Float64Array (NaN where the row has NULL)
    returns.on(day).broker  # object array of str

The wrappers stay vectorised (one array per column, no per-row objects).  Every check
names the table and the column, and the row when one value is bad, so a malformed
row stops the read instead of flowing into analytics as NaN or a string.  (This is the
schema of the stored rows; the data-quality expectations of the asset checks are
``defs.quality``'s suites.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, overload

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Boolean, Date, Float, Integer, Numeric, Table, and_, select
from sqlalchemy.sql.elements import ColumnElement

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.quant._typing import BoolArray
from portfolio_pipeline.storage.engine import Database
from portfolio_pipeline.storage.tables import (
    account_snapshot,
    market_snapshot,
    portfolio_greeks,
    portfolio_returns,
    position_greeks,
    positions_snapshot,
)
from portfolio_pipeline.storage.writes import dict_rows

__all__ = [
    "AccountsFrame",
    "MarketFrame",
    "PortfolioGreeksFrame",
    "PositionClose",
    "PositionGreeksFrame",
    "PositionsFrame",
    "ReturnsFrame",
    "StoredDataError",
    "TableFrame",
    "check_schema",
    "read_frame",
]

ObjectArray = npt.NDArray[np.object_]


class StoredDataError(InvalidDataError):
    """A stored row or frame that does not match its table's schema."""


# --------------------------------------------------------------------------- schema checks


def _kind(table: Table, name: str) -> str:
    """'float' | 'int' | 'bool' | 'date' | 'other' -- the storage kind of one column."""
    sql_type = table.c[name].type
    if isinstance(sql_type, Boolean):
        return "bool"
    if isinstance(sql_type, Integer):
        return "int"
    if isinstance(sql_type, Float | Numeric):
        return "float"
    if isinstance(sql_type, Date):
        return "date"
    return "other"


def _bad_row(frame: pd.DataFrame, mask: pd.Series) -> str:
    row = frame[mask].iloc[0]
    keys = [k for k in ("session_date", "broker", "account_id", "position_key", "underlying") if k in frame.columns]
    return ", ".join(f"{k}={row[k]}" for k in keys) or f"row {int(np.flatnonzero(mask.to_numpy())[0])}"


def check_schema(table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` checked against ``table``: every column present, no NULL in a NOT NULL
    column, numbers where the column is numeric and dates where it is a date.

    Raises :class:`StoredDataError` naming the table, the column and the first bad row.
    Vectorised per column; returns ``frame`` itself (values are not converted)."""
    missing = [c for c in list(table.c.keys()) if c not in frame.columns]
    if missing:
        raise StoredDataError(f"table {table.name}: column {missing[0]!r} missing (columns: {list(frame.columns)})")
    if frame.empty:
        return frame
    for name in list(table.c.keys()):
        col = frame[name]
        null = col.isna()
        if not table.c[name].nullable and bool(null.any()):
            raise StoredDataError(f"table {table.name}: column {name!r} is NULL in the row {_bad_row(frame, null)}")
        kind = _kind(table, name)
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if kind in ("float", "int") and not numeric:
            bad = pd.to_numeric(col, errors="coerce").isna() & ~null
            bad |= col.map(lambda v: isinstance(v, bool | str | bytes))
            if bool(bad.any()):
                value = frame.loc[bad, name].iloc[0]
                raise StoredDataError(f"table {table.name}: column {name!r} holds {value!r}, not a number, "
                                      f"in the row {_bad_row(frame, bad)}")
        elif kind == "date":
            bad = ~null & ~col.map(lambda v: isinstance(v, date) and not isinstance(v, datetime))
            if bool(bad.any()):
                value = frame.loc[bad, name].iloc[0]
                raise StoredDataError(f"table {table.name}: column {name!r} holds {value!r}, not a date, "
                                      f"in the row {_bad_row(frame, bad)}")
    return frame


# --------------------------------------------------------------------------- typed frames

T = TypeVar("T", bound=np.generic)


class Column(Generic[T]):
    """A typed column of a :class:`TableFrame`: the attribute name is the table column."""

    dtype: ClassVar[Any] = object

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Column[T]: ...
    @overload
    def __get__(self, obj: TableFrame, owner: type) -> npt.NDArray[T]: ...
    def __get__(self, obj: TableFrame | None, owner: type) -> Column[T] | npt.NDArray[T]:
        if obj is None:
            return self
        return obj.columns[self.name]

    def convert(self, table: Table, values: pd.Series) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = values.to_numpy(dtype=object)
        return out


class FloatColumn(Column[np.float64]):
    """float64; NULL is NaN."""

    def convert(self, table: Table, values: pd.Series) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return out


class BoolColumn(Column[np.bool_]):
    """bool (NOT NULL columns only)."""

    def convert(self, table: Table, values: pd.Series) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = values.astype(bool).to_numpy()
        return out


class TextColumn(Column[np.object_]):
    """str (or None where the column is nullable), as an object array."""


class DateColumn(Column[np.object_]):
    """datetime.date, as an object array."""


_EXPECTED_KIND = {FloatColumn: ("float", "int"), BoolColumn: ("bool",), DateColumn: ("date",), TextColumn: ("other",)}


@dataclass(frozen=True, eq=False)
class TableFrame:
    """Rows of one table as typed numpy columns (one array per declared column).

    Subclasses set ``table`` and declare the columns analytics read as
    :class:`Column` attributes; :meth:`from_frame` checks the whole row set against
    the table (:func:`check_schema`) and converts the declared columns."""

    table: ClassVar[Table]
    frame: pd.DataFrame
    """The validated rows (every column of the table, storage order)."""
    columns: Mapping[str, npt.NDArray[Any]]

    @classmethod
    def declared(cls) -> dict[str, Column[Any]]:
        out: dict[str, Column[Any]] = {}
        for klass in reversed(cls.__mro__):
            out.update({k: v for k, v in vars(klass).items() if isinstance(v, Column)})
        return out

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        for name, col in cls.declared().items():
            if name not in cls.table.c:
                raise TypeError(f"{cls.__name__}: table {cls.table.name} has no column {name!r}")
            if _kind(cls.table, name) not in _EXPECTED_KIND[type(col)]:
                raise TypeError(f"{cls.__name__}.{name}: {type(col).__name__} for a "
                                f"{cls.table.c[name].type} column of {cls.table.name}")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Self:
        """Validate ``frame`` against :attr:`table` and convert the declared columns."""
        check_schema(cls.table, frame)
        frame = frame[list(cls.table.c.keys())].reset_index(drop=True)
        cols = {name: col.convert(cls.table, frame[name]) for name, col in cls.declared().items()}
        return cls(frame, cols)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Self:
        return cls.from_frame(pd.DataFrame([dict(r) for r in rows], columns=list(cls.table.c.keys())))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def empty(self) -> bool:
        return bool(self.frame.empty)

    def select(self, mask: BoolArray) -> Self:
        """The rows where ``mask`` is true (no re-validation: already checked)."""
        return type(self)(self.frame[mask].reset_index(drop=True), {k: v[mask] for k, v in self.columns.items()})

    def on(self, day: date) -> Self:
        """The rows of one session."""
        return self.select(self.frame["session_date"].to_numpy() == day)


class PositionsFrame(TableFrame):
    table = positions_snapshot
    session_date = DateColumn()
    broker = TextColumn()
    account_id = TextColumn()
    position_key = TextColumn()
    underlying = TextColumn()
    sec_type = TextColumn()
    multiplier = FloatColumn()
    quantity = FloatColumn()
    avg_price = FloatColumn()
    mark = FloatColumn()
    market_value = FloatColumn()
    underlying_price = FloatColumn()


class AccountsFrame(TableFrame):
    table = account_snapshot
    session_date = DateColumn()
    broker = TextColumn()
    account_id = TextColumn()
    nlv = FloatColumn()
    cash = FloatColumn()
    init_margin = FloatColumn()
    maint_margin = FloatColumn()
    excess_liquidity = FloatColumn()
    broker_daily_pnl = FloatColumn()


class MarketFrame(TableFrame):
    table = market_snapshot
    session_date = DateColumn()
    instrument_key = TextColumn()
    underlying = TextColumn()
    sec_type = TextColumn()
    mark = FloatColumn()
    bid = FloatColumn()
    ask = FloatColumn()

    def index_close(self, root: str) -> float | None:
        """The positive finite mark of index ``root`` (sec_type IND), else None."""
        hit = np.flatnonzero((self.underlying == root) & (self.sec_type == "IND"))
        if hit.size == 0:
            return None
        value = float(self.mark[hit[0]])
        return value if np.isfinite(value) and value > 0 else None


@dataclass(frozen=True, slots=True)
class PositionClose:
    """One position at a close (a position_greeks row): what its cash and P&L need."""

    underlying: str
    quantity: float
    multiplier: float
    mark: float
    market_value: float


class PositionGreeksFrame(TableFrame):
    table = position_greeks
    session_date = DateColumn()
    broker = TextColumn()
    account_id = TextColumn()
    position_key = TextColumn()
    underlying = TextColumn()
    quantity = FloatColumn()
    multiplier = FloatColumn()
    mark = FloatColumn()
    market_value = FloatColumn()
    spot = FloatColumn()
    vol = FloatColumn()
    vol_source = TextColumn()
    share_delta = FloatColumn()
    gamma_shares = FloatColumn()
    theta_per_day = FloatColumn()
    vega_per_point = FloatColumn()
    vanna_per_point = FloatColumn()
    volga_per_point = FloatColumn()

    def keys(self) -> dict[tuple[str, str, str], int]:
        """(broker, account_id, position_key) -> row index."""
        return {(str(b), str(a), str(k)): i for i, (b, a, k) in enumerate(
            zip(self.broker, self.account_id, self.position_key, strict=True))}

    def close(self, i: int) -> PositionClose:
        return PositionClose(str(self.underlying[i]), float(self.quantity[i]), float(self.multiplier[i]),
                             float(self.mark[i]), float(self.market_value[i]))


class PortfolioGreeksFrame(TableFrame):
    table = portfolio_greeks
    session_date = DateColumn()
    broker = TextColumn()
    account_id = TextColumn()
    underlying = TextColumn()
    beta_weighted_dollar_delta = FloatColumn()
    dollar_gamma_1pct = FloatColumn()
    vega_per_point = FloatColumn()
    theta_per_day = FloatColumn()


class ReturnsFrame(TableFrame):
    table = portfolio_returns
    session_date = DateColumn()
    broker = TextColumn()
    account_id = TextColumn()
    nlv = FloatColumn()
    prev_nlv = FloatColumn()
    external_flow = FloatColumn()
    income = FloatColumn()
    pnl = FloatColumn()
    twr = FloatColumn()
    growth_index = FloatColumn()
    high_water_mark = FloatColumn()
    drawdown = FloatColumn()

    def book(self, all_key: str = "*") -> Self:
        """The consolidated rows (broker and account '*')."""
        return self.select((self.broker == all_key) & (self.account_id == all_key))


# --------------------------------------------------------------------------- the reader

F = TypeVar("F", bound=TableFrame)


class HasDatabase(Protocol):
    """Anything that holds a :class:`Database` (the Dagster ``DatabaseResource``)."""

    @property
    def database(self) -> Database: ...


@overload
def read_frame(database: Database | HasDatabase, source: Table, days: Sequence[date] | None = None, *,
               start: date | None = None, end: date | None = None,
               where: dict[str, Any] | None = None) -> pd.DataFrame: ...
@overload
def read_frame(database: Database | HasDatabase, source: type[F], days: Sequence[date] | None = None, *,
               start: date | None = None, end: date | None = None,
               where: dict[str, Any] | None = None) -> F: ...
def read_frame(
    database: Database | HasDatabase,
    source: Table | type[TableFrame],
    days: Sequence[date] | None = None,
    *,
    start: date | None = None,
    end: date | None = None,
    where: dict[str, Any] | None = None,
) -> pd.DataFrame | TableFrame:
    """Rows of a table for ``days`` (or ``start <= session_date <= end``, and ``where``
    column equalities), in primary-key order, checked against the table's schema.

    ``source`` a :class:`~sqlalchemy.Table`: a validated DataFrame with every column;
    a :class:`TableFrame` subclass: that typed frame.  ``database`` may also be
    anything holding one (the ``DatabaseResource`` of the assets)."""
    if not isinstance(database, Database):
        database = database.database
    table = source if isinstance(source, Table) else source.table
    clauses: list[ColumnElement[bool]] = []
    if days is not None:
        clauses.append(table.c.session_date.in_(list(days)))
    if start is not None:
        clauses.append(table.c.session_date >= start)
    if end is not None:
        clauses.append(table.c.session_date <= end)
    for name, value in (where or {}).items():
        clauses.append(table.c[name] == value)
    stmt = select(table).order_by(*table.primary_key.columns)
    if clauses:
        stmt = stmt.where(and_(*clauses))
    with database.connect() as conn:
        rows = dict_rows(conn.execute(stmt))
    frame = pd.DataFrame(rows, columns=list(table.c.keys()))
    if isinstance(source, Table):
        return check_schema(table, frame)
    return source.from_frame(frame)

"""The stored market history: writes, the no-look-ahead reader the models use, checks.

Storage: the ``market_history`` table (one row per session and symbol, with its
source and fetch time).  A write replaces exactly the (symbol, session range) it
covers, in the caller's transaction; nothing outside the range is touched.

Reading: :class:`StoredHistory` is the view the models take.  It is built for one
``as_of`` session and returns only rows with ``session_date <= as_of`` -- a backfilled
session never sees a later close, however much the table holds.  Its accessors have
the names and index convention of :class:`~portfolio_pipeline.marketdata.history.
MarketHistory` (tz-naive session dates named ``"session"``), so the scenario code takes
either; ``window(symbol)`` names the span and source a model used, for its metadata.

Checks (pure functions on a frame of stored bars, used by the asset checks):
:func:`find_gaps` (an XNYS session without a bar), :func:`find_jumps` (an overnight
log move larger than a threshold: a split or a bad print), :func:`find_stale`
(a close repeated for ``n`` sessions, or the last bar older than the session).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Connection, and_, delete, func, select

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.symbols import VIX, VIX3M
from portfolio_pipeline.marketdata.bars import DailyBar
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.storage.tables import market_history
from portfolio_pipeline.storage.writes import dict_rows

logger = logging.getLogger(__name__)

PROXY_SYMBOLS: dict[str, str] = {"spx": "SPX", "ndx": "NDX", "vix": VIX, "vix3m": VIX3M}
"""Monte Carlo factor proxy -> stored symbol."""


def store_bars(
    conn: Connection, symbol: str, start: date, end: date, bars: Sequence[DailyBar], fetched_at: datetime
) -> int:
    """Replace ``symbol``'s rows on ``start..end`` with ``bars`` (all inside the range).

    Raises :class:`InvalidDataError` (nothing written) for a bar of another symbol, a bar
    outside the range or two bars on one session.
    """
    if fetched_at.tzinfo is None:
        raise InvalidDataError(f"market_history {symbol}: fetched_at must be aware, got {fetched_at!r}")
    seen: set[date] = set()
    rows = []
    for bar in bars:
        if bar.symbol != symbol:
            raise InvalidDataError(f"market_history {symbol}: bar of {bar.symbol} on {bar.session}")
        if not start <= bar.session <= end:
            raise InvalidDataError(
                f"market_history {symbol}: bar {bar.session} outside the requested {start}..{end}"
            )
        if bar.session in seen:
            raise InvalidDataError(f"market_history {symbol}: two bars on {bar.session} ({bar.source})")
        seen.add(bar.session)
        rows.append({
            "session_date": bar.session, "symbol": symbol, "open": bar.open, "high": bar.high,
            "low": bar.low, "close": float(bar.close), "volume": bar.volume, "source": bar.source,
            "fetched_at": fetched_at,
        })
    t = market_history
    conn.execute(delete(t).where(and_(t.c.symbol == symbol, t.c.session_date.between(start, end))))
    if rows:
        conn.execute(t.insert(), rows)
    logger.info("market_history stored symbol=%s range=%s..%s bars=%s", symbol, start, end, len(rows))
    return len(rows)


def stored_span(conn: Connection, symbol: str) -> tuple[date, date, int] | None:
    """(first session, last session, rows) stored for ``symbol``; None when none."""
    t = market_history
    first, last, n = conn.execute(
        select(func.min(t.c.session_date), func.max(t.c.session_date), func.count())
        .where(t.c.symbol == symbol)
    ).one()
    return None if n == 0 else (first, last, int(n))


def read_bars(
    conn: Connection, symbols: Iterable[str], end: date, start: date | None = None
) -> pd.DataFrame:
    """Stored bars of ``symbols`` with ``start <= session_date <= end`` (long format)."""
    t = market_history
    clauses = [t.c.symbol.in_(sorted(set(symbols))), t.c.session_date <= end]
    if start is not None:
        clauses.append(t.c.session_date >= start)
    rows = dict_rows(conn.execute(
        select(t).where(and_(*clauses)).order_by(t.c.symbol, t.c.session_date)
    ))
    return pd.DataFrame(rows, columns=list(t.c.keys()))


def _series(frame: pd.DataFrame, symbol: str, column: str = "close") -> pd.Series:
    part = frame[frame["symbol"] == symbol]
    out = pd.Series(
        part[column].to_numpy(dtype=np.float64),
        index=pd.DatetimeIndex(pd.to_datetime(part["session_date"]), name="session"),
        name=symbol,
    )
    return out.dropna().sort_index()


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """The stored span a model read for one symbol (for its metadata)."""

    symbol: str
    first: date
    last: date
    sessions: int
    sources: tuple[str, ...]

    def describe(self) -> str:
        return (f"{self.symbol} {self.first}..{self.last} ({self.sessions} sessions, "
                f"{'/'.join(self.sources)})")


class StoredHistory:
    """Stored closes up to ``as_of`` (inclusive), with the accessors the models call.

    Parameters
    ----------
    conn : sqlalchemy.Connection
        Read once in the constructor.
    as_of : datetime.date
        The session the model runs for: later rows are never read.
    symbols : iterable of str, optional
        Symbols to load (default: every stored symbol).
    """

    strict_no_look_ahead = True
    """Models must not borrow returns after ``as_of`` when the window is short."""

    def __init__(self, conn: Connection, as_of: date, symbols: Iterable[str] | None = None) -> None:
        t = market_history
        if symbols is None:
            symbols = [r[0] for r in conn.execute(select(t.c.symbol).distinct())]
        self.as_of = as_of
        self._frame = read_bars(conn, symbols, as_of)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(set(self._frame["symbol"])))

    def closes(self, symbol: str) -> pd.Series:
        """Closes of ``symbol`` up to ``as_of``; raises when nothing is stored."""
        out = _series(self._frame, symbol.upper())
        if out.empty:
            raise InvalidDataError(
                f"market_history: no stored closes of {symbol.upper()} up to {self.as_of} "
                "(materialize the market_history asset for this session first)"
            )
        return out

    def closes_frame(self) -> pd.DataFrame:
        """Sessions x symbols closes (NaN where a symbol has no bar)."""
        if self._frame.empty:
            return pd.DataFrame(dtype="float64")
        out = pd.concat({s: _series(self._frame, s) for s in self.symbols}, axis=1)
        out.index.name = "session"
        return out.astype("float64")

    def window(self, symbol: str, start: date | None = None, end: date | None = None) -> HistoryWindow:
        part = self._frame[self._frame["symbol"] == symbol.upper()]
        if start is not None:
            part = part[part["session_date"] >= start]
        if end is not None:
            part = part[part["session_date"] <= end]
        if part.empty:
            raise InvalidDataError(f"market_history: no stored closes of {symbol.upper()} up to {self.as_of}")
        return HistoryWindow(symbol.upper(), part["session_date"].min(), part["session_date"].max(),
                             len(part), tuple(sorted(set(part["source"]))))

    # MarketHistory-compatible accessors (the scenario code calls these)
    def spx_close(self) -> pd.Series:
        return self.closes("SPX").rename("spx_close")

    def ndx_proxy_close(self) -> pd.Series:
        """Stored NDX closes (real NDX from the broker; no proxy is built here)."""
        return self.closes("NDX").rename("ndx_close")

    def vix(self) -> pd.Series:
        return self.closes(VIX).rename("vix")

    def vix3m(self) -> pd.Series:
        return self.closes(VIX3M).rename("vix3m")


# --------------------------------------------------------------------------- checks


def find_gaps(closes: pd.Series, sessions: Sequence[date], symbol: str) -> list[str]:
    """XNYS sessions between the first and last stored bar that have no bar."""
    if closes.empty:
        return [f"{symbol}: no bars stored"]
    have = {d.date() for d in pd.DatetimeIndex(closes.index)}
    first, last = min(have), max(have)
    missing = [d for d in sessions if first <= d <= last and d not in have]
    if not missing:
        return []
    shown = ", ".join(str(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return [f"{symbol}: {len(missing)} XNYS session(s) without a bar: {shown}"]


def find_jumps(closes: pd.Series, symbol: str, threshold: float) -> list[str]:
    """Overnight moves with ``|ln(C_t / C_{t-1})| > threshold`` (splits, bad prints)."""
    if len(closes) < 2:
        return []
    logret = np.log(closes.to_numpy(dtype=np.float64))
    moves = np.diff(logret)
    out = []
    for i in np.flatnonzero(np.abs(moves) > threshold):
        day = pd.Timestamp(closes.index[i + 1]).date()
        prev = float(closes.iloc[i])
        now = float(closes.iloc[i + 1])
        out.append(f"{symbol} {day}: close {prev:g} -> {now:g} ({math.expm1(moves[i]):+.1%}); "
                   "split or bad print?")
    return out


def find_stale(closes: pd.Series, symbol: str, session: date, repeats: int) -> list[str]:
    """The last bar is older than ``session``, or the last ``repeats`` closes are equal."""
    if closes.empty:
        return [f"{symbol}: no bars stored"]
    out = []
    last = pd.Timestamp(closes.index[-1]).date()
    if last < session:
        out.append(f"{symbol}: last close is {last}, older than session {session}")
    tail = closes.to_numpy(dtype=np.float64)[-repeats:]
    if repeats > 1 and len(tail) == repeats and np.all(tail == tail[0]):
        out.append(f"{symbol}: close {tail[0]:g} unchanged for the last {repeats} sessions up to {last}")
    return out


class PublishedThenStored(MarketHistory):
    """The shipped published history, continued by the stored broker closes after its end.

    For the historical replays of a live book: the built-in crisis windows (2008, 2018,
    2020) keep their published/anchored data, and a configured window after the shipped
    data (which ends 2018-12-31 for the S&P 500, 2019-01-03 for the VIX) reads the
    broker closes stored up to ``stored.as_of``.  The two never overlap: a stored close
    is used only after the last published one, so no day mixes sources.
    """

    def __init__(self, stored: StoredHistory) -> None:
        super().__init__()
        self._stored = stored

    def _continued(self, published: pd.Series, symbol: str) -> pd.Series:
        if symbol not in self._stored.symbols:
            return published
        later = self._stored.closes(symbol)
        later = later[later.index > published.index.max()]
        out = pd.concat([published, later.astype("float64")]).rename(published.name)
        out.index.name = "session"
        return out

    def spx_close(self) -> pd.Series:
        return self._continued(super().spx_close(), "SPX")

    def vix(self) -> pd.Series:
        return self._continued(super().vix(), VIX)

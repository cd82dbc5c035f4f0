"""The ``market_history`` asset: daily bars per session from the configured broker.

Symbols: every underlying of the session's book (``positions_snapshot``; futures roots
behind futures options included) plus SPX, VIX and VIX3M.  Per symbol:

* nothing stored yet: **backfill once** ``depth_years`` (default 5, capped at what the
  source serves) before the run's first session, up to the run's last session;
* else **extend** from the session after the last stored bar to the run's last session and,
  when the run goes back before the stored bars (a backfill of earlier sessions, or a later
  chunk of a chunked backfill that ran first), also fetch the missing ``depth_years`` before
  the run's first session.  So every session has ``depth_years`` of history before it, and
  the stored bars are the same whether a range ran as one run or as chunks in any order.

The source is the first configured non-demo broker (IBKR ``reqHistoricalData``, or
Tastytrade DXLink candles), else the demo's shipped data -- all through
:class:`~portfolio_pipeline.marketdata.bars.HistorySource`.  Each bar is stored with its
source; nothing is filled.  A symbol the broker cannot serve (no subscription) is
reported in the metadata and the checks, never guessed.  Readers bound every read by
the session (:class:`~portfolio_pipeline.marketdata.store.StoredHistory`).
"""


import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from sqlalchemy import select

from portfolio_pipeline.brokers.base import BrokerAdapter
from portfolio_pipeline.clock import system_clock
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.marketdata import checks
from portfolio_pipeline.defs.metadata import SessionMetadata
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.marketdata.bars import (
    INDEX_SYMBOLS,
    HistoryAnswer,
    HistorySource,
    HistoryUnavailableError,
)
from portfolio_pipeline.marketdata.store import PROXY_SYMBOLS, read_bars, store_bars, stored_span
from portfolio_pipeline.quant.scenario_config import StressScenariosFile
from portfolio_pipeline.storage import positions_snapshot

GROUP = "marketdata"


class MarketHistoryConfig(dg.Config):
    """Depth of the first backfill and the check thresholds."""

    depth_years: float = 5.0
    """History fetched on first use (capped at what the broker serves)."""
    jump_threshold: float = 0.25
    """|ln(close_t / close_t-1)| above which an overnight move is flagged (split?)."""
    stale_repeats: int = 5
    """The same close this many sessions in a row is flagged as stale."""


def history_source(adapter: BrokerAdapter | None, instruments: InstrumentTable) -> HistorySource:
    """The :class:`HistorySource` over one connected adapter (None: the demo's data)."""
    if adapter is not None and adapter.name == "ibkr":
        from portfolio_pipeline.brokers.ibkr.adapter import IbkrBroker
        from portfolio_pipeline.brokers.ibkr.history_source import IbkrHistorySource

        assert isinstance(adapter, IbkrBroker)
        return IbkrHistorySource(adapter, instruments)
    if adapter is not None and adapter.name == "tastytrade":
        from portfolio_pipeline.brokers.tastytrade.adapter import TastytradeAdapter
        from portfolio_pipeline.brokers.tastytrade.history_source import TastytradeHistorySource

        assert isinstance(adapter, TastytradeAdapter)
        return TastytradeHistorySource(adapter._require_session(), instruments)
    from portfolio_pipeline.brokers.demo.history_source import DemoHistorySource

    return DemoHistorySource()


def book_symbols(db: DatabaseResource, days: list[date], stress: StressScenariosFile | None = None) -> list[str]:
    """Underlyings of the sessions' books plus :data:`INDEX_SYMBOLS`, plus the Monte Carlo
    proxy index of each underlying (``stress_scenarios.yaml``: QQQ moves with NDX), sorted."""
    t = positions_snapshot
    with db.database.connect() as conn:
        found = {r[0].upper() for r in conn.execute(
            select(t.c.underlying).where(t.c.session_date.in_(days)).distinct())}
    proxies = {PROXY_SYMBOLS[stress.underlying(u).proxy] for u in found} if stress is not None else set()
    return sorted(found | proxies | set(INDEX_SYMBOLS))


def fetch_end(last_day: date, last_completed: date) -> date:
    """Last session to fetch: the run's last session, but never one that has not closed
    (an intraday bar is not a close; the freshness check then names the missing close)."""
    return min(last_day, last_completed)


def plan(
    span: tuple[date, date, int] | None, first_day: date, end: date, depth_years: float,
    has_session: Callable[[date, date], bool] | None = None,
) -> list[tuple[date, date]]:
    """The ranges to fetch for one symbol (module docstring): none when up to date.

    ``has_session(a, b)``: whether the exchange traded on ``[a, b]`` (default: assume so);
    a missing prefix of weekends and holidays only is not asked for."""
    want = first_day - timedelta(days=round(depth_years * 365.25))
    if span is None:
        return [(want, end)]
    first, last = span[0], span[1]
    ranges = []
    prefix = (want, first - timedelta(days=1))
    if want < first and first_day <= last and (has_session is None or has_session(*prefix)):
        ranges.append(prefix)  # a run reaching back before the stored bars
    if last < end:
        ranges.append((last + timedelta(days=1), end))
    return ranges


async def fetch_all(
    source: HistorySource, wanted: list[tuple[str, tuple[date, date]]]
) -> tuple[list[HistoryAnswer], dict[str, str]]:
    """Ask the source for every range in turn (the source paces); unavailable symbols apart."""
    answers: list[HistoryAnswer] = []
    unavailable: dict[str, str] = {}
    for symbol, (start, end) in wanted:
        if symbol in unavailable:
            continue
        try:
            answers.append(await source.daily_bars(symbol, start, end))
        except HistoryUnavailableError as exc:
            unavailable[symbol] = str(exc)
    return answers, unavailable


def _fetch_history(db: DatabaseResource, platform: PlatformResource, config: MarketHistoryConfig,
                   symbols: list[str], first_day: date,
                   end: date) -> tuple[str, float, list[HistoryAnswer], dict[str, str]]:
    """Source name, depth (years), answers and unavailable symbols of the configured broker's
    history (the first live broker; the demo's shipped data when there is none)."""
    live = [a for a, _ in platform._brokers() if a.name != "demo"]
    adapter = live[0] if live else None
    instruments = platform.config.instruments

    calendar = platform.calendar

    def has_session(start: date, stop: date) -> bool:
        return start < calendar.start or bool(calendar.sessions(start, stop))

    def wanted(depth: float) -> list[tuple[str, tuple[date, date]]]:
        with db.database.connect() as conn:
            return [(s, r) for s in symbols
                    for r in plan(stored_span(conn, s), first_day, end, depth, has_session)]

    async def run() -> tuple[str, float, list[HistoryAnswer], dict[str, str]]:
        if adapter is None:
            source = history_source(None, instruments)
            depth = min(config.depth_years, source.max_years())
            return source.name, depth, *await fetch_all(source, wanted(depth))
        async with adapter:
            source = history_source(adapter, instruments)
            depth = min(config.depth_years, source.max_years())
            return source.name, depth, *await fetch_all(source, wanted(depth))

    return asyncio.run(run())


def market_history(
    context: dg.AssetExecutionContext, config: MarketHistoryConfig, db: DatabaseResource,
    platform: PlatformResource,
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    meta = SessionMetadata(context)
    days = meta.days
    end = fetch_end(days[-1], platform.calendar.last_completed_session(system_clock()))
    symbols = book_symbols(db, days, platform.config.stress_scenarios)
    instruments = platform.config.instruments
    name, depth, answers, unavailable = _fetch_history(db, platform, config, symbols, min(days[0], end), end)
    fetched_at = datetime.now(UTC)
    with db.database.begin() as conn:
        stored = [store_bars(conn, a.symbol, a.start, a.end, a.bars, fetched_at) for a in answers]
    notes = [n for a in answers for n in a.notes] + list(unavailable.values())
    for note in notes:
        context.log.warning("market_history: %s", note)
    with db.database.connect() as conn:
        frame = read_bars(conn, symbols, end)
    sessions = platform.calendar.sessions(min(frame["session_date"]), end) if not frame.empty else []
    for day in days:
        upto = frame[frame["session_date"] <= day]
        meta.record(day, checks.MARKET_HISTORY, {
            "symbols": len(symbols),
            "source": name,
            **{f"sessions_{s}": int((upto["symbol"] == s).sum()) for s in symbols},
        })
    yield dg.MaterializeResult(
        asset_key=checks.MARKET_HISTORY,
        metadata={**meta.output_metadata(checks.MARKET_HISTORY),
                  "depth_years": dg.MetadataValue.float(depth),
                  "bars_stored": dg.MetadataValue.int(sum(stored)),
                  "unavailable": dg.MetadataValue.text(", ".join(sorted(unavailable)) or "none"),
                  "notes": dg.MetadataValue.text("; ".join(notes) or "none")},
    )
    yield from checks.history_check_results(
        frame, symbols, sessions, days[-1],
        jump_threshold=config.jump_threshold, stale_repeats=config.stale_repeats,
        jump_exempt=frozenset(s for s in symbols if s in set(instruments)
                              and instruments.spec(s).underlying_type == "volatility_index"),
    )


def make_market_history_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The market_history asset on ``partitions`` (session partitions; tests pass a short range)."""
    return dg.asset(
        name="market_history",
        description="Daily bars (OHLC/close) of every underlying in the book plus SPX, VIX, "
        "VIX3M from the configured broker (demo: its shipped data), backfilled once then "
        "extended each session; stored with their source, never filled.",
        partitions_def=partitions,
        backfill_policy=session_backfill_policy(),
        group_name=GROUP,
        deps=[dg.AssetKey("positions_snapshot")],
        check_specs=checks.HISTORY_CHECKS,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
        kinds={"sql"},
    )(market_history)

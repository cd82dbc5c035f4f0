"""Dagster resources: the database, the configuration and the brokers.

The environment (demo / paper / live) is chosen in one place: ``config/accounts.yaml``
(which brokers and accounts) plus ``PORTFOLIO_DB_URL`` (which database).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Hashable
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from portfolio_pipeline.brokers.base import BrokerAdapter
from portfolio_pipeline.brokers.chain import (
    ChainSnapshot,
    ChainWindow,
    chain_source,
    collect_chains,
)
from portfolio_pipeline.brokers.factory import AS_OF_CAPABLE, adapters_for
from portfolio_pipeline.brokers.history.store import HistoryStore
from portfolio_pipeline.brokers.snapshot import BookSnapshot, collect_snapshot
from portfolio_pipeline.clock import SettableClock, system_clock
from portfolio_pipeline.config import PlatformConfig, load_platform_config
from portfolio_pipeline.domain.accounts import AccountConfig
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.paths import config_dir
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.history import SqlHistoryStore


class DatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The platform database (one engine per process, schema migrated on first use)."""

    url: str | None = None
    """A database URL; None uses PORTFOLIO_DB_URL or the SQLite file under PORTFOLIO_HOME."""

    _db: Database | None = PrivateAttr(default=None)

    @property
    def database(self) -> Database:
        if self._db is None:
            self._db = Database(self.url)
            self._db.migrate()
        return self._db

    @property
    def history(self) -> HistoryStore:
        """Imported trade history (the store ``brokers.history`` declares) on this database."""
        return SqlHistoryStore(self.database)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._db is not None:
            self._db.dispose()
            self._db = None


class PlatformResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Validated configuration, the exchange calendar and the broker adapters."""

    config_dir: str | None = None
    """Configuration directory; None uses PORTFOLIO_CONFIG_DIR or the checkout's config/."""

    demo_only: bool = False
    """Use only the demo accounts of the configuration (a default one if it has none)."""

    _config: PlatformConfig | None = PrivateAttr(default=None)
    _calendar: ExchangeCalendar | None = PrivateAttr(default=None)
    _clock: SettableClock | None = PrivateAttr(default=None)
    _adapters: list[tuple[BrokerAdapter, list[str]]] | None = PrivateAttr(default=None)
    _run_memo: tuple[str, dict[Hashable, Any]] | None = PrivateAttr(default=None)

    def run_memo(self, run_id: str) -> dict[Hashable, Any]:
        """A dict that lives for one run: the steps of an in-process run share it, a new run id
        starts it empty (a step in its own process gets its own).  Only for values every step
        of the run derives alike from rows that upstream steps stored before it started (the
        stress assets' session book), never for anything a step of the run writes."""
        if self._run_memo is None or self._run_memo[0] != run_id:
            self._run_memo = (run_id, {})
        return self._run_memo[1]

    @property
    def config(self) -> PlatformConfig:
        if self._config is None:
            directory = Path(self.config_dir) if self.config_dir else config_dir()
            self._config = load_platform_config(directory)
        return self._config

    @property
    def calendar(self) -> ExchangeCalendar:
        if self._calendar is None:
            self._calendar = ExchangeCalendar()
        return self._calendar

    def _brokers(self) -> list[tuple[BrokerAdapter, list[str]]]:
        """The adapters for one ``asyncio.run``: the demo broker's are cached (its market model
        is costly and loop-free); live adapters (IBKR, Tastytrade) hold connections and
        asyncio objects bound to one event loop, so every call (every retry) builds fresh ones."""
        if self._clock is None:
            self._clock = SettableClock(system_clock())
        accounts = self._accounts()
        if self._adapters is None:
            cached = [a for a in accounts if a.broker in AS_OF_CAPABLE]
            self._adapters = adapters_for(cached, self.config.instruments, self._clock) if cached else []
        live = [a for a in accounts if a.broker not in AS_OF_CAPABLE]
        fresh = adapters_for(live, self.config.instruments, self._clock) if live else []
        return [*self._adapters, *fresh]

    def _accounts(self) -> list[AccountConfig]:
        accounts = list(self.config.accounts.book())
        if not self.demo_only:
            return accounts
        demo = [a for a in accounts if a.broker == "demo"]
        return demo or [AccountConfig(name="demo", broker="demo", account_id="DEMO-001")]

    def check_as_of(self, session: date) -> None:
        """Raise unless every configured broker can report the book as of ``session``."""
        live = sorted({a.broker for a in self._accounts()} - AS_OF_CAPABLE)
        if not live:
            return
        latest = self.calendar.last_completed_session(system_clock())
        current = self.calendar.session_on_or_before(system_clock().date())
        if session not in (latest, current):
            raise ValueError(
                f"brokers {', '.join(live)} report only the current book: cannot snapshot "
                f"session {session} (latest completed session is {latest}); backfill past "
                "sessions from imported history instead"
            )

    def activity(self, start: date, end: date) -> tuple[list[CashFlow], list[Execution]]:
        """Cash flows and executions of every configured account since ``start`` (inclusive),
        as the brokers report them at the close of session ``end`` (used by the returns and
        attribution assets; the caller assigns them to sessions)."""
        adapters = self._brokers()
        assert self._clock is not None
        self._clock.set(min(self.calendar.session_close(end) + timedelta(minutes=1), system_clock()))

        async def collect() -> tuple[list[CashFlow], list[Execution]]:
            flows: list[CashFlow] = []
            fills: list[Execution] = []
            for adapter, account_ids in adapters:
                async with adapter:
                    for account_id in account_ids:
                        flows.extend(await adapter.cash_flows(account_id, start))
                        fills.extend(await adapter.executions(account_id, start))
            return flows, fills

        return asyncio.run(collect())

    def snapshot(self, session: date) -> BookSnapshot:
        """The book at the close of ``session`` (the demo broker replays history)."""
        self.check_as_of(session)
        adapters = self._brokers()
        assert self._clock is not None
        as_of = self.calendar.session_close(session) + timedelta(minutes=1)
        self._clock.set(min(as_of, system_clock()))
        return asyncio.run(collect_snapshot(adapters, self._clock(), self.config.instruments))

    def chain_snapshots(
        self, session: date, underlyings: list[str], window: ChainWindow
    ) -> tuple[list[ChainSnapshot], list[str]]:
        """Option chains at the close of ``session`` (the demo simulates any past session; a
        live broker serves only the current chain) and notes on what is missing."""
        adapters = [a for a, _ in self._brokers()]
        source = chain_source(adapters)
        if source is None:
            return [], ["no configured broker snapshots option chains"]
        if source.name not in AS_OF_CAPABLE:
            latest = self.calendar.last_completed_session(system_clock())
            if session not in (latest, self.calendar.session_on_or_before(system_clock().date())):
                return [], [f"{source.name} serves only the current chain: none for past session {session}"]
        assert self._clock is not None
        self._clock.set(min(self.calendar.session_close(session) + timedelta(minutes=1), system_clock()))
        snapshots, notes = asyncio.run(collect_chains(source, underlyings, window))
        pricing = self.config.pricing
        return [s if math.isfinite(s.rate) and math.isfinite(s.dividend_yield) else replace(
            s, rate=pricing.rate_on(session), dividend_yield=pricing.dividend_yield(s.underlying))
            for s in snapshots], notes

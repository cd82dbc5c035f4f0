"""``portfolio-stream``: the streaming service process.

    portfolio-stream --broker demo --health-port 8765 [--speed 600] [--session 2018-02-05]
    portfolio-stream --broker ibkr|tastytrade --health-port 8765

Live brokers: the adapter is built from ``config/accounts.yaml`` (every account of that
broker) and polled by :class:`~streaming_service.feeds.broker.BrokerFeed` (quotes every
second, positions every minute; fills rebuild the engine).

Configuration comes from the platform config directory (``PORTFOLIO_CONFIG_DIR`` or the
checkout's ``config/``; ``streaming.yaml`` optional) and the database from
``PORTFOLIO_DB_URL`` / ``PORTFOLIO_HOME`` exactly as for the pipeline.  Logs are JSON
lines on stderr (``PORTFOLIO_LOG_FORMAT=text``: plain lines).  SIGTERM/SIGINT stop the feed, flush the event queue (to the database
or the on-disk buffer) and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import click

from portfolio_pipeline.brokers.base import BrokerAdapter, BrokerDataError, BrokerError, OrderBroker
from portfolio_pipeline.cli_errors import CliError, ReportingCommand
from portfolio_pipeline.cli_types import FiniteFloat, SafePath, SessionDate
from portfolio_pipeline.clock import SettableClock, system_clock
from portfolio_pipeline.config import PlatformConfig, load_platform_config
from portfolio_pipeline.domain.accounts import AccountConfig, account_limits
from portfolio_pipeline.domain.orders import Order
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.log_setup import LogFormatError, configure_logging
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.paths import buffer_dir, config_dir, make_state_private
from portfolio_pipeline.storage import Database
from streaming_service.buffer import (
    DatabaseEventStore,
    DiskBuffer,
    EventWriter,
    is_connectivity_error,
)
from streaming_service.feeds.base import Feed
from streaming_service.feeds.broker import BrokerFeed
from streaming_service.health import HealthServer
from streaming_service.pending import PendingProposals
from streaming_service.service import StreamingService
from streaming_service.staging import HedgeDesk

__all__ = ["build_service", "main"]

logger = logging.getLogger("streaming_service")


def _setup_logging(level: int) -> None:
    """JSON lines on stderr unless ``PORTFOLIO_LOG_FORMAT=text`` (portfolio_pipeline/log_setup.py)."""
    try:
        configure_logging(level, default="json")
    except LogFormatError as exc:
        raise CliError(str(exc)) from None


def _account(config: PlatformConfig, broker: str) -> AccountConfig:
    for a in config.accounts.book():
        if a.broker == broker:
            return a
    if broker == "demo":
        return AccountConfig(name="demo", broker="demo", account_id="DEMO-001")
    raise click.UsageError(f"no {broker} account in {config.directory / 'accounts.yaml'}")


def build_service(
    *,
    config: PlatformConfig,
    db: Database,
    broker_name: str,
    speed: float | None,
    session: date | None,
    buffer_directory: Path,
    migrate_first: bool = False,
) -> tuple[StreamingService, BrokerAdapter]:
    """Wire feed, engine, writer, hedge desk for one broker account."""
    settings = config.streaming
    pricing = config.pricing
    account = _account(config, broker_name)
    live: BrokerFeed | None = None
    broker: BrokerAdapter
    feed: Feed
    if broker_name == "demo":
        from portfolio_pipeline.brokers.demo import DemoBroker
        from portfolio_pipeline.marketdata.history import MarketHistory
        from streaming_service.feeds.demo import DemoFeed

        replay = session or date.fromisoformat(settings.feed.demo_session)
        clock = SettableClock(datetime(replay.year, replay.month, replay.day, 14, 30, tzinfo=UTC))
        history = MarketHistory()
        seed = account.demo.seed if account.demo is not None else 7
        demo_accounts = [a for a in config.accounts.book() if a.broker == "demo"] or [account]
        broker = DemoBroker(
            config.instruments, clock=clock, history=history,
            books={a.account_id: (a.demo.book, a.demo.seed) if a.demo is not None else ("index", 7)
                   for a in demo_accounts},
        )
        feed = DemoFeed(
            broker, [a.account_id for a in demo_accounts], history, replay, speed=speed,
            tick_seconds=settings.feed.demo_tick_seconds, seed=seed, clock=clock,
        )
    else:  # live: the broker's accounts from accounts.yaml, polled by BrokerFeed (never orders)
        from portfolio_pipeline.brokers.factory import make_adapter

        accounts = [a for a in config.accounts.book() if a.broker == broker_name]
        broker = make_adapter(account.broker, accounts, config.instruments, system_clock)
        feed = live = BrokerFeed(broker, [a.account_id for a in accounts], config.instruments)
        replay = system_clock().date()
    writer = EventWriter(
        DatabaseEventStore(db, migrate_first=migrate_first),
        DiskBuffer(buffer_directory, max_events=settings.buffer.max_events),
        batch_size=settings.buffer.batch_size, flush_interval=settings.buffer.flush_interval_seconds,
        retry_seconds=settings.buffer.retry_seconds,
    )
    store = OrderStore(db)

    if broker_name == "ibkr":
        # orders on the designated order client id (shared with the CLI, one locked
        # connection per operation), never on the data connection's id
        from portfolio_pipeline.orders.routing import order_broker_for
        from portfolio_pipeline.paths import portfolio_home

        broker_for: Callable[[Order], OrderBroker] = order_broker_for(config, lock_dir=portfolio_home() / "run")
    else:
        def broker_for(order: Order) -> OrderBroker:
            return broker

    commands = OrderCommands(store, broker_for, clock=system_clock)
    desk = HedgeDesk(
        broker=broker, account_id=account.account_id, store=store, commands=commands,
        instruments=config.instruments, hedge=settings.hedge, staging=settings.staging, submit=writer.submit,
        pending=PendingProposals(buffer_directory), regimes=RegimeService(config.risk_matrix),
    )
    roots = ("SPX", "NDX", "SPY", "QQQ", "RUT", "IWM", "XSP")
    regimes = RegimeService(config.risk_matrix)
    betas = {r: pricing.beta_override(r) or pricing.beta.fallback for r in roots}
    service = StreamingService(
        feed=feed, writer=writer, instruments=config.instruments,
        regimes=regimes, settings=settings, account_id=account.account_id,
        account_limits={a.account_id: partial(account_limits, regimes, a) for a in config.accounts.book()
                        if a.broker == broker_name},
        desk=desk, rate=pricing.rate_on(replay), dividend_yields={r: pricing.dividend_yield(r) for r in roots},
        betas=betas,
    )
    if live is not None:
        live.on_book_change = service.start_engine  # fills -> the engine is rebuilt
    return service, broker


#: Seconds a stop request (SIGTERM/SIGINT) waits for a clean flush before cancelling.
SHUTDOWN_SECONDS = 6.0


def _migrate_or_defer(db: Database) -> bool:
    """Migrate now; with the database down, start anyway (events and proposals are
    buffered on disk, the schema is migrated on the first successful write)."""
    try:
        db.migrate()
    except Exception as exc:
        if not is_connectivity_error(exc):
            raise
        logger.error("database unavailable at start; buffering to disk, migrating when it returns error=%s",
                     type(exc).__name__)
        return False
    return True


async def _run(service: StreamingService, health_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = HealthServer(service.health, service.metrics_text, health_port)
    await server.start()
    runner = asyncio.create_task(service.run(stop))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() and not runner.done():
            logger.info("shutdown requested; flushing events")
            # the service flushes and returns; whatever still blocks (a broker that does not
            # answer) is cancelled so the process stops within SHUTDOWN_SECONDS
            done, _ = await asyncio.wait({runner}, timeout=SHUTDOWN_SECONDS)
            if not done:
                logger.warning("service did not stop in %.0fs; cancelling", SHUTDOWN_SECONDS)
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                return
        await runner
    finally:
        stopper.cancel()
        await server.close()


async def _run_live(service: StreamingService, broker: BrokerAdapter, health_port: int) -> None:
    stop = asyncio.Event()
    reconciler = (
        asyncio.create_task(service.desk.reconcile_forever(stop), name="order-reconciler")
        if service.desk is not None else None
    )
    try:
        await _run(service, health_port)
    finally:
        stop.set()
        if reconciler is not None:
            await asyncio.gather(reconciler, return_exceptions=True)
        await broker.close()


@click.command(cls=ReportingCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--broker", "broker_name", type=click.Choice(["demo", "ibkr", "tastytrade"]), default="demo",
              show_default=True)
@click.option("--health-port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port of /health and /metrics on 127.0.0.1 (0 = any free port).")
@click.option("--speed", type=FiniteFloat(0, 1e6, min_open=True), default=None,
              help="Demo replay: market seconds per wall second (default from streaming.yaml).")
@click.option("--session", "session", type=SessionDate(), default=None,
              help="Demo replay: the session to replay (default from streaming.yaml).")
@click.option("--config-dir", "config_dir_opt", type=SafePath(path_type=Path, file_okay=False), default=None)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(broker_name: str, health_port: int, speed: float | None, session: date | None,
         config_dir_opt: Path | None = None, verbose: bool = False, **_: Any) -> None:
    """Live risk, breach events and hedge proposals (never transmits an order)."""
    _setup_logging(logging.DEBUG if verbose else logging.INFO)
    previous_umask = make_state_private()  # PORTFOLIO_HOME 0700, files 0600, children too
    click.get_current_context().call_on_close(lambda: os.umask(previous_umask))
    config = load_platform_config(config_dir_opt or config_dir())
    settings = config.streaming
    with Database() as db:
        migrated = _migrate_or_defer(db)
        service, broker = build_service(
            config=config, db=db, broker_name=broker_name,
            speed=speed if speed is not None else settings.feed.demo_speed,
            session=session, buffer_directory=buffer_dir(), migrate_first=not migrated,
        )
        try:
            if broker_name == "demo":
                asyncio.run(_run(service, health_port))
            else:
                asyncio.run(_run_live(service, broker, health_port))
        except (BrokerError, BrokerDataError) as exc:
            # the root cause in one line (e.g. wrong port, account not managed), no traceback
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

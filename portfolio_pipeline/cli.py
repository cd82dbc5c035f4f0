"""The ``portfolio`` command."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import click

from portfolio_pipeline.cli_errors import CliError, ReportingGroup
from portfolio_pipeline.cli_types import SafePath, SessionDate, existing_file
from portfolio_pipeline.log_setup import PLATFORM_LOGGERS, LogFormatError, configure_logging
from portfolio_pipeline.paths import config_dir, make_state_private, portfolio_home, repo_root

logger = logging.getLogger("portfolio")

DEMO_START = date(2017, 7, 3)
DEMO_END = date(2018, 6, 29)  # the same window as demo_window.DEMO_START/DEMO_END (a test keeps them equal)


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """Options portfolio risk platform."""
    # Dagster flags its own beta/preview parameters (used inside its decorators) on every
    # import; they say nothing about this project, so the CLI keeps them off the console.
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")
    # -v: the platform's own steps at INFO; third-party libraries (dagster, alembic, arch,
    # httpx ...) stay at WARNING either way.
    # PORTFOLIO_LOG_FORMAT=json: one JSON object per line (portfolio_pipeline/log_setup.py)
    try:
        configure_logging(logging.WARNING)
    except LogFormatError as exc:
        raise CliError(str(exc)) from None
    for name in PLATFORM_LOGGERS:  # NOTSET: inherit the root's WARNING
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.NOTSET)
    previous_umask = make_state_private()  # PORTFOLIO_HOME 0700, files 0600, children too
    click.get_current_context().call_on_close(lambda: os.umask(previous_umask))


def _show_progress() -> None:
    """Per-session progress with an ETA (defs/progress.py) on stderr, for long runs."""
    from portfolio_pipeline.defs.progress import PROGRESS_LOGGER
    from portfolio_pipeline.log_setup import formatter, log_format

    progress = logging.getLogger(PROGRESS_LOGGER)
    for old in [h for h in progress.handlers if getattr(h, "portfolio_progress", False)]:
        progress.removeHandler(old)  # an earlier command's stream
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format(), "  %(message)s"))
    handler.portfolio_progress = True  # type: ignore[attr-defined]
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False


# --- config -------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Validate configuration."""


@config.command("check")
@click.argument("directory", required=False, type=SafePath(path_type=Path))
def config_check(directory: Path | None) -> None:
    """Validate every YAML file of DIRECTORY (default: the active config directory)."""
    from portfolio_pipeline.config import check_config_dir

    problems, summary = check_config_dir(directory or config_dir())
    for problem in problems:
        click.echo(str(problem), err=True)
    click.echo(summary, err=bool(problems))
    sys.exit(1 if problems else 0)


# --- database ---------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("migrate")
def db_migrate() -> None:
    """Create or upgrade the platform tables (idempotent)."""
    from portfolio_pipeline.storage import Database

    with Database() as database:
        database.migrate()
        click.echo(f"schema up to date: {database.url_for_display}")


# --- history import -------------------------------------------------------------


@main.group("import")
def import_() -> None:
    """Import trade history files (executions and cash flows), idempotently."""


def _store_batch(batch: object) -> None:
    from portfolio_pipeline.brokers.history import ImportBatch
    from portfolio_pipeline.storage import Database
    from portfolio_pipeline.storage.history import SqlHistoryStore

    assert isinstance(batch, ImportBatch)
    with Database() as database:
        database.migrate()
        summary = SqlHistoryStore(database).import_history(batch)
    state = "already imported, nothing changed" if summary.already_imported else "imported"
    click.echo(
        f"{summary.source_name}: {state}: executions {summary.executions_new}/"
        f"{summary.executions_in_file} new, cash flows {summary.cash_flows_new}/"
        f"{summary.cash_flows_in_file} new"
    )


def _known_file(path: Path) -> bool:
    """True (and says so) when a file with the same content was imported before."""
    from portfolio_pipeline.brokers.history.model import read_source, sha256_hex
    from portfolio_pipeline.storage import Database
    from portfolio_pipeline.storage.history import SqlHistoryStore

    content, name = read_source(path)
    with Database() as database:
        database.migrate()
        batch_id = SqlHistoryStore(database).imported_batch_id(sha256_hex(content))
    if batch_id is not None:
        click.echo(f"{name}: already imported, nothing changed (identical file, batch {batch_id})")
    return batch_id is not None


@import_.command("ibkr-flex")
@click.argument("path", type=existing_file())
@click.option("--tz", default="America/New_York", show_default=True,
              help="Time zone of the statement's timestamps when they carry none.")
def import_ibkr_flex(path: Path, tz: str) -> None:
    """Import an IBKR Flex Query XML statement."""
    from portfolio_pipeline.brokers.history import parse_ibkr_flex
    from portfolio_pipeline.config import load_platform_config

    if _known_file(path):
        return
    _store_batch(parse_ibkr_flex(path, load_platform_config(config_dir()).instruments, tz=tz))


@import_.command("tastytrade-csv")
@click.argument("path", type=existing_file())
@click.option("--account", "account_id", default=None,
              help="Account id (default: taken from the export's file name).")
def import_tastytrade_csv(path: Path, account_id: str | None) -> None:
    """Import a Tastytrade transaction history CSV export."""
    from portfolio_pipeline.brokers.history import parse_tastytrade_csv
    from portfolio_pipeline.config import load_platform_config

    if _known_file(path):
        return
    instruments = load_platform_config(config_dir()).instruments
    _store_batch(parse_tastytrade_csv(path, instruments, account_id=account_id))


# --- pipeline ---------------------------------------------------------------------


def _run_sessions(
    first: date, last: date, *, demo: bool, job_name: str = "eod_job", causes: list[str] | None = None
) -> tuple[bool, str]:
    """Materialize ``job_name`` (the EOD job) over [first, last] as one single-run backfill
    (``PORTFOLIO_BACKFILL_CHUNK=K``: runs of at most K sessions, in order; the executor from
    ``PORTFOLIO_EXECUTOR``: ``celery`` sends the steps to the workers, else in this process).

    ``causes`` (if given) receives the root cause of each failed step, one line each."""
    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.dagster_home import (
        SqliteRunStorageTuning,
        batched_event_writes,
        prepare_dagster_home,
    )
    from portfolio_pipeline.priority import eod_niceness, lower_priority
    from portfolio_pipeline.storage import Database

    try:
        niceness = eod_niceness(os.environ)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    lower_priority(niceness)  # the live monitor keeps the CPU it needs while the run computes
    load_platform_config(config_dir())  # a broken config fails here, before any Dagster run
    from portfolio_pipeline.defs.execution import backfill_chunk, chunks, execution_settings

    try:  # PORTFOLIO_EXECUTOR, PORTFOLIO_CELERY_*, PORTFOLIO_BACKFILL_CHUNK
        on_celery, size = execution_settings().kind == "celery", backfill_chunk()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with Database() as database:  # ... and so does an unreachable database
        database.migrate()
    home = prepare_dagster_home()
    import dagster as dg

    from portfolio_pipeline.definitions import build_definitions
    from portfolio_pipeline.defs.partitions import HISTORY_START_ENV, history_start
    from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
    from portfolio_pipeline.exchange_calendar import ExchangeCalendar

    sessions = ExchangeCalendar().sessions(first, last)
    if not sessions:
        raise click.BadParameter(f"no XNYS session between {first} and {last}")
    if sessions[0] < history_start():
        raise click.BadParameter(
            f"{sessions[0]} is before the first partition {history_start()}; "
            f"set {HISTORY_START_ENV}={sessions[0]} to record earlier sessions")
    from portfolio_pipeline.demo_window import DEMO_END as RECORD_END
    from portfolio_pipeline.demo_window import demo_partitions_end

    if (end := demo_partitions_end()) is not None and sessions[-1] >= end:
        raise click.BadParameter(f"{sessions[-1]} is after the demo record's last session {RECORD_END}")
    definitions = build_definitions()
    job = definitions.resolve_job_def(job_name)
    ok, run_ids = True, []
    with (SqliteRunStorageTuning(home), dg.DagsterInstance.get() as instance,
          batched_event_writes(instance)):
        for part in chunks(sessions, size):  # one run, or runs of at most K sessions
            tags = {"dagster/asset_partition_range_start": part[0].isoformat(),
                    "dagster/asset_partition_range_end": part[-1].isoformat()}
            run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            if on_celery:  # steps go to the workers: the job is loaded there from this module
                from dagster._core.definitions.reconstruct import ReconstructableRepository

                recon = ReconstructableRepository.for_module("portfolio_pipeline.definitions", "defs")
                run_config["resources"] = {"platform": {"config": {"demo_only": demo}}}
                result: Any = dg.execute_job(recon.get_reconstructable_job(job_name), instance,
                                             run_config=run_config, tags=tags, raise_on_error=False)
            else:
                result = job.execute_in_process(
                    instance=instance, run_config=run_config, tags=tags, raise_on_error=False,
                    resources={"db": DatabaseResource(), "platform": PlatformResource(demo_only=demo)},
                )
            run_ids.append(result.run_id)
            if not result.success:
                if causes is not None:
                    causes.extend(_root_causes(result))
                ok = False
                break  # a later chunk builds on this one's sessions
        return ok, ", ".join(run_ids)


def _root_causes(result: object) -> list[str]:
    """``step: ErrorClass: first line of the message`` of the innermost cause of each failed step."""
    out: list[str] = []
    for event in getattr(result, "all_events", []):
        if not getattr(event, "is_step_failure", False):
            continue
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is None:
            continue
        message = (error.message or "").strip().splitlines()
        text = message[0] if message else error.cls_name or "error"
        if error.cls_name and not text.startswith(error.cls_name):
            text = f"{error.cls_name}: {text}"
        line = f"{event.step_key}: {text}"
        if line not in out:
            out.append(line)
    return out


def _summary(first: date, last: date) -> list[str]:
    """What the run recorded, read back from the stored tables (consolidated book)."""
    from sqlalchemy import and_, func, select

    from portfolio_pipeline.domain.symbols import AGGREGATE
    from portfolio_pipeline.paths import reports_dir
    from portfolio_pipeline.storage import Database
    from portfolio_pipeline.storage.tables import (
        margin_history,
        monte_carlo_var,
        portfolio_returns,
        positions_snapshot,
        risk_metrics,
    )

    book = and_(portfolio_returns.c.broker == AGGREGATE, portfolio_returns.c.account_id == AGGREGATE)
    in_window = portfolio_returns.c.session_date.between(first, last)
    with Database() as database, database.connect() as conn:
        returns = conn.execute(
            select(portfolio_returns).where(book, in_window).order_by(portfolio_returns.c.session_date)
        ).mappings().all()
        if not returns:
            return [f"no sessions stored between {first} and {last}"]
        end = returns[-1]["session_date"]
        n_positions = conn.execute(
            select(func.count()).select_from(positions_snapshot)
            .where(positions_snapshot.c.session_date.between(first, last))
        ).scalar_one()
        var99 = conn.execute(
            select(risk_metrics.c.value, risk_metrics.c.value_usd).where(
                risk_metrics.c.session_date == end, risk_metrics.c.broker == AGGREGATE,
                risk_metrics.c.account_id == AGGREGATE, risk_metrics.c.window == "full",
                risk_metrics.c.metric == "var_99_historical",
            )
        ).first()
        mc = conn.execute(
            select(monte_carlo_var.c.horizon_days, monte_carlo_var.c.var_99).where(
                monte_carlo_var.c.session_date == end, monte_carlo_var.c.broker == AGGREGATE,
                monte_carlo_var.c.account_id == AGGREGATE, monte_carlo_var.c.group_key == AGGREGATE,
            ).order_by(monte_carlo_var.c.horizon_days)
        ).all()
        breach_days = conn.execute(
            select(margin_history.c.session_date, margin_history.c.regime,
                   margin_history.c.vix, margin_history.c.breached_metrics).where(
                margin_history.c.broker == AGGREGATE, margin_history.c.account_id == AGGREGATE,
                margin_history.c.session_date.between(first, last), margin_history.c.breaches > 0,
            ).order_by(margin_history.c.session_date)
        ).all()
        where = database.url_for_display
    worst = min(returns, key=lambda r: r["twr"])
    flows = sum(float(r["external_flow"]) for r in returns[1:])
    growth = float(returns[-1]["growth_index"]) / float(returns[0]["growth_index"]) - 1.0
    lines = [
        f"sessions stored : {len(returns)} ({returns[0]['session_date']} .. {end}), "
        f"{n_positions} position rows",
        f"NLV             : {returns[0]['nlv']:,.0f} -> {returns[-1]['nlv']:,.0f} "
        f"(net deposits {flows:+,.0f})",
        f"time-weighted   : {growth:+.1%}, max drawdown "
        f"{min(float(r['drawdown']) for r in returns):.1%}",
        f"worst session   : {worst['session_date']} {worst['twr']:+.2%}",
    ]
    if var99 is not None and var99.value_usd is not None:
        lines.append(f"VaR 99% 1-day   : {var99.value_usd:,.0f} ({var99.value:.2%}, historical, {end})")
    if mc:
        lines.append("Monte Carlo VaR : " + ", ".join(f"{h}d 99% {v:,.0f}" for h, v in mc))
    if breach_days:
        first_breach = breach_days[0]
        spike = next((b for b in breach_days if b.regime == "crisis"), None)
        lines.append(f"limit breaches  : on {len(breach_days)} sessions, first {first_breach.session_date}"
                     f" ({first_breach.breached_metrics})")
        if spike is not None:
            lines.append(f"crisis regime   : {spike.session_date} VIX {spike.vix:.2f}: {spike.breached_metrics}")
    report = reports_dir() / f"daily_{end.isoformat()}.html"
    if report.exists():
        lines.append(f"daily report    : {report}")
    pack = reports_dir() / f"risk_pack_{end.isoformat()}.html"
    if pack.exists():
        lines.append(f"risk pack       : {pack} (open with `portfolio report --serve`)")
    lines.append(f"database        : {where}")
    return lines


@main.command()
@click.option("--start", type=SessionDate(), default=DEMO_START.isoformat(),
              show_default=True, help="First session of the demo window.")
@click.option("--end", type=SessionDate(), default=DEMO_END.isoformat(),
              show_default=True, help="Last session of the demo window.")
def demo(start: date, end: date) -> None:
    """Run the full pipeline on the demo broker (real 2017-2018 market history)."""
    first, last = start, end
    click.echo(f"portfolio demo: sessions {first} .. {last}, data in {portfolio_home()}")
    _show_progress()
    ok, run_id = _run_sessions(first, last, demo=True)
    for line in _summary(first, last):
        click.echo("  " + line)
    click.echo(f"  dagster run     : {run_id} ({'success' if ok else 'FAILED'})")
    click.echo("Open the Dagster UI:  .venv/bin/portfolio ui   (then http://127.0.0.1:3000)")
    sys.exit(0 if ok else 1)


@main.command()
@click.option("--date", "session", type=SessionDate(), default=None,
              help="Session to record (default: the latest completed session, or an intraday "
                   "snapshot of today while the market is open).")
def run(session: date | None) -> None:
    """Record a session's book from the configured brokers (intraday while the market is open)."""
    from datetime import UTC

    from portfolio_pipeline import clock
    from portfolio_pipeline.exchange_calendar import NEW_YORK, ExchangeCalendar

    calendar = ExchangeCalendar()
    now = clock.system_clock().astimezone(UTC)
    today = now.astimezone(NEW_YORK).date()
    intraday = False
    if session is not None:
        day = session
        if calendar.is_session(day) and calendar.session_close(day) > now:
            close = calendar.session_close(day).astimezone(NEW_YORK)
            raise click.BadParameter(
                f"session {day} closes at {close:%H:%M} New York: it can be recorded only after its close; "
                "run `portfolio run` without --date for an intraday snapshot", param_hint="--date")
    elif calendar.is_session(today) and calendar.session_open(today) <= now < calendar.session_close(today):
        day, intraday = today, True
    else:
        day = calendar.last_completed_session(now)
    from portfolio_pipeline.cli_errors import CliError
    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.demo_window import outside_demo_history

    reason = outside_demo_history(load_platform_config(config_dir()), day)
    if reason is not None:
        raise CliError(reason)
    causes: list[str] = []
    if intraday:
        ok, run_id = _run_sessions(day, day, demo=False, job_name="intraday_job", causes=causes)
        when = now.astimezone(NEW_YORK)
        click.echo(f"intraday snapshot of session {day} at {when:%H:%M} New York: run {run_id} "
                   f"{'succeeded' if ok else 'FAILED'} (the session itself is recorded after the close "
                   f"at {calendar.session_close(day).astimezone(NEW_YORK):%H:%M})")
    else:
        ok, run_id = _run_sessions(day, day, demo=False, causes=causes)
        click.echo(f"session {day}: run {run_id} {'succeeded' if ok else 'FAILED'}")
    for cause in causes[:1]:
        click.echo(f"cause: {cause}", err=True)
    sys.exit(0 if ok else 1)


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def ui(port: int, host: str) -> None:
    """Start the Dagster UI and daemon (dagster dev) on this project's data."""
    from portfolio_pipeline.dagster_home import prepare_dagster_home

    home = prepare_dagster_home()
    root = repo_root()
    workspace = (root / "workspace.yaml") if root else None
    args = ["dagster", "dev", "-h", host, "-p", str(port)]
    args += ["-w", str(workspace)] if workspace else ["-m", "portfolio_pipeline.definitions"]
    click.echo(f"DAGSTER_HOME={home}; starting: {' '.join(args)}")
    dagster = Path(sys.executable).with_name("dagster")
    os.execv(str(dagster), [str(dagster), *args[1:]])


def _attach_subcommands() -> None:
    from portfolio_pipeline.cli_alerts import alerts
    from portfolio_pipeline.cli_day import report, status
    from portfolio_pipeline.cli_health import health
    from portfolio_pipeline.cli_orders import orders
    from portfolio_pipeline.cli_strategies import strategies
    from portfolio_pipeline.cli_whatif import scenario, whatif
    from portfolio_pipeline.cli_workers import workers

    main.add_command(report)
    main.add_command(status)
    main.add_command(health)
    main.add_command(alerts)
    main.add_command(orders)
    main.add_command(strategies)
    main.add_command(whatif)
    main.add_command(scenario)
    main.add_command(workers)


_attach_subcommands()

if __name__ == "__main__":
    main()
